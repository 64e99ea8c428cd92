"""The ``_sslobj`` of bridge sockets and objects: ``_ssl._SSLSocket``'s interface over a TLSBuffer.

``ssl.SSLSocket`` and ``ssl.SSLObject`` do no TLS themselves: every call goes to their
``_sslobj``, normally a C ``_ssl._SSLSocket``. These classes take its place. For a socket the C
object does the network I/O itself (honouring the socket's timeout, raising ``SSLWant*Error`` when
non-blocking); ``SocketTLS`` does the same with the plain ``_socket.socket`` methods, which the
``SSLSocket`` overrides. ``BioTLS`` moves ciphertext through the two ``ssl.MemoryBIO``s instead.

Both are thin shells over the one driver (``unitls._drive``: retries, backlog, deadlines, full
duplex, EOF rules). They supply the I/O (``_RecordIO``: one TLS record per socket read;
``MemoryIO`` over the BIOs) and map its exceptions to the ``ssl`` module's (``translate``). The
information methods (``getpeercert``, ``cipher``, ``version``...) read the engine under the
driver's lock.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import ssl
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .._drive import NOW, Deadline, Driver, MemoryIO, wait_fd
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

__all__ = ["BioTLS", "SSLSession", "SocketTLS", "check_offered_session", "translate"]

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
# Python 3.13's _ssl reports a connection reset as ConnectionResetError; before, after the
# handshake, as SSLEOFError.
_RESET_IS_OSERROR = sys.version_info >= (3, 13)


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


class SSLSession:
    """What ``SSLSocket.session`` / ``SSLObject.session`` give on engines other than OpenSSL
    (``ssl.SSLSession`` objects can only be made by ``_ssl``): the engine's session of one client
    connection, to offer with ``wrap_socket(..., session=...)`` or ``sock.session = ...`` on a
    later connection of the same ``SSLContext``, as with the stdlib.

    It holds the TLS 1.2 session and TLS 1.3 tickets the connection received (tickets arrive after
    the handshake, with the first data read); each TLS 1.3 ticket is used once. Offered to a
    connection with another server name, or after the context's settings changed (the engine
    context behind it was rebuilt), it is not used: that connection makes a full handshake.
    """

    __slots__ = ("_context", "_engine", "_id", "_pep", "_time")

    def __init__(
        self,
        context: ssl.SSLContext,
        pep: object,
        engine: Any,
        resumed: SSLSession | None = None,
    ) -> None:
        self._context = context
        self._pep = pep  # the PEP context that made it: the only one that can resume it
        self._engine = engine
        # A connection that resumed an offered session continues it, as a TLS 1.2 session id
        # does: the same id and creation time (the engines do not expose the protocol's own).
        self._id: bytes = resumed._id if resumed is not None else os.urandom(32)
        self._time: int = resumed._time if resumed is not None else int(time.time())

    @property
    def id(self) -> bytes:
        """An identifier of the session, kept by the connections that resume it (unitls' own,
        not the TLS session id, which the engines do not expose)."""
        return self._id

    @property
    def time(self) -> int:
        """When the session was established (seconds since the epoch)."""
        return self._time

    @property
    def has_ticket(self) -> bool:
        """Whether it still holds something to resume with (a TLS 1.2 session or a TLS 1.3
        ticket)."""
        return bool(getattr(self._engine, "resumable", False))

    def usable_for(self, pep: object, server_hostname: str) -> Any:
        """The engine's session to offer to a new buffer of ``pep`` for ``server_hostname``, or
        None (a full handshake)."""
        if pep is not self._pep:
            return None
        name = getattr(self._engine, "server_name", None)
        return self._engine if name == server_hostname.lower() else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSLSession):
            return NotImplemented
        return self._id == other._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"<unitls.compat.SSLSession {self._engine!r}>"


def check_offered_session(
    context: ssl.SSLContext, session: object, server_side: bool
) -> SSLSession | None:
    """A session given to ``wrap_socket``/``wrap_bio`` or set on a connection: the checks, in
    order and with the messages, of ``_ssl.c``."""
    if session is None:
        return None
    if not isinstance(session, SSLSession):
        raise TypeError("Value is not a SSLSession.")
    if session._context is not context:
        raise ValueError("Session refers to a different SSLContext.")
    if server_side:
        raise ValueError("Cannot set session for server-side SSLSocket.")
    return session


class _LockedBuffer:
    """Serialises calls into the engine.

    ``_ssl.c`` lets one thread read while another writes on the same SSLSocket (websockets' sync
    client does); an engine object must not be entered twice at once (PyO3 refuses it).
    """

    __slots__ = ("_buf", "_lock")

    def __init__(self, buf: TLSBuffer, lock: threading.Lock | None = None) -> None:
        self._buf = buf
        self._lock = lock or threading.Lock()  # the driver's engine lock, where there is one

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
        with self._lock:
            return bool(getattr(self._buf, "session_resumed", False))

    def session(self) -> Any:
        """The engine's exported client session (``SupportsSessionExport``), or None."""
        with self._lock:
            return getattr(self._buf, "session", None)

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


def client_buffer(
    pep: ClientContext | ServerContext, server_hostname: str, offered: SSLSession | None
) -> TLSBuffer:
    """A new client buffer of ``pep``, resuming ``offered`` where it can (see ``SSLSession``)."""
    session = offered.usable_for(pep, server_hostname) if offered is not None else None
    if session is not None:
        return pep.create_buffer(server_hostname, session=session)  # type: ignore[call-arg]
    return pep.create_buffer(server_hostname)  # type: ignore[call-arg]


class _TLSBase:
    """What sockets and memory-BIO objects share: the driver, and the ``_ssl`` interface."""

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
        self._driver: Driver | None = None  # made at first use (the engine's buffer with it)
        self._drv_lock = threading.Lock()
        self._buf: _LockedBuffer | None = None
        self._shutdown_sent = False
        self._offered: SSLSession | None = None  # session= / .session = before the handshake
        self._exported: SSLSession | None = None

    # -- what the shells supply ---------------------------------------------------------------

    def _transport(self) -> Any:
        raise NotImplementedError

    def _deadline(self, what: str) -> Deadline:
        return NOW

    def _placeholder_hostname(self) -> str:
        # With hostname checks off the name is only used for SNI; an IP literal sends none.
        return "0.0.0.0"

    def _local_address(self) -> str | None:
        """The IP address the peer reached (for servers choosing a chain without SNI)."""
        return None

    def _after_failed_handshake(self) -> None:
        """Called when the handshake failed (the engine's alert is out)."""

    def _error(self, exc: TLSError, operation: str) -> OSError:
        """The ``ssl`` exception for a driver failure (the caller chains ``exc``)."""
        driver = self._driver
        # A non-blocking call that would block, or one that ran out of time, has not failed:
        # the caller retries, and the peer's next flight (which may be arriving right now) must
        # still be in the socket then.
        unfinished = isinstance(exc, (WantReadError, WantWriteError, TLSTimeoutError))
        if not unfinished and (driver is None or not driver.handshake_done):
            self._after_failed_handshake()
        return translate(exc, operation, self.server_hostname)

    # -- the driver -----------------------------------------------------------------------------

    def _drv(self) -> Driver:
        driver = self._driver
        if driver is None:
            # A reader and a writer thread may make the first call together: one driver (one
            # engine buffer) for both, or each would take the other's records off the socket.
            with self._drv_lock:
                driver = self._driver
                if driver is None:
                    driver = self._new_driver()
        return driver

    def _new_driver(self) -> Driver:
        raw: Any
        try:
            if self.server_side:
                # The engine's buffer comes once the ClientHello is in (sni_callback).
                raw = HelloBuffer(self)
            else:
                name = self.server_hostname or self._placeholder_hostname()
                raw = client_buffer(self._pep, name, self._offered)
        except TLSError as exc:
            raise translate(exc, "handshake", self.server_hostname) from exc
        # As the stdlib: a reset during the handshake is a ConnectionResetError; after it, an
        # EOF in violation of protocol up to Python 3.12, a ConnectionResetError from 3.13.
        driver = Driver(
            raw,
            self._transport(),
            reset_is_eof=not _RESET_IS_OSERROR,
            handshake_reset_is_eof=False,
        )
        self._buf = _LockedBuffer(raw, driver.lock)
        self._driver = driver  # published last: _buffer() relies on _buf once it is set
        return driver

    def _buffer(self) -> _LockedBuffer:
        self._drv()
        assert self._buf is not None
        return self._buf

    @property
    def _handshaked(self) -> bool:
        return self._driver is not None and self._driver.handshake_done

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
    def session(self) -> SSLSession | None:
        """This client connection's session once the handshake completed (see ``SSLSession``)."""
        if self.server_side or not self._handshaked:
            return None
        engine = self._buffer().session()
        if engine is None:
            return None
        exported = self._exported
        if exported is None or exported._engine is not engine:
            offered = self._offered
            resumed = offered if offered is not None and self._buffer().session_resumed() else None
            exported = self._exported = SSLSession(self._context, self._pep, engine, resumed)
        return exported

    @session.setter
    def session(self, value: object) -> None:
        offered = check_offered_session(self._context, value, self.server_side)
        if self._buf is not None:
            if self._handshaked:
                raise ValueError("Cannot set session after handshake.")
            raise ValueError(
                "the connection's engine buffer exists already: give the session to "
                "wrap_socket(..., session=...) instead"
            )
        self._offered = offered

    @property
    def session_reused(self) -> bool | None:
        if not self._handshaked:
            return None
        return self._buffer().session_resumed()

    def do_handshake(self) -> None:
        driver = self._drv()
        try:
            driver.handshake(self._deadline("handshake"))
        except TLSError as exc:
            raise self._error(exc, "handshake") from exc

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
        driver = self._drv()
        if driver.peer_closed and not driver.readahead:
            return self._eof_result(buffer)
        try:
            data = driver.read(n, buffer, self._deadline("read"))
        except TLSError as exc:
            raise self._error(exc, "read") from exc
        if not data:
            return self._eof_result(buffer)
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
        driver = self._drv()
        deadline = self._deadline("write")
        try:
            if not driver.handshake_done:
                driver.handshake(deadline)
            if not view.nbytes:
                return 0
            # Takes everything (trio and anyio ignore short writes) unless the socket blocks.
            taken = driver.write(view, deadline)
        except TLSConnectionError as exc:
            gone = exc.errno in (errno.ECONNRESET, errno.EPIPE)
            if gone and driver.handshake_done and not _RESET_IS_OSERROR:
                # What the stdlib reports up to 3.12 when the peer has gone while we write.
                raise _eof_error() from exc
            raise self._error(exc, "write") from exc
        except TLSError as exc:
            raise self._error(exc, "write") from exc
        if driver.unsent is not None:
            self._write_blocked(taken, deadline)
        return taken

    def _write_blocked(self, taken: int, deadline: Deadline) -> None:
        """The data is taken but its ciphertext is not all out (non-blocking or timed out)."""

    def pending(self) -> int:
        if not self._handshaked:
            return 0
        assert self._driver is not None
        return self._driver.pending()

    def _shutdown(self) -> None:
        """Send close_notify and wait for the peer's (SSLWantReadError while it is missing)."""
        driver = self._driver
        if driver is None or not driver.handshake_done:
            return
        deadline = self._deadline("read")
        try:
            driver.shutdown(deadline)
            self._shutdown_sent = True
            driver.await_close_notify(deadline)
        except TLSError as exc:
            raise self._error(exc, "read") from exc

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


class _RecordIO:
    """The bridge socket as the driver's transport: one TLS record per receive.

    Reading exactly one record at a time, like OpenSSL without read-ahead: callers that select()
    on the socket before recv() (websockets' sync client, many others) would hang on records
    read ahead into the engine, and after close_notify (unwrap) the peer's cleartext must stay in
    the socket. The socket's timeout belongs to ``ssl.py``: attempts never wait (see SocketIO).
    """

    __slots__ = ("_partial", "_ref")

    def __init__(self, ref: weakref.ref[ssl.SSLSocket]) -> None:
        self._ref = ref  # the SSLSocket owns us: no cycle
        self._partial = bytearray()  # a record being read

    def _sock(self) -> ssl.SSLSocket:
        sock = self._ref()
        if sock is None:
            raise OSError(errno.EBADF, "the underlying socket has been closed")
        return sock

    @staticmethod
    def _recv(sock: socket.socket, size: int) -> bytes:
        if sock.gettimeout() and not wait_fd(sock.fileno(), True, False, 0):
            raise BlockingIOError
        return _socket.socket.recv(sock, size, _DONTWAIT)

    def recv(self, size: int) -> bytes:
        sock = self._sock()
        head = self._partial
        while len(head) < 5:
            chunk = self._recv(sock, 5 - len(head))
            if not chunk:
                return self._rest()
            head += chunk
        if not (20 <= head[0] <= 24 and head[1] == 3) or int.from_bytes(head[3:5], "big") > 18432:
            # Not a TLS record header: let the engine see the bytes and fail with its own error.
            return self._rest()
        need = 5 + int.from_bytes(head[3:5], "big")
        while len(head) < need:
            chunk = self._recv(sock, need - len(head))
            if not chunk:
                return self._rest()
            head += chunk
        return self._rest()

    def _rest(self) -> bytes:
        # What was read of the record (b"" at a record boundary: the socket's EOF).
        data = bytes(self._partial)
        self._partial = bytearray()
        return data

    def send(self, data: memoryview) -> int:
        sock = self._sock()
        if sock.gettimeout() and not wait_fd(sock.fileno(), False, True, 0):
            raise BlockingIOError
        return _socket.socket.send(sock, data, _DONTWAIT)

    def wait(self, read: bool, write: bool, timeout: float | None) -> bool:
        return wait_fd(self._sock().fileno(), read, write, timeout)

    def buffered(self) -> bytes:
        return b""


class SocketTLS(_TLSBase):
    """``_sslobj`` of a bridge ``ssl.SSLSocket``: does the socket I/O itself, like ``_ssl.c``."""

    def __init__(self, sock: ssl.SSLSocket, *args: Any) -> None:
        super().__init__(*args)
        self._sock_ref = weakref.ref(sock)
        self._write_taken = 0  # plaintext taken by a write() that then raised SSLWantWriteError

    def _sock(self) -> socket.socket:
        sock = self._sock_ref()
        if sock is None:
            raise ValueError("the underlying socket has been closed")
        return sock

    def _transport(self) -> _RecordIO:
        return _RecordIO(self._sock_ref)

    def _deadline(self, what: str) -> Deadline:
        return Deadline(self._sock().gettimeout(), what)

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

    def _after_failed_handshake(self) -> None:
        # Records the peer sent after the one that failed would make close() send a TCP
        # reset, which can destroy the alert just sent before the peer reads it. Read them
        # (without waiting: a socket with a timeout is polled first) and drop them.
        try:
            sock = self._sock()
            for _ in range(16):
                if not wait_fd(sock.fileno(), True, False, 0):
                    break
                if not _socket.socket.recv(sock, 65536, _DONTWAIT):
                    break
        except (OSError, ValueError):
            pass

    def write(self, data: Buffer) -> int:
        if self._write_taken:
            # The caller retries the write that raised SSLWantWriteError (OpenSSL's contract):
            # its data is already encrypted, only the ciphertext still has to go out.
            driver = self._drv()
            try:
                driver.flush(self._deadline("write"))
            except TLSError as exc:
                raise self._error(exc, "write") from exc
            taken, self._write_taken = self._write_taken, 0
            return taken
        return super().write(data)

    def _write_blocked(self, taken: int, deadline: Deadline) -> None:
        self._write_taken = taken
        if deadline.nonblocking:
            raise _want_write()
        raise TimeoutError("The write operation timed out")

    def shutdown(self) -> socket.socket:
        self._shutdown()
        return self._sock()


class BioTLS(_TLSBase):
    """``_sslobj`` of a bridge ``ssl.SSLObject``: ciphertext through two ``ssl.MemoryBIO``s."""

    def __init__(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any) -> None:
        super().__init__(*args)
        self._incoming = incoming
        self._outgoing = outgoing

    def _transport(self) -> MemoryIO:
        return MemoryIO(self._incoming, self._outgoing)

    def shutdown(self) -> None:
        self._shutdown()
