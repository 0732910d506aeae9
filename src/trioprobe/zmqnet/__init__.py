"""ZeroMQ request/reply on Trio: a native socket wrapper, REP and ROUTER servers, a Lazy Pirate
client and a closed-loop benchmark (a Trio port of bbengfort's ``rtreq``).

Usable on its own: nothing here imports the rest of trioprobe but its small leaf modules (the
rate-limited log helper and the histogram type). Less used names stay importable from the
submodules: ``sockets`` (``DEFAULT_MAX_MESSAGE_SIZE``, ``DEFAULT_MAX_FRAMES``), ``server``
(``Handler``, ``DEFAULT_ADDR``, ``DEFAULT_WORKERS``, ``DEFAULT_MAX_CLIENTS``,
``DEFAULT_HANDLER_TIMEOUT``, ``OTHER_CLIENTS``), ``client`` (``Transport``, ``TransportFactory``,
``dealer_transport``, ``new_identity``), ``latency`` (``LatencyStats``) and ``wire``
(``ERROR_MARKER``).
"""

from .benchmark import BenchmarkCounters, BenchmarkResult, benchmark
from .client import Client
from .errors import (
    MessageDroppedError,
    MessageTooLargeError,
    ProtocolError,
    RemoteError,
    ReplyTooLargeError,
    ZmqNetError,
)
from .server import RepServer, RouterServer, ServerMetrics
from .sockets import Socket, check_endpoint, shared_context, shared_context_started

__all__ = [
    # socket
    "Socket",
    "shared_context",
    "shared_context_started",
    "check_endpoint",
    # servers
    "RepServer",
    "RouterServer",
    "ServerMetrics",
    # client
    "Client",
    # benchmark
    "benchmark",
    "BenchmarkResult",
    "BenchmarkCounters",
    # errors
    "ZmqNetError",
    "MessageDroppedError",
    "RemoteError",
    "ProtocolError",
    "MessageTooLargeError",
    "ReplyTooLargeError",
]
