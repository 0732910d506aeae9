"""The type registries: registration in code, entry points, and errors naming a broken plugin."""

from __future__ import annotations

import ast
import logging
import sys
import types
from pathlib import Path

import attrs
import pytest

from trioprobe.cli import main
from trioprobe.config import ConfigError, parse_config
from trioprobe.probes import probe_types
from trioprobe.registry import PluginError, Registry
from trioprobe.surfacers import surfacer_types

SRC = Path(__file__).resolve().parents[2] / "src" / "trioprobe"


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _probe_module() -> types.ModuleType:
    def make_probe(spec: object, options: object, targets: object) -> object:
        return object()  # never run: only `check` builds it

    return _module("mine", Options=attrs.make_class("Options", {}), make_probe=make_probe)


def _registry() -> Registry:
    return Registry("probe", "trioprobe.probes", {}, required=("Options", "make_probe"))


def _install(site: Path, dist: str, group: str, entries: dict[str, str]) -> None:
    """Make ``site`` hold an installed distribution declaring ``entries`` (as pip would)."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")


def test_registered_is_scoped_and_names_are_listed() -> None:
    assert "mine" not in probe_types
    with probe_types.registered("mine", _probe_module()):
        assert "mine" in probe_types
        assert "mine" in probe_types.names()
        config = parse_config({"probe": [{"name": "p", "type": "mine", "targets": ["t"]}]})
        assert config.probes[0][0].type == "mine"
    assert "mine" not in probe_types
    assert "mine" not in probe_types.names()
    with pytest.raises(ConfigError, match="unknown probe type 'mine'; expected one of dns, "):
        parse_config({"probe": [{"name": "p", "type": "mine", "targets": ["t"]}]})


def test_check_says_where_a_type_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[probe]]\nname = "p"\ntype = "mine"\ntargets = ["t"]\n')
    with probe_types.registered("mine", _probe_module()):
        assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  probe 'p' (mine, registered in code): 1 target(s)" in out
    assert probe_types.origin("http") is None


def test_a_taken_name_cannot_be_registered_again() -> None:
    with pytest.raises(ValueError, match="probe type 'http' is already registered"):
        probe_types.register("http", _probe_module())
    assert probe_types.load("http").__name__.startswith("trioprobe.probes.")


def test_builtin_surfacers_are_registered() -> None:
    assert {"influxdb", "lines", "prometheus"} <= set(surfacer_types.names())
    assert hasattr(surfacer_types.load("lines"), "make_surfacer")
    with pytest.raises(KeyError, match="unknown surfacer type 'nope'"):
        surfacer_types.load("nope")


def test_broken_type_is_one_config_error_line() -> None:
    broken = probe_types.registered("broken", "tests.core.no_such_module")
    with broken, pytest.raises(ConfigError) as info:
        parse_config({"probe": [{"name": "p", "type": "broken", "targets": ["t"]}]})
    assert str(info.value) == (
        "probe[0].type: probe type 'broken' (tests.core.no_such_module) failed to import: "
        "ModuleNotFoundError: No module named 'tests.core.no_such_module'"
    )


def test_type_without_make_probe_is_refused() -> None:
    module = _module("half", Options=attrs.make_class("Options", {}))
    with probe_types.registered("half", module), pytest.raises(ConfigError) as info:
        parse_config({"probe": [{"name": "p", "type": "half", "targets": ["t"]}]})
    assert "probe type 'half' has no make_probe; see docs/extending.md" in str(info.value)


def test_entry_points_are_found_and_loaded_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_plugin_mod.py").write_text(
        "import attrs\n@attrs.frozen\nclass Options:\n    n: int = 1\n"
        "def make_probe(spec, options, targets):\n    return None\n"
    )
    _install(tmp_path, "my_plugin", "trioprobe.probes", {"mine": "my_plugin_mod"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = _registry()
    assert registry.names() == ["mine"]
    assert "mine" in registry
    assert "my_plugin_mod" not in sys.modules  # listed, not imported
    assert registry.load("mine").Options().n == 1
    assert registry.origin("mine") == "from distribution my_plugin 1.0"


def test_broken_entry_point_names_distribution_and_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad_plugin_mod.py").write_text("import no_such_dependency_xyz\n")
    _install(tmp_path, "bad_plugin", "trioprobe.probes", {"bad": "bad_plugin_mod"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        _registry().load("bad")
    assert str(info.value) == (
        "probe type 'bad' (entry point bad = bad_plugin_mod in distribution bad_plugin 1.0) "
        "failed to import: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
    )


def test_entry_point_cannot_take_a_builtin_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install(tmp_path, "rogue", "trioprobe.probes", {"http": "rogue_mod"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("probe", "trioprobe.probes", {"http": "x"}, required=())
    with caplog.at_level(logging.WARNING, logger="trioprobe.registry"):
        assert registry.names() == ["http"]
    assert "probe type 'http' from distribution rogue 1.0 is ignored" in caplog.text


def test_cli_check_reports_a_broken_type_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[probe]]\nname = "p"\ntype = "broken"\ntargets = ["t"]\n')
    with probe_types.registered("broken", "tests.core.no_such_module"):
        assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"trioprobe: error: {path}: probe[0].type: probe type 'broken' ")


def test_no_probe_or_surfacer_module_imports_config() -> None:
    """The spec classes live in the leaf ``trioprobe.specs``: config imports the registries,
    never the other way round."""
    offenders = []
    for path in [*(SRC / "probes").glob("*.py"), *(SRC / "surfacers").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "config" and node.level == 2:
                offenders.append(path.name)
    assert offenders == []
    specs = ast.parse((SRC / "specs.py").read_text())
    imported = {n.module for n in ast.walk(specs) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "collections.abc", "typing", "_options", "metrics"}


def test_optional_attributes_are_declared_metadata_with_defaults() -> None:
    registry = Registry(
        "probe",
        "trioprobe.probes",
        {},
        required=("Options", "make_probe"),
        optional={"EXPORTS": {}, "check_target": None},
    )
    plain = _probe_module()
    checked = _probe_module()
    checked.check_target = len  # type: ignore[attr-defined]
    registry.register("plain", plain)
    registry.register("checked", checked)
    assert registry.hook("plain", "EXPORTS") == {}
    assert registry.hook("plain", "check_target") is None
    assert registry.hook("checked", "check_target") is len
    with pytest.raises(KeyError, match="'prefix' is not an optional attribute of a probe type"):
        registry.hook("plain", "prefix")
    registry.unregister("checked")
    registry.register("checked", plain)  # a type registered again is read again
    assert registry.hook("checked", "check_target") is None


def test_the_core_reads_probe_types_only_through_declared_hooks() -> None:
    # The one place a type module's optional parts are read is Registry.load: no other
    # hasattr/getattr on a plugin module anywhere in the core.
    assert set(probe_types.optional) == {"EXPORTS", "check_target"}
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for name in ("EXPORTS", "check_target", "resolved_queue_dir", "attach_live_source"):
            assert f'getattr(module, "{name}"' not in text, path
            assert f'hasattr(options, "{name}")' not in text, path
            assert f'"{name}", None)' not in text, path
