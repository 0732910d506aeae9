"""The public surface, checked the way trio's ``test_exports.py`` checks its own: every name in
each package's ``__all__`` imports, is documented and typed, and nothing private is exported.

"Documented": a class or function has a docstring. A constant or alias cannot carry one, so it
needs the documentation convention of this codebase where it is defined: a ``#:`` comment on the
line above (or at the end of its line), or a string literal right after the assignment.
"Typed": every parameter and the return of a public function, method or constructor is
annotated (mypy --strict checks src as a whole; this pins it for the public surface, where a
missing annotation reaches users as ``Any``).
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import pkgutil
import sys
import types
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import trioprobe

SRC = Path(trioprobe.__file__).resolve().parent


def _packages() -> list[str]:
    found = ["trioprobe"]
    for info in pkgutil.walk_packages([str(SRC)], "trioprobe."):
        if info.ispkg and not any(p.startswith("_") for p in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


PACKAGES = _packages()


def _exports() -> Iterator[tuple[str, str]]:
    for name in PACKAGES:
        module = importlib.import_module(name)
        for export in getattr(module, "__all__", ()):
            yield name, export


EXPORTS = list(_exports())


@cache
def _documented_assignments(module_name: str) -> frozenset[str]:
    """Names a module assigns with a ``#:`` comment above or a docstring below."""
    module = sys.modules[module_name]
    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)
    found = set()
    body = tree.body
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        else:
            continue
        above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        trailing = lines[node.end_lineno - 1 if node.end_lineno else node.lineno - 1]
        after = body[i + 1] if i + 1 < len(body) else None
        doc_after = (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        )
        if above.startswith("#:") or "  #: " in trailing or doc_after:
            found.update(targets)
    return frozenset(found)


def _defining_modules(package: str, name: str) -> list[tuple[str, str]]:
    """(module, name there) for the package itself and where it imports ``name`` from."""
    module = sys.modules[package]
    candidates = [(package, name)]
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return candidates
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            if (alias.asname or alias.name) != name:
                continue
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            if base != package and base in sys.modules:
                candidates.extend(_defining_modules(base, alias.name))
    return candidates


def _callables(obj: object) -> Iterator[tuple[str, Callable[..., Any]]]:
    if inspect.isclass(obj):
        if issubclass(obj, enum.Enum) or issubclass(obj, BaseException):
            return
        for attr, value in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if attr == "__init__" and getattr(obj, "_is_protocol", False):
                continue  # typing's placeholder: a Protocol is not constructed
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property):
                value = value.fget
            if inspect.isfunction(value):
                yield f"{obj.__name__}.{attr}", value
    elif inspect.isfunction(obj):
        yield obj.__name__, obj


@pytest.mark.parametrize(("package", "name"), EXPORTS, ids=[f"{p}.{n}" for p, n in EXPORTS])
def test_every_export_imports(package: str, name: str) -> None:
    module = importlib.import_module(package)
    assert hasattr(module, name), f"{package}.__all__ names {name!r}, which it does not define"
    exec(f"from {package} import {name}", {})  # the spelling users write


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_private_is_exported(package: str) -> None:
    module = importlib.import_module(package)
    private = [n for n in getattr(module, "__all__", ()) if n.startswith("_")]
    assert not private, f"{package}.__all__ exports private names: {private}"
    assert len(set(getattr(module, "__all__", ()))) == len(getattr(module, "__all__", ()))


@pytest.mark.parametrize(("package", "name"), EXPORTS, ids=[f"{p}.{n}" for p, n in EXPORTS])
def test_every_export_is_documented(package: str, name: str) -> None:
    obj = getattr(importlib.import_module(package), name)
    if inspect.isclass(obj) or inspect.isfunction(obj) or isinstance(obj, types.ModuleType):
        assert inspect.getdoc(obj), f"{package}.{name} has no docstring"
        return
    documented = any(
        there in _documented_assignments(m) for m, there in _defining_modules(package, name)
    )
    assert documented, (
        f"{package}.{name} ({type(obj).__name__}) is not documented: add a '#:' comment above "
        "its assignment or a string literal after it"
    )


@pytest.mark.parametrize(("package", "name"), EXPORTS, ids=[f"{p}.{n}" for p, n in EXPORTS])
def test_every_export_is_typed(package: str, name: str) -> None:
    obj = getattr(importlib.import_module(package), name)
    missing = []
    for where, func in _callables(obj):
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            continue
        for param in signature.parameters.values():
            if param.name in ("self", "cls"):
                continue
            if param.annotation is inspect.Parameter.empty:
                missing.append(f"{where}({param.name})")
        if signature.return_annotation is inspect.Signature.empty:
            missing.append(f"{where} -> ?")
    assert not missing, f"{package}.{name}: not annotated: {missing}"
