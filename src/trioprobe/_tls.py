"""One SSL context per process, shared by every HTTP client trioprobe builds.

Building a verifying ``ssl.SSLContext`` (loading the system CA bundle) costs tens of
milliseconds of CPU and about 1 MiB; it is most of what a default ``httpx.AsyncClient()`` costs.
A client given a ready context costs ~60 µs. So the probes, the Prober, ``EtcdLog`` and the
InfluxDB surfacer all pass one of the two contexts below to httpx instead of ``verify=True``.

The contexts are built once, lazily, under a lock (so two threads never build two). Code on the
event loop should ``await load_ssl_context()`` before it starts probing: the first build then
happens in a worker thread, never inside a probe's deadline. Sharing is safe: an ``SSLContext``
is thread-safe once configured, and nothing here changes it after it is built.
"""

from __future__ import annotations

import ssl
import threading

import trio

__all__ = ["client_context", "load_ssl_context", "ssl_context"]

_lock = threading.Lock()
_contexts: dict[bool, ssl.SSLContext] = {}


def _build(verify: bool) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context()
    # verify_tls = false: encrypt, but accept any certificate (a probe of a self-signed endpoint).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ssl_context(verify: bool = True) -> ssl.SSLContext:
    """The process's shared client context (verifying, or not); built on first use.

    Synchronous and possibly slow the first time (see the module docstring): call it from a
    thread or at start-up, or use :func:`load_ssl_context` from async code.
    """
    context = _contexts.get(verify)
    if context is None:
        with _lock:
            context = _contexts.get(verify)
            if context is None:
                context = _contexts[verify] = _build(verify)
    return context


async def load_ssl_context(verify: bool = True) -> ssl.SSLContext:
    """:func:`ssl_context`, with the first build in a worker thread so the event loop runs on."""
    context = _contexts.get(verify)
    if context is None:
        context = await trio.to_thread.run_sync(ssl_context, verify)
    return context


def client_context(
    *,
    ca_file: str | None = None,
    verify: bool = True,
    client_cert: tuple[str, str] | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """A client context of a probe's own, for what the shared ones cannot be: a CA bundle, a
    client certificate (cert and key files), or ALPN protocols of its own.

    Synchronous and slow (it reads and parses certificate files): build it once, in a worker
    thread, before the probe reports ready.
    """
    context = ssl.create_default_context(cafile=ca_file or None)
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context
