"""The spec classes: the config keys every probe, surfacer, alert and the status page share.

A leaf module (it imports only attrs and :mod:`trioprobe.metrics`): probe types, surfacers and
:mod:`trioprobe.config` all import it, so a probe type of your own needs nothing from the config
parser, and the config parser can look probe types up without an import cycle.
:mod:`trioprobe.config` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from ._options import path_field
from .metrics import Distribution

__all__ = [
    "DEFAULT_SURFACER_BUFFER",
    "AlertSpec",
    "HistorySpec",
    "EtcdSDSpec",
    "LatencyBuckets",
    "MaintenanceSpec",
    "ProbeSpec",
    "ReloadSpec",
    "StatusSpec",
    "SurfacerSpec",
]


@attrs.frozen
class LatencyBuckets:
    """Export latency as a distribution: explicit ``bounds``, or exponential buckets."""

    bounds: tuple[float, ...] = ()
    base: float = 2.0
    scale: float = 1.0
    count: int = 20

    def distribution(self, unit: float = 1.0) -> Distribution:
        """The buckets, with bounds given in ``unit`` (seconds per unit) turned into seconds."""
        # Divide by the (whole) number of units per second: 100000 us / 1e6 is 0.1 exactly,
        # while 100000 * 1e-6 is 0.09999999999999999, which would show in every `le` label.
        per_second = round(1 / unit)
        if self.bounds:
            return Distribution.explicit(b / per_second for b in self.bounds)
        return Distribution.exponential(
            base=self.base, scale=self.scale / per_second, count=self.count
        )


@attrs.frozen
class EtcdSDSpec:
    """``etcd_sd = { endpoints = [...], prefix = "..." }``: every key under ``prefix`` is a
    target (the key without the prefix), its value optional JSON labels (docs/targets.md)."""

    endpoints: tuple[str, ...]
    prefix: str


@attrs.frozen
class ProbeSpec:
    """The keys every probe has, whatever its type."""

    name: str
    type: str
    targets: tuple[str, ...] = ()
    #: A file with one target per line (``#`` starts a comment); re-read when it changes.
    targets_file: str | None = None
    #: Prometheus file_sd file (JSON, or YAML by its .yml/.yaml extension); see docs/targets.md.
    file_sd: str | None = None
    #: Prometheus HTTP SD URL, fetched every ``refresh_interval`` seconds.
    http_sd: str | None = None
    #: DNS names resolved (``dns_sd_type`` records) at their TTL.
    dns_sd: tuple[str, ...] = ()
    dns_sd_type: Literal["SRV", "A", "AAAA"] = "SRV"
    #: The port of A/AAAA targets (SRV records carry their own).
    dns_sd_port: int | None = None
    #: ``host[:port]`` of the DNS server to ask; the system's resolvers when not given.
    dns_sd_server: str | None = None
    etcd_sd: EtcdSDSpec | None = None
    #: Seconds between http_sd fetches; the longest wait between dns_sd resolutions.
    refresh_interval: float = 30.0
    #: How a discovered address becomes this probe's target (``"http://{address}/health"``).
    target_template: str = "{address}"
    #: Seconds between probes of a target.
    interval: float = 2.0
    #: Seconds a single probe may take.
    timeout: float = 1.0
    #: Seconds: coalesce the targets' ticks onto a grid this wide, so the targets due in one
    #: slot cost one wake-up of the event loop (less CPU at thousands of targets; the probes of
    #: a slot start together and queue behind each other). 0: each target has its own timer.
    #: For the types on the shared schedule (docs/probing.md, "Coalesced ticks").
    tick_slot: float = 0.0
    #: Seconds between exports; default ``max(10, interval, timeout)``, as cloudprober.
    stats_interval: float | None = None
    #: The unit ``latency_buckets`` bounds are written in; latency is exported in seconds.
    latency_unit: Literal["ns", "us", "ms", "s"] = "us"
    latency_buckets: LatencyBuckets | None = None
    #: Extra labels on every exported metric of this probe.
    labels: Mapping[str, str] = attrs.field(factory=dict)
    #: The share of probes that should succeed (``0.999``); with ``[history]`` the error budget
    #: and burn rates are exported (docs/history.md).
    slo: float | None = None
    #: Seconds the SLO is measured over (30 days).
    slo_window: float = 30 * 86400.0

    @property
    def export_interval(self) -> float:
        if self.stats_interval is not None:
            return self.stats_interval
        return max(10.0, self.interval, self.timeout)


#: A surfacer's ``buffer`` when its table sets none: exports queued before the fan-out drops.
DEFAULT_SURFACER_BUFFER = 10000


@attrs.frozen
class SurfacerSpec:
    """The common keys of one ``[[surfacer]]`` table: its type and its export buffer."""

    type: str
    #: Exports buffered for this surfacer before the fan-out starts dropping (and counting).
    buffer: int = DEFAULT_SURFACER_BUFFER


@attrs.frozen
class AlertSpec:
    """An ``[[alert]]`` table: when a probe's targets count as down, and whom to tell.

    See docs/alerting.md. A target goes down after ``failure_threshold`` consecutive failures, or
    when ``failures`` of its last ``total`` results failed (the window condition, off while
    ``total`` is 0); it comes back up after ``success_threshold`` consecutive successes once the
    window condition no longer holds. With ``max_latency`` (seconds) a slower success counts as a
    failure.
    """

    name: str
    #: The probes this alert watches; empty means every probe no other alert names.
    probes: tuple[str, ...] = ()
    failure_threshold: int = 3
    success_threshold: int = 2
    failures: int = 0
    total: int = 0
    max_latency: float | None = None
    #: With ``[history]`` and the probe's ``slo``: down while the error budget burns faster than
    #: this over ``burn_rate_window`` (14.4 over 1 h spends 2 % of 30 days' budget in an hour).
    burn_rate_above: float | None = None
    burn_rate_window: Literal["1h", "6h"] = "1h"
    #: Seconds between re-notifications of a firing alert; 0 turns repeats off.
    repeat_interval: float = 3600.0
    #: Log every fire/resolve (logger ``trioprobe.alerting``).
    log: bool = True
    #: argv run on fire/resolve/repeat (never through a shell); ``{alert}``, ``{probe}``,
    #: ``{target}``, ``{event}``, ``{state}``, ``{failures}``, ``{total}``, ``{since}``,
    #: ``{error}``, ``{key}`` and ``{json}`` are replaced in each argument.
    command: tuple[str, ...] = ()
    command_timeout: float = 10.0
    #: URL that gets a JSON POST per fire/resolve/repeat, durably (through a handoff queue).
    webhook: str = ""
    webhook_timeout: float = 10.0
    #: The webhook's queue directory; "" means ``<tmp>/trioprobe-handoff-<uid>/alert-<name>``.
    webhook_queue_dir: str = path_field("")
    #: Alertmanager's base URL (``http://host:9093``): firing alerts are POSTed to its
    #: ``/api/v2/alerts``, re-sent while firing and resolved with ``endsAt``, durably.
    alertmanager: str = ""
    alertmanager_timeout: float = 10.0
    #: Its queue directory; "" means ``<tmp>/trioprobe-handoff-<uid>/alert-<name>-alertmanager``.
    alertmanager_queue_dir: str = path_field("")
    #: The ``severity`` label of the alerts sent to Alertmanager.
    severity: str = "critical"
    #: Probes (``"gw"``) or probe:target pairs (``"gw:10.0.0.1:80"``) this alert's targets
    #: depend on: while one is down they are ``blocked`` and send no notifications.
    depends_on: tuple[str, ...] = ()
    #: In a fleet: how many of a target's live owners must see it down (docs/fleet.md).
    quorum: int = 1


@attrs.frozen
class ReloadSpec:
    """The ``[reload]`` table: reload when the config file changes (docs/config.md, Reload)."""

    watch: bool = False
    #: Seconds between checks of the config file's stamp.
    interval: float = 1.0


@attrs.frozen
class MaintenanceSpec:
    """A ``[[maintenance]]`` table: when notifications for some targets are held.

    Either ``start`` and ``end`` (ISO 8601; UTC without an offset) or ``cron`` (five fields, UTC)
    and ``duration`` (seconds). ``probes``, ``targets`` and ``labels`` (probe labels) narrow its
    scope; each empty means any. See docs/alerting.md.
    """

    name: str
    start: str = ""
    end: str = ""
    cron: str = ""
    duration: float = 0.0
    probes: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict)
    #: Count the window in uptime and SLOs (by default it is left out of them).
    count_in_slo: bool = False


@attrs.frozen
class StatusSpec:
    """The ``[status]`` table: serve the status page (``/status``, ``/status.json``)."""

    host: str = "127.0.0.1"
    #: 0 picks a free port (the CLI prints the URL).
    port: int = 9314
    #: Seconds between the page's own refreshes.
    refresh: int = 5
    #: The bearer token that write endpoints (acknowledge) require, read from this environment
    #: variable or file at start-up; without one, writes are allowed only on a loopback address.
    token_env: str = ""
    token_file: str = path_field("")


@attrs.frozen
class HistorySpec:
    """The ``[history]`` table: keep per-target history in SQLite (docs/history.md)."""

    #: The database file; "" means ``trioprobe-history.sqlite`` beside the config.
    path: str = path_field("")
    #: ``false`` turns history off (a config file without ``[history]`` has it on).
    enabled: bool = True
    #: Seconds per finest row (60: per-minute rollups); it must divide an hour. Smaller only
    #: for tests: the retention of this tier is counted in seconds all the same.
    rollup: int = 60
    #: How long each tier is kept: rollup periods (minutes) for 48 hours, hours for 90 days,
    #: days for 730 days (2 years).
    keep_minutes_hours: int = 48
    keep_hours_days: int = 90
    keep_days_days: int = 730
