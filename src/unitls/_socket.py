"""``BufferSocket``: a ``TLSSocket`` that runs any ``TLSBuffer`` over a plain ``socket.socket``;
``BufferListener``: the listening socket of every engine.

``BufferSocket`` is a thin shell over the one driver (``unitls._drive``, whose docstring states the
rules: deadlines, non-blocking behaviour, full duplex, EOF, close). It owns its socket and keeps it
non-blocking; the timeout set with ``settimeout`` is the deadline of each operation as a whole.
It is the rustls engine's socket and every engine's STARTTLS (``context.upgrade(sock, ...)``).

``BufferListener.accept()`` runs the handshakes of several clients at once (see its docstring), so
an idle, slow or failing client never holds the others back.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from ._drive import LINGER, NOW, Deadline, Driver, SocketIO, linger_close, map_os_error, wait_fd
from ._drive._linger import drain, half_close
from ._errors import (
    TLSError,
    TLSTimeoutError,
    WantReadError,
    WantWriteError,
)

if TYPE_CHECKING:
    from typing import Self

    from typing_extensions import Buffer

    from ._enums import CipherSuite, NextProtocol, TLSVersion
    from ._protocols import ClientContext, ServerContext, TLSBuffer

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "BufferListener",
    "BufferSocket",
    "StartTLSMixin",
    "client_buffer",
    "connect_with_buffer",
    "listen_with_buffers",
    "map_os_error",
    "no_delay",
    "open_connection",
    "open_listener",
    "upgrade_socket",
]

_SEND_CHUNK = 256 * 1024
# How long a blocking close(force=False) waits for the peer's close_notify.
_CLOSE_WAIT = 5.0
# A client whose handshake failed: how long to drain before closing (see _drive._linger).
_CLIENT_LINGER = 0.5
# A listener runs at most this many handshakes at once; more clients wait in the kernel's queue.
_MAX_HANDSHAKES = 128
# An idle listener's first try at a new client's handshake: one blocking call this long at most.
_IDLE_HANDSHAKE_SLICE = 0.002
# ... and lingers at most this many failed connections (the oldest is closed first).
_MAX_LINGERING = 64

#: ``handshake_timeout`` default of ``ServerContext.connect()``: seconds a client has to complete
#: its handshake (as asyncio's ``ssl_handshake_timeout``).
DEFAULT_HANDSHAKE_TIMEOUT = 60.0


def _check_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if value < 0:
        raise ValueError("Timeout value out of range")
    return value


def _format_addr(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if host and ":" in str(host) else f"{host}:{port}"


#: ``timeout`` default of ``connect()``: ``socket.getdefaulttimeout()``, as for ``socket``.
DEFAULT_TIMEOUT: Any = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


def open_connection(address: tuple[str | None, int], timeout: float | None) -> socket.socket:
    """Connect a plain TCP socket, with errors as TLSConnectionError/TLSTimeoutError."""
    host, port = _check_address(address)
    if not host:
        raise ValueError("a client needs a host name or address to connect to")
    if timeout is not DEFAULT_TIMEOUT and timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or non-negative, not {timeout!r}")
    try:
        family = _literal_family(host)
        if family is None:
            return socket.create_connection((host, port), timeout=timeout)
        # An address needs no resolver call (getaddrinfo() would return it alone).
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if timeout is not DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise map_os_error(exc, f"could not connect to {_format_addr((host, port))}") from exc


def _literal_family(host: str) -> socket.AddressFamily | None:
    """AF_INET/AF_INET6 for an IP address written as one (no scope), None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


def no_delay(sock: socket.socket, on: bool = True) -> None:
    """Turn Nagle's algorithm off (``on``) or back on for a TCP socket (other sockets: nothing).

    Client sockets made by a context's ``connect()`` have it off for the handshake and their
    first application write, then on again (``OpenSSLSocket`` here, ``NativeSocket`` in Rust:
    ``SocketCore._no_delay_until_first_write``). Measured on loopback (2026-12-01):

    * with Nagle on, a request written right after the handshake waits for the server's delayed
      ACK of the client's Finished: the first round trip of a new connection took 41-43 ms
      with the stdlib ``ssl`` module and with every engine, 0.3 ms with Nagle off;
    * with Nagle off for good, a stream of 16 KiB ``sendall`` calls goes out as one segment per
      record instead of coalesced ones: bulk over loopback fell to 0.78-0.93x of the same code
      with Nagle on.

    After the first write the stdlib's behaviour (Nagle on) is kept: a request that follows
    the server's answer goes out at once; write-write-read patterns meet the usual delayed-ACK
    wait, as with ``ssl``.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if on else 0)
        except OSError:
            pass  # not fatal: the connection works, only its timing differs


def open_listener(address: tuple[str | None, int], backlog: int | None = None) -> socket.socket:
    """Bind and listen a plain TCP socket (``None`` host: all interfaces)."""
    host, port = _check_address(address)
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    try:
        return socket.create_server((host or "", port), family=family, backlog=backlog)
    except OSError as exc:
        raise map_os_error(exc, f"could not listen on {_format_addr((host, port))}") from exc


def _check_address(address: tuple[str | None, int]) -> tuple[str | None, int]:
    if not isinstance(address, tuple) or len(address) < 2:
        raise TypeError(f"address must be a (host, port) tuple, not {address!r}")
    host, port = address[0], address[1]
    if host is not None and not isinstance(host, str):
        raise TypeError(f"host must be a str or None, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
    return host, port


class _SocketBase:
    """Address, timeout and lifetime methods shared by connections and listeners."""

    __slots__ = ()
    _sock: socket.socket
    _closed: bool

    def fileno(self) -> int:
        """The OS file descriptor (-1 once closed), for selectors."""
        return self._sock.fileno()

    def settimeout(self, value: float | None) -> None:
        """Blocking (None), bounded (seconds) or non-blocking (0), as for socket.socket."""
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def getsockname(self) -> tuple[str | None, int]:
        name = self._sock.getsockname()
        return (name[0], name[1])

    def getpeername(self) -> tuple[str | None, int]:
        try:
            name = self._sock.getpeername()
        except OSError as exc:
            raise map_os_error(exc, "getpeername") from exc
        return (name[0], name[1])

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(force=True)

    def close(self, force: bool = False) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class BufferSocket(_SocketBase):
    """A connected TLSSocket running its TLS in a TLSBuffer through the driver.

    Before the handshake has completed (a socket from a non-blocking listener, or
    ``upgrade_socket(..., do_handshake=False)``), the first ``recv``/``send`` completes it.
    """

    __slots__ = ("_closed", "_context", "_driver", "_io", "_sock", "_timeout")

    def __init__(
        self,
        sock: socket.socket,
        buffer: TLSBuffer,
        context: ClientContext | ServerContext,
    ) -> None:
        self._timeout = sock.gettimeout()
        self._sock = sock
        self._io = SocketIO(sock)  # the socket stays non-blocking
        self._driver = Driver(buffer, self._io)
        self._context = context
        self._closed = False

    # The timeout lives here; the OS socket is always non-blocking (see SocketIO).
    def settimeout(self, value: float | None) -> None:
        """Blocking (None), bounded (seconds: a deadline for each operation as a whole) or
        non-blocking (0), as for socket.socket."""
        self._timeout = _check_timeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def _deadline(self, what: str) -> Deadline:
        if self._closed:
            raise TLSError("the TLS socket is closed")
        return Deadline(self._timeout, what)

    # -- TLS operations -----------------------------------------------------------------------

    def do_handshake(self) -> None:
        """Complete the handshake (connect/accept/upgrade do this for you)."""
        self._driver.handshake(self._deadline("handshake"))

    def recv(self, bufsize: int) -> bytes:
        """Receive up to ``bufsize`` bytes; ``b''`` once the peer sent close_notify."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        data = self._driver.read(bufsize, None, self._deadline("recv"))
        assert isinstance(data, bytes)
        return data

    def recv_into(self, target: Buffer, nbytes: int = 0) -> int:
        """Receive into a writable buffer; returns the byte count (0 at clean EOF)."""
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        view = memoryview(target).cast("B")
        amt = min(nbytes, view.nbytes) if nbytes else view.nbytes
        n = self._driver.read(amt, view, self._deadline("recv"))
        assert isinstance(n, int)
        return n

    def send(self, data: Buffer) -> int:
        """Encrypt and send; returns how much of ``data`` was taken (its ciphertext may still
        wait for the socket on a non-blocking or timed-out call: the next call sends it first)."""
        view = memoryview(data).cast("B")
        return self._driver.write(view[:_SEND_CHUNK], self._deadline("send"))

    def sendall(self, data: Buffer) -> None:
        """Send all of ``data``; the timeout bounds the whole call (non-blocking sockets raise
        ``WantWriteError`` once the socket is full, like ``send``)."""
        if self._closed:
            raise TLSError("the TLS socket is closed")
        self._driver.write_all(memoryview(data).cast("B"), Deadline(self._timeout, "sendall"))

    def pending(self) -> int:
        """Decrypted bytes that ``recv`` returns without touching the network."""
        return self._driver.pending()

    def close(self, force: bool = False) -> None:
        """Send close_notify and close the socket.

        ``force=False`` also waits for the peer's close_notify; the socket's timeout (five seconds
        on a blocking socket) bounds the whole close. Non-blocking sockets raise
        ``WantReadError``/``WantWriteError`` until it is done (call again). ``force=True`` neither
        waits nor minds a dead transport.
        """
        if self._closed:
            return
        driver = self._driver
        try:
            if force:
                driver.shutdown(NOW)
            else:
                timeout = self._timeout
                deadline = Deadline(_CLOSE_WAIT if timeout is None else timeout, "close")
                driver.shutdown(deadline)
                driver.await_close_notify(deadline)
        except (WantReadError, WantWriteError):
            if not force:
                raise  # non-blocking: the caller retries close()
        except TLSError:
            # The peer is gone, broke the protocol or is too slow while we said goodbye (e.g. it
            # sent its close_notify and closed first: ours then meets a broken pipe). Closing is
            # all that is left to do, as for socket.socket.close().
            pass
        self._close_now()

    def _close_now(self) -> None:
        self._closed = True
        self._io.stop()  # other threads waiting on the socket end first
        # Unread bytes (say, TLS 1.3 session tickets) would turn our FIN into a reset, which can
        # destroy the close_notify before the peer reads it.
        drain(self._sock)
        self._sock.close()

    def _abandon(self, linger: float = _CLIENT_LINGER) -> None:
        """After a failed handshake: the alert is out; half-close, drain briefly, close."""
        if not self._closed:
            self._closed = True
            linger_close(self._sock, linger)

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        """Like ``socket.shutdown``; ``SHUT_WR``/``SHUT_RDWR`` send close_notify first. Reading
        after ``SHUT_WR`` stays TLS-protected (until the peer's close_notify)."""
        deadline = self._deadline("shutdown")
        if how != socket.SHUT_RD:
            self._driver.shutdown(deadline)
        try:
            self._sock.shutdown(how)
        except OSError as exc:
            raise map_os_error(exc, "shutdown failed") from exc

    # -- information --------------------------------------------------------------------------

    @property
    def context(self) -> ClientContext | ServerContext:
        return self._context

    @property
    def buffer(self) -> TLSBuffer:
        """The TLSBuffer running this connection's TLS."""
        return self._driver.buffer

    def _info(self, name: str) -> Any:
        with self._driver.lock:  # engines need not be thread-safe
            return getattr(self._driver.buffer, name)()

    def cipher(self) -> CipherSuite | int | None:
        result: CipherSuite | int | None = self._info("cipher")
        return result

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        result: NextProtocol | bytes | None = self._info("negotiated_protocol")
        return result

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        with self._driver.lock:
            return self._driver.buffer.negotiated_tls_version

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session, if the engine's buffer tells (an
        extension to the PEP; False otherwise)."""
        from ._extensions import SupportsSessionInfo

        buffer = self._driver.buffer
        if not isinstance(buffer, SupportsSessionInfo):
            return False
        with self._driver.lock:
            return buffer.session_resumed

    @property
    def negotiated_group(self) -> str | None:
        """IANA name of the key exchange group, if the engine's buffer tells (an extension to
        the PEP; None otherwise and before the handshake)."""
        from ._extensions import SupportsSessionInfo

        buffer = self._driver.buffer
        if not isinstance(buffer, SupportsSessionInfo):
            return None
        with self._driver.lock:
            return buffer.negotiated_group

    def getpeercert(self) -> bytes | None:
        result: bytes | None = self._info("getpeercert")
        return result

    def getpeercertchain(self) -> list[bytes]:
        """DER of every certificate the peer sent, leaf first, if the engine's buffer tells
        (an extension to the PEP; empty otherwise)."""
        from ._extensions import SupportsPeerCertChain

        if not isinstance(self._driver.buffer, SupportsPeerCertChain):
            return []
        return list(self._info("getpeercertchain"))

    def listen(self, backlog: int) -> None:
        raise TLSError("listen() is for server sockets made by ServerContext.connect()")

    def accept(self) -> tuple[BufferSocket, tuple[str | None, int]]:
        raise TLSError("accept() is for server sockets made by ServerContext.connect()")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return f"<{type(self).__name__} {state} {self._driver.buffer!r}>"


class _Handshaking(Protocol):
    _sock: socket.socket

    def do_handshake(self) -> None: ...
    def settimeout(self, value: float | None) -> None: ...
    def close(self, force: bool = False) -> None: ...


_T = TypeVar("_T", bound=_Handshaking)


class _Client(Generic[_T]):
    """A connection whose handshake runs inside ``accept()``."""

    __slots__ = ("addr", "deadline", "tls", "want_write")

    def __init__(self, tls: _T, addr: tuple[str | None, int], deadline: float | None) -> None:
        self.tls = tls
        self.addr = addr
        self.deadline = deadline
        self.want_write = False


class BufferListener(_SocketBase, Generic[_T]):
    """A listening TLSSocket whose ``accept()`` returns handshaken connections.

    ``accept()`` runs the handshakes of every waiting client at once (up to 128): it returns the
    first connection whose handshake completes, so a client that is idle, dripping bytes or
    failing holds only itself. Each client has ``handshake_timeout`` seconds (None: no limit).
    A client whose handshake fails or times out is reported by ``accept()`` raising its
    ``TLSError`` (with the client's address in the exception's notes); the listener stays
    usable and the other handshakes go on at the next call. The failed connection is closed
    gracefully in the background (its alert delivered, half-closed, drained for up to two
    seconds), so a TCP reset does not destroy the alert.

    An idle listener (no handshake under way) takes a fast path: the next client is accepted
    and its handshake run by one blocking call of at most ``_IDLE_HANDSHAKE_SLICE`` (2 ms, and
    never past ``accept()``'s deadline), in which the engine waits for the socket itself. On
    loopback and nearby networks that completes the handshake with no Python between its steps
    (connections per second over loopback: OpenSSL engine +6%, rustls +4%, 2026-12-02); a client
    that needs longer joins the handshakes under way, as any other. So a slow or silent client
    delays the next one by at most one slice, once: while its handshake is under way the
    listener is not idle.

    The listener's own timeout bounds ``accept()`` as a whole (``TLSTimeoutError`` when no
    handshake completes in time; the handshakes under way are kept). A non-blocking listener
    (timeout 0) returns accepted connections at once, before their handshake, as the ``ssl``
    module does for non-blocking sockets: their first ``recv``/``send`` (or ``do_handshake()``)
    drives it. Connections inherit the listener's timeout.

    ``wrap`` turns an accepted plain socket into the engine's TLS socket (not yet handshaken).
    """

    __slots__ = (
        "_accept_lock",
        "_clients",
        "_closed",
        "_context",
        "_done",
        "_handshake_timeout",
        "_lingering",
        "_sock",
        "_timeout",
        "_wrap",
    )

    def __init__(
        self,
        sock: socket.socket,
        context: ServerContext,
        wrap: Callable[[socket.socket], _T],
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if handshake_timeout is not None and not handshake_timeout > 0:
            raise ValueError(
                f"handshake_timeout must be a positive number of seconds or None, not "
                f"{handshake_timeout!r}"
            )
        self._timeout = sock.gettimeout()
        sock.setblocking(False)
        self._sock = sock
        self._context = context
        self._wrap = wrap
        self._handshake_timeout = handshake_timeout
        self._closed = False
        self._clients: dict[int, _Client[_T]] = {}  # by file descriptor
        self._done: deque[tuple[_T, tuple[str | None, int]] | TLSError] = deque()
        self._lingering: dict[int, tuple[socket.socket, float, _T]] = {}
        self._accept_lock = threading.Lock()

    @property
    def context(self) -> ServerContext:
        return self._context

    def settimeout(self, value: float | None) -> None:
        """Bounds each ``accept()`` call (see the class docstring); 0: non-blocking."""
        self._timeout = _check_timeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def listen(self, backlog: int) -> None:
        self._sock.listen(backlog)

    def accept(self) -> tuple[_T, tuple[str | None, int]]:
        """The next client whose TLS handshake completed (see the class docstring)."""
        if self._closed:
            raise TLSError("the listening socket is closed")
        deadline = Deadline(self._timeout, "accept")
        if not self._accept_lock.acquire(False):
            if deadline.nonblocking:
                raise WantReadError("another thread is in accept()")
            left = deadline.remaining()
            if not self._accept_lock.acquire(timeout=-1 if left is None else left):
                raise TLSTimeoutError("no TLS connection was accepted in time")
        try:
            if deadline.nonblocking:
                return self._accept_nonblocking()
            return self._accept(deadline)
        finally:
            self._accept_lock.release()

    def _accept_tcp(self) -> tuple[socket.socket, tuple[str | None, int]] | None:
        try:
            conn, addr = self._sock.accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            raise map_os_error(exc, "accept failed") from exc
        return conn, (addr[0], addr[1])

    def _wrap_conn(self, conn: socket.socket, timeout: float | None) -> _T:
        try:
            conn.settimeout(timeout)
            return self._wrap(conn)
        except BaseException:
            conn.close()
            raise

    def _accept_nonblocking(self) -> tuple[_T, tuple[str | None, int]]:
        if self._done or self._clients:
            self._step_all(time.monotonic())
            if self._done:
                return self._pop_done()
        accepted = self._accept_tcp()
        if accepted is None:
            raise WantReadError("no connection is waiting to be accepted")
        conn, addr = accepted
        return self._wrap_conn(conn, 0.0), addr

    def _accept(self, deadline: Deadline) -> tuple[_T, tuple[str | None, int]]:
        # Everything once, then only what poll() reports ready (a handshake step that can only
        # fail with WantRead costs two exceptions).
        now = time.monotonic()
        if not (self._clients or self._lingering or self._done):
            accepted = self._accept_alone(deadline)
            if accepted is not None:
                return accepted
            now = time.monotonic()
        self._reap_lingering(now)
        self._take_new_clients(now)
        self._step_all(now)
        while True:
            if self._closed:  # by another thread, while this one waited
                raise TLSError("the listening socket was closed during accept()")
            if self._done:
                return self._pop_done()
            self._wait(deadline)

    def _accept_alone(self, deadline: Deadline) -> tuple[_T, tuple[str | None, int]] | None:
        """The idle listener's fast path (see the class docstring): the next client, accepted
        and handshaken by one blocking call of at most ``_IDLE_HANDSHAKE_SLICE``; None when it
        needs longer (it then joins the handshakes under way) or no client came in time."""
        try:
            accepted = self._accept_tcp()
            if accepted is None:
                if not wait_fd(self._sock.fileno(), True, False, deadline.remaining()):
                    return None
                accepted = self._accept_tcp()
                if accepted is None:
                    return None
        except TLSError as exc:
            if self._closed:  # by another thread: its shutdown() woke this one's poll()
                raise TLSError("the listening socket was closed during accept()") from exc
            raise
        conn, addr = accepted
        now = time.monotonic()
        limit = self._handshake_timeout
        try:
            left = deadline.remaining()
        except TLSTimeoutError:
            left = 0.0  # the handshake gets a token slice, then the loop reports the timeout
        budget = (
            _IDLE_HANDSHAKE_SLICE if left is None else max(min(left, _IDLE_HANDSHAKE_SLICE), 1e-6)
        )
        try:
            tls = self._wrap_conn(conn, budget)
        except TLSError as exc:
            exc.add_note(f"client {_format_addr(addr)}")
            raise
        client = _Client(tls, addr, None if limit is None else now + limit)
        fd = tls._sock.fileno()
        try:
            tls.do_handshake()
        except TLSTimeoutError:
            tls.settimeout(0.0)
            if self._closed:  # by another thread, while this one waited
                tls.close(force=True)
                raise TLSError("the listening socket was closed during accept()") from None
            self._clients[fd] = client
            return None
        except TLSError as exc:
            exc.add_note(f"client {_format_addr(addr)}")
            self._fail(fd, client, exc)
            return self._pop_done()
        except BaseException:
            tls.close(force=True)  # e.g. KeyboardInterrupt: the client is in no list yet
            raise
        tls.settimeout(self._timeout)
        return tls, addr

    def _pop_done(self) -> tuple[_T, tuple[str | None, int]]:
        item = self._done.popleft()
        if isinstance(item, TLSError):
            raise item
        tls, addr = item
        tls.settimeout(self._timeout)
        return tls, addr

    def _take_new_clients(self, now: float, new: set[int] | None = None) -> None:
        """Accept waiting clients into the handshakes (their descriptors added to ``new``)."""
        while len(self._clients) < _MAX_HANDSHAKES:
            try:
                accepted = self._accept_tcp()
            except TLSError as exc:
                self._done.append(exc)
                return
            if accepted is None:
                return
            conn, addr = accepted
            try:
                tls = self._wrap_conn(conn, 0.0)
            except TLSError as exc:
                exc.add_note(f"client {_format_addr(addr)}")
                self._done.append(exc)
                continue
            limit = self._handshake_timeout
            client = _Client(tls, addr, None if limit is None else now + limit)
            fd = tls._sock.fileno()
            self._clients[fd] = client
            if new is not None:
                new.add(fd)

    def _step_all(self, now: float, ready: set[int] | None = None) -> None:
        for fd, client in list(self._clients.items()):
            if ready is not None and fd not in ready:
                if client.deadline is not None and now >= client.deadline:
                    self._fail(fd, client, self._timed_out(client))
                continue
            try:
                client.tls.do_handshake()
            except WantReadError:
                client.want_write = False
            except WantWriteError:
                client.want_write = True
            except TLSError as exc:
                exc.add_note(f"client {_format_addr(client.addr)}")
                self._fail(fd, client, exc)
                continue
            else:
                self._clients.pop(fd, None)
                self._done.append((client.tls, client.addr))
                continue
            if client.deadline is not None and now >= client.deadline:
                self._fail(fd, client, self._timed_out(client))

    def _timed_out(self, client: _Client[_T]) -> TLSError:
        return TLSTimeoutError(
            f"the client {_format_addr(client.addr)} did not complete its TLS handshake within "
            f"{self._handshake_timeout:g} seconds (handshake_timeout)"
        )

    def _fail(self, fd: int, client: _Client[_T], exc: TLSError) -> None:
        self._clients.pop(fd, None)
        self._done.append(exc)
        raw = client.tls._sock
        half_close(raw)  # after the alert the engine sent
        if drain(raw):
            client.tls.close(force=True)
            return
        if len(self._lingering) >= _MAX_LINGERING:
            oldest = next(iter(self._lingering))
            self._lingering.pop(oldest)[2].close(force=True)
        self._lingering[fd] = (raw, time.monotonic() + LINGER, client.tls)

    def _reap_lingering(self, now: float, ready: set[int] | None = None) -> None:
        for fd, (raw, until, tls) in list(self._lingering.items()):
            if now >= until or ((ready is None or fd in ready) and drain(raw)):
                self._lingering.pop(fd, None)
                tls.close(force=True)

    def _wait(self, deadline: Deadline) -> None:
        """Wait for a new client, handshake progress or a lingering EOF, then act on it."""
        left = deadline.remaining()
        now = time.monotonic()
        # Copies: close() from another thread may empty these dicts at any time.
        clients = list(self._clients.items())
        lingering = list(self._lingering.items())
        limits = [c.deadline for _, c in clients if c.deadline is not None]
        limits += [until for _, (_, until, _) in lingering]
        if limits:
            soonest = max(0.0, min(limits) - now)
            left = soonest if left is None else min(left, soonest)
        poller = select.poll()
        listening = self._sock.fileno()
        if len(self._clients) < _MAX_HANDSHAKES:
            poller.register(listening, select.POLLIN)
        for fd, client in clients:
            poller.register(fd, select.POLLOUT if client.want_write else select.POLLIN)
        for fd, _ in lingering:
            poller.register(fd, select.POLLIN)
        events = poller.poll(None if left is None else max(0, int(left * 1000) + 1))
        ready = {fd for fd, _ in events}
        now = time.monotonic()
        self._reap_lingering(now, ready)
        if listening in ready:
            self._take_new_clients(now, ready)  # a new client's first step is due at once
        self._step_all(now, ready)

    def close(self, force: bool = False) -> None:
        """Stop listening; handshakes under way and lingering connections are closed. Safe to
        call from another thread while one is in ``accept()`` (which then raises ``TLSError``)."""
        self._closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            client.tls.close(force=True)
        lingering = list(self._lingering.values())
        self._lingering.clear()
        for _, _, tls in lingering:
            tls.close(force=True)
        while True:
            try:
                item = self._done.popleft()
            except IndexError:
                break
            if not isinstance(item, TLSError):
                item[0].close(force=True)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a poll() in another thread's accept()
        except OSError:
            pass
        self._sock.close()

    def recv(self, bufsize: int) -> bytes:
        raise TLSError("a listening socket has no data: accept() a connection")

    def send(self, data: Buffer) -> int:
        raise TLSError("a listening socket has no data: accept() a connection")

    def getpeercert(self) -> bytes | None:
        return None

    def cipher(self) -> CipherSuite | int | None:
        return None

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        return None

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        return None

    @property
    def session_resumed(self) -> bool:
        return False

    @property
    def negotiated_group(self) -> str | None:
        return None

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"listening on {self._sock.getsockname()}"
        return f"<{type(self).__name__} {state}>"


def server_buffer(context: ServerContext, sock: socket.socket) -> TLSBuffer:
    """A server buffer for a connection on ``sock``: unitls engines choose the default chain by
    the local address the client reached (``create_buffer_for``); others get ``create_buffer``."""
    from ._extensions import SupportsCreateBufferFor, implements

    if not implements(context, SupportsCreateBufferFor):
        return context.create_buffer()
    try:
        local = str(sock.getsockname()[0])
    except (OSError, IndexError):
        local = None
    return cast("SupportsCreateBufferFor", context).create_buffer_for(local)


def client_buffer(context: ClientContext, server_hostname: str, port: int | None) -> TLSBuffer:
    """A client buffer to ``server_hostname``: unitls engines also get the port, which keys
    their session cache (``SupportsSessionCache``); others get ``create_buffer``."""
    from ._extensions import SupportsSessionCache, implements

    if port is not None and implements(context, SupportsSessionCache):
        return cast("SupportsSessionCache", context).create_buffer(server_hostname, port=port)
    return context.create_buffer(server_hostname)


def _peer_port(sock: socket.socket) -> int | None:
    try:
        port = sock.getpeername()[1]
    except (OSError, IndexError, TypeError):
        return None  # e.g. a Unix socket: no port
    return port if isinstance(port, int) else None


def listen_with_buffers(
    context: ServerContext,
    address: tuple[str | None, int],
    wrap: Callable[[socket.socket], Any] | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> BufferListener[Any]:
    """``ServerContext.connect``: a listener whose accepted connections ``wrap`` turns into TLS
    sockets (by default BufferSockets over ``create_buffer_for``); see ``BufferListener`` for
    ``handshake_timeout``."""
    if wrap is None:

        def wrap(conn: socket.socket) -> BufferSocket:
            return BufferSocket(conn, server_buffer(context, conn), context)

    return BufferListener(open_listener(address), context, wrap, handshake_timeout)


def connect_with_buffer(
    context: ClientContext, address: tuple[str | None, int], timeout: Any = DEFAULT_TIMEOUT
) -> BufferSocket:
    """``ClientContext.connect`` for engines whose sockets are BufferSockets: ``timeout`` bounds
    the TCP connect and the handshake together, and stays the socket's timeout."""
    host = _check_address(address)[0]
    if not host:
        raise ValueError("a client needs a host name or address to connect to")
    if timeout is DEFAULT_TIMEOUT:
        timeout = socket.getdefaulttimeout()
    buffer = client_buffer(context, host, address[1])
    deadline = Deadline(timeout, "connect")
    sock = open_connection(address, timeout)
    tls = BufferSocket(sock, buffer, context)
    try:
        tls._driver.handshake(deadline)
    except TLSError:
        tls._abandon()
        raise
    except BaseException:
        tls.close(force=True)
        raise
    return tls


class StartTLSMixin:
    """``upgrade()`` for an engine's context classes (STARTTLS through ``upgrade_socket``)."""

    __slots__ = ()

    def upgrade(self, sock: socket.socket, server_hostname: str | None = None) -> BufferSocket:
        """STARTTLS: run TLS on an already connected plain socket (clients name the server;
        servers take no name). See ``upgrade_socket``."""
        context: Any = self
        return upgrade_socket(context, sock, server_hostname)


def upgrade_socket(
    context: ClientContext | ServerContext,
    sock: socket.socket,
    server_hostname: str | None = None,
    *,
    do_handshake: bool = True,
) -> BufferSocket:
    """Start TLS on an already connected plain socket (STARTTLS), with any engine's context.

    A client context needs ``server_hostname`` (used for SNI and the certificate check); a server
    context must not get one. The handshake runs now unless ``do_handshake=False`` (then call
    ``do_handshake()`` yourself, e.g. on a non-blocking socket). The returned socket owns ``sock``.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("TLS needs a stream (TCP or Unix) socket")
    from ._config import TLSClientConfiguration

    # Protocols cannot tell the two context kinds apart (same members); configurations can.
    if isinstance(context.configuration, TLSClientConfiguration):
        if not server_hostname:
            raise ValueError("upgrading a client connection needs server_hostname")
        buffer = client_buffer(context, server_hostname, _peer_port(sock))
    else:
        if server_hostname is not None:
            raise ValueError("a server context takes no server_hostname")
        buffer = server_buffer(context, sock)
    timeout = sock.gettimeout()
    tls = BufferSocket(sock, buffer, context)
    if do_handshake:
        try:
            tls._driver.handshake(Deadline(timeout, "upgrade"))
        except BaseException:
            # The plain socket is still the caller's: give it back as it was.
            sock.settimeout(timeout)
            raise
    return tls
