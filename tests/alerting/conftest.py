from __future__ import annotations

from collections.abc import Iterator

import pytest

from trioprobe.probes import probe_types

from . import scripted_probe


@pytest.fixture(autouse=True)
def _scripted_type() -> Iterator[None]:
    scripted_probe.OUTCOMES.clear()
    scripted_probe.LATENCY.clear()
    with probe_types.registered("scripted", "tests.alerting.scripted_probe"):
        yield
    scripted_probe.OUTCOMES.clear()
    scripted_probe.LATENCY.clear()
