"""The ``_sslobj`` of bridge sockets and objects: ``_ssl._SSLSocket``'s interface over a TLSBuffer.

``ssl.SSLSocket`` and ``ssl.SSLObject`` do no TLS themselves: every call goes to their
``_sslobj``, normally a C ``_ssl._SSLSocket``. These classes take its place. For a socket the C
object does the network I/O itself (honouring the socket's timeout, raising ``SSLWant*Error`` when
non-blocking); ``SocketTLS`` does the same with the plain ``_socket.socket`` methods, which the
``SSLSocket`` overrides. ``BioTLS`` moves ciphertext through the two ``ssl.MemoryBIO``s instead.
"""

from __future__ import annotations

import _socket
import socket
import ssl
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .._engine import TLS12, TLS13, version_bounds
from .._enums import DEFAULT_CIPHER_LIST, TLS13_SUITES, CipherSuite, NextProtocol, TLSVersion
from .._errors import (
    CertificateVerificationError,
    ConfigurationError,
    HandshakeClosedError,
    RaggedEOF,
    TLSConnectionError,
    TLSError,
    TLSTimeoutError,
    WantReadError,
    WantWriteError,
)
from ._certinfo import (
    PeerCertificate,
    alert_reason,
    cert_dict,
    cipher_tuple,
    verified_chain,
    verify_code,
    verify_message,
)
from ._hello import HelloBuffer

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._protocols import ClientContext, ServerContext, TLSBuffer

__all__ = ["BioTLS", "SocketTLS", "translate"]

_FEED_SIZE = 256 * 1024
_RECORD = 16 * 1024


def _eof_error() -> ssl.SSLEOFError:
    err = ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
    err.reason = "UNEXPECTED_EOF_WHILE_READING"
    err.library = "SSL"
    return err


def _want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)")


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE, "The operation did not complete (write)")


# Engine failures that OpenSSL reports with a reason of its own (text in the engines' messages).
_PROTOCOL_REASONS = (
    ("NoCipherSuitesInCommon", "NO_SHARED_CIPHER", "no shared cipher"),  # rustls
    ("SSL_ERROR_NO_CYPHER_OVERLAP", "NO_SHARED_CIPHER", "no shared cipher"),  # NSS
    ("is the peer speaking TLS?", "WRONG_VERSION_NUMBER", "wrong version number"),
)
_REJECTED_PREFIX = "peer rejected our certificate: "


def _ssl_error(reason: str, text: str, cls: type[ssl.SSLError] = ssl.SSLError) -> ssl.SSLError:
    err = cls(ssl.SSL_ERROR_SSL, f"[SSL: {reason}] {text}")
    err.reason = reason
    err.library = "SSL"
    return err


def translate(exc: TLSError, operation: str, server_hostname: str | None = None) -> OSError:
    """The ``ssl`` (or ``OSError``) exception a C ``_ssl`` object raises for this failure.

    The caller chains ``exc`` as ``__cause__``; ``server_hostname`` names the server in
    hostname mismatch messages, as ``_ssl.c`` does.
    """
    cause = exc.__cause__
    # A fatal alert from the peer (ProtocolError.alert): OpenSSL's reason names the alert, e.g.
    # TLSV1_ALERT_UNKNOWN_CA when the peer rejected our certificate.
    alert = getattr(exc, "alert", None)
    if alert is None and isinstance(exc, CertificateVerificationError):
        if exc.reason.startswith(_REJECTED_PREFIX):
            alert = exc.reason[len(_REJECTED_PREFIX) :]
    if alert is not None:
        known = alert_reason(alert)
        if known is not None:
            return _ssl_error(*known)
    if isinstance(exc, CertificateVerificationError):
        if isinstance(cause, ssl.SSLCertVerificationError):
            code, message = int(cause.verify_code), str(cause.verify_message)
        elif "sent no certificate" in exc.reason:
            return _ssl_error(
                "PEER_DID_NOT_RETURN_A_CERTIFICATE", "peer did not return a certificate"
            )
        else:
            code, message = verify_message(verify_code(exc.reason), exc.reason, server_hostname)
        err = _ssl_error(
            "CERTIFICATE_VERIFY_FAILED",
            f"certificate verify failed: {message}",
            ssl.SSLCertVerificationError,
        )
        assert isinstance(err, ssl.SSLCertVerificationError)
        err.verify_code = code
        err.verify_message = message
        return err
    if isinstance(exc, (RaggedEOF, HandshakeClosedError)):
        return _eof_error()
    if isinstance(exc, WantReadError):
        return _want_read()
    if isinstance(exc, WantWriteError):
        return _want_write()
    if isinstance(exc, TLSTimeoutError):
        return TimeoutError(f"The {operation} operation timed out")
    if isinstance(exc, TLSConnectionError):
        return OSError(exc.errno, exc.strerror)  # OSError picks the matching subclass
    if isinstance(cause, ssl.SSLError):
        err = ssl.SSLError(ssl.SSL_ERROR_SSL, str(exc))
        err.reason, err.library = cause.reason, cause.library
        return err
    text = str(exc)
    for marker, reason, openssl_text in _PROTOCOL_REASONS:
        if marker in text:
            err = _ssl_error(reason, openssl_text)
            err.args = (ssl.SSL_ERROR_SSL, f"[SSL: {reason}] {openssl_text} ({text})")
            err.strerror = err.args[1]
            return err
    err = ssl.SSLError(ssl.SSL_ERROR_SSL, text)
    err.reason = "UNITLS_CONFIGURATION" if isinstance(exc, ConfigurationError) else "UNITLS"
    err.library = "unitls"
    return err


class _LockedBuffer:
    """Serialises calls into the engine.

    ``_ssl.c`` lets one thread read while another writes on the same SSLSocket (websockets' sync
    client does); an engine object must not be entered twice at once (PyO3 refuses it).
    """

    __slots__ = ("_buf", "_lock")

    def __init__(self, buf: TLSBuffer) -> None:
        self._buf = buf
        self._lock = threading.Lock()

    def read(self, amt: int, buffer: Buffer | None = None) -> bytes | int:
        with self._lock:
            return self._buf.read(amt, buffer)

    def write(self, buf: Buffer) -> int:
        with self._lock:
            return self._buf.write(buf)

    def do_handshake(self) -> None:
        with self._lock:
            self._buf.do_handshake()

    def shutdown(self) -> None:
        with self._lock:
            self._buf.shutdown()

    def process_incoming(self, data: bytes) -> None:
        with self._lock:
            self._buf.process_incoming(data)

    def process_outgoing(self, amount: int) -> bytes:
        with self._lock:
            return self._buf.process_outgoing(amount)

    def outgoing_bytes_buffered(self) -> int:
        with self._lock:
            return self._buf.outgoing_bytes_buffered()

    def getpeercert(self) -> bytes | None:
        with self._lock:
            return self._buf.getpeercert()

    def cipher(self) -> CipherSuite | int | None:
        with self._lock:
            return self._buf.cipher()

    def peer_chain(self) -> list[bytes]:
        """DER of what the peer sent, leaf first (engines' ``getpeercertchain``, beyond the PEP)."""
        with self._lock:
            getter = getattr(self._buf, "getpeercertchain", None)
            if getter is not None:
                return list(getter())
            leaf = self._buf.getpeercert()
            return [leaf] if leaf else []

    def session_resumed(self) -> bool:
        # Hook for engines reporting resumption (issue 13: TLSBuffer.session_resumed).
        with self._lock:
            return bool(getattr(self._buf, "session_resumed", False))

    def client_hello(self) -> Any:
        # No lock: an attribute read, and the caller may be inside sni_callback (under the lock).
        return getattr(self._buf, "client_hello", None)

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        with self._lock:
            return self._buf.negotiated_protocol()

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        with self._lock:
            return self._buf.negotiated_tls_version


class _TLSBase:
    """What sockets and memory-BIO objects share: the TLS state machine over the TLSBuffer."""

    def __init__(
        self,
        context: ssl.SSLContext,
        pep_context: ClientContext | ServerContext,
        server_side: bool,
        server_hostname: str | None,
        owner: Any,
        verified: bool,
    ) -> None:
        self._context = context
        self._pep = pep_context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self._owner = weakref.ref(owner) if owner is not None else None
        self._verified = verified  # False: getpeercert() gives {} like an unverified C socket
        self._buf: _LockedBuffer | None = None
        # Ciphertext leaves in the order the engine made it, whichever thread sends it.
        self._send_lock = threading.RLock()
        self._handshaked = False
        self._plain = bytearray()  # plaintext read ahead by pending()
        self._deferred: OSError | None = None  # an error met by pending(), raised by read()
        self._closed_by_peer = False  # close_notify received
        self._transport_eof = False  # b"" handed to process_incoming
        self._shutdown_sent = False
        self._backlog = bytearray()  # ciphertext the engine did not accept yet
        self._eof_pending = False  # transport EOF seen while the backlog was not empty

    # -- engine plumbing (subclasses move the ciphertext) -----------------------------------------

    def _flush(self) -> None:
        raise NotImplementedError

    def _pull(self, operation: str) -> bool:
        """Hand more ciphertext to the engine; False once EOF was handed over.

        Raises ``SSLWantReadError`` when nothing is available without blocking.
        """
        raise NotImplementedError

    def _pull_backlog(self) -> bool:
        size = len(self._backlog)
        data = bytes(self._backlog)
        self._backlog.clear()
        if not self._retry(self._buffer(), data) and len(self._backlog) >= size:
            raise ssl.SSLError(ssl.SSL_ERROR_SSL, "the TLS engine refuses more incoming data")
        if self._eof_pending and not self._backlog:
            self._eof_pending = False
            self._transport_eof = True
            self._retry(self._buffer(), b"")
        return True

    def _local_address(self) -> str | None:
        """The IP address the peer reached (for servers choosing a chain without SNI)."""
        return None

    def _take_buffered(self) -> bool:
        """Hand the engine ciphertext that is already here, without any I/O (False: none)."""
        return False

    def _placeholder_hostname(self) -> str:
        # With hostname checks off the name is only used for SNI; an IP literal sends none.
        return "0.0.0.0"

    def _buffer(self) -> _LockedBuffer:
        buf = self._buf
        if buf is None:
            raw: Any
            try:
                if self.server_side:
                    # The engine's buffer comes once the ClientHello is in (sni_callback).
                    raw = HelloBuffer(self)
                else:
                    name = self.server_hostname or self._placeholder_hostname()
                    raw = self._pep.create_buffer(name)  # type: ignore[call-arg]
            except TLSError as exc:
                raise translate(exc, "handshake") from exc
            buf = self._buf = _LockedBuffer(raw)
        return buf

    def _feed(self, data: bytes) -> None:
        """Hand ciphertext to the engine (``b""``: the transport's EOF)."""
        if not data:
            if self._transport_eof:
                return
            if self._backlog:
                self._eof_pending = True  # delivered once the backlog is in
                return
            self._transport_eof = True
        elif self._backlog:
            self._backlog += data  # keep the order
            return
        self._retry(self._buffer(), data)

    def _retry(self, buf: _LockedBuffer, data: bytes) -> bool:
        try:
            buf.process_incoming(data)
        except WantReadError:
            # The engine holds too much undecrypted data: keep it until plaintext is read.
            self._backlog += data
            return False
        except TLSError as exc:
            # Engines may fail while processing input (rustls does): send their alert first.
            self._flush_quietly()
            operation = "handshake" if not self._handshaked else "read"
            raise translate(exc, operation, self.server_hostname) from exc
        return True

    def _flush_quietly(self) -> None:
        # On failure paths: deliver the alert if the transport still takes it.
        try:
            self._flush()
        except (OSError, TLSError):
            pass

    # -- the _ssl._SSLSocket interface -----------------------------------------------------------

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    @context.setter
    def context(self, value: ssl.SSLContext) -> None:
        if value is self._context:
            return
        if self._handshaked:
            # As with OpenSSL: recorded, and nothing changes for this connection.
            self._context = value
            return
        # Before the engine's buffer exists: a client not yet started, a server in sni_callback.
        waiting = self._buf is None or getattr(self, "_in_sni_callback", False)
        plan_for = getattr(value, "_unitls_context", None)
        if not waiting or plan_for is None:
            raise ValueError(
                "the unitls bridge can switch a connection to another SSLContext only before "
                "its handshake starts (clients) or in sni_callback (servers), and only to a "
                "unitls.compat.SSLContext"
            )
        plan = plan_for(self.server_side)
        if plan.pep is None:
            ours = getattr(self._context, "implementation", None)
            theirs = getattr(value, "implementation", None)
            raise ValueError(
                f"cannot switch a connection of the {getattr(ours, 'name', '?')} engine to an "
                f"SSLContext of the {getattr(theirs, 'name', '?')} engine"
            )
        self._context, self._pep, self._verified = value, plan.pep, plan.verified

    @property
    def owner(self) -> Any:
        return self._owner() if self._owner is not None else None

    @owner.setter
    def owner(self, value: Any) -> None:
        self._owner = weakref.ref(value) if value is not None else None

    @property
    def session(self) -> None:
        return None

    @session.setter
    def session(self, value: object) -> None:
        if value is not None:
            raise ValueError("the unitls bridge does not resume sessions from ssl.SSLSession")

    @property
    def session_reused(self) -> bool | None:
        if not self._handshaked:
            return None
        return self._buffer().session_resumed()

    def do_handshake(self) -> None:
        if self._handshaked:
            return
        buf = self._buffer()
        while True:
            try:
                buf.do_handshake()
                break
            except WantReadError:
                self._flush()
                self._pull("handshake")
            except TLSError as exc:
                self._flush_quietly()
                raise translate(exc, "handshake", self.server_hostname) from exc
        self._handshaked = True
        self._flush()

    def _take_plain(self, n: int, buffer: Buffer | None) -> bytes | int:
        plain = self._plain
        if buffer is None:
            data = bytes(plain[:n])
            del plain[:n]
            return data
        view = memoryview(buffer).cast("B")
        k = min(n, len(plain), view.nbytes)
        view[:k] = plain[:k]
        del plain[:k]
        return k

    def read(self, n: int = 1024, buffer: Buffer | None = None) -> bytes | int:
        # _ssl.c's argument rules: a negative size without a buffer is an error; with one, the
        # size is capped at its length in bytes, whatever its item type (array('I'), ctypes).
        if buffer is not None:
            view = memoryview(buffer)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            buffer = view
            if n <= 0 or n > view.nbytes:
                n = view.nbytes
        elif n < 0:
            raise ValueError("size should not be negative")
        if n <= 0:
            return b"" if buffer is None else 0
        if not self._handshaked:
            self.do_handshake()
        if self._plain:
            return self._take_plain(n, buffer)
        if self._deferred is not None:
            raise self._deferred
        if self._closed_by_peer:
            return self._eof_result(buffer)
        buf = self._buffer()
        while True:
            try:
                data = buf.read(n, buffer)
            except WantReadError:
                self._flush()
                self._pull("read")
                continue
            except TLSError as exc:
                self._flush_quietly()
                raise translate(exc, "read") from exc
            if not data:
                self._closed_by_peer = True
                return self._eof_result(buffer)
            if buf.outgoing_bytes_buffered():
                self._flush_quietly()  # e.g. a KeyUpdate answer: best effort, never blocks reads
            return data

    def _eof_result(self, buffer: Buffer | None) -> bytes | int:
        # OpenSSL's read after the peer's close_notify: empty while our side is still open,
        # SSLZeroReturnError once both close_notify alerts have crossed (after unwrap()).
        if self._shutdown_sent:
            raise ssl.SSLZeroReturnError(
                ssl.SSL_ERROR_ZERO_RETURN, "TLS/SSL connection has been closed (EOF)"
            )
        return b"" if buffer is None else 0

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B")
        total = view.nbytes
        if not self._handshaked:
            self.do_handshake()
        if total == 0:
            return 0
        buf = self._buffer()
        taken = 0
        # Take everything (trio and anyio ignore short writes): when the engine's buffer is
        # full, push its ciphertext out and go on.
        while taken < total:
            try:
                k = buf.write(view[taken:])
            except WantWriteError:
                k = 0
            except TLSError as exc:
                self._flush_quietly()
                raise translate(exc, "write") from exc
            taken += k
            if k == 0:
                before = buf.outgoing_bytes_buffered()
                self._flush_after_write(taken)
                if before == 0 and buf.outgoing_bytes_buffered() == 0:
                    raise ssl.SSLError(
                        ssl.SSL_ERROR_SSL, "the TLS engine took no data and produced no output"
                    )
        self._flush_after_write(taken)
        return taken

    def _flush_after_write(self, taken: int) -> None:
        self._flush()

    def pending(self) -> int:
        if self._handshaked and not self._plain and not self._closed_by_peer and not self._deferred:
            self._read_ahead()
        return len(self._plain)

    def _read_ahead(self) -> None:
        # PEP 748 has no "decrypted bytes waiting" query: decrypt what is already buffered.
        buf = self._buffer()
        try:
            try:
                data = buf.read(_RECORD)
            except WantReadError:
                if not self._take_buffered():
                    return
                data = buf.read(_RECORD)
        except WantReadError:
            return
        except TLSError as exc:
            err = translate(exc, "read")
            err.__cause__ = exc
            self._deferred = err
            return
        assert isinstance(data, bytes)
        if data:
            self._plain += data
        else:
            self._closed_by_peer = True

    def _await_close_notify(self) -> None:
        buf = self._buffer()
        while not self._closed_by_peer:
            try:
                data = buf.read(_RECORD)
            except WantReadError:
                self._flush()
                if self._transport_eof:
                    return
                self._pull("read")
                continue
            except (RaggedEOF, HandshakeClosedError):
                return  # the peer went away without close_notify: nothing left to wait for
            except TLSError as exc:
                raise translate(exc, "read") from exc
            if not data:
                self._closed_by_peer = True

    def _shutdown(self) -> None:
        """Send close_notify and wait for the peer's (SSLWantReadError while it is missing)."""
        if self._buf is None or not self._handshaked:
            return
        buf = self._buf
        if not self._shutdown_sent:
            try:
                buf.shutdown()
            except TLSError as exc:
                raise translate(exc, "write") from exc
            self._shutdown_sent = True
        self._flush()
        self._plain.clear()
        self._await_close_notify()

    def getpeercert(self, binary_form: bool = False) -> dict[str, Any] | bytes | None:
        if not self._handshaked:
            raise ValueError("handshake not done yet")
        der = self._buffer().getpeercert()
        if binary_form or der is None:
            return der
        if not self._verified:
            return {}
        return cert_dict(der)

    def _version(self) -> str | None:
        if not self._handshaked:
            return None
        version = self._buffer().negotiated_tls_version
        return None if version is None else str(version.value)

    def version(self) -> str | None:
        return self._version()

    def cipher(self) -> tuple[str, str, int] | None:
        if not self._handshaked:
            return None
        suite = self._buffer().cipher()
        return cipher_tuple(None if suite is None else int(suite), self._version())

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        """Server side: the suites both sides offered, in this server's order (as OpenSSL)."""
        if not self.server_side or self._buf is None:
            return None
        hello = self._buf.client_hello()
        config = getattr(self._pep, "configuration", None)
        if hello is None or config is None:
            return None
        low, high = version_bounds(config)
        ours = [int(c) for c in (config.ciphers or DEFAULT_CIPHER_LIST)]
        offered = set(hello.cipher_suites)
        shared = []
        for suite in ours:
            tls13 = suite in TLS13_SUITES
            if suite in offered and (high >= TLS13 if tls13 else low <= TLS12):
                info = cipher_tuple(suite, "TLSv1.3" if tls13 else "TLSv1.2")
                if info is not None:
                    shared.append(info)
        return shared

    def compression(self) -> None:
        return None

    def selected_alpn_protocol(self) -> str | None:
        if not self._handshaked:
            return None
        proto = self._buffer().negotiated_protocol()
        if proto is None:
            return None
        raw = proto.value if isinstance(proto, NextProtocol) else proto
        return raw.decode("latin-1")

    def selected_npn_protocol(self) -> None:
        return None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> None:
        if cb_type not in ssl.CHANNEL_BINDING_TYPES:
            raise ValueError(f"{cb_type} channel binding type not implemented")
        # tls-unique is the first Finished message, which PEP 748 engines do not expose (the
        # OpenSSL engine's native path gives it); None is what ssl returns when it has none.
        return None

    def get_unverified_chain(self) -> list[PeerCertificate] | None:
        """What the peer sent, leaf first (``_ssl.c``: ``SSL_get_peer_cert_chain``)."""
        if not self._handshaked:
            return None
        ders = self._buffer().peer_chain()
        return [PeerCertificate(d) for d in ders] if ders else None

    def get_verified_chain(self) -> list[PeerCertificate] | None:
        """The verified path, leaf to trust anchor (``SSL_get0_verified_chain``)."""
        if not self._handshaked or not self._verified:
            return None
        sent = self._buffer().peer_chain()
        if not sent:
            return None
        anchors = getattr(self._context, "_unitls_anchors", None)
        return [PeerCertificate(d) for d in verified_chain(sent, anchors() if anchors else [])]

    def verify_client_post_handshake(self) -> None:
        if self._version() != "TLSv1.3":
            raise _ssl_error("WRONG_SSL_VERSION", "wrong ssl version")  # as OpenSSL says
        raise ssl.SSLError(
            ssl.SSL_ERROR_SSL,
            "post-handshake client authentication (verify_client_post_handshake) is not "
            "supported by the unitls bridge: request client certificates in the handshake",
        )


class SocketTLS(_TLSBase):
    """``_sslobj`` of a bridge ``ssl.SSLSocket``: does the socket I/O itself, like ``_ssl.c``."""

    def __init__(self, sock: ssl.SSLSocket, *args: Any) -> None:
        super().__init__(*args)
        self._sock_ref = weakref.ref(sock)  # the SSLSocket owns us: no cycle
        self._unsent: memoryview | None = None  # ciphertext a non-blocking socket refused
        self._partial = bytearray()  # a record being read by _recv_record
        self._write_taken = 0  # plaintext taken by a write() that then raised SSLWantWriteError

    def _sock(self) -> socket.socket:
        sock = self._sock_ref()
        if sock is None:
            raise ValueError("the underlying socket has been closed")
        return sock

    def _placeholder_hostname(self) -> str:
        try:
            return str(self._sock().getpeername()[0])
        except (OSError, IndexError):
            return "0.0.0.0"

    def _local_address(self) -> str | None:
        try:
            return str(self._sock().getsockname()[0])
        except (OSError, IndexError, ValueError):
            return None

    def _flush_quietly(self) -> None:
        super()._flush_quietly()
        if not self._handshaked:
            # A failed handshake: records the peer sent after the one that failed would make
            # close() send a TCP reset, which can destroy the alert just sent before the peer
            # reads it. Read them (without waiting) and drop them.
            try:
                sock = self._sock()
                for _ in range(16):
                    if not _socket.socket.recv(sock, 65536, socket.MSG_DONTWAIT):
                        break
            except (OSError, ValueError):
                pass

    def _send_raw(self, sock: socket.socket, view: memoryview) -> None:
        if sock.gettimeout() == 0:
            while view:
                try:
                    sent = _socket.socket.send(sock, view)
                except BlockingIOError:
                    self._unsent = view
                    raise _want_write() from None
                view = view[sent:]
        else:
            try:
                _socket.socket.sendall(sock, view)
            except TimeoutError:
                raise TimeoutError("The write operation timed out") from None

    def _flush(self) -> None:
        sock = self._sock()
        with self._send_lock:
            if self._unsent is not None:
                view, self._unsent = self._unsent, None
                self._send_raw(sock, view)
            buf = self._buf
            if buf is None:
                return
            n = buf.outgoing_bytes_buffered()
            while n:
                self._send_raw(sock, memoryview(buf.process_outgoing(n)))
                n = buf.outgoing_bytes_buffered()

    def _pull(self, operation: str) -> bool:
        if self._transport_eof:
            raise _eof_error()
        if self._backlog:
            return self._pull_backlog()
        sock = self._sock()
        try:
            data = self._recv_record(sock)
        except BlockingIOError:
            raise _want_read() from None
        except TimeoutError:
            raise TimeoutError(f"The {operation} operation timed out") from None
        self._feed(data)
        return bool(data)

    def _recv_record(self, sock: socket.socket) -> bytes:
        # Read exactly one TLS record at a time, like OpenSSL without read-ahead: callers that
        # select() on the socket before recv() (websockets' sync client, many others) would hang
        # on records read ahead into the engine, and after close_notify (unwrap) the peer's
        # cleartext must stay in the socket.
        head = self._partial
        while len(head) < 5:
            chunk = _socket.socket.recv(sock, 5 - len(head))
            if not chunk:
                return b""
            head += chunk
        if not (20 <= head[0] <= 24 and head[1] == 3) or int.from_bytes(head[3:5], "big") > 18432:
            # Not a TLS record header: let the engine see the bytes and fail with its own error.
            self._partial = bytearray()
            return bytes(head)
        need = 5 + int.from_bytes(head[3:5], "big")
        while len(head) < need:
            chunk = _socket.socket.recv(sock, need - len(head))
            if not chunk:
                return b""
            head += chunk
        self._partial = bytearray()
        return bytes(head)

    def write(self, data: Buffer) -> int:
        if self._write_taken:
            # The caller retries the write that raised SSLWantWriteError (OpenSSL's contract):
            # its data is already encrypted, only the ciphertext still has to go out.
            self._flush()
            taken, self._write_taken = self._write_taken, 0
            return taken
        if self._unsent is not None:
            self._flush()  # raises SSLWantWriteError before taking anything new
        return super().write(data)

    def _flush_after_write(self, taken: int) -> None:
        try:
            self._flush()
        except ssl.SSLWantWriteError:
            self._write_taken = taken
            raise

    def shutdown(self) -> socket.socket:
        self._shutdown()
        return self._sock()


class BioTLS(_TLSBase):
    """``_sslobj`` of a bridge ``ssl.SSLObject``: ciphertext through two ``ssl.MemoryBIO``s."""

    def __init__(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any) -> None:
        super().__init__(*args)
        self._incoming = incoming
        self._outgoing = outgoing

    def _flush(self) -> None:
        buf = self._buf
        if buf is None:
            return
        with self._send_lock:
            n = buf.outgoing_bytes_buffered()
            while n:
                self._outgoing.write(buf.process_outgoing(n))
                n = buf.outgoing_bytes_buffered()

    def _pull(self, operation: str) -> bool:
        if self._backlog:
            return self._pull_backlog()
        data = self._incoming.read(_FEED_SIZE)
        if data:
            self._feed(data)
            return True
        if self._incoming.eof:
            if self._transport_eof:
                raise _eof_error()
            self._feed(b"")
            return False
        raise _want_read()

    def _take_buffered(self) -> bool:
        if self._backlog or not self._incoming.pending:
            return False
        self._feed(self._incoming.read(_FEED_SIZE))
        return True

    def shutdown(self) -> None:
        self._shutdown()
