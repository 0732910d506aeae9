"""The one place trioprobe turns a nursery's one-exception group back into that exception.

Trio's nurseries always raise an ``ExceptionGroup`` (``strict_exception_groups``, its default),
which is right inside trioprobe: ``except*`` sees every error of every task. But a user of
``async with open_prober()`` or ``await serve_health()`` should be able to write ``except
ValueError`` for the error they raised in the block, and ``except OSError`` for a port in use,
as trio's docs advise for a nursery hidden inside an API. So each nursery whose group would
leave a public boundary is opened with :func:`open_nursery` here: a group of exactly one
exception becomes that exception, and a group of several stays a group, because several tasks
really failed at once and hiding all but one would lose errors.

Only the group the nursery itself made is unwrapped, never a group someone raised inside it:
an ``ExceptionGroup`` raised by the caller's code comes back as itself too.
"""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import trio
import trio.lowlevel

E = TypeVar("E", bound=BaseException)

__all__ = ["leaves", "open_nursery"]


class open_nursery:
    """``trio.open_nursery()`` whose one-exception group comes out as that exception."""

    def __init__(self) -> None:
        self._manager = trio.open_nursery()

    # Like trio's own nursery manager: a KeyboardInterrupt must not land between the two halves.
    @trio.lowlevel.enable_ki_protection
    async def __aenter__(self) -> trio.Nursery:
        return await self._manager.__aenter__()

    @trio.lowlevel.enable_ki_protection
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return bool(await self._manager.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            if len(group.exceptions) != 1:
                raise
            inner = group.exceptions[0]
            # `raise` inside this handler would make the group the exception's __context__:
            # a cycle (the group holds it) and a lost context of the caller's own exception.
            context = inner.__context__
            try:
                raise inner
            finally:
                inner.__context__ = context
                del inner, group, exc


def leaves(group: BaseExceptionGroup[E]) -> list[E]:
    """Every exception of ``group`` and of the groups nested in it, in order: what ``except*``
    caught, ready to be reported one by one."""
    found: list[E] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(leaves(exc))
        else:
            found.append(exc)
    return found
