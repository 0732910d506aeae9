"""History that survives restarts: per-target rollups, incidents, uptime and SLOs in SQLite.

* :class:`HistoryService` records a runner's results and transitions (``[history]`` in the
  config; ``runner.history``), downsamples and prunes, and keeps a :class:`Summary`;
* :mod:`trioprobe.history.store` is the synchronous SQLite layer (only ever called in threads);
* :mod:`trioprobe.history._windows` holds the window and SLO arithmetic.

See docs/history.md.
"""

from ._windows import Counts, burn_rate, error_budget_remaining
from .service import DEFAULT_BOUNDS, HistoryService, compute_summary
from .store import Retention, Store, open_store
from .summary import EMPTY as EMPTY_SUMMARY
from .summary import WINDOWS, DayFigure, Incident, Summary, TargetSummary, quantile

__all__ = [
    "DEFAULT_BOUNDS",
    "EMPTY_SUMMARY",
    "WINDOWS",
    "Counts",
    "DayFigure",
    "HistoryService",
    "Incident",
    "Retention",
    "Store",
    "Summary",
    "TargetSummary",
    "burn_rate",
    "compute_summary",
    "error_budget_remaining",
    "open_store",
    "quantile",
]
