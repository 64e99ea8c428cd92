"""A ``TLSSocket`` that drives any ``TLSBuffer`` over a plain ``socket.socket``.

Theory of operation
-------------------
The TLS engine lives entirely in the buffer (sans-I/O); this class only moves bytes. Every
operation follows one loop:

1. ask the buffer to do the work (``do_handshake``, ``read``, ``write``, ``shutdown``);
2. if it produced ciphertext, push it to the network (``_flush``);
3. if it raised ``WantReadError``, pull one chunk from the network into it (``_pull``), and retry.

The socket's own timeout decides how waiting behaves, exactly as for ``socket.socket``: blocking
(``None``), bounded (``TLSTimeoutError`` when the time runs out), or non-blocking (``0``: the
buffer's ``WantReadError`` / ``WantWriteError`` reach the caller, who retries after ``select``).

In non-blocking mode a ``send`` never loses or duplicates data: ciphertext the network did not take
is kept in ``_pending`` and flushed first by the next operation; a ``send`` that finds earlier
ciphertext still stuck raises ``WantWriteError`` without taking anything, so the caller's retry with
the same bytes is correct.

A transport EOF is handed to the buffer as ``process_incoming(b"")``; the engine then decides
between a clean close (``close_notify`` seen: ``recv`` returns ``b""``), a ragged EOF
(``RaggedEOF``) or a handshake cut short (``HandshakeClosedError``).

This class serves the rustls engine's sockets and the STARTTLS upgrade of every engine.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._errors import (
    HandshakeClosedError,
    RaggedEOF,
    TLSConnectionError,
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
    "DEFAULT_TIMEOUT",
    "BufferListener",
    "BufferSocket",
    "StartTLSMixin",
    "client_buffer",
    "connect_with_buffer",
    "listen_with_buffers",
    "map_os_error",
    "open_connection",
    "open_listener",
    "upgrade_socket",
]

_RECV_SIZE = 256 * 1024
_SEND_CHUNK = 256 * 1024
# How long a blocking close(force=False) waits for the peer's close_notify.
_CLOSE_WAIT = 5.0


def map_os_error(exc: OSError, what: str) -> TLSError:
    """Turn a socket-level failure into the matching TLSError subclass (chain it yourself)."""
    if isinstance(exc, TimeoutError):
        return TLSTimeoutError(f"{what}: timed out")
    if isinstance(exc, socket.gaierror):
        return TLSConnectionError(errno.EHOSTUNREACH, f"{what}: cannot resolve host ({exc})")
    reason = exc.strerror or str(exc) or type(exc).__name__
    return TLSConnectionError(exc.errno or errno.EIO, f"{what}: {reason}")


def _discard_unread(sock: socket.socket) -> None:
    """Read off bytes the kernel holds for us (e.g. TLS 1.3 session tickets never read).

    Closing a TCP socket with unread data makes the kernel send a reset instead of a FIN, and a
    reset can destroy our close_notify before the peer reads it.
    """
    try:
        sock.setblocking(False)
        for _ in range(16):
            if not sock.recv(65536):
                return
    except OSError:
        return


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
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise map_os_error(exc, f"could not connect to {_format_addr((host, port))}") from exc


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
    """A connected TLSSocket running its TLS in a TLSBuffer (see the module docstring)."""

    __slots__ = ("_buffer", "_closed", "_context", "_pending", "_sock")

    def __init__(
        self,
        sock: socket.socket,
        buffer: TLSBuffer,
        context: ClientContext | ServerContext,
    ) -> None:
        self._sock = sock
        self._buffer = buffer
        self._context = context
        self._pending: memoryview | None = None
        self._closed = False

    # -- moving bytes -------------------------------------------------------------------------

    def _send_raw(self, data: memoryview) -> None:
        sock = self._sock
        if sock.gettimeout() == 0:
            while data:
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    self._pending = data
                    raise WantWriteError("the socket's send buffer is full") from None
                data = data[sent:]
        else:
            sock.sendall(data)

    def _flush(self) -> None:
        """Push every byte of ciphertext the buffer holds to the network."""
        try:
            if self._pending is not None:
                data, self._pending = self._pending, None
                self._send_raw(data)
            buffer = self._buffer
            n = buffer.outgoing_bytes_buffered()
            while n:
                self._send_raw(memoryview(buffer.process_outgoing(n)))
                n = buffer.outgoing_bytes_buffered()
        except OSError as exc:
            raise map_os_error(exc, "sending TLS data failed") from exc

    def _pull(self) -> bool:
        """Read one chunk from the network into the buffer; False at EOF."""
        try:
            data = self._sock.recv(_RECV_SIZE)
        except BlockingIOError:
            raise WantReadError("no TLS data available on the socket yet") from None
        except ConnectionResetError:
            data = b""  # a reset is an EOF without close_notify; the engine reports it
        except OSError as exc:
            raise map_os_error(exc, "receiving TLS data failed") from exc
        try:
            self._buffer.process_incoming(data)
        except TLSError:
            self._flush_quietly()  # engines that fail here have queued an alert for the peer
            raise
        return bool(data)

    def _flush_quietly(self) -> None:
        # Used on failure paths to deliver an alert if the transport still works.
        try:
            self._flush()
        except (TLSError, OSError):
            pass

    # -- TLS operations -----------------------------------------------------------------------

    def do_handshake(self) -> None:
        """Complete the handshake (connect/accept/upgrade do this for you)."""
        self._check_open()
        buffer = self._buffer
        eof = False
        while True:
            try:
                buffer.do_handshake()
                break
            except WantReadError:
                if eof:
                    raise HandshakeClosedError(
                        "the peer closed the connection during the TLS handshake"
                    ) from None
                self._flush()
                eof = not self._pull()
            except TLSError:
                self._flush_quietly()
                raise
        self._flush()

    def recv(self, bufsize: int) -> bytes:
        """Receive up to ``bufsize`` bytes; ``b''`` once the peer sent close_notify."""
        self._check_open()
        buffer = self._buffer
        while True:
            try:
                data = buffer.read(bufsize)
            except WantReadError:
                self._flush()
                self._pull()
                continue
            except TLSError:
                self._flush_quietly()
                raise
            if self._pending is not None or buffer.outgoing_bytes_buffered():
                self._flush()  # e.g. a KeyUpdate answer
            assert isinstance(data, bytes)
            return data

    def recv_into(self, target: Buffer, nbytes: int = 0) -> int:
        """Receive into a writable buffer; returns the byte count (0 at clean EOF)."""
        self._check_open()
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        view = memoryview(target).cast("B")
        amt = min(nbytes, view.nbytes) if nbytes else view.nbytes
        buffer = self._buffer
        while True:
            try:
                n = buffer.read(amt, view)
            except WantReadError:
                self._flush()
                self._pull()
                continue
            except TLSError:
                self._flush_quietly()
                raise
            if self._pending is not None or buffer.outgoing_bytes_buffered():
                self._flush()
            assert isinstance(n, int)
            return n

    def send(self, data: Buffer) -> int:
        """Encrypt and send; returns how much of ``data`` was taken."""
        self._check_open()
        if self._pending is not None:
            self._flush()  # non-blocking: raises WantWriteError before taking anything
        view = memoryview(data)
        if view.nbytes > _SEND_CHUNK:
            view = view[:_SEND_CHUNK]
        try:
            n = self._buffer.write(view)
        except TLSError:
            self._flush_quietly()
            raise
        try:
            self._flush()
        except WantWriteError:
            pass  # the data is taken; the rest of its ciphertext waits in _pending
        return n

    def sendall(self, data: Buffer) -> None:
        """Send all of ``data`` (blocking sockets; non-blocking ones may raise WantWriteError)."""
        view = memoryview(data).cast("B")
        while view:
            n = self.send(view)
            view = view[n:]

    def close(self, force: bool = False) -> None:
        """Send close_notify and close the socket.

        ``force=False`` also waits for the peer's close_notify (up to the socket's timeout, or
        five seconds on a blocking socket; non-blocking sockets raise ``WantReadError`` until it
        arrives). ``force=True`` does not wait and ignores a dead transport.
        """
        if self._closed:
            return
        sock = self._sock
        try:
            self._buffer.shutdown()
            self._flush()
            if not force:
                self._await_close_notify()
        except (WantReadError, WantWriteError):
            if not force:
                raise  # non-blocking: the caller retries close()
        except TLSError:
            # The peer is gone or broke the protocol while we said goodbye (e.g. it sent its
            # close_notify and closed first: our close_notify then meets a broken pipe).
            # Closing is all that is left to do, as for socket.socket.close().
            pass
        self._closed = True
        _discard_unread(sock)
        sock.close()

    def _await_close_notify(self) -> None:
        sock = self._sock
        timeout = sock.gettimeout()
        if timeout == 0:
            self._drain_until_eof()
            return
        deadline = time.monotonic() + (timeout if timeout is not None else _CLOSE_WAIT)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                sock.settimeout(remaining)
                try:
                    self._drain_until_eof()
                    return
                except TLSTimeoutError:
                    return
        finally:
            if sock.fileno() != -1:
                sock.settimeout(timeout)

    def _drain_until_eof(self) -> None:
        buffer = self._buffer
        while True:
            try:
                if buffer.read(_RECV_SIZE) == b"":
                    return
            except WantReadError:
                if not self._pull():
                    try:
                        buffer.read(_RECV_SIZE)
                    except (RaggedEOF, TLSError):
                        pass
                    return
            except RaggedEOF:
                return

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        """Send close_notify, then shut down the TCP connection like ``socket.shutdown``."""
        self._check_open()
        self._buffer.shutdown()
        self._flush()
        try:
            self._sock.shutdown(how)
        except OSError as exc:
            raise map_os_error(exc, "shutdown failed") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise TLSError("the TLS socket is closed")

    # -- information --------------------------------------------------------------------------

    @property
    def context(self) -> ClientContext | ServerContext:
        return self._context

    @property
    def buffer(self) -> TLSBuffer:
        """The TLSBuffer running this connection's TLS."""
        return self._buffer

    def cipher(self) -> CipherSuite | int | None:
        return self._buffer.cipher()

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        return self._buffer.negotiated_protocol()

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        return self._buffer.negotiated_tls_version

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session, if the engine's buffer tells (an
        extension to the PEP; False otherwise)."""
        from ._extensions import SupportsSessionInfo

        buffer = self._buffer
        return isinstance(buffer, SupportsSessionInfo) and buffer.session_resumed

    @property
    def negotiated_group(self) -> str | None:
        """IANA name of the key exchange group, if the engine's buffer tells (an extension to
        the PEP; None otherwise and before the handshake)."""
        from ._extensions import SupportsSessionInfo

        buffer = self._buffer
        return buffer.negotiated_group if isinstance(buffer, SupportsSessionInfo) else None

    def getpeercert(self) -> bytes | None:
        return self._buffer.getpeercert()

    def getpeercertchain(self) -> list[bytes]:
        """DER of every certificate the peer sent, leaf first, if the engine's buffer tells
        (an extension to the PEP; empty otherwise)."""
        from ._extensions import SupportsPeerCertChain

        buffer = self._buffer
        return list(buffer.getpeercertchain()) if isinstance(buffer, SupportsPeerCertChain) else []

    def listen(self, backlog: int) -> None:
        raise TLSError("listen() is for server sockets made by ServerContext.connect()")

    def accept(self) -> tuple[BufferSocket, tuple[str | None, int]]:
        raise TLSError("accept() is for server sockets made by ServerContext.connect()")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return f"<{type(self).__name__} {state} {self._buffer!r}>"


class _Handshaking(Protocol):
    def do_handshake(self) -> None: ...
    def close(self, force: bool = False) -> None: ...


_T = TypeVar("_T", bound=_Handshaking)


class BufferListener(_SocketBase, Generic[_T]):
    """A listening TLSSocket whose ``accept()`` returns handshaken connections.

    ``wrap`` turns an accepted plain socket into the engine's TLS socket (not yet handshaken).
    """

    __slots__ = ("_closed", "_context", "_sock", "_wrap")

    def __init__(
        self, sock: socket.socket, context: ServerContext, wrap: Callable[[socket.socket], _T]
    ) -> None:
        self._sock = sock
        self._context = context
        self._wrap = wrap
        self._closed = False

    @property
    def context(self) -> ServerContext:
        return self._context

    def listen(self, backlog: int) -> None:
        self._sock.listen(backlog)

    def accept(self) -> tuple[_T, tuple[str | None, int]]:
        """Accept a TCP connection and complete its TLS handshake.

        The connection inherits this socket's timeout, which also bounds the handshake. A client
        that fails the handshake raises here (its socket is closed); keep accepting after it.
        """
        try:
            conn, addr = self._sock.accept()
        except BlockingIOError:
            raise WantReadError("no connection is waiting to be accepted") from None
        except OSError as exc:
            raise map_os_error(exc, "accept failed") from exc
        try:
            conn.settimeout(self._sock.gettimeout())
            tls = self._wrap(conn)
        except BaseException:
            conn.close()
            raise
        try:
            tls.do_handshake()
        except BaseException:
            tls.close(force=True)
            conn.close()
            raise
        return tls, (addr[0], addr[1])

    def close(self, force: bool = False) -> None:
        self._closed = True
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
    from ._extensions import SupportsCreateBufferFor

    if not isinstance(context, SupportsCreateBufferFor):
        return context.create_buffer()
    try:
        local = str(sock.getsockname()[0])
    except (OSError, IndexError):
        local = None
    return context.create_buffer_for(local)


def client_buffer(context: ClientContext, server_hostname: str, port: int | None) -> TLSBuffer:
    """A client buffer to ``server_hostname``: unitls engines also get the port, which keys
    their session cache (``SupportsSessionCache``); others get ``create_buffer``."""
    from ._extensions import SupportsSessionCache

    if port is not None and isinstance(context, SupportsSessionCache):
        return context.create_buffer(server_hostname, port=port)
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
) -> BufferListener[Any]:
    """``ServerContext.connect``: a listener whose accepted connections ``wrap`` turns into TLS
    sockets (by default BufferSockets over ``create_buffer_for``)."""
    if wrap is None:

        def wrap(conn: socket.socket) -> BufferSocket:
            return BufferSocket(conn, server_buffer(context, conn), context)

    return BufferListener(open_listener(address), context, wrap)


def connect_with_buffer(
    context: ClientContext, address: tuple[str | None, int], timeout: Any = DEFAULT_TIMEOUT
) -> BufferSocket:
    """``ClientContext.connect`` for engines whose sockets are BufferSockets."""
    host = _check_address(address)[0]
    if not host:
        raise ValueError("a client needs a host name or address to connect to")
    buffer = client_buffer(context, host, address[1])
    sock = open_connection(address, timeout)
    tls = BufferSocket(sock, buffer, context)
    try:
        tls.do_handshake()
    except BaseException:
        sock.close()
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
    tls = BufferSocket(sock, buffer, context)
    if do_handshake:
        tls.do_handshake()
    return tls
