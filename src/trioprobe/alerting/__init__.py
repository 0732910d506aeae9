"""Health state, alerting and a status page: know when a target is down, tell someone, show it.

* :class:`Health` keeps every probe x target's state (``unknown``/``up``/``down``) from its
  results, and lets a Trio app follow it: :meth:`Health.subscribe` (a channel of
  :class:`Transition` values) and :meth:`Health.wait_until`.
* :class:`AlertingService` adds notifications (command, durable webhook and Alertmanager, log),
  the ``up`` / ``alert_firing`` / ``transitions`` metrics and the status page to a
  :class:`~trioprobe.Runner` (``runner.alerting``; ``runner.health`` is its :class:`Health`).

See docs/alerting.md.
"""

from .alertmanager import AlertmanagerNotifier
from .health import Health, TargetStatus
from .history import History
from .notify import CommandNotifier, Notice, WebhookError, WebhookNotifier
from .service import AlertingService
from .state import DOWN, UNKNOWN, UP, AlertRule, State, TargetHealth, Transition
from .status import StatusPage, render_html, render_json

__all__ = [
    "DOWN",
    "UNKNOWN",
    "UP",
    "AlertRule",
    "AlertmanagerNotifier",
    "AlertingService",
    "CommandNotifier",
    "Health",
    "History",
    "Notice",
    "State",
    "StatusPage",
    "TargetHealth",
    "TargetStatus",
    "Transition",
    "WebhookError",
    "WebhookNotifier",
    "render_html",
    "render_json",
]
