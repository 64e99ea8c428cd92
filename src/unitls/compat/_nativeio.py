"""The bridge's ``_sslobj`` on engines with native I/O: ``unitls._native.SSLSocketCore``.

``ssl.SSLSocket`` hands every read, write, handshake, pending and shutdown call to its
``_sslobj``. For clients on engines whose buffers run on unitls' extension (``SupportsNativeIO``:
rustls), that object is ``NativeSocketTLS``: those calls are the Rust methods themselves, which do the
socket I/O with the GIL released, honour the ``SSLSocket``'s timeout at each call and raise what
``_ssl`` raises; no Python runs per TLS record. Records are received so that every complete
record read ends up with the caller (``select()`` before ``recv()`` never hangs on data hidden in
the engine), and ``unwrap()`` reads the peer's close_notify record by record (what follows it
stays in the socket).

Only the information methods are Python, shared with ``SocketTLS`` (``_sslobj.py``). Server
sockets start as ``NativeServerSocketTLS``, the Python ``SocketTLS``: their engine buffer is made
once the ClientHello is in, so that ``sni_callback`` can choose the context (``_hello.py``). The
ClientHello is the only record Python reads: the engine's buffer then exists with the hello in
it and nothing sent, and the ``SSLSocket``'s ``_sslobj`` becomes a ``NativeSocketTLS`` over that
buffer's connection, which continues the call that read the hello (handshake, read or write).
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import TYPE_CHECKING, Any, cast

from .. import _native
from .._errors import TLSError
from .._extensions import SupportsNativeIO, implements
from .._nativesock import NativeClientSockets
from ._hello import SwitchToNative
from ._sslobj import SocketTLS, SSLSession, _LockedBuffer, _TLSBase, client_buffer, translate

if TYPE_CHECKING:
    import ssl

    from .._protocols import ClientContext, ServerContext, TLSBuffer

__all__ = ["NativeServerSocketTLS", "NativeSocketTLS", "native_sslobj"]


class NativeSocketTLS(_native.SSLSocketCore):
    """``_sslobj`` of a bridge ``ssl.SSLSocket`` on an engine with native I/O.

    ``read``, ``write``, ``do_handshake``, ``pending`` and ``shutdown`` are
    ``unitls._native.SSLSocketCore``'s.
    """

    def __init__(
        self,
        connection: _native.Connection,
        sock: ssl.SSLSocket,
        translate_error: Any,
        buffer: TLSBuffer,
        context: ssl.SSLContext,
        pep: ClientContext | ServerContext,
        server_side: bool,
        server_hostname: str | None,
        owner: Any,
        verified: bool,
    ) -> None:
        self._buf = _LockedBuffer(buffer)  # information calls only: the I/O is in Rust
        self._context = context
        self._pep = pep
        self.server_side = server_side
        self.server_hostname = server_hostname
        self._owner = weakref.ref(owner) if owner is not None else None
        self._verified = verified  # False: getpeercert() gives {} like an unverified C socket
        self._offered: SSLSession | None = None  # given to the buffer at wrap time
        self._exported: SSLSession | None = None

    @property
    def _handshaked(self) -> bool:
        return bool(self.handshake_done)

    def _buffer(self) -> _LockedBuffer:
        return self._buf

    # The information methods of the Python _sslobj, unchanged.
    context = _TLSBase.context
    owner = _TLSBase.owner
    session = _TLSBase.session
    session_reused = _TLSBase.session_reused
    getpeercert = _TLSBase.getpeercert
    _version = _TLSBase._version
    version = _TLSBase.version
    cipher = _TLSBase.cipher
    shared_ciphers = _TLSBase.shared_ciphers
    compression = _TLSBase.compression
    selected_alpn_protocol = _TLSBase.selected_alpn_protocol
    selected_npn_protocol = _TLSBase.selected_npn_protocol
    get_channel_binding = _TLSBase.get_channel_binding
    get_unverified_chain = _TLSBase.get_unverified_chain
    get_verified_chain = _TLSBase.get_verified_chain
    verify_client_post_handshake = _TLSBase.verify_client_post_handshake


def native_sslobj(
    sock: ssl.SSLSocket,
    context: ssl.SSLContext,
    pep: ClientContext | ServerContext,
    server_side: bool,
    server_hostname: str | None,
    owner: Any,
    verified: bool,
    offered: SSLSession | None = None,
) -> NativeSocketTLS | None:
    """The native ``_sslobj`` for a client ``sock``, or None (servers, whose engine buffer only
    comes with the ClientHello, for ``sni_callback``; engines without native I/O)."""
    if server_side or not isinstance(pep, NativeClientSockets):
        return None
    try:
        buffer = client_buffer(pep, server_hostname or _peer_address(sock), offered)
    except TLSError as exc:
        raise translate(exc, "handshake", server_hostname) from exc
    if not implements(buffer, SupportsNativeIO):
        return None
    obj = NativeSocketTLS(
        cast("SupportsNativeIO", buffer).native_connection(),
        sock,
        functools.partial(translate, server_hostname=server_hostname),
        buffer,
        context,
        pep,
        server_side,
        server_hostname,
        owner,
        verified,
    )
    obj._offered = offered
    return obj


class NativeServerSocketTLS(SocketTLS):
    """``_sslobj`` of a bridge server ``ssl.SSLSocket`` on an engine with native I/O, until the
    ClientHello is in (see the module docstring): then the ``SSLSocket``'s ``_sslobj`` is a
    ``NativeSocketTLS`` and this object is dropped."""

    _native_switch = True  # read by HelloBuffer
    _native: NativeSocketTLS | None = None

    def __init__(self, sock: ssl.SSLSocket, *args: Any) -> None:
        super().__init__(sock, *args)
        self._switch_lock = threading.Lock()

    def _go_native(self, switch: SwitchToNative) -> NativeSocketTLS:
        """The native ``_sslobj``, made by the first call that gets ``switch``; a thread that
        was waiting in the Python driver gets ``switch`` too (``HelloBuffer.retire``) and must
        find the same object: two would be two native cores reading one socket, each losing
        the records the other took."""
        with self._switch_lock:
            if self._native is None:
                self._native = self._make_native(switch)
            return self._native

    def _make_native(self, switch: SwitchToNative) -> NativeSocketTLS:
        sock = cast("ssl.SSLSocket", self._sock())
        obj = NativeSocketTLS(
            cast("SupportsNativeIO", switch.engine).native_connection(),
            sock,
            functools.partial(translate, server_hostname=self.server_hostname),
            switch.hello,  # forwards to the engine's buffer; keeps the ClientHello's facts
            self._context,  # as sni_callback left them
            self._pep,
            True,
            self.server_hostname,
            self.owner,
            self._verified,
        )
        sock._sslobj = obj  # type: ignore[attr-defined]
        return obj

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except SwitchToNative as switch:
            self._go_native(switch).do_handshake()

    def read(self, n: int = 1024, buffer: Any = None) -> bytes | int:
        try:
            return super().read(n, buffer)
        except SwitchToNative as switch:
            return self._go_native(switch).read(n, buffer)

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except SwitchToNative as switch:
            return self._go_native(switch).write(data)


def _peer_address(sock: ssl.SSLSocket) -> str:
    # With hostname checks off the name is only used for SNI; an IP literal sends none.
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return "0.0.0.0"
