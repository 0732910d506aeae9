"""What importing trioprobe and its standalone capabilities loads (issue 13, item 1).

Each check runs in a fresh interpreter, since this test process has imported everything already.
A capability package may load its own modules and trioprobe's small private leaf modules
(``trioprobe._asgi``, ``trioprobe._histogram``, ...), nothing else of trioprobe; and none of the
heavy third-party packages it does not use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trioprobe

SRC = Path(__file__).resolve().parents[1] / "src"

#: Heavy dependencies of the rest of trioprobe (config loading, the CLI, the HTTP server, the
#: clients, ZeroMQ): each capability may load only the ones it uses.
HEAVY = {"cattrs", "rich", "hypercorn", "httpx", "zmq"}
USES = {
    "trioprobe.probing": {"httpx"},  # the prober's client (the health server is h11 on _asgi)
    "trioprobe.logping": {"httpx"},  # EtcdLog's client
    "trioprobe.handoff": set(),
    "trioprobe.zmqnet": {"zmq"},
}


def loaded_by(statement: str) -> set[str]:
    """The modules ``statement`` adds to ``sys.modules`` in a fresh interpreter."""
    code = (
        "import sys, json; before = set(sys.modules); "
        f"{statement}; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


@pytest.mark.parametrize("package", sorted(USES))
def test_a_capability_stands_alone(package: str) -> None:
    loaded = loaded_by(f"import {package}")
    ours = {name for name in loaded if name.partition(".")[0] == "trioprobe"}
    foreign = {
        name
        for name in ours
        if name not in ("trioprobe", package)
        and not name.startswith(package + ".")
        and not (name.count(".") == 1 and name.startswith("trioprobe._"))
    }
    assert not foreign, f"{package} imports the rest of trioprobe: {sorted(foreign)}"
    heavy = top_level(loaded) & HEAVY
    assert heavy <= USES[package], f"{package} imports {sorted(heavy - USES[package])}"


def test_import_trioprobe_loads_nothing_of_its_own() -> None:
    loaded = loaded_by("import trioprobe")
    assert {name for name in loaded if name.startswith("trioprobe")} == {"trioprobe"}
    assert not top_level(loaded) & (HEAVY | {"trio", "attrs", "h11"})


def test_first_use_of_a_name_imports_its_module() -> None:
    loaded = loaded_by("import trioprobe; trioprobe.ProbeResult")
    assert {"trioprobe.results", "trioprobe.metrics"} <= loaded
    assert "trioprobe.runner" not in loaded
    assert "cattrs" not in top_level(loaded)


def test_lazy_names_resolve_and_are_listed() -> None:
    from trioprobe.runner import Runner

    assert trioprobe.Runner is Runner
    assert set(trioprobe.__all__) == set(trioprobe._LAZY)
    for name in trioprobe.__all__:
        assert getattr(trioprobe, name) is not None
    assert set(trioprobe.__all__) <= set(dir(trioprobe))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        trioprobe.nonsense  # noqa: B018
    # The metrics module's name for the one histogram type is the leaf's class.
    from trioprobe._histogram import Distribution

    assert trioprobe.Distribution is Distribution
