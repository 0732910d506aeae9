"""A ``/metrics`` body encoded a few samples at a time on the event loop, as a list of slices.

Why not a worker thread: ``prometheus_client``'s encoders end in one ``''.join(...).encode()``
over the whole body, a single C call that holds the GIL; at 10,000 targets (a 25 MB body) that
stalled the event loop 146 ms however the render was scheduled. Here each family is encoded
``SAMPLES_PER_STEP`` samples at a time, with the same encoder, and the pieces are kept as
bytes: no step joins or encodes more than a few kilobytes, and the body is never one object.

The pieces are byte-for-byte the encoder's own output: a family's header (``# HELP``, ``# TYPE``,
OpenMetrics' ``# UNIT``) is what the encoder writes for that family with no samples, so it is
kept for the family's first piece and cut from the others (encoded with an empty HELP text),
and OpenMetrics' ``# EOF`` is cut from every piece and written once at the end
(tests/core/test_metrics_server.py compares the two renderings; promtool checks the result in
tests/real/test_exposition.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import trio
from prometheus_client.metrics_core import Metric

from ._naming import Family

__all__ = ["SAMPLES_PER_STEP", "FamilyRows", "Row", "Sample", "encode_in_steps"]

#: Samples encoded per event-loop step (a histogram sample is 60 function calls in the text
#: encoder, 150 in OpenMetrics').
SAMPLES_PER_STEP: Final = 4
_EOF: Final = b"# EOF\n"

Encoder = Callable[[Any], bytes]
#: (suffix after the family's full name, labels, value).
Sample = tuple[str, dict[str, str], float]
#: One series' value in a family: (the series' labels, the value), expanded into samples late.
Row = tuple[dict[str, str], Any]
#: (full family name, the family, its rows).
FamilyRows = tuple[str, Family, Sequence[Row]]
#: The samples of one row.
Expand = Callable[[Family, Row], list[Sample]]


class _Families:
    """A ``prometheus_client`` collector over a fixed list of families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def _encode(encoder: Encoder, metric: Metric, openmetrics: bool) -> bytes:
    encoded = encoder(_Families([metric]))
    return encoded[: -len(_EOF)] if openmetrics else encoded


def _piece(
    encoder: Encoder,
    openmetrics: bool,
    full: str,
    family: Family,
    chunk: list[Sample],
    bare: bytes,
    first: bool,
) -> bytes:
    """``chunk`` encoded: with the family's header if ``first``, else without (``bare``, the
    header with an empty HELP text, cut)."""
    metric = Metric(full, family.help if first else "", family.type, family.unit)
    for suffix, labels, number in chunk:
        metric.add_sample(full + suffix, labels, number)
    piece = _encode(encoder, metric, openmetrics)
    return piece if first else piece[len(bare) :]


async def encode_in_steps(
    families: Sequence[FamilyRows], expand: Expand, encoder: Encoder, slice_bytes: int
) -> list[bytes]:
    """The body of ``families`` as ``encoder`` writes it, in slices of about ``slice_bytes``.

    A row is expanded into its samples only when its turn comes, and at most
    ``SAMPLES_PER_STEP`` samples are encoded per event-loop step."""
    openmetrics = encoder(_Families([])) == _EOF
    out: list[bytes] = []
    pending: list[bytes] = []
    size = 0

    def put(piece: bytes) -> None:
        nonlocal size
        pending.append(piece)
        size += len(piece)
        if size >= slice_bytes:
            out.append(b"".join(pending))
            pending.clear()
            size = 0

    for full, family, rows in families:
        # After the first piece, the family is encoded with an empty HELP text, whose header is
        # cut: escaping a long HELP text again for every piece cost more than its samples.
        bare = _encode(encoder, Metric(full, "", family.type, family.unit), openmetrics)
        first = True
        samples: list[Sample] = []
        for row in rows:
            samples += expand(family, row)
            while len(samples) >= SAMPLES_PER_STEP:
                chunk, samples = samples[:SAMPLES_PER_STEP], samples[SAMPLES_PER_STEP:]
                put(_piece(encoder, openmetrics, full, family, chunk, bare, first))
                first = False
                await trio.lowlevel.checkpoint()
        if samples or first:  # the rest; or a family without samples: its header alone
            put(_piece(encoder, openmetrics, full, family, samples, bare, first))
            await trio.lowlevel.checkpoint()
    if openmetrics:
        put(_EOF)
    if pending:
        out.append(b"".join(pending))
    return out
