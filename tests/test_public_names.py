"""``dir(trioprobe)`` lists the public API only, and stays lazy (issue 25 item 6)."""

from __future__ import annotations

import subprocess
import sys
import types

import trioprobe


def test_dir_shows_only_public_names() -> None:
    names = dir(trioprobe)
    for helper in ("Any", "TYPE_CHECKING", "annotations", "importlib", "_LAZY"):
        assert helper not in names
    for name in names:
        value = getattr(trioprobe, name)
        assert (
            name in trioprobe.__all__
            or name == "__version__"
            or (isinstance(value, types.ModuleType) and not name.startswith("_"))
        ), name
    assert set(trioprobe.__all__) <= set(names)


def test_dir_imports_nothing() -> None:
    # The names are lazy (PEP 562): listing them must not load the config loader or runner.
    code = (
        "import sys, trioprobe; names = dir(trioprobe); "
        "print('Runner' in names, 'trioprobe.config' in sys.modules, "
        "'trioprobe.runner' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == ["True", "False", "False"]
