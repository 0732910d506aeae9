"""ZeroMQ request/reply on Trio: a native socket wrapper, REP and ROUTER servers, a Lazy Pirate
client and a closed-loop benchmark (a Trio port of bbengfort's ``rtreq``).

Usable on its own: nothing here imports the rest of trioprobe.
"""

from .socket import DEFAULT_MAX_MESSAGE_SIZE, SAFETY_NET, Socket, shared_context

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "SAFETY_NET",
    "Socket",
    "shared_context",
]
