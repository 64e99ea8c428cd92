"""unitls' TLS sockets on the extension's native I/O path (``unitls._native.SocketCore``).

Engines whose buffers run on the extension's generic ``Connection`` (rustls; NSS too, being on
the same ``TlsSession`` trait) say so through ``unitls.extensions.SupportsNativeIO``, and their
contexts take ``NativeClientSockets`` / ``NativeServerSockets``: ``connect``, accepted
connections and ``upgrade`` (STARTTLS) then return a ``NativeSocket``.

Decisions:
- The hot calls (``recv``, ``recv_into``, ``send``, ``sendall``, ``do_handshake``, ``pending``)
  are the Rust methods themselves (inherited, not wrapped): a call costs one C call, the socket
  I/O runs with the GIL released and no Python runs per TLS record. ``rust/src/sockio.rs``
  implements the same rules as the Python driver (deadlines for whole operations, non-blocking
  ``WantReadError``/``WantWriteError`` without losing bytes, one reader and one writer thread,
  EOF and close handling); the fault suite runs against both.
- The Python socket object owns the descriptor; the native core only borrows it per call, and
  ``close()`` here is the one place it is closed.
- What is not per record stays in Python: closing, ``shutdown(how)``, information methods
  (through the engine's own ``TLSBuffer`` over the same connection).
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any, cast

from . import _native
from ._drive._linger import drain as _discard_unread
from ._engine import check_server_hostname
from ._errors import TLSError, WantReadError, WantWriteError
from ._extensions import SupportsNativeIO, implements
from ._socket import (
    DEFAULT_TIMEOUT,
    _check_address,
    _peer_port,
    map_os_error,
    open_connection,
    server_buffer,
)

if TYPE_CHECKING:
    from typing import Self

    from ._enums import CipherSuite, NextProtocol, TLSVersion
    from ._protocols import ClientContext, ServerContext, TLSBuffer

__all__ = ["NativeClientSockets", "NativeServerSockets", "NativeSocket", "native_socket"]

# How long a blocking close(force=False) waits for the peer's close_notify.
_CLOSE_WAIT = 5.0


class NativeSocket(_native.SocketCore):
    """A connected TLSSocket whose I/O runs in the extension (see the module docstring).

    ``recv``, ``recv_into``, ``send``, ``sendall``, ``do_handshake``, ``pending``,
    ``settimeout``, ``gettimeout`` and ``setblocking`` come from ``unitls._native.SocketCore``.
    """

    __slots__ = ("_buffer", "_closed", "_context", "_sock")

    def __init__(
        self,
        connection: _native.Connection,
        sock: socket.socket,
        buffer: TLSBuffer,
        context: ClientContext | ServerContext,
    ) -> None:
        self._sock = sock
        self._buffer = buffer
        self._context = context
        self._closed = False
        # The timeout now lives in the native core (read from the socket when it was made); the
        # socket object itself is only the descriptor's owner, kept non-blocking so that the
        # Python-level calls made on it here (draining before close) never wait.
        sock.setblocking(False)

    # -- lifetime -----------------------------------------------------------------------------

    def close(self, force: bool = False) -> None:
        """Send close_notify and close the socket.

        ``force=False`` also waits for the peer's close_notify (up to the socket's timeout, or
        five seconds on a blocking socket; non-blocking sockets raise ``WantReadError`` until it
        arrives). ``force=True`` does not wait and ignores a dead transport.
        """
        if self._closed:
            return
        sock = self._sock
        timeout = self.gettimeout()
        # One deadline for the whole goodbye; force=True never waits.
        limit = 0.0 if force else (_CLOSE_WAIT if timeout is None else timeout)
        start = time.monotonic()
        try:
            self._send_close_notify(limit)
            if not force:
                self._await_close_notify(
                    limit if limit == 0 else max(limit - (time.monotonic() - start), 1e-6)
                )
        except (WantReadError, WantWriteError):
            if not force:
                raise  # non-blocking: the caller retries close()
        except TLSError:
            # The peer is gone, broke the protocol or did not answer in time while we said
            # goodbye: closing is all that is left to do, as for socket.socket.close().
            pass
        self._closed = True
        self._stop_io()  # other threads' calls on this socket end first (with TLSError)
        _discard_unread(sock)
        sock.close()

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        """Like ``socket.shutdown``; ``SHUT_WR``/``SHUT_RDWR`` send close_notify first (not
        ``SHUT_RD``: writing goes on). After ``SHUT_WR`` reads go on, still TLS-protected, until
        the peer's close_notify.
        """
        self._check_open()
        if how != socket.SHUT_RD:
            self._send_close_notify(self.gettimeout())
        try:
            self._sock.shutdown(how)
        except OSError as exc:
            raise map_os_error(exc, "shutdown failed") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise TLSError("the TLS socket is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(force=True)

    # -- the socket -----------------------------------------------------------------------------

    def fileno(self) -> int:
        """The OS file descriptor (-1 once closed), for selectors."""
        return self._sock.fileno()

    def getsockname(self) -> tuple[str | None, int]:
        name = self._sock.getsockname()
        return (name[0], name[1])

    def getpeername(self) -> tuple[str | None, int]:
        try:
            name = self._sock.getpeername()
        except OSError as exc:
            raise map_os_error(exc, "getpeername") from exc
        return (name[0], name[1])

    def listen(self, backlog: int) -> None:
        raise TLSError("listen() is for server sockets made by ServerContext.connect()")

    def accept(self) -> tuple[NativeSocket, tuple[str | None, int]]:
        raise TLSError("accept() is for server sockets made by ServerContext.connect()")

    # -- information ----------------------------------------------------------------------------

    @property
    def context(self) -> ClientContext | ServerContext:
        return self._context

    @property
    def buffer(self) -> TLSBuffer:
        """The TLSBuffer running this connection's TLS (information only: its I/O is here)."""
        return self._buffer

    def cipher(self) -> CipherSuite | int | None:
        return self._buffer.cipher()

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        return self._buffer.negotiated_protocol()

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        return self._buffer.negotiated_tls_version

    def getpeercert(self) -> bytes | None:
        return self._buffer.getpeercert()

    def getpeercertchain(self) -> list[bytes]:
        """DER of every certificate the peer sent, leaf first (an extension to the PEP)."""
        from ._extensions import SupportsPeerCertChain

        buffer = self._buffer
        return list(buffer.getpeercertchain()) if isinstance(buffer, SupportsPeerCertChain) else []

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session."""
        return bool(getattr(self._buffer, "session_resumed", False))

    @property
    def negotiated_group(self) -> str | None:
        """The key exchange group's IANA name; None before the handshake."""
        group = getattr(self._buffer, "negotiated_group", None)
        return group if isinstance(group, str) else None

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return f"<{type(self).__name__} {state} {self._buffer!r}>"


def native_socket(
    context: ClientContext | ServerContext, sock: socket.socket, buffer: TLSBuffer
) -> NativeSocket:
    """A ``NativeSocket`` (not yet handshaken) running ``buffer``'s connection over ``sock``."""
    if not implements(buffer, SupportsNativeIO):
        raise TypeError(f"{type(buffer).__name__} has no native connection")
    return NativeSocket(cast("SupportsNativeIO", buffer).native_connection(), sock, buffer, context)


def _handshake_or_close(tls: NativeSocket, sock: socket.socket) -> None:
    try:
        tls.do_handshake()
    except BaseException:
        tls.close(force=True)
        raise


class NativeClientSockets:
    """``connect`` and ``upgrade`` for client contexts whose buffers are ``SupportsNativeIO``."""

    __slots__ = ()

    def connect(
        self, address: tuple[str | None, int], *, timeout: Any = DEFAULT_TIMEOUT
    ) -> NativeSocket:
        """Connect, handshake and verify the server against ``address``'s host.

        ``timeout`` (seconds, None: block) bounds the TCP connect and the handshake together and
        stays the socket's timeout; by default ``socket.getdefaulttimeout()``, as for ``socket``.
        """
        context: Any = self
        host = _check_address(address)[0]
        if not host:
            raise ValueError("a client needs a host name or address to connect to")
        # The port keys the session cache with the name (see unitls._engine).
        buffer = context._new_buffer(check_server_hostname(host), address[1], None)
        start = time.monotonic()
        sock = open_connection(address, timeout)
        try:
            tls = native_socket(context, sock, buffer)
            tls._no_delay_until_first_write()  # no delayed-ACK wait for the first request
        except BaseException:
            sock.close()
            raise
        limit = tls.gettimeout()  # the socket's, taken over by the native core
        if limit:
            # One deadline for the TCP connect and the handshake.
            tls.settimeout(max(limit - (time.monotonic() - start), 1e-6))
        _handshake_or_close(tls, sock)
        tls.settimeout(limit)
        return tls

    def upgrade(self, sock: socket.socket, server_hostname: str | None = None) -> Any:
        """STARTTLS: run TLS on an already connected plain socket (the handshake runs now, within
        the socket's timeout). The returned socket owns ``sock``."""
        _check_stream(sock)
        if not server_hostname:
            raise ValueError("upgrading a client connection needs server_hostname")
        context: Any = self
        buffer = context.create_buffer(server_hostname, port=_peer_port(sock))
        tls = native_socket(context, sock, buffer)
        tls.do_handshake()
        return tls  # a NativeSocket


class NativeServerSockets:
    """Accepted connections and ``upgrade`` for server contexts whose buffers are
    ``SupportsNativeIO``."""

    __slots__ = ()

    def _accept(self, conn: socket.socket) -> NativeSocket:
        context: Any = self
        return native_socket(context, conn, server_buffer(context, conn))

    def upgrade(self, sock: socket.socket, server_hostname: str | None = None) -> Any:
        """STARTTLS on an already connected plain socket (the handshake runs now, within the
        socket's timeout). The returned socket owns ``sock``."""
        _check_stream(sock)
        if server_hostname is not None:
            raise ValueError("a server context takes no server_hostname")
        context: Any = self
        tls = native_socket(context, sock, server_buffer(context, sock))
        tls.do_handshake()
        return tls


def _check_stream(sock: object) -> None:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("TLS needs a stream (TCP or Unix) socket")
