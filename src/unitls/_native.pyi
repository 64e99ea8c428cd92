"""unitls' Rust engines (``rust/src``): rustls 0.23 with the ring provider, NSS (opened at run
time: ``nss_status()`` says whether it is usable here), and one generic ``Connection`` that runs
any of them.

Imported only by the engine modules (``unitls.rustls``, ``unitls.nss``). Everything here raises the classes of
``unitls._errors``:
``ConfigurationError`` for bad configuration, ``WantReadError`` when more ciphertext is needed,
``CertificateVerificationError`` / ``ProtocolError`` for fatal TLS errors (a fatal error is
remembered: every later call raises it again, while ``process_outgoing`` still hands out the
alert rustls queued for the peer), ``HandshakeClosedError`` for EOF during the handshake and
``RaggedEOF`` for EOF without close_notify, ``TLSError`` ("internal error in the ... engine")
if the engine panicked (the connection is then unusable). The GIL is released around TLS work
and while waiting for another thread's call on the same connection (connections are
thread-safe). Buffers: any object exporting a contiguous buffer is taken as bytes.
"""

from collections.abc import Sequence
from typing import Any, Self, final, overload

from typing_extensions import Buffer

__all__ = [
    "RUSTLS_VERSION",
    "ClientSession",
    "Connection",
    "NssClientConfig",
    "NssServerConfig",
    "RustlsClientConfig",
    "RustlsServerConfig",
    "SSLSocketCore",
    "SocketCore",
    "nss_status",
    "nss_supported_cipher_suites",
    "nss_supported_groups",
    "supported_cipher_suites",
    "supported_groups",
]

RUSTLS_VERSION: str
"""Version of the rustls crate the module was built with, e.g. ``"0.23.46"``."""

def supported_cipher_suites() -> list[int]:
    """IANA ids of the suites rustls (ring) supports, in its default preference order."""

def supported_groups() -> list[int]:
    """IANA codepoints of the key exchange groups the rustls engine can do (``groups``), in its
    default order: X25519MLKEM768, x25519, secp256r1, secp384r1."""

@final
class RustlsClientConfig:
    """An immutable client configuration, built once and shared by many connections.

    ``ca_certs``: items are PEM blobs (may hold several certificates) or one DER certificate
    each; trust is their union with the system store if ``system_roots`` (loaded once per
    process). ``client_chain`` (leaf first; PEM or DER items) and ``client_key`` (PEM PKCS#8 /
    SEC1 / PKCS#1, or DER in any of those) go together. ``cipher_suites``: IANA ids in
    preference order, ``None`` for rustls' defaults; ids rustls lacks (CCM) are dropped, and
    nothing usable left is a ``ConfigurationError``. ``versions``: a subset of
    ``[0x0303, 0x0304]``. ``verify_certificates=False`` accepts any server certificate;
    ``verify_hostname=False`` verifies the chain but not the name. ``resumption=False``
    disables the client session cache (sessions offered to ``new_connection`` still resume).
    ``keylog_path``: append every connection's secrets to this file (NSS key log format; a
    file that cannot be opened is a ``ConfigurationError``). ``groups``: the key exchange
    groups (IANA codepoints from ``supported_groups()``) in preference order, ``None`` for the
    default.
    """

    def __new__(
        cls,
        *,
        ca_certs: Sequence[Buffer] | None,
        system_roots: bool,
        client_chain: Sequence[Buffer] | None,
        client_key: Buffer | None,
        cipher_suites: Sequence[int] | None,
        versions: Sequence[int],
        alpn: Sequence[bytes],
        verify_certificates: bool = True,
        verify_hostname: bool = True,
        resumption: bool = True,
        keylog_path: str | None = None,
        groups: tuple[int, ...] | None = None,
    ) -> Self: ...
    def new_connection(
        self, server_name: str, port: int | None = None, session: ClientSession | None = None
    ) -> Connection:
        """A client connection to ``server_name`` (DNS name or IP literal; SNI is sent for
        DNS names). An invalid name raises ``ConfigurationError``. Sessions are cached per
        (lower-cased name, ``port``); ``session`` (another connection's ``client_session()``
        from this configuration and name, else ``ValueError``) resumes that one instead."""

    def clear_session_cache(self) -> None:
        """Forget every cached session."""

@final
class ClientSession:
    """The sessions one client connection received (opaque; offer it to ``new_connection``).
    Each TLS 1.3 ticket is used once; a TLS 1.2 session until the server refuses it."""

    @property
    def server_name(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def resumable(self) -> bool:
        """Whether it still holds a TLS 1.2 session or a TLS 1.3 ticket."""

@final
class RustlsServerConfig:
    """An immutable server configuration.

    ``chains``: one or more ``(certificates leaf first, private key)``; the chain is picked by
    the client's SNI name (first chain whose leaf is valid for it per webpki: DNS SANs,
    left-most-label wildcards), the first chain when the name is missing or unknown.
    ``client_ca_certs``: CAs for client certificates (``None``: no client authentication);
    with ``require_client_cert`` a client certificate is mandatory, without it optional.
    With ALPN protocols, a client offering none of them completes the handshake without ALPN
    (as with OpenSSL) instead of failing with ``no_application_protocol``.
    ``require_client_cert=True`` with ``client_ca_certs=None`` is a ``ConfigurationError``.
    ``session_tickets=False``: no tickets and no session cache (full handshakes only).
    """

    def __new__(
        cls,
        *,
        chains: Sequence[tuple[Sequence[Buffer], Buffer]],
        client_ca_certs: Sequence[Buffer] | None,
        require_client_cert: bool,
        cipher_suites: Sequence[int] | None,
        versions: Sequence[int],
        alpn: Sequence[bytes],
        session_tickets: bool = True,
        keylog_path: str | None = None,
        groups: tuple[int, ...] | None = None,
    ) -> Self: ...
    def new_connection(self, local_address: str | None = None) -> Connection:
        """A server connection. ``local_address``: the IP the client connected to; with
        several chains, clients that send no SNI get the first chain naming that IP."""

def nss_status() -> tuple[bool, str]:
    """``(True, "NSS 3.87.1 (NSPR 4.35)")``, or ``(False, why the NSS engine cannot be used)``,
    e.g. ``"libnss3.so not found: install libnss3 (Debian: apt-get install libnss3) (...)"``.
    The first call opens and initialises NSS (once per process; ``UNITLS_NSS_LIB_DIR`` names a
    directory to open the libraries from instead of the system's search path)."""

def nss_supported_cipher_suites() -> list[int]:
    """IANA ids of the suites this NSS implements and its policy allows (``ConfigurationError``
    if NSS is not usable)."""

def nss_supported_groups() -> list[int]:
    """IANA codepoints of the key exchange groups the nss engine can be asked for (``groups``):
    x25519, secp256r1, secp384r1, secp521r1."""

@final
class NssClientConfig:
    """An NSS client configuration; the arguments are ``RustlsClientConfig``'s.

    Differences: ``cipher_suites`` ids NSS does not implement (CCM) or its policy forbids are a
    ``ConfigurationError`` naming them; ``None`` means AEAD suites with forward secrecy only.
    Keys NSS cannot use (Ed25519, Ed448, DSA, RSA under 2048 bits) are a ``ConfigurationError``.
    Sessions are kept as NSS resumption tokens in this configuration's own cache, keyed by
    (name, port) as for rustls, never in NSS's process-wide cache (``resumption=False``: none;
    an offered session still resumes). ``keylog_path`` logs TLS 1.3 secrets only (no
    ``EXPORTER_SECRET``): with TLS 1.2 allowed it is a ``ConfigurationError``.
    ``ConfigurationError`` if NSS is not usable here.
    """

    def __new__(
        cls,
        *,
        ca_certs: Sequence[Buffer] | None,
        system_roots: bool,
        client_chain: Sequence[Buffer] | None,
        client_key: Buffer | None,
        cipher_suites: Sequence[int] | None,
        versions: Sequence[int],
        alpn: Sequence[bytes],
        verify_certificates: bool = True,
        verify_hostname: bool = True,
        resumption: bool = True,
        keylog_path: str | None = None,
        groups: tuple[int, ...] | None = None,
    ) -> Self: ...
    def new_connection(
        self, server_name: str, port: int | None = None, session: ClientSession | None = None
    ) -> Connection:
        """A client connection to ``server_name`` (DNS name or IP literal); its ClientHello is
        ready in ``process_outgoing`` at once. ``port`` and ``session`` as for rustls."""

    def clear_session_cache(self) -> None:
        """Forget every cached session."""

@final
class NssServerConfig:
    """An NSS server configuration; the arguments are ``RustlsServerConfig``'s.

    The chain is chosen by SNI (every DNS SAN, whole-label wildcards), else by
    ``new_connection(local_address)``, else the first. A client offering ALPN protocols none of
    which is ours completes without ALPN. Session resumption: TLS 1.3 only (tickets carry a
    token naming this configuration object and a 6-hour period, accepted in that period and the
    next; any other ticket is declined with a full handshake); ``session_tickets=False``: none.
    ``keylog_path`` as for clients.
    """

    def __new__(
        cls,
        *,
        chains: Sequence[tuple[Sequence[Buffer], Buffer]],
        client_ca_certs: Sequence[Buffer] | None,
        require_client_cert: bool,
        cipher_suites: Sequence[int] | None,
        versions: Sequence[int],
        alpn: Sequence[bytes],
        session_tickets: bool = True,
        keylog_path: str | None = None,
        groups: tuple[int, ...] | None = None,
    ) -> Self: ...
    def new_connection(self, local_address: str | None = None) -> Connection:
        """A server connection (its NSS socket is made once the whole ClientHello is in)."""

@final
class Connection:
    """One TLS connection, driven in memory: ciphertext in and out, plaintext read and write."""

    @property
    def engine(self) -> str:
        """The engine's name (``"rustls"``, ``"nss"``)."""

    def process_incoming(self, data: Buffer) -> None:
        """Queue ciphertext from the peer and feed rustls as far as it takes it.

        ``b""`` signals transport EOF; data after it is a ``TLSError``. Raises
        ``WantReadError`` (storing nothing) if more than 1 MiB is already queued, and the mapped
        exception on a fatal TLS error."""

    def process_incoming_into(self, data: Buffer, buffer: Buffer) -> int:
        """``process_incoming(data)``, then plaintext into ``buffer`` as far as it is ready:
        the bytes read. Raises only what ``process_incoming`` raises; what ended the reading
        (nothing yet, the end of the stream, a failure) the next ``read`` reports. ``data`` and
        ``buffer`` may share memory (the ciphertext is then copied first)."""

    def incoming_bytes_buffered(self) -> int:
        """Ciphertext bytes queued and not yet consumed by rustls."""

    def process_outgoing(self, amt: int) -> bytes:
        """Up to ``amt`` bytes (all if ``amt < 0``) of ciphertext to send to the peer."""

    def outgoing_bytes_buffered(self) -> int: ...
    def do_handshake(self) -> None:
        """Return once the handshake is complete; else raise ``WantReadError`` (the next
        flight is then available from ``process_outgoing``) or ``HandshakeClosedError``."""

    @overload
    def read(self, amt: int, buffer: None = None) -> bytes: ...
    @overload
    def read(self, amt: int, buffer: Buffer) -> int: ...
    @overload
    def read(self, amt: int, buffer: Buffer | None = None) -> bytes | int:
        """Up to ``amt`` bytes of plaintext; ``b""`` after the peer's close_notify (with
        ``buffer``: into it, as ``read_into``, returning the count).

        Raises ``WantReadError`` when nothing is available yet and ``RaggedEOF`` after a
        transport EOF without close_notify. Drives the handshake first if needed."""

    def read_into(self, buffer: Buffer, amt: int = ...) -> int:
        """Like ``read`` into a writable buffer (``amt <= 0``: its length); returns the count."""

    def write(self, data: Buffer) -> int:
        """Encrypt all of ``data`` (returns ``len(data)``) once the handshake is complete.

        Drives the handshake first (``WantReadError`` while incomplete). After ``shutdown()``
        raises ``TLSError("connection is shut down")``."""

    def shutdown(self) -> None:
        """Queue a close_notify alert for ``process_outgoing``. Idempotent."""

    def handshake_complete(self) -> bool: ...
    def peer_certificate(self) -> bytes | None:
        """The peer's leaf certificate (DER)."""

    def peer_chain(self) -> list[bytes]:
        """The certificates the peer sent (DER, leaf first)."""

    def cipher_suite(self) -> int | None:
        """IANA id of the negotiated suite; ``None`` before the handshake completes."""

    def alpn_protocol(self) -> bytes | None: ...
    def protocol_version(self) -> int | None:
        """``0x0303`` or ``0x0304``; ``None`` before the handshake completes."""

    def server_name(self) -> str | None:
        """Server side: the SNI name the client sent (``None`` on the client side)."""

    def close_notify_received(self) -> bool: ...
    def pending(self) -> int:
        """Decrypted bytes that ``read`` returns without more input."""

    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session."""

    def client_session(self) -> ClientSession | None:
        """Client side: the sessions this connection received (None on servers)."""

    def negotiated_group_id(self) -> int | None:
        """The key exchange group's IANA codepoint (0x001D for x25519...), ``None`` before the
        handshake (``unitls._engine.group_name`` names it)."""

    def _panic_for_test(self) -> None:
        """Panic inside the engine boundary: raises ``TLSError`` and fails the connection."""

class SocketCore:
    """Native socket I/O for a ``Connection`` over a connected ``socket.socket`` (``sock`` keeps
    the descriptor, looked up at every call; never closed here). The I/O rules are the Python
    driver's: timeouts are deadlines for whole operations, timeout 0 raises ``WantReadError`` /
    ``WantWriteError`` without losing bytes, one reader and one writer thread may share it.
    Subclasses may take more constructor arguments (ignored here)."""

    def __new__(cls, connection: Connection, sock: Any, /, *args: Any, **kwargs: Any) -> Self: ...
    def do_handshake(self) -> None: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def recv_into(self, buffer: Buffer, nbytes: int = 0, /) -> int: ...
    def send(self, data: Buffer, /) -> int: ...
    def sendall(self, data: Buffer, /) -> None: ...
    def pending(self) -> int: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def gettimeout(self) -> float | None: ...
    def setblocking(self, flag: bool, /) -> None: ...
    def _send_close_notify(self, timeout: float | None, /) -> None: ...
    def _await_close_notify(self, timeout: float | None, /) -> None: ...
    def _stop_io(self) -> None:
        """Before ``close()`` closes the socket: other threads' calls still inside are woken
        and end with ``TLSError``; returns once they have left."""
    def _no_delay_until_first_write(self) -> None:
        """TCP only: Nagle's algorithm off now, on again after the first ``send``/``sendall``
        (see ``unitls._socket.no_delay``)."""
    @property
    def handshake_done(self) -> bool: ...
    @property
    def connection(self) -> Connection: ...
    @property
    def raw_socket(self) -> Any: ...

class SpinWait:
    """Spinning before a blocking read, for sockets that sleep in their own ``poll()`` (the
    OpenSSL engine's): ``readable(fd)`` polls without sleeping for up to ``UNITLS_SPIN_US``
    microseconds (GIL released; adaptive backoff per object) and says whether ``fd`` became
    readable. It never consumes anything. ``scale`` (1 to 16) multiplies the budget."""

    def __init__(self, scale: int = 1) -> None: ...
    @property
    def skipping(self) -> int:
        """How many of the next ``readable`` calls return False at once (backing off)."""
    def readable(self, fd: int, /) -> bool: ...

class LockState:
    """The lock and mode of the ssl bridge's ``LockedTLS``: ``acquire``/``release`` (and
    ``with``) like a ``threading.Lock`` (waiting with the GIL released); ``shared`` and
    ``timeout`` (the borrowed socket's) are read by ``LockedCall`` without Python calls."""

    shared: bool
    timeout: float
    def acquire(self, blocking: bool = True) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, t: object, v: object, tb: object, /) -> None: ...

class LockedCall:
    """``read``/``write`` of the ssl bridge's ``LockedTLS`` on the OpenSSL engine
    (``unitls/compat/_native.py``): in single mode one uncontended ``lock`` around one call of
    ``method`` (the C ``_ssl`` object's ``name``); anything else goes to ``LockedTLS._call``.
    ``user`` and ``tls`` are weak references."""

    def __init__(
        self, name: str, method: Any, lock: LockState, user: Any, tls: Any, slice: float, /
    ) -> None: ...
    def __call__(self, *args: Any) -> Any: ...

class SSLSocketCore:
    """The ssl bridge's ``_sslobj`` I/O over a ``Connection``: ``_ssl._SSLSocket``'s ``read``,
    ``write``, ``do_handshake``, ``pending`` and ``shutdown``, raising what ``_ssl`` raises
    (``translate(exc, operation)`` maps a unitls ``TLSError``). ``sslsock`` is held weakly; its
    descriptor and timeout are read at every call."""

    def __new__(
        cls, connection: Connection, sslsock: Any, translate: Any, /, *args: Any, **kwargs: Any
    ) -> Self: ...
    def do_handshake(self) -> None: ...
    def read(self, len: int = 1024, buffer: Buffer | None = None, /) -> bytes | int: ...
    def write(self, data: Buffer, /) -> int: ...
    def pending(self) -> int: ...
    def shutdown(self) -> Any: ...
    @property
    def handshake_done(self) -> bool: ...
    @property
    def connection(self) -> Connection: ...
