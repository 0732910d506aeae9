"""docs/library.md matches the code: every probe type's Options fields (names, types, defaults)
and its probe class's constructor, so the page cannot drift (issue 25 item 6)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import attrs

from trioprobe.probes import probe_types

ROOT = Path(__file__).resolve().parent.parent
FIX = "run `.venv/bin/python scripts/gen_library_doc.py` to regenerate docs/library.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_library_doc", ROOT / "scripts/gen_library_doc.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented() -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """probe type -> (constructor signature, [(field, type, default)]) as the page has them."""
    text = (ROOT / "docs/library.md").read_text(encoding="utf-8")
    out: dict[str, tuple[str, list[tuple[str, str, str]]]] = {}
    for block in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        name = re.match(r"`(\w+)`", block)
        assert name is not None, block[:80]
        constructor = re.search(r"```python\n(.*?)\n```", block, re.DOTALL)
        assert constructor is not None, block[:80]
        rows = re.findall(
            r"^\| `(\w+)` \| (`.*?`) \| (required|computed|`.*?`) \| ", block, re.MULTILINE
        )
        out[name.group(1)] = (constructor.group(1), rows)
    return out


def test_every_builtin_probe_type_is_documented_as_it_is() -> None:
    generator = _generator()
    documented = _documented()
    builtins = [n for n in probe_types.names() if probe_types.origin(n) is None]
    assert sorted(documented) == sorted(builtins), FIX
    for name in builtins:
        module = probe_types.load(name)
        signature, rows = documented[name]
        assert signature == generator.signature(generator.probe_class(module)), f"{name}: {FIX}"
        fields = [f.name for f in attrs.fields(module.Options)]
        assert [row[0] for row in rows] == fields, f"{name}: {FIX}"
        assert rows == generator.field_rows(module.Options), f"{name}: {FIX}"


@attrs.frozen
class _Sample:
    port: int | None = None
    names: tuple[str, ...] = ()


def test_rows_are_the_source_annotations_even_once_resolved() -> None:
    # cattrs (parse_config) resolves Options annotations in place, to classes: the page must not
    # change with whatever ran before (it did, in the full suite: `<class 'str'>`).
    generator = _generator()
    expected = [("port", "`int \\| None`", "`None`"), ("names", "`tuple[str, ...]`", "`()`")]
    assert generator.field_rows(_Sample) == expected
    attrs.resolve_types(_Sample)
    assert attrs.fields(_Sample).port.type == int | None
    assert generator.field_rows(_Sample) == expected
