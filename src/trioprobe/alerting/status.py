"""The status page moved to :mod:`trioprobe.statuspage`; these names keep working from here."""

from ..statuspage import StatusPage, render_html, render_json, sparkline

__all__ = ["StatusPage", "render_html", "render_json", "sparkline"]
