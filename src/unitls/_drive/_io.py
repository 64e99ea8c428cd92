"""Transports the driver runs over, and deadlines.

A transport moves ciphertext and never blocks: ``recv``/``send`` raise ``BlockingIOError`` when
they cannot proceed at once, and ``wait`` blocks until the transport is ready (or a timeout).
All waiting happens in ``wait``, so a deadline bounds every operation as a whole.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from typing import Protocol

from .._errors import TLSError, TLSTimeoutError

__all__ = ["Deadline", "MemoryIO", "SocketIO", "Transport", "wait_fd"]

_POLL = hasattr(select, "poll")


class Deadline:
    """When an operation must end: never (``timeout=None``), at once (``0``: non-blocking) or
    ``timeout`` seconds after it started."""

    __slots__ = ("_at", "timeout", "what")

    def __init__(self, timeout: float | None, what: str = "operation", spent: float = 0.0) -> None:
        """``spent``: seconds of the operation already gone (started before this deadline)."""
        self.timeout = timeout
        self.what = what
        self._at = time.monotonic() + timeout - spent if timeout else 0.0

    @property
    def nonblocking(self) -> bool:
        return self.timeout == 0

    def remaining(self) -> float | None:
        """Seconds left (None: no limit); raises ``TLSTimeoutError`` once the time is up."""
        if self.timeout is None:
            return None
        left = self._at - time.monotonic()
        if left <= 0:
            raise TLSTimeoutError(f"the TLS {self.what} timed out (after {self.timeout:g} s)")
        return left

    def __repr__(self) -> str:
        return f"<Deadline {self.what} timeout={self.timeout}>"


#: A deadline that has already passed (non-blocking operations).
NOW = Deadline(0.0)


class Transport(Protocol):
    """What a driver shell supplies: non-blocking moves of ciphertext and a way to wait."""

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes (``b""``: EOF); ``BlockingIOError`` when none are there yet."""
        ...

    def send(self, data: memoryview) -> int:
        """Send some of ``data`` (at least one byte); ``BlockingIOError`` when none fits."""
        ...

    def wait(self, read: bool, write: bool, timeout: float | None) -> bool:
        """Block until readable (``read``) or writable (``write``); False after ``timeout``."""
        ...

    def buffered(self) -> bytes:
        """Ciphertext that is already here (no I/O): what ``pending()`` may decrypt."""
        ...


def wait_fd(fd: int, read: bool, write: bool, timeout: float | None) -> bool:
    """poll() one descriptor; True when ready (or in error: the next call reports it)."""
    if _POLL:
        poller = select.poll()
        poller.register(fd, (select.POLLIN if read else 0) | (select.POLLOUT if write else 0))
        ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
        return bool(poller.poll(ms))
    r, w, x = select.select([fd] if read else [], [fd] if write else [], [fd], timeout)
    return bool(r or w or x)


class SocketIO:
    """A socket the driver's shell owns, as a transport: kept non-blocking (the user's timeout
    lives in the shell), so an attempt is one system call and every wait is a ``poll`` bounded
    by the operation's deadline."""

    __slots__ = ("closing", "recv", "send", "sock", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        # The socket's own methods: BlockingIOError when they cannot proceed at once.
        self.recv = sock.recv
        self.send = sock.send
        self.closing = False  # see stop()
        self.waiting: set[int] = set()  # threads inside wait() (set operations: GIL-atomic)

    def wait(self, read: bool, write: bool, timeout: float | None) -> bool:
        me = threading.get_ident()
        self.waiting.add(me)
        try:
            if self.closing or (fd := self.sock.fileno()) < 0:
                raise TLSError("the TLS socket is closed")
            ready = wait_fd(fd, read, write, timeout)
            if self.closing:  # woken by stop()
                raise TLSError("the TLS socket is closed")
            return ready
        finally:
            self.waiting.discard(me)

    def stop(self) -> None:
        """Called just before the shell closes the socket: threads waiting on it are woken (the
        socket is shut down under them) and raise ``TLSError``, as on the OpenSSL engine,
        instead of waiting until the peer next sends, or forever."""
        self.closing = True
        if self.waiting:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def buffered(self) -> bytes:
        return b""


class MemoryIO:
    """Two ``ssl.MemoryBIO``-like objects as a transport (never waits: the caller pumps)."""

    __slots__ = ("incoming", "outgoing")

    def __init__(self, incoming: _BIO, outgoing: _BIO) -> None:
        self.incoming = incoming
        self.outgoing = outgoing

    def recv(self, size: int) -> bytes:
        data = self.incoming.read(size)
        if data or self.incoming.eof:
            return data
        raise BlockingIOError

    def send(self, data: memoryview) -> int:
        return self.outgoing.write(data)

    def wait(self, read: bool, write: bool, timeout: float | None) -> bool:
        raise BlockingIOError("memory transports are driven by their caller")

    def buffered(self) -> bytes:
        return self.incoming.read() if self.incoming.pending else b""


class _BIO(Protocol):
    @property
    def pending(self) -> int: ...
    @property
    def eof(self) -> bool: ...
    def read(self, size: int = -1, /) -> bytes: ...
    def write(self, b: memoryview, /) -> int: ...
