"""The status page: overview, per-target detail, JSON API and badges, rendered on the server.

No script and no external asset (deployments often have no internet); every string that comes
from a target list or an error is escaped. With ``[history]`` the page shows uptime over 24 h
and 30 d, a 90-day bar and latency charts from the SQLite store; without it, the last hour
from memory. See docs/history.md and docs/alerting.md.
"""

from .app import StatusPage, render_html, render_json
from .svg import badge, sparkline

__all__ = ["StatusPage", "badge", "render_html", "render_json", "sparkline"]
