"""``Core`` (the engine and its queues, no I/O) and ``Driver`` (the retry loop over a transport).

The rules both follow are in the package docstring (``unitls._drive``).
"""

from __future__ import annotations

import errno
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING, NoReturn

from .._errors import (
    HandshakeClosedError,
    ProtocolError,
    RaggedEOF,
    TLSConnectionError,
    TLSError,
    TLSTimeoutError,
    WantReadError,
    WantWriteError,
)
from ._io import NOW, Deadline, Transport

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._protocols import TLSBuffer

__all__ = ["Core", "Driver", "map_os_error"]

# Ciphertext taken from the transport per receive (bigger chunks: fewer engine calls).
RECV_SIZE = 256 * 1024
# Plaintext given to the engine per write call (bounds the ciphertext held in memory at once).
WRITE_CHUNK = 256 * 1024
# Plaintext decrypted ahead by pending(): one TLS record.
_RECORD = 16 * 1024
# How long a blocking operation that failed waits to deliver the engine's alert.
_ALERT_WAIT = 1.0

_NO_EOF, _EOF_QUEUED, _EOF_DELIVERED = 0, 1, 2


def map_os_error(exc: OSError, what: str) -> TLSError:
    """The TLSError for a transport failure (the caller chains ``exc``)."""
    if isinstance(exc, TimeoutError):
        return TLSTimeoutError(f"{what}: timed out")
    if isinstance(exc, socket.gaierror):
        return TLSConnectionError(errno.EHOSTUNREACH, f"{what}: cannot resolve host ({exc})")
    reason = exc.strerror or str(exc) or type(exc).__name__
    return TLSConnectionError(exc.errno or errno.EIO, f"{what}: {reason}")


class Core:
    """The engine (a ``TLSBuffer``) with its *backlog* and *eof*; no I/O, no waiting.

    asyncio's protocol uses it directly (events bring the data); ``Driver`` adds a transport.
    """

    __slots__ = (
        "_backlog",
        "_eof",
        "buffer",
        "close_sent",
        "handshake_done",
        "lock",
        "peer_closed",
    )

    def __init__(self, buffer: TLSBuffer) -> None:
        self.buffer = buffer
        self.lock = threading.Lock()  # every engine call
        self._backlog: deque[bytes] = deque()
        self._eof = _NO_EOF
        self.handshake_done = False
        self.peer_closed = False  # the peer's close_notify was read
        self.close_sent = False  # our close_notify was queued

    # -- incoming ciphertext -------------------------------------------------------------------

    @property
    def backlogged(self) -> bool:
        """True while received ciphertext (or the EOF) waits for room in the engine."""
        return bool(self._backlog) or self._eof == _EOF_QUEUED

    @property
    def eof_received(self) -> bool:
        return self._eof != _NO_EOF

    def feed(self, data: Buffer) -> bool:
        """Give received ciphertext to the engine, after the backlog.

        False: the engine is full and ``data`` joined the backlog; stop receiving until
        plaintext has been read (``read`` refills the engine).
        """
        if self._backlog:
            self._backlog.append(bytes(data))
            return False
        try:
            with self.lock:
                self.buffer.process_incoming(data)  # type: ignore[arg-type]
        except WantReadError:
            self._backlog.append(bytes(data))
            return False
        return True

    def feed_eof(self) -> None:
        """The transport ended: tell the engine, after the backlog."""
        if self._eof == _NO_EOF:
            self._eof = _EOF_QUEUED
            if not self._backlog:
                self._deliver_eof()

    def _deliver_eof(self) -> None:
        try:
            with self.lock:
                self.buffer.process_incoming(b"")
        except WantReadError:
            return  # stays queued
        self._eof = _EOF_DELIVERED

    def refill(self) -> bool:
        """Move the backlog, then a queued EOF, into the engine; True if anything went in."""
        moved = False
        backlog = self._backlog
        while backlog:
            try:
                with self.lock:
                    self.buffer.process_incoming(backlog[0])
            except WantReadError:
                return moved
            backlog.popleft()
            moved = True
        if self._eof == _EOF_QUEUED:
            self._deliver_eof()
            moved = moved or self._eof == _EOF_DELIVERED
        return moved

    def starved(self, handshaking: bool) -> bool:
        """The engine raised ``WantReadError``: True to call it again (the backlog went in);
        False when the transport must be read. Raises when no input can ever help."""
        if self.refill():
            return True
        if self._backlog:
            raise ProtocolError(
                "the TLS engine refuses incoming data but has no plaintext to give (engine bug)"
            )
        if self._eof == _EOF_DELIVERED:
            if handshaking:
                raise HandshakeClosedError(
                    "the peer closed the connection during the TLS handshake"
                )
            raise RaggedEOF("the peer closed the connection without a TLS close_notify")
        return False

    # -- engine calls --------------------------------------------------------------------------

    def handshake_step(self) -> None:
        """Call ``do_handshake`` (refilling from the backlog); WantReadError: more input needed."""
        while not self.handshake_done:
            try:
                with self.lock:
                    self.buffer.do_handshake()
            except WantReadError:
                if not self.starved(True):
                    raise
                continue
            self.handshake_done = True

    def read_available(self, amt: int, into: Buffer | None = None) -> bytes | int:
        """Plaintext the engine has now; WantReadError: more input needed (after the backlog)."""
        while True:
            try:
                with self.lock:
                    return self.buffer.read(amt, into)
            except WantReadError:
                if not self.starved(False):
                    raise

    def take_outgoing(self) -> bytes:
        """All the ciphertext the engine holds (``b""``: none)."""
        buffer = self.buffer
        with self.lock:
            n = buffer.outgoing_bytes_buffered()
            if not n:
                return b""
            data = buffer.process_outgoing(n)
            if len(data) >= n:
                return data
            parts = [data]
            n = buffer.outgoing_bytes_buffered()
            while n:  # engines may return less than asked for
                part = buffer.process_outgoing(n)
                if not part:
                    break
                parts.append(part)
                n = buffer.outgoing_bytes_buffered()
        return b"".join(parts)

    def queue_close_notify(self) -> None:
        """Queue our close_notify (once; nothing to close before a handshake)."""
        if not self.close_sent and self.handshake_done:
            with self.lock:
                self.buffer.shutdown()
        self.close_sent = True


class Driver(Core):
    """Runs handshake, read, write and close over a ``Transport`` with deadlines (the rules in
    the package docstring). Methods raise unitls exceptions; shells translate them."""

    __slots__ = (
        "_flush_wanted",
        "_handshake_lock",
        "_received",
        "_recv_lock",
        "_send_lock",
        "deferred",
        "handshake_reset_is_eof",
        "readahead",
        "reset_is_eof",
        "transport",
        "unsent",
    )

    def __init__(
        self,
        buffer: TLSBuffer,
        transport: Transport,
        *,
        reset_is_eof: bool = True,
        handshake_reset_is_eof: bool = True,
    ) -> None:
        super().__init__(buffer)
        self.transport = transport
        # A reset while receiving is an EOF without close_notify (the engine reports RaggedEOF
        # or HandshakeClosedError). The ssl bridge reports resets as the running Python's _ssl
        # does instead: a TLSConnectionError (its ConnectionResetError) during the handshake,
        # and, from Python 3.13, after it too.
        self.reset_is_eof = reset_is_eof
        self.handshake_reset_is_eof = handshake_reset_is_eof
        self.unsent: memoryview | None = None
        self.readahead = bytearray()
        self.deferred: TLSError | None = None  # met by pending(), raised by the next read
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._handshake_lock = threading.Lock()
        self._received = 0  # chunks received so far (see _receive)
        self._flush_wanted = False  # ciphertext left for the send lock's holder

    # -- locks and waiting ---------------------------------------------------------------------

    @staticmethod
    def _acquire(lock: threading.Lock, deadline: Deadline, want: type[TLSError]) -> None:
        # (Callers try ``lock.acquire(False)`` first: the uncontended case costs no call.)
        if lock.acquire(False):
            return
        if deadline.nonblocking:
            raise want("another thread is using the connection")
        timeout = deadline.remaining()
        if not lock.acquire(timeout=-1 if timeout is None else timeout):
            deadline.remaining()
            raise TLSTimeoutError(f"the TLS {deadline.what} timed out")

    def _wait(self, read: bool, write: bool, deadline: Deadline) -> None:
        # A timeout or a spurious wake-up both go round the caller's loop; remaining() raises
        # TLSTimeoutError once the deadline has passed.
        if deadline.nonblocking:
            if read:
                raise WantReadError("no TLS data available on the socket yet")
            raise WantWriteError("the socket's send buffer is full")
        self.transport.wait(read, write, deadline.remaining())

    # -- sending -------------------------------------------------------------------------------

    def _send_locked(self, deadline: Deadline) -> int:
        """Send *unsent*, then all the engine holds; the caller holds ``_send_lock``.

        Returns the bytes sent. What the transport does not take stays in *unsent*. Ciphertext
        the engine makes meanwhile (another thread's reads) is announced by ``_flush_wanted``,
        which the lock's holder checks after releasing it: one look at the engine suffices.
        """
        transport = self.transport
        sent = 0
        engine_checked = False
        while True:
            view = self.unsent
            if view is None:
                if engine_checked:
                    return sent
                engine_checked = True
                data = self.take_outgoing()
                if not data:
                    return sent
                view = memoryview(data)
            self.unsent = None
            try:
                while view:
                    try:
                        n = transport.send(view)
                    except BlockingIOError:
                        self._wait(False, True, deadline)
                        continue
                    except OSError as exc:
                        raise map_os_error(exc, "sending TLS data failed") from exc
                    view = view[n:]
                    sent += n
            finally:
                if view:
                    self.unsent = view

    def flush(self, deadline: Deadline) -> None:
        """Send everything queued, waiting up to the deadline."""
        if not self._send_lock.acquire(False):
            self._acquire(self._send_lock, deadline, WantWriteError)
        try:
            self._send_locked(deadline)
        finally:
            self._send_lock.release()
        if self._flush_wanted:
            self.flush_nowait()

    def flush_nowait(self) -> bool:
        """Send what the transport takes now, unless another thread is sending (then that thread
        sends it: it checks ``_flush_wanted`` after releasing the lock). Never raises.

        True: ciphertext is left that this thread should send once the transport has room.
        """
        self._flush_wanted = True
        while self._flush_wanted:
            if not self._send_lock.acquire(False):
                return False
            self._flush_wanted = False
            try:
                self._send_locked(NOW)
            except WantWriteError:
                return True
            except TLSError:
                return False  # the transport is broken: the next write reports it
            finally:
                self._send_lock.release()
        return False

    def _fail(self, exc: TLSError, deadline: Deadline) -> NoReturn:
        """Deliver the alert the engine queued (best effort, briefly), then raise ``exc``."""
        if self._send_lock.acquire(False):
            try:
                self._send_locked(NOW if deadline.nonblocking else Deadline(_ALERT_WAIT))
            except (TLSError, OSError):
                pass
            finally:
                self._send_lock.release()
        else:
            self._flush_wanted = True
        raise exc

    # -- receiving -----------------------------------------------------------------------------

    def _receive(self, deadline: Deadline) -> None:
        """Receive one chunk of ciphertext and feed it (or the EOF) to the engine.

        While waiting, this thread's *unsent* ciphertext goes out when the transport has room.
        A caller that had to wait for the receive lock returns at once if another thread received
        meanwhile: its chunk may be what the engine needed.
        """
        seen = self._received
        if not self._recv_lock.acquire(False):
            self._acquire(self._recv_lock, deadline, WantReadError)
        try:
            if seen != self._received:
                return
            if self.eof_received:
                raise ProtocolError("the TLS engine asked for data after the transport's end")
            transport = self.transport
            while True:
                want_write = (self.unsent is not None or self._flush_wanted) and self.flush_nowait()
                try:
                    data = transport.recv(RECV_SIZE)
                except BlockingIOError:
                    self._wait(True, want_write, deadline)
                    continue
                except ConnectionResetError as exc:
                    eof = self.reset_is_eof if self.handshake_done else self.handshake_reset_is_eof
                    if not eof:
                        raise map_os_error(exc, "receiving TLS data failed") from exc
                    data = b""  # an EOF without close_notify: the engine reports it
                except OSError as exc:
                    raise map_os_error(exc, "receiving TLS data failed") from exc
                break
            self._received += 1
            try:
                if data:
                    self.feed(data)
                else:
                    self.feed_eof()
            except TLSError as exc:
                self._fail(exc, deadline)
        finally:
            self._recv_lock.release()

    # -- operations ----------------------------------------------------------------------------

    def handshake(self, deadline: Deadline) -> None:
        """Complete the handshake and send its last flight."""
        if not self.handshake_done:
            if not self._handshake_lock.acquire(False):
                self._acquire(self._handshake_lock, deadline, WantReadError)
            stuck = 0
            try:
                while not self.handshake_done:
                    try:
                        self.handshake_step()
                    except WantReadError:
                        self.flush(deadline)  # the peer needs our flight before it answers
                        self._receive(deadline)
                    except WantWriteError:
                        stuck = self._make_room(deadline, stuck)
                    except TLSError as exc:
                        self._fail(exc, deadline)
            finally:
                self._handshake_lock.release()
        self.flush(deadline)

    def _make_room(self, deadline: Deadline, stuck: int) -> int:
        """The engine raised ``WantWriteError`` (its output is full): send, waiting for the
        send lock if a writer holds it. Returns the new count of calls that freed nothing."""
        if not self._send_lock.acquire(False):
            self._acquire(self._send_lock, deadline, WantWriteError)
        try:
            sent = self._send_locked(deadline)
        finally:
            self._send_lock.release()
        if self._flush_wanted:
            self.flush_nowait()
        if sent:
            return 0
        if stuck:
            raise ProtocolError("the TLS engine wants to write but has nothing to send")
        return stuck + 1

    def read(self, amt: int, into: Buffer | None, deadline: Deadline) -> bytes | int:
        """Up to ``amt`` bytes of plaintext (into ``into`` if given: returns the count); ``b""``
        / ``0`` once the peer's close_notify was read."""
        if self.readahead:
            return self._take_readahead(amt, into)
        if self.deferred is not None:
            raise self.deferred
        if not self.handshake_done:
            self.handshake(deadline)
        buffer = self.buffer
        lock = self.lock
        stuck = 0
        while True:
            try:
                with lock:
                    try:
                        data = buffer.read(amt, into)
                    except WantReadError:
                        # (Records without plaintext may have made ciphertext: a KeyUpdate.)
                        if buffer.outgoing_bytes_buffered():
                            self._flush_wanted = True
                        raise
                    output = buffer.outgoing_bytes_buffered()
            except WantReadError:
                if not self.starved(False):
                    self._receive(deadline)
                continue
            except WantWriteError:
                stuck = self._make_room(deadline, stuck)
                continue
            except TLSError as exc:
                self._fail(exc, deadline)
            if output:
                self.flush_nowait()  # e.g. a KeyUpdate answer: never waits, never loses `data`
            if not data and amt:
                self.peer_closed = True
            return data

    def _take_readahead(self, amt: int, into: Buffer | None) -> bytes | int:
        plain = self.readahead
        if into is None:
            data = bytes(plain[:amt])
            del plain[:amt]
            return data
        view = memoryview(into).cast("B")
        k = min(amt, len(plain), view.nbytes)
        view[:k] = plain[:k]
        del plain[:k]
        return k

    def write(self, data: memoryview, deadline: Deadline) -> int:
        """Encrypt and send ``data`` (a byte-format view); returns how much was taken.

        Takes everything unless the transport would block past the deadline after something
        was taken (then the rest of its ciphertext waits in *unsent*). Raises ``WantWriteError``
        / ``TLSTimeoutError`` without taking anything while earlier ciphertext is stuck.
        """
        if self.close_sent:
            raise TLSError("cannot write: close_notify was already sent (shutdown)")
        if not self.handshake_done:
            self.handshake(deadline)
        total = data.nbytes
        taken = 0
        buffer = self.buffer
        if not self._send_lock.acquire(False):
            self._acquire(self._send_lock, deadline, WantWriteError)
        try:
            if self.unsent is not None:
                # Earlier ciphertext is stuck: nothing new is taken before it has gone (other
                # pending engine output goes out after this write, in the engine's order).
                self._send_locked(deadline)
            while taken < total:
                try:
                    with self.lock:
                        n = buffer.write(data[taken : taken + WRITE_CHUNK])
                except WantWriteError:
                    n = 0
                except WantReadError:
                    raise ProtocolError(
                        "the TLS engine wants to read before it writes (renegotiation is not "
                        "supported)"
                    ) from None
                except TLSError:
                    try:
                        self._send_locked(NOW)  # the engine's alert, if the socket takes it
                    except (TLSError, OSError):
                        pass
                    raise
                taken += n
                try:
                    sent = self._send_locked(deadline)
                except (WantWriteError, TLSTimeoutError):
                    if taken:
                        break
                    raise
                if not n and not sent:
                    raise ProtocolError("the TLS engine took no data and produced no output")
        finally:
            self._send_lock.release()
        if self._flush_wanted:
            self.flush_nowait()
        return taken

    def write_all(self, data: memoryview, deadline: Deadline) -> None:
        """Encrypt and send all of ``data`` within the deadline."""
        while data:
            data = data[self.write(data, deadline) :]
        if self.unsent is not None:
            self.flush(deadline)

    def shutdown(self, deadline: Deadline) -> None:
        """Send close_notify (queued once; sending is retried by later calls)."""
        if not self.close_sent:
            try:
                self.queue_close_notify()
            except TLSError as exc:
                self._fail(exc, deadline)
        self.flush(deadline)

    def await_close_notify(self, deadline: Deadline) -> None:
        """Read and discard until the peer's close_notify or the transport's end."""
        if not self.handshake_done:
            return
        self.readahead.clear()
        self.deferred = None
        while not self.peer_closed:
            try:
                if not self.read(RECV_SIZE, None, deadline):
                    return
            except (RaggedEOF, HandshakeClosedError):
                return

    def pending(self) -> int:
        """Plaintext bytes readable without I/O (decrypting what is already here)."""
        if (
            not self.readahead
            and self.handshake_done
            and not self.peer_closed
            and self.deferred is None
        ):
            try:
                data = self.transport.buffered()
                if data:
                    self.feed(data)
                plain = self.read_available(_RECORD)
            except WantReadError:
                pass
            except TLSError as exc:
                self.deferred = exc
            else:
                assert isinstance(plain, bytes)
                if plain:
                    self.readahead += plain
                else:
                    self.peer_closed = True
        return len(self.readahead)
