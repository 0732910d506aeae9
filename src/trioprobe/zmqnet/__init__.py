"""ZeroMQ request/reply on Trio: a native socket wrapper, REP and ROUTER servers, a Lazy Pirate
client and a closed-loop benchmark (a Trio port of bbengfort's ``rtreq``).

Usable on its own: nothing here imports the rest of trioprobe but its rate-limited log helper
(``trioprobe._ratelog``, standard library only).
"""

from .benchmark import BenchmarkCounters, BenchmarkResult, benchmark
from .client import Client, Transport, TransportFactory, dealer_transport, new_identity
from .errors import (
    MessageDroppedError,
    MessageTooLargeError,
    ProtocolError,
    RemoteError,
    ReplyTooLargeError,
    ZmqNetError,
)
from .histogram import LatencyHistogram
from .server import (
    DEFAULT_ADDR,
    DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_WORKERS,
    OTHER_CLIENTS,
    Handler,
    RepServer,
    RouterServer,
    ServerMetrics,
)
from .socket import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_MESSAGE_SIZE,
    Socket,
    check_endpoint,
    shared_context,
)
from .wire import ERROR_MARKER

__all__ = [
    # socket
    "Socket",
    "shared_context",
    "check_endpoint",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_FRAMES",
    # servers
    "RepServer",
    "RouterServer",
    "ServerMetrics",
    "Handler",
    "DEFAULT_ADDR",
    "DEFAULT_HANDLER_TIMEOUT",
    "DEFAULT_WORKERS",
    "DEFAULT_MAX_CLIENTS",
    "OTHER_CLIENTS",
    "ERROR_MARKER",
    # client
    "Client",
    "Transport",
    "TransportFactory",
    "dealer_transport",
    "new_identity",
    # benchmark
    "benchmark",
    "BenchmarkResult",
    "BenchmarkCounters",
    "LatencyHistogram",
    # errors
    "ZmqNetError",
    "MessageDroppedError",
    "RemoteError",
    "ProtocolError",
    "MessageTooLargeError",
    "ReplyTooLargeError",
]
