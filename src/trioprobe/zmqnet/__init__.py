"""ZeroMQ request/reply on Trio: a native socket wrapper, REP and ROUTER servers, a Lazy Pirate
client and a closed-loop benchmark (a Trio port of bbengfort's ``rtreq``).

Usable on its own: nothing here imports the rest of trioprobe.
"""

from .benchmark import BenchmarkCounters, BenchmarkResult, benchmark
from .client import Client, Transport, TransportFactory, dealer_transport, new_identity
from .errors import MessageDroppedError, ProtocolError, RemoteError, ZmqNetError
from .histogram import LatencyHistogram
from .server import (
    DEFAULT_ADDR,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_WORKERS,
    OTHER_CLIENTS,
    Handler,
    RepServer,
    RouterServer,
    ServerMetrics,
)
from .socket import DEFAULT_MAX_MESSAGE_SIZE, Socket, shared_context
from .wire import ERROR_MARKER

__all__ = [
    # socket
    "Socket",
    "shared_context",
    "DEFAULT_MAX_MESSAGE_SIZE",
    # servers
    "RepServer",
    "RouterServer",
    "ServerMetrics",
    "Handler",
    "DEFAULT_ADDR",
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
]
