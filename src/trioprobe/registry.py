"""Type registries: config ``type`` name -> the module that implements it.

Two registries exist, :data:`trioprobe.probes.probe_types` and
:data:`trioprobe.surfacers.surfacer_types`. Each holds the built-in types, the types installed
packages declare as Python entry points (groups ``trioprobe.probes`` and ``trioprobe.surfacers``),
and whatever code registers with :meth:`Registry.register`. Nothing is imported until a config
uses a type: a type's dependencies (pyzmq, say) cost nothing to runs that do not use it, and
installed entry points are only listed the first time a name is not a built-in one.

See docs/extending.md for the contract a type module fulfils.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = ["PluginError", "Registry"]

logger = logging.getLogger("trioprobe.registry")


class PluginError(ImportError):
    """A registered type could not be loaded, or lacks what its kind requires.

    The message is one line naming the type and, for an entry point, the distribution and the
    entry point, so a broken plugin is found without a traceback.
    """


class Registry:
    """Config ``type`` names of one kind (probe or surfacer types) and their modules.

    A target is a module path (``"pkg.module"``), ``"pkg.module:attribute"``, or the module (or
    any object with the required attributes) itself. Names registered in code and the built-ins
    win over entry points; an entry point that reuses a taken name is skipped with a warning.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: Mapping[str, str],
        required: tuple[str, ...],
        optional: Mapping[str, object] | None = None,
    ) -> None:
        #: ``"probe"`` or ``"surfacer"``: used in messages.
        self.kind = kind
        #: The entry-point group read for installed plugins.
        self.group = group
        self._required = required
        #: The optional attributes a type module may declare, and the value of each when absent:
        #: the whole of what the core reads from a type beyond ``required`` (see :meth:`hook`).
        self.optional: Mapping[str, object] = dict(optional or {})
        self._targets: dict[str, object] = dict(builtins)
        self._builtins = dict(builtins)
        self._entry_points: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, Any] = {}
        self._hooks: dict[str, dict[str, Any]] = {}

    def register(self, name: str, target: object) -> None:
        """Add type ``name``; ``ValueError`` if the name is taken (unregister it first)."""
        if name in self._targets:
            raise ValueError(f"{self.kind} type {name!r} is already registered")
        self._targets[name] = target

    def unregister(self, name: str) -> None:
        """Remove type ``name`` registered in code or built in (``KeyError`` if absent)."""
        del self._targets[name]
        self._loaded.pop(name, None)
        self._hooks.pop(name, None)

    @contextmanager
    def registered(self, name: str, target: object) -> Iterator[None]:
        """Type ``name`` is registered inside the block only (for tests and embedding code)."""
        self.register(name, target)
        try:
            yield
        finally:
            self.unregister(name)

    def names(self) -> list[str]:
        """Every known type name, sorted: built-in, registered and installed ones."""
        return sorted(self._targets.keys() | self._installed().keys())

    def __contains__(self, name: object) -> bool:
        return name in self._targets or name in self._installed()

    def load(self, name: str) -> Any:
        """The module of type ``name``, imported on first use.

        Raises ``KeyError`` for an unknown name and :class:`PluginError` when the type's module
        fails to import or lacks a required attribute.
        """
        if name in self._loaded:
            return self._loaded[name]
        if name in self._targets:
            target = self._targets[name]
            where = f"{self.kind} type {name!r}"
            try:
                module = _import(target) if isinstance(target, str) else target
            except Exception as exc:  # an import can raise anything; name it in one line
                raise PluginError(f"{where} ({target}) failed to import: {_one_line(exc)}") from exc
        else:
            entry = self._installed().get(name)
            if entry is None:
                raise KeyError(
                    f"unknown {self.kind} type {name!r}; expected one of {', '.join(self.names())}"
                )
            where = (
                f"{self.kind} type {name!r} (entry point {entry.name} = {entry.value} in "
                f"{_distribution(entry)})"
            )
            try:
                module = entry.load()
            except Exception as exc:  # an import can raise anything; name it in one line
                raise PluginError(f"{where} failed to import: {_one_line(exc)}") from exc
        missing = [attr for attr in self._required if not hasattr(module, attr)]
        if missing:
            raise PluginError(f"{where} has no {' or '.join(missing)}; see docs/extending.md")
        self._loaded[name] = module
        self._hooks[name] = {
            attr: getattr(module, attr, default) for attr, default in self.optional.items()
        }
        return module

    def hook(self, name: str, attr: str) -> Any:
        """Type ``name``'s optional attribute ``attr`` (one of :attr:`optional`), or its
        declared default when the type does not define it; loads the type on first use.

        The core asks for a type's optional parts only through here, so they are all declared
        in one place (the registry's ``optional``) and documented in docs/extending.md.
        """
        if attr not in self.optional:
            raise KeyError(f"{attr!r} is not an optional attribute of a {self.kind} type")
        self.load(name)
        return self._hooks[name][attr]

    def origin(self, name: str) -> str | None:
        """Where type ``name`` comes from when it is not built in (``"from distribution NAME
        VERSION"`` or ``"registered in code"``), for ``trioprobe check``; None otherwise."""
        if name in self._targets:
            builtin = self._builtins.get(name) is self._targets[name]
            return None if builtin else "registered in code"
        entry = self._installed().get(name)
        return None if entry is None else f"from {_distribution(entry)}"

    def _installed(self) -> dict[str, EntryPoint]:
        # Listing entry points reads every installed distribution's metadata: once, on demand.
        if self._entry_points is None:
            found: dict[str, EntryPoint] = {}
            for entry in entry_points(group=self.group):
                taken = entry.name in self._targets or entry.name in found
                if taken:
                    logger.warning(
                        "%s type %r from %s is ignored: the name is already taken",
                        self.kind,
                        entry.name,
                        _distribution(entry),
                    )
                else:
                    found[entry.name] = entry
            self._entry_points = found
        return {n: e for n, e in self._entry_points.items() if n not in self._targets}


def _import(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def _distribution(entry: EntryPoint) -> str:
    dist = entry.dist
    return "an unknown distribution" if dist is None else f"distribution {dist.name} {dist.version}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
