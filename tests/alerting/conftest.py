from __future__ import annotations

from collections.abc import Iterator

import pytest

from trioprobe.probes import PROBE_TYPES

from . import scripted_probe


@pytest.fixture(autouse=True)
def _scripted_type(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(PROBE_TYPES, "scripted", "tests.alerting.scripted_probe")
    scripted_probe.OUTCOMES.clear()
    scripted_probe.LATENCY.clear()
    yield
    scripted_probe.OUTCOMES.clear()
    scripted_probe.LATENCY.clear()
