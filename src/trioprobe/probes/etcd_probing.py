"""The ``etcd_probing`` probe type: etcd's peer health probing as a config probe.

Each target is one endpoint serving etcd's health reply: a peer URL such as
``http://10.0.0.2:2380`` (``path``, ``/raft/probing`` by default, is appended to targets given
without a path) or a full URL such as ``http://10.0.0.2:2380/raft/probing`` (used as given).

**One prober id per target.** The id is the target string itself, so each target has its own
task, its own SRTT and clock-difference estimate and its own ``dst`` label in the exported
metrics, which is what the stats keeper expects (it exports by target). The Prober's sticky /
round-robin endpoint lists are still there for embedding code (``Prober.add_http`` with several
URLs); a config that wants several addresses of one peer lists them as separate targets.

Every probe flows as a ``ProbeResult``: ``latency`` is that probe's RTT, and the gauges ``srtt``
and ``clock_diff`` (seconds; positive when the local clock is ahead) carry the Prober's running
estimates. ``timeout`` (the probe spec's) bounds each probe in a Trio cancel scope. The Prober
reports its own :class:`~trioprobe.probing.ProbeRecord` values (it stands alone); this adapter
turns each into a ``ProbeResult`` with :func:`probe_result`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

from .._ticks import spread_offset
from .._urls import check_http_url
from ..failures import Failure, FailureReason, Phase, classify
from ..probing import ProbeRecord, open_prober
from ..probing.health import DEFAULT_PATH
from ..probing.prober import BadHealthReply, NotOK, ProbeTimeout, UnexpectedStatus
from ..results import ProbeResult
from . import TargetsFn
from ._base import follow_targets

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["check_target", "EtcdProbingProbe", "Options", "make_probe", "probe_result"]

logger = logging.getLogger("trioprobe.probes.etcd_probing")


@attrs.frozen
class Options:
    """Config keys of an ``etcd_probing`` probe."""

    #: Appended to targets that have no path (bare peer URLs); etcd serves ``/raft/probing``.
    path: str = attrs.field(default=DEFAULT_PATH)

    @path.validator
    def _check_path(self, _: object, value: str) -> None:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/': {value!r}")


def probe_result(record: ProbeRecord) -> ProbeResult:
    """One Prober probe as a ``ProbeResult``: target = the probe id, ``latency`` = its RTT, and
    the gauges ``srtt`` and ``clock_diff`` (seconds; gauges, since only the latest value means
    anything)."""
    gauges = {"srtt": record.srtt, "clock_diff": record.clock_diff}
    if record.success:
        return ProbeResult(
            record.probe_id,
            True,
            record.rtt,
            gauges=gauges,
            start_lateness=record.start_lateness,
        )
    return ProbeResult(
        record.probe_id,
        False,
        error=record.error_text,
        timeout=record.timeout,
        gauges=gauges,
        start_lateness=record.start_lateness,
        failure=record_failure(record.error),
    )


def record_failure(error: Exception | None) -> Failure:
    """The reason of a Prober failure: its own kinds (status, reply, deadline), or the transport
    error classified as every HTTP probe's is."""
    if isinstance(error, ProbeTimeout):
        # The Prober keeps its own deadline, outside any phase tracker: the phase is not known.
        return Failure(FailureReason.TIMEOUT, Phase.UNKNOWN)
    if isinstance(error, UnexpectedStatus):
        return Failure(FailureReason.HTTP_STATUS)
    if isinstance(error, BadHealthReply):
        return Failure(FailureReason.PROTOCOL)
    if isinstance(error, NotOK):
        return Failure(FailureReason.VALIDATION, validator="health")
    if error is None:
        return Failure(FailureReason.OTHER, Phase.UNKNOWN)
    return classify(error, Phase.UNKNOWN)


async def forward_records(
    records: trio.MemoryReceiveChannel[ProbeRecord],
    results: trio.MemorySendChannel[ProbeResult],
) -> None:
    """Own ``records`` until it ends, sending each as a ``ProbeResult`` to ``results``.

    Sends do not yield when ``results`` has room and apply back-pressure when it is full, as the
    Prober does on its own channel.
    """
    async with records:
        async for record in records:
            result = probe_result(record)
            try:
                results.send_nowait(result)
            except trio.WouldBlock:
                await results.send(result)


def endpoint_for(target: str, path: str) -> str:
    """The URL probed for ``target``: ``path`` is added only when the target has none."""
    try:
        url = httpx.URL(target)
    except httpx.InvalidURL:
        return target  # the Prober rejects it with a message naming it
    if url.raw_path in (b"", b"/"):
        return str(url.copy_with(path=path))
    return target


class EtcdProbingProbe:
    """Keeps one Prober id per current target; see the module docstring."""

    def __init__(
        self,
        options: Options,
        targets: TargetsFn,
        *,
        interval: float,
        timeout: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.options = options
        self.targets = targets
        self.interval = interval
        self.timeout = timeout
        self._client = client

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # One record in flight at a time: the Prober's back-pressure still reaches ``results``.
        records_send, records_receive = trio.open_memory_channel[ProbeRecord](0)
        async with (
            trio.open_nursery() as nursery,
            records_send,
            open_prober(self._client, records=records_send) as prober,
        ):
            nursery.start_soon(forward_records, records_receive, results)

            def add(new: list[str]) -> None:
                for target in new:
                    try:
                        prober.add_http(
                            target,
                            self.interval,
                            [endpoint_for(target, self.options.path)],
                            timeout=self.timeout,
                            # Each target's first probe comes at its stable offset within one
                            # interval: a thousand probes firing at one instant would make most
                            # of them late, and their latency mostly queueing.
                            first_probe_after=spread_offset(target, self.interval),
                        )
                    except ValueError as exc:
                        # A bad line in a targets file must not stop the other targets; it is
                        # reported once, and tried again only if it leaves the list and returns.
                        logger.warning("etcd_probing: skipping target %r: %s", target, exc)

            async def remove(target: str) -> None:
                if target in prober:
                    prober.remove(target)

            await follow_targets(self.targets, self.interval, add, remove, task_status=task_status)


#: Raises ``ValueError`` for a target that is not an ``http(s)://host`` URL; the config check and
#: targets files use it to reject bad targets where they are written.
check_target = check_http_url


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> EtcdProbingProbe:
    return EtcdProbingProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
