"""A Trio-native wrapper over a pyzmq socket.

pyzmq has no Trio integration, and the obvious one (``wait_readable(sock.FD)`` then ``recv``) hangs
under load, because ``ZMQ_FD`` is an *edge-triggered* notification that **every** libzmq call on the
socket may drain, including reading ``EVENTS``. The rules this module follows (measured in
``trio-notes.md`` §1):

* Every zmq call is non-blocking (``DONTWAIT``). libzmq applies the high-water mark to whole
  messages, so a non-blocking multipart send or receive is atomic and needs no lock.
* Only one task at a time waits on the fd (Trio allows no more). That *owner* may block only right
  after it read ``EVENTS`` and saw "not ready"; everybody else parks on a ``ParkingLot``. When the
  owner wakes it hands the role over by unparking everyone, who re-read ``EVENTS``.
* Every ``EVENTS`` read goes through :meth:`Socket._events`: since that read may have consumed the
  edge some other waiter was sleeping on, it *kicks* (unparks everyone and cancels the owner's wait)
  whenever it sees a flag that somebody waits for. It kicks only then, so there is no ping-pong.
* Optionally (``safety_net=0.25``, as CZTop does) the owner's wait is capped and ``EVENTS``
  re-read, so an edge missed for a reason we do not know about would cost a delay, not a hang. It
  is off by default: the stress tests run without it, and a cancel scope per wait costs ~10%.
* Closing calls ``notify_closing(fd)`` *before* closing the zmq socket (libzmq's reaper closes
  the fd and the number can be reused), so every waiter gets :class:`trio.ClosedResourceError`.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import trio
import zmq

from .errors import MessageTooLargeError

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Socket",
    "check_endpoint",
    "shared_context",
    "shared_context_started",
]

#: Largest message a socket accepts by default (``ZMQ_MAXMSGSIZE``): a peer sending more is
#: disconnected instead of making us buffer it. Probing messages are tiny. libzmq applies it to
#: each *frame*; the servers also apply it to the whole message (see ``try_recv_multipart``).
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
#: Most frames the servers accept in one message: a REQ_CORRELATE envelope and a body are 4.
DEFAULT_MAX_FRAMES: Final = 8
#: Longest pause, in seconds, between retries of a send that EVENTS says can go but libzmq
#: refuses (a ROUTER whose one peer is full, see ``send_multipart``).
_MAX_SEND_BACKOFF: Final = 0.05


# IntFlag arithmetic is slow (about 15% of a round trip): use plain ints on the hot path.
_POLLIN: Final = int(zmq.POLLIN)
_POLLOUT: Final = int(zmq.POLLOUT)
_DONTWAIT: Final = int(zmq.DONTWAIT)
_SNDMORE_DONTWAIT: Final = int(zmq.SNDMORE) | int(zmq.DONTWAIT)
_EVENTS: Final = int(zmq.EVENTS)

_context: zmq.Context[zmq.Socket[bytes]] | None = None
_context_pid = 0
_context_lock = threading.Lock()


def _reason(exc: zmq.ZMQError) -> str:
    """The plain reason: pyzmq's own ``str(exc)`` repeats the address as ``(addr='...')``."""
    return zmq.strerror(exc.errno) if exc.errno is not None else str(exc)


def check_endpoint(addr: str) -> None:
    """Refuse a ``tcp://`` endpoint whose port libzmq would misread.

    libzmq parses the port with ``strtol`` and keeps the low 16 bits, so ``tcp://*:99999`` binds
    some other port (or a random one) without an error. ``*`` and ``0`` (any free port) and
    1-65535 pass; other transports are left to libzmq. Raises ``ValueError`` naming the port.
    """
    if not addr.startswith("tcp://"):
        return
    host, sep, port = addr[len("tcp://") :].rpartition(":")
    if not sep or not host:
        raise ValueError(f"ZeroMQ endpoint {addr!r} needs host:port")
    if port == "*":
        return
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"ZeroMQ endpoint {addr!r}: port {port!r} is not a number from 0 to 65535")


def shared_context_started() -> bool:
    """Whether this process has started its shared context (and so libzmq's I/O threads and
    fds, which live as long as the process): for leak checks that must tell them from a leak."""
    return _context is not None and _context_pid == os.getpid()


def shared_context() -> zmq.Context[zmq.Socket[bytes]]:
    """The one ``zmq.Context`` of this process (re-created in a forked child).

    One context per process is what libzmq expects: each context owns an I/O thread, and sockets
    of different contexts cannot use ``inproc://`` to talk to each other. It is never terminated
    explicitly; every socket uses linger 0, so nothing can make process exit hang on it.
    """
    global _context, _context_pid
    pid = os.getpid()
    if _context is None or _context_pid != pid:
        with _context_lock:
            if _context is None or _context_pid != pid:
                _context = zmq.Context()
                _context_pid = pid
    return _context


class Socket(trio.abc.AsyncResource):
    """A pyzmq socket usable from any number of Trio tasks at once.

    Create it, :meth:`bind` or :meth:`connect` it, then ``await`` :meth:`send_multipart` and
    :meth:`recv_multipart`. :meth:`try_send_multipart` and :meth:`try_recv_multipart` are the
    synchronous, checkpoint-free halves, for loops that drain every ready message before waiting
    (a checkpoint per message halves a server's rate).

    Cancellation: a cancelled send or receive did not happen, and leaves the socket usable; a send
    or receive that returned did happen, because the final checkpoint is shielded.
    """

    def __init__(
        self,
        socket_type: int,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        identity: bytes | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        hwm: int | None = None,
        router_mandatory: bool = True,
        safety_net: float | None = None,
    ) -> None:
        ctx = context if context is not None else shared_context()
        sock: zmq.Socket[bytes] = ctx.socket(socket_type)
        try:
            # linger 0: closing must never wait for a peer that may be gone.
            sock.setsockopt(zmq.LINGER, 0)
            if max_message_size >= 0:
                sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
            if hwm is not None:
                sock.setsockopt(zmq.SNDHWM, hwm)
                sock.setsockopt(zmq.RCVHWM, hwm)
            if identity is not None:
                sock.setsockopt(zmq.IDENTITY, identity)
            if socket_type == zmq.ROUTER and router_mandatory:
                # Without it a ROUTER silently drops messages at the HWM or to unknown peers;
                # with it those become EAGAIN (we wait) and EHOSTUNREACH (the caller decides).
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            if socket_type == zmq.REQ:
                # A cancelled REQ recv otherwise leaves the socket in a state where every later
                # send fails with EFSM.
                sock.setsockopt(zmq.REQ_RELAXED, 1)
                sock.setsockopt(zmq.REQ_CORRELATE, 1)
            fd = cast(int, sock.getsockopt(zmq.FD))
        except BaseException:
            sock.close(linger=0)
            raise
        self._sock = sock
        self._fd = fd
        # pyzmq's sugar send_multipart/recv_multipart cost ~4 us per message in IntFlag
        # arithmetic and argument checks; the backend's methods with int flags do not.
        backend = cast(Any, zmq.backend.Socket)
        self._send_frame: Callable[[bytes, int], object] = backend.send.__get__(sock)
        self._recv_frame: Callable[[int, bool], zmq.Frame] = backend.recv.__get__(sock)
        self._get: Callable[[int], int] = backend.get.__get__(sock)
        self._closed = False
        self._lot = trio.lowlevel.ParkingLot()
        self._owned = False
        #: Seconds after which an owner re-reads EVENTS even without an fd edge (None: never).
        self.safety_net = safety_net
        self._want_in = 0
        self._want_out = 0
        self.socket_type = socket_type

    # -- setup ---------------------------------------------------------------------------------

    @property
    def zmq_socket(self) -> zmq.Socket[bytes]:
        """The underlying pyzmq socket, for options; never block on it or use it from a thread."""
        return self._sock

    @property
    def closed(self) -> bool:
        return self._closed

    def bind(self, addr: str) -> str:
        """Bind and return the endpoint actually bound (``tcp://127.0.0.1:0`` picks a free port)."""
        self._attach("bind", self._sock.bind, addr)
        return cast(bytes, self._sock.getsockopt(zmq.LAST_ENDPOINT)).decode()

    def connect(self, addr: str) -> None:
        """Connect (libzmq connects in the background and reconnects by itself)."""
        self._attach("connect", self._sock.connect, addr)

    def _attach(self, verb: str, call: Callable[[str], object], addr: str) -> None:
        # Checked here: libzmq keeps only a port's low 16 bits, so a bad port binds another.
        self._check_open()
        try:
            check_endpoint(addr)
        except ValueError as exc:
            raise OSError(errno.EINVAL, f"cannot {verb} ZeroMQ socket: {exc}") from None
        try:
            call(addr)
        except zmq.ZMQError as exc:
            raise OSError(
                exc.errno, f"cannot {verb} ZeroMQ socket to {addr!r}: {_reason(exc)}"
            ) from exc

    # -- I/O -----------------------------------------------------------------------------------

    def try_send_multipart(self, frames: Sequence[bytes]) -> bool:
        """Send now if the socket can take the message; False (nothing sent) if it cannot."""
        if self._closed:
            raise trio.ClosedResourceError("ZeroMQ socket is closed")
        # DONTWAIT on the first frame is the whole decision: libzmq checks the HWM per message,
        # so once the first frame is accepted the rest of the message is too.
        if not frames:
            raise ValueError("a ZeroMQ message needs at least one frame")
        send = self._send_frame
        last = len(frames) - 1
        try:
            send(frames[0], _SNDMORE_DONTWAIT if last else _DONTWAIT)
        except zmq.Again:
            # A refused send is a libzmq call too and may have drained the fd edge another
            # task sleeps on (a ROUTER server dropping a reply froze its receiver this way).
            if self._want_in or self._want_out:
                self._events()
            return False
        except zmq.ZMQError:
            if self._want_in or self._want_out:
                self._events()
            raise
        for i in range(1, last + 1):
            send(frames[i], _SNDMORE_DONTWAIT if i < last else _DONTWAIT)
        if self._want_in or self._want_out:
            self._events()
        return True

    def try_recv_multipart(self, max_frames: int = -1, max_size: int = -1) -> list[bytes] | None:
        """Return the next message if one is ready, else None. Never waits, never checkpoints.

        With ``max_frames`` or ``max_size`` (bytes, all frames together; -1 means no limit) a
        message over either is still read to its end, so the next one starts in step, but its
        frames past the limit are dropped uncopied, and :class:`MessageTooLargeError` carries
        the frames kept (the routing envelope, for an error reply) and the real totals.
        """
        if self._closed:
            raise trio.ClosedResourceError("ZeroMQ socket is closed")
        recv = self._recv_frame
        try:
            frame = recv(_DONTWAIT, False)
        except zmq.Again:
            # May have drained the edge another waiter sleeps on, like a refused send.
            if self._want_in or self._want_out:
                self._events()
            return None
        # Frames (copy=False) carry their own "more" flag; asking the socket for RCVMORE instead
        # costs an enum conversion inside pyzmq per frame. The remaining frames of a message
        # arrive with its first one.
        frames = [frame.bytes]
        if max_frames < 0 and max_size < 0:
            while frame.more:
                frame = recv(_DONTWAIT, False)
                frames.append(frame.bytes)
        else:
            count, size, over = 1, len(frames[0]), False
            while frame.more:
                frame = recv(_DONTWAIT, False)
                count += 1
                size += len(frame)
                over = over or (0 <= max_frames < count) or (0 <= max_size < size)
                if not over:
                    frames.append(frame.bytes)
            over = over or (0 <= max_frames < count) or (0 <= max_size < size)
            if over:
                if self._want_in or self._want_out:
                    self._events()
                raise MessageTooLargeError(frames, count, size, max_frames, max_size)
        if self._want_in or self._want_out:
            self._events()
        return frames

    async def send_multipart(self, frames: Sequence[bytes]) -> None:
        """Send one message, waiting while the high-water mark is reached.

        A ROUTER reports POLLOUT when *any* peer has room, so for a message to a full peer
        EVENTS says "go" and libzmq says EAGAIN, forever if that peer never reads. Then we back
        off in real sleeps (1 ms doubling to 50 ms) rather than spin: the wait stays
        cancellable and other tasks run. Servers should not wait at all (they drop, counted).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._send_waiting(frames)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _send_waiting(self, frames: Sequence[bytes]) -> None:
        backoff = 0.001
        while not self.try_send_multipart(frames):
            if not await self._wait(_POLLOUT):
                await trio.sleep(backoff)
                backoff = min(2 * backoff, _MAX_SEND_BACKOFF)

    async def recv_multipart(self) -> list[bytes]:
        """Receive one whole message."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while (frames := self.try_recv_multipart()) is None:
            await self._wait(_POLLIN)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return frames

    async def request(self, frames: Sequence[bytes]) -> list[bytes]:
        """Send one message, then receive the next one, with one scheduler pass in all.

        For a DEALER doing request/reply: it saves the checkpoints (and the failing receive)
        that separate ``send_multipart`` and ``recv_multipart`` calls would cost. If cancelled
        after the send, the reply is still on its way: the caller must reset the socket (as
        :class:`~trioprobe.zmqnet.Client` does) or expect a stale reply on its next receive.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._send_waiting(frames)
        while True:
            # Wait first: a reply can hardly be there already, and an EVENTS read is cheaper
            # than a receive that fails with EAGAIN.
            blocked = await self._wait(_POLLIN)
            reply = self.try_recv_multipart()
            if reply is not None:
                if not blocked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return reply

    async def wait_readable(self, *, confirm: bool = True) -> bool:
        """Return once a message can be received (another task may take it first).

        Returns whether it had to block; if not, it did not checkpoint either. With
        ``confirm=False`` a wake-up on the fd returns without reading ``EVENTS`` again: for a
        caller that tries to receive next anyway (and handles "nothing yet"), that read is one
        libzmq call and one enum conversion inside pyzmq too many on every request's path. The
        receive itself processes libzmq's pending commands, and the next wait reads ``EVENTS``
        before it blocks, so no edge is lost.
        """
        return await self._wait(_POLLIN, confirm)

    async def wait_writable(self) -> bool:
        """Return once a message can be sent (another task may take the room first).

        Returns whether it had to block; if not, it did not checkpoint either.
        """
        return await self._wait(_POLLOUT)

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close now: every task waiting on the socket gets ``trio.ClosedResourceError``."""
        if self._closed:
            return
        self._closed = True
        # Wake waiters before libzmq's reaper closes the fd and its number gets reused.
        trio.lowlevel.notify_closing(self._fd)
        self._lot.unpark_all()
        self._sock.close(linger=0)

    async def aclose(self) -> None:
        """Close (even when cancelled: the checkpoint comes after the close)."""
        self.close()
        await trio.lowlevel.checkpoint()

    # -- the waiting protocol ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("ZeroMQ socket is closed")

    def _events(self) -> int:
        """Read ``EVENTS`` and kick the waiters if it shows something one of them wants.

        The read itself may have drained the fd edge a waiter is sleeping on, so a waiter that
        wants a flag we now see set must be told, or it could sleep forever.
        """
        events = self._get(_EVENTS)
        if (events & _POLLIN and self._want_in) or (events & _POLLOUT and self._want_out):
            self._lot.unpark_all()
            if self._owned:
                # Wake the owner out of wait_readable. notify_closing is the cheapest way
                # Trio offers (a cancel scope around every wait cost ~5 us per message, and
                # kicks are rare): it raises ClosedResourceError in the owner, which sees the
                # socket still open and re-reads EVENTS; its next wait re-registers the fd.
                trio.lowlevel.notify_closing(self._fd)
        return events

    async def _wait(self, flag: int, confirm: bool = True) -> bool:
        """Wait until ``EVENTS`` shows ``flag`` (or, without ``confirm``, until the first
        wake-up); return whether we had to block for it.

        Raises ClosedResourceError if the socket closes.
        """
        blocked = False
        while True:
            self._check_open()
            # Read before registering as a waiter, so this read kicks only *other* waiters.
            if self._events() & flag:
                return blocked
            blocked = True
            if flag == _POLLIN:
                self._want_in += 1
            else:
                self._want_out += 1
            try:
                if not self._owned:
                    # Owner: nothing touched the socket since our EVENTS read, so blocking on the
                    # edge is safe now.
                    self._owned = True
                    try:
                        if self.safety_net is None:
                            await trio.lowlevel.wait_readable(self._fd)
                        else:
                            with trio.move_on_after(self.safety_net):
                                await trio.lowlevel.wait_readable(self._fd)
                    except trio.ClosedResourceError:
                        if self._closed:
                            raise
                        # Not closed: a kick (see _events: notify_closing). Re-read EVENTS.
                    finally:
                        self._owned = False
                        # Hand the fd over: whoever still needs it re-reads EVENTS and one of
                        # them becomes the next owner (a lone owner skips the empty hand-over).
                        if self._lot:
                            self._lot.unpark_all()
                else:
                    await self._lot.park()
            finally:
                if flag == _POLLIN:
                    self._want_in -= 1
                else:
                    self._want_out -= 1
            if not confirm:
                self._check_open()
                return True
