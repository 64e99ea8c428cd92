"""The OpenSSL engine: PEP 748 over the stdlib ``ssl`` module.

Sockets wrap ``ssl.SSLSocket`` (its I/O loop runs in C: the fast path); buffers wrap
``ssl.SSLObject`` with two ``MemoryBIO``s. Each configuration is translated once, when the context
is made, into ``ssl.SSLContext`` objects (servers: one per set of names their chains serve,
picked by SNI; chains for the same names, such as RSA and ECDSA, share one and OpenSSL picks
per client); equal client configurations without file paths share them (servers never do: see
below). Every ``ssl.SSLError``/``OSError`` is turned into
the matching ``TLSError`` subclass with the original chained as ``__cause__``.

What the stdlib cannot do is done another way or refused with ``ConfigurationError``, never
ignored. Python 3.11 has no call for TLS 1.3 cipher suites: the engine calls OpenSSL's
``SSL_CTX_set_ciphersuites`` on the context through ``ctypes`` after checking that it holds the
right ``SSL_CTX`` (and that the suites took effect); where that is impossible, a list naming only
some TLS 1.3 suites is refused.

Session resumption (see ``unitls._engine`` for the behaviour every engine shares) also goes
through ``ctypes`` (``unitls._openssl_ffi``): clients receive each session from an OpenSSL
callback into the context's ``SessionCache`` (``unitls._sessions``) and offer one with
``SSL_set_session``, never paying for ``SSLObject.session``'s re-serialisation; servers encrypt
tickets under keys that rotate every 6 hours (the previous key still accepted), and
``session_tickets=False`` also turns off OpenSSL's server session cache. Tickets are accepted
for OpenSSL's session timeout (2 hours) at most. Where ``ctypes`` cannot reach OpenSSL
(``_openssl_ffi.AVAILABLE`` is False: not CPython, or not OpenSSL 3), clients do not resume,
servers keep OpenSSL's own fixed ticket key, and ``session_tickets=False`` is refused. Server
``SSLContext``s are therefore never shared between server contexts (each server has its own
keys and cache); client ones are, per configuration. Key logging uses the stdlib's
``SSLContext.keylog_filename`` (a ``FILE`` opened in append mode, each line flushed by itself
under a process-wide lock).
"""

from __future__ import annotations

import _ssl
import errno
import functools
import ipaddress
import operator
import os
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import _openssl_ffi
from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._drive import Deadline, linger_close, wait_fd
from ._engine import (
    GROUP_NAMES,
    TLS12,
    TLS13,
    ClientContextBase,
    ServerContextBase,
    check_server_hostname,
    engine_implementation,
    group_name,
    read_source,
    reject_ids,
    sni_name,
    split_ciphers,
    suite_name,
    version_bounds,
)
from ._enums import CipherSuite, NextProtocol, TLSVersion, cipher_from_id, protocol_from_bytes
from ._errors import (
    CertificateVerificationError,
    ConfigurationError,
    HandshakeClosedError,
    ProtocolError,
    RaggedEOF,
    TLSConnectionError,
    TLSError,
    WantReadError,
    WantWriteError,
)
from ._objects import Certificate, PrivateKey, SigningChain, TrustStore
from ._protocols import TLSImplementation
from ._sessions import ClientSession, SessionCache
from ._socket import (
    _CLIENT_LINGER,
    _CLOSE_WAIT,
    DEFAULT_TIMEOUT,
    _check_timeout,
    _SocketBase,
    map_os_error,
    no_delay,
    open_connection,
)
from ._stdlib import ORIGINAL_SSLCONTEXT

try:  # the extension's spin before a blocking read (see OpenSSLSocket); optional for this engine
    from ._native import SpinWait
except ImportError:  # pragma: no cover - the extension is part of every build
    SpinWait = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "IMPLEMENTATION",
    "LIBRARY_VERSION",
    "OpenSSLBuffer",
    "OpenSSLClientContext",
    "OpenSSLServerContext",
    "OpenSSLSocket",
]

LIBRARY_VERSION: str = ssl.OPENSSL_VERSION

# The stdlib's class, even when unitls.compat was injected into the ssl module before this
# module was imported (``ssl.SSLContext`` is then the bridge, on another engine).
_SSLContext = ORIGINAL_SSLCONTEXT

# Above this many unprocessed incoming bytes, process_incoming refuses more (PEP: WantReadError).
_INCOMING_LIMIT = 4 * 1024 * 1024

# TLS 1.2 suites used when a configuration gives none: AEAD with forward secrecy only.
_DEFAULT_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _cipher_tables() -> tuple[dict[int, str], dict[str, int], frozenset[int]]:
    ctx = _SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    default_tls13 = frozenset(
        c["id"] & 0xFFFF for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"
    )
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    by_id = {c["id"] & 0xFFFF: c["name"] for c in ctx.get_ciphers()}
    return by_id, {name: i for i, name in by_id.items()}, default_tls13


_NAME_BY_ID, _ID_BY_NAME, _TLS13_ENABLED = _cipher_tables()

# OpenSSL's names of the TLS 1.3 suites are the IANA ones.
_TLS13_NAMES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
}


def _tls13_suite_setter() -> Callable[[ssl.SSLContext, str], bool] | None:
    """A function setting an SSLContext's TLS 1.3 suites, or None where that is impossible.

    It reads the ``SSL_CTX *`` that CPython keeps right after the object header of an
    ``_ssl._SSLContext`` and calls ``SSL_CTX_set_ciphersuites`` on it, but only after checking
    that the pointer's options equal ``ctx.options``; afterwards it checks ``get_ciphers()``.
    """
    import ctypes
    import sys

    if sys.implementation.name != "cpython":
        return None
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        set_suites = lib.SSL_CTX_set_ciphersuites
        get_options = lib.SSL_CTX_get_options
    except (OSError, AttributeError):
        return None
    set_suites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    set_suites.restype = ctypes.c_int
    get_options.argtypes = [ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64

    def setter(ctx: ssl.SSLContext, names: str) -> bool:
        ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not ptr or get_options(ptr) != ctx.options & 0xFFFF_FFFF_FFFF_FFFF:
            return False
        if set_suites(ptr, names.encode("ascii")) != 1:
            return False
        enabled = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
        return sorted(enabled) == sorted(names.split(":"))

    probe = _SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return setter if setter(probe, _TLS13_NAMES[0x1303]) else None


_set_tls13_suites = _tls13_suite_setter()


def _close_notify_sender() -> Callable[[Any, ssl.SSLSocket, Deadline], None] | None:
    """A function sending close_notify on an ``ssl.SSLSocket`` and nothing else (None where
    impossible): OpenSSL's ``SSL_shutdown``, called once, through ``ctypes``.

    ``SSLSocket.unwrap()`` (the C ``_SSLSocket.shutdown()``) calls ``SSL_shutdown`` twice, and the
    second call reads the socket to wait for the peer's close_notify: application data the peer
    still sends is then lost (APPLICATION_DATA_AFTER_CLOSE_NOTIFY). ``SSLSocket.shutdown()`` drops
    the TLS state altogether. A half-close (``shutdown(SHUT_WR)``) must send close_notify and keep
    reading through TLS. The ``SSL *`` is read from the C object only after checking that the
    field before it is the object's weak reference to its socket (CPython's layout of
    ``PySSLSocket`` since 3.x) and that ``SSL_get_fd`` gives the socket's descriptor.
    """
    import ctypes
    import sys
    import weakref

    if sys.implementation.name != "cpython":
        return None
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__, use_errno=True)  # type: ignore[attr-defined]
        ssl_shutdown, get_fd = lib.SSL_shutdown, lib.SSL_get_fd
        get_error, clear_errors = lib.SSL_get_error, lib.ERR_clear_error
    except (OSError, AttributeError):
        return None
    ssl_shutdown.argtypes = get_fd.argtypes = [ctypes.c_void_p]
    ssl_shutdown.restype = get_fd.restype = ctypes.c_int
    get_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
    get_error.restype = ctypes.c_int
    clear_errors.argtypes = []
    clear_errors.restype = None
    word = ctypes.sizeof(ctypes.c_void_p)
    want_read, want_write, syscall = 2, 3, 5  # SSL_ERROR_*

    def send_close_notify(c_obj: Any, sock: ssl.SSLSocket, deadline: Deadline) -> None:
        base = id(c_obj) + object.__basicsize__
        if ctypes.c_void_p.from_address(base).value != id(weakref.ref(sock)):
            raise TLSError("cannot reach OpenSSL's connection object on this Python")
        ptr = ctypes.c_void_p.from_address(base + word).value
        if not ptr or get_fd(ptr) != sock.fileno():
            raise TLSError("cannot reach OpenSSL's connection object on this Python")
        while True:
            result = ssl_shutdown(ptr)
            if result >= 0:
                return  # sent (1: the peer's close_notify had come already)
            error = get_error(ptr, result)
            err_no = ctypes.get_errno()
            clear_errors()
            if error == want_read:
                return  # ours is out; OpenSSL would now wait for the peer's
            if error == want_write:
                if deadline.nonblocking:
                    raise WantWriteError("the socket's send buffer is full")
                wait_fd(sock.fileno(), False, True, deadline.remaining())
                continue
            if error == syscall and err_no:
                exc = OSError(err_no, os.strerror(err_no))
                raise map_os_error(exc, "sending close_notify failed") from exc
            raise ProtocolError(f"OpenSSL could not send close_notify (SSL error {error})")

    return send_close_notify


_send_close_notify: Callable[[Any, ssl.SSLSocket, Deadline], None] | bool | None = False


def _close_notify(c_obj: Any, sock: ssl.SSLSocket, deadline: Deadline) -> None:
    global _send_close_notify
    if _send_close_notify is False:
        _send_close_notify = _close_notify_sender()
    if not callable(_send_close_notify):
        raise TLSError(
            "shutdown(SHUT_WR) needs OpenSSL through ctypes, which is not available here: use "
            "close() instead"
        )
    _send_close_notify(c_obj, sock, deadline)


_ID_BY_NAME.update({name: suite for suite, name in _TLS13_NAMES.items()})

# -- the key exchange group (negotiated_group) ---------------------------------------------------

# OpenSSL's NIDs of those groups (its tls1_group_id2nid table). A brainpool curve has one NID
# and two codepoints (TLS 1.2, TLS 1.3).
_GROUP_BY_NID = {
    415: 0x0017,  # NID_X9_62_prime256v1
    715: 0x0018,  # NID_secp384r1
    716: 0x0019,  # NID_secp521r1
    1034: 0x001D,  # NID_X25519
    1035: 0x001E,  # NID_X448
    1126: 0x0100,  # NID_ffdhe2048
    1127: 0x0101,
    1128: 0x0102,
    1129: 0x0103,
    1130: 0x0104,  # NID_ffdhe8192
}
_BRAINPOOL_BY_NID = {927: (0x001A, 0x001F), 931: (0x001B, 0x0020), 933: (0x001C, 0x0021)}
_TLSEXT_NID_UNKNOWN = 0x1000000  # | codepoint, for groups without a NID (OpenSSL 3.5's ML-KEM)


def _group_of_nid(nid: int, tls13: bool) -> str | None:
    if nid & _TLSEXT_NID_UNKNOWN:
        unknown = nid & 0xFFFF
        return group_name(unknown)
    if nid in _BRAINPOOL_BY_NID:
        return GROUP_NAMES[_BRAINPOOL_BY_NID[nid][tls13]]
    codepoint = _GROUP_BY_NID.get(nid)
    return None if codepoint is None else GROUP_NAMES[codepoint]


def _group_of(c_obj: Any) -> str | None:
    """IANA name of the group the connection used; None before the handshake, if unknown, and
    where OpenSSL cannot be asked (``SSL_get_negotiated_group`` through ``_openssl_ffi``).

    Only after a completed handshake: before it OpenSSL 3.0 reads the group through a session
    pointer that is still NULL (a crash, not an error)."""
    if type(c_obj) is not _ssl._SSLSocket or c_obj.version() is None:  # type: ignore[attr-defined]
        return None
    nid = _openssl_ffi.negotiated_group_nid(c_obj)
    return _group_of_nid(nid, c_obj.version() == "TLSv1.3") if nid else None


# -- translating a configuration ---------------------------------------------------------------


def _cipher_plan(
    config: TLSClientConfiguration | TLSServerConfiguration,
) -> tuple[str | None, str | None, int, int]:
    """(TLS 1.2 cipher string, TLS 1.3 suite string, lowest, highest wire version) honouring
    ``ciphers`` exactly (None: leave OpenSSL's setting). Raises ConfigurationError otherwise."""
    low, high = version_bounds(config)
    if config.ciphers is None:
        return _DEFAULT_TLS12_CIPHERS, None, low, high
    tls13, tls12 = split_ciphers([int(c) for c in config.ciphers])
    usable12 = [c for c in tls12 if c in _NAME_BY_ID]
    suites13: str | None = None
    if high >= TLS13:
        if not tls13:
            high = TLS12  # only TLS 1.2 suites are allowed: do not offer TLS 1.3
        elif _set_tls13_suites is not None:
            suites13 = ":".join(_TLS13_NAMES[c] for c in tls13)
        elif not _TLS13_ENABLED <= set(tls13):
            missing = ", ".join(suite_name(c) for c in sorted(_TLS13_ENABLED - set(tls13)))
            raise ConfigurationError(
                "the openssl engine cannot restrict TLS 1.3 cipher suites on this Python: it "
                f"would also negotiate {missing}. Allow all of them, set "
                "highest_supported_version=TLSv1_2, or use the rustls engine"
            )
    if low <= TLS12 and not usable12:
        low = TLS13  # no TLS 1.2 suite this OpenSSL has: TLS 1.2 cannot be used
    if low > high:
        names = ", ".join(suite_name(int(c)) for c in config.ciphers)
        raise ConfigurationError(
            f"none of the cipher suites ({names}) can be used by {LIBRARY_VERSION} with the "
            "TLS versions this configuration allows"
        )
    return (":".join(_NAME_BY_ID[c] for c in usable12) or None), suites13, low, high


# The stdlib's set_ecdh_curve (one group) takes OpenSSL's short names: the way to set a group
# where ``_openssl_ffi`` cannot reach OpenSSL.
_ECDH_CURVE_NAMES = {
    0x0017: "prime256v1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001D: "X25519",
    0x001E: "X448",
}


def _set_groups(ctx: ssl.SSLContext, groups: tuple[int, ...]) -> bool:
    """Make ``ctx`` use exactly ``groups`` (IANA codepoints, in order); False if OpenSSL refused."""
    took = _openssl_ffi.set_groups(ctx, ":".join(GROUP_NAMES[g] for g in groups))
    if took is not None:
        return took
    if len(groups) == 1 and groups[0] in _ECDH_CURVE_NAMES:
        try:
            ctx.set_ecdh_curve(_ECDH_CURVE_NAMES[groups[0]])
        except (ValueError, ssl.SSLError):
            return False
        return True
    return False


def _probe_groups() -> tuple[int, ...]:
    """The groups the linked OpenSSL takes (``groups``), x25519 first as OpenSSL orders them."""
    if not _openssl_ffi.AVAILABLE:
        return tuple(_ECDH_CURVE_NAMES)  # one at a time (see _set_groups)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    found = [g for g in GROUP_NAMES if _set_groups(ctx, (g,))]
    found.sort(key=lambda g: g != 0x001D)
    return tuple(found)


def _apply_common(
    ctx: ssl.SSLContext,
    config: TLSClientConfiguration | TLSServerConfiguration,
    keylog: str | None,
    groups: tuple[int, ...] | None = None,
) -> None:
    if keylog is not None:
        try:
            ctx.keylog_filename = keylog
        except OSError as exc:
            raise ConfigurationError(
                f"cannot open the TLS key log file {keylog!r}: {exc.strerror or exc}"
            ) from exc
    cipher_string, suites13, low, high = _cipher_plan(config)
    if suites13 is not None:
        assert _set_tls13_suites is not None
        if not _set_tls13_suites(ctx, suites13):
            raise ConfigurationError(f"OpenSSL did not accept the TLS 1.3 suites {suites13}")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if low >= TLS13 else ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if high >= TLS13 else ssl.TLSVersion.TLSv1_2
    if cipher_string is not None:
        try:
            ctx.set_ciphers(cipher_string)
        except ssl.SSLError as exc:
            raise ConfigurationError(f"OpenSSL refused the cipher list: {exc.reason}") from exc
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if groups is not None and not _set_groups(ctx, groups):
        listed = ", ".join(GROUP_NAMES[g] for g in groups)
        why = "" if _openssl_ffi.AVAILABLE else " (without ctypes access to OpenSSL: one group)"
        raise ConfigurationError(f"OpenSSL did not accept the key exchange groups {listed}{why}")
    if config.inner_protocols:
        names = []
        for proto in config.inner_protocols:
            raw = proto.value if isinstance(proto, NextProtocol) else proto
            try:
                names.append(raw.decode("ascii"))
            except UnicodeDecodeError:
                raise ConfigurationError(
                    f"the openssl engine only takes ASCII ALPN names, not {raw!r}"
                ) from None
        ctx.set_alpn_protocols(names)


def _is_pem(data: bytes, marker: bytes = b"-----BEGIN") -> bool:
    return marker in data[:4096] or data.lstrip().startswith(b"-----BEGIN")


def _load_trust(ctx: ssl.SSLContext, store: TrustStore) -> None:
    if store.is_system:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return
    data = read_source(store, "trust store")
    try:
        if _is_pem(data):
            ctx.load_verify_locations(cadata=data.decode("ascii", "replace"))
        else:
            ctx.load_verify_locations(cadata=data)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigurationError(
            f"trust store {store!r} holds no usable certificate "
            f"(expected PEM certificates or DER): {getattr(exc, 'reason', None) or exc}"
        ) from exc
    if not ctx.cert_store_stats().get("x509_ca") and not ctx.cert_store_stats().get("x509"):
        raise ConfigurationError(f"trust store {store!r} holds no certificate")


def _check_pem_ends(data: bytes, obj: object, what: str) -> None:
    """A PEM block cut short (a truncated file) is named as such, not as unparsable data."""
    if data.count(b"-----BEGIN ") > data.count(b"-----END "):
        raise ConfigurationError(
            f"{what} {obj!r} is PEM but a block has no END line (is the file truncated?)"
        )


def _cert_pem(cert: Certificate, what: str) -> bytes:
    data = read_source(cert, what)
    if _is_pem(data):
        _check_pem_ends(data, cert, what)
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise ConfigurationError(f"{what} {cert!r} is PEM but holds no CERTIFICATE block")
        return data if data.endswith(b"\n") else data + b"\n"
    return ssl.DER_cert_to_PEM_cert(data).encode("ascii")


# Curves TLS can sign with (TLS 1.3 signature schemes; OpenSSL's TLS 1.2 offers the same).
_SIGNING_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_RSA_BITS = 2048


def _key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM for OpenSSL, refusing keys no handshake can use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    data = read_source(key, "private key")
    # Converted only (OpenSSL then loads it, as the stdlib would): cryptography's RSA key check
    # would cost ~0.5 s per 3072-bit key and per context.
    fast = {"unsafe_skip_rsa_key_validation": True}
    pem = _is_pem(data)
    if pem:
        _check_pem_ends(data, key, "private key")
    try:
        if pem:
            loaded = serialization.load_pem_private_key(data, password=None, **fast)
        else:
            loaded = serialization.load_der_private_key(data, password=None, **fast)
    except TypeError as exc:
        raise ConfigurationError(
            f"private key {key!r} is encrypted: PEP 748 has no password; decrypt it first "
            "(e.g. openssl pkey -in key.pem -out plain.pem)"
        ) from exc
    except ValueError as exc:
        raise ConfigurationError(
            f"private key {key!r} is not a PEM or DER private key: {exc}"
        ) from exc
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for some key types
        raise ConfigurationError(f"private key {key!r} cannot be used: {exc}") from exc
    if isinstance(loaded, rsa.RSAPrivateKey):
        if loaded.key_size < _MIN_RSA_BITS:
            raise ConfigurationError(
                f"private key {key!r}: RSA-{loaded.key_size} is too small (OpenSSL refuses RSA "
                f"keys under {_MIN_RSA_BITS} bits): use RSA-2048 or larger, or ECDSA P-256"
            )
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        if loaded.curve.name not in _SIGNING_CURVES:
            raise ConfigurationError(
                f"private key {key!r} is on the curve {loaded.curve.name}, which TLS cannot "
                "sign handshakes with: use P-256, P-384 or P-521"
            )
    elif not isinstance(loaded, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        kind = type(loaded).__name__.removeprefix("_").replace("PrivateKey", "")
        raise ConfigurationError(
            f"private key {key!r} is a {kind or 'unknown'} key, which TLS cannot sign "
            "handshakes with: use an RSA (2048 bits or more), ECDSA (P-256, P-384, P-521) or "
            "Ed25519 key"
        )
    return loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _memfile(data: bytes) -> int:
    """An anonymous in-memory file (never on disk) holding ``data``; returns its fd."""
    fd = os.memfd_create("unitls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _no_password() -> str:
    raise ConfigurationError("the private key is encrypted: PEP 748 has no password; decrypt it")


def _load_chain(ctx: ssl.SSLContext, chain: SigningChain) -> None:
    cert, key = chain.leaf
    cert_data = _cert_pem(cert, "certificate") + b"".join(
        _cert_pem(c, "chain certificate") for c in chain.chain
    )
    if key is not None:
        key_data = _key_pem(key)
    else:
        # The PEP allows the key inside the certificate's own buffer or file.
        raw = read_source(cert, "certificate")
        if b"PRIVATE KEY-----" not in raw:
            raise ConfigurationError(
                f"signing chain for {cert!r} has no private key: pass one in leaf=(cert, key)"
            )
        key_data = _key_pem(PrivateKey.from_buffer(raw))
    cert_fd = _memfile(cert_data)
    key_fd = _memfile(key_data)
    try:
        ctx.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}", _no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigurationError(
                f"the private key does not match the certificate {cert!r}"
            ) from exc
        raise ConfigurationError(f"cannot load certificate chain {cert!r}: {exc}") from exc
    finally:
        os.close(cert_fd)
        os.close(key_fd)


def _leaf_of(chain: SigningChain) -> Any:
    from cryptography import x509

    data = read_source(chain.leaf[0], "certificate")
    try:
        return (
            x509.load_pem_x509_certificate(data)
            if _is_pem(data)
            else (x509.load_der_x509_certificate(data))
        )
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse certificate {chain.leaf[0]!r}: {exc}") from exc


def _names_of(chain: SigningChain) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) a chain's leaf is valid for (SAN; CN only without SAN)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    leaf = _leaf_of(chain)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower() for a in cns), ()
    dns = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return dns, ips


def _key_kind(chain: SigningChain) -> str:
    """The slot OpenSSL keeps a certificate in: one per public key algorithm."""
    return type(_leaf_of(chain).public_key()).__name__


def _chain_groups(chains: Sequence[SigningChain]) -> list[list[SigningChain]]:
    """Chains grouped by the names their leaves are valid for, in order. Chains for the same
    names (an RSA and an ECDSA certificate for one site) share one ``ssl.SSLContext``: OpenSSL
    keeps one chain per key type and picks the one the client's signature algorithms and cipher
    suites allow. Of two chains with the same names and key type, the first is used."""
    if len(chains) == 1:
        return [list(chains)]
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[SigningChain]] = {}
    for chain in chains:
        groups.setdefault(_names_of(chain), []).append(chain)
    return list(groups.values())


def name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching: exact, or a wildcard as the whole left-most label."""
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:] and pattern.count(".") >= 2
    return False


def _sni_selector(
    contexts: Sequence[ssl.SSLContext], names: Sequence[tuple[tuple[str, ...], tuple[str, ...]]]
) -> Callable[[Any, str | None, ssl.SSLContext], None]:
    @functools.lru_cache(maxsize=1024)
    def pick(server_name: str) -> ssl.SSLContext | None:
        try:
            ip = str(ipaddress.ip_address(server_name))
        except ValueError:
            ip = None
        for ctx, (dns, ips) in zip(contexts, names, strict=True):
            if ip is not None:
                if ip in ips:
                    return ctx
            elif any(name_matches(p, server_name) for p in dns):
                return ctx
        return None

    def callback(sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if server_name:
            chosen = pick(server_name.rstrip(".").lower())
        elif isinstance(sslobj, socket.socket):
            # No SNI (clients connecting to an IP send none): the address they reached decides.
            chosen = pick(_local_ip(sslobj) or "")
        else:
            chosen = None  # buffers start on the context for their address (create_buffer_for)
        if chosen is not None and chosen is not ctx:
            sslobj.context = chosen

    return callback


def _local_ip(sock: socket.socket) -> str | None:
    try:
        return str(sock.getsockname()[0])
    except (OSError, IndexError):
        return None


def _client_context(
    config: TLSClientConfiguration,
    verify: bool,
    check_hostname: bool,
    _env: object = None,
    keylog: str | None = None,
    sessions: bool = True,
    groups: tuple[int, ...] | None = None,
) -> ssl.SSLContext:
    """``sessions=False``: for the ``ssl`` bridge, whose sockets keep no engine sessions (see
    ``_openssl_ffi.install_client_sessions``)."""
    ctx = _SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_common(ctx, config, keylog, groups)
    _openssl_ffi.install_client_sessions(ctx, hand_over=sessions)
    ctx.hostname_checks_common_name = False  # names come from the SAN only (RFC 6125)
    ctx.check_hostname = check_hostname and verify
    ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if verify:
        _load_trust(ctx, config.trust_store or TrustStore.system())
    if config.certificate_chain is not None:
        _load_chain(ctx, config.certificate_chain)
    return ctx


def _server_contexts(
    config: TLSServerConfiguration,
    session_tickets: bool = True,
    keylog: str | None = None,
    *,
    session_cache: bool = True,
    kx_groups: tuple[int, ...] | None = None,
) -> list[ssl.SSLContext]:
    """The contexts of one server (never shared: they hold its ticket keys and session cache).

    ``session_cache=False`` also turns off OpenSSL's session-id cache (the engine's
    ``session_tickets=False``; the ``ssl`` bridge keeps it, as ``OP_NO_TICKET`` does in ``ssl``).
    """
    contexts = []
    keys = _openssl_ffi.TicketKeys() if session_tickets else None
    groups = _chain_groups(config.certificate_chain)
    for group in groups:
        ctx = _SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _apply_common(ctx, config, keylog, kx_groups)
        if keys is not None:
            _openssl_ffi.install_ticket_keys(ctx, keys)
        else:
            ctx.num_tickets = 0
            ctx.options |= ssl.OP_NO_TICKET
        if not session_cache:
            if not _openssl_ffi.disable_session_cache(ctx):
                raise ConfigurationError(
                    "session_tickets=False: the openssl engine cannot turn off OpenSSL's server "
                    "session cache on this Python (no ctypes access to OpenSSL 3), so TLS 1.2 "
                    "clients could still resume; use the rustls engine"
                )
        if config.trust_store is not None:
            _load_trust(ctx, config.trust_store)
            ctx.verify_mode = ssl.CERT_REQUIRED
        kinds: set[str] = set()
        for chain in group:
            kind = _key_kind(chain) if len(group) > 1 else ""
            if kind not in kinds:
                kinds.add(kind)
                _load_chain(ctx, chain)
        contexts.append(ctx)
    if len(contexts) > 1:
        names = [_names_of(group[0]) for group in groups]
        callback = _sni_selector(contexts, names)
        for ctx in contexts:  # any of them may start a connection (see create_buffer_for)
            ctx.sni_callback = callback
    return contexts


def _has_paths(config: TLSClientConfiguration | TLSServerConfiguration) -> bool:
    chains = config.certificate_chain
    if isinstance(chains, SigningChain):
        chains = (chains,)
    objs: list[Any] = [config.trust_store]
    for chain in chains or ():
        objs.extend([*chain.leaf, *chain.chain])
    return any(o is not None and o.path is not None for o in objs)


# Equal client configurations share their ssl contexts (loading the system store alone takes
# ~40 ms; sessions are kept per unitls context, not in the SSL_CTX). Configurations naming files
# are not cached, so rotated files are read again; where OpenSSL finds the system store
# (SSL_CERT_FILE / SSL_CERT_DIR) is part of the key (the ``_env`` argument, unused by the
# builders themselves), and so is the key log file. Server contexts are never shared: each
# server has its own ticket keys and session cache.
_cached_client_context = functools.lru_cache(maxsize=64)(_client_context)


def _trust_env() -> tuple[str | None, str | None]:
    return os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")


def _shared_client_context(
    config: TLSClientConfiguration,
    verify: bool,
    check_hostname: bool,
    keylog: str | None = None,
    sessions: bool = True,
    groups: tuple[int, ...] | None = None,
) -> ssl.SSLContext:
    if _has_paths(config):
        return _client_context(config, verify, check_hostname, None, keylog, sessions, groups)
    return _cached_client_context(
        config, verify, check_hostname, _trust_env(), keylog, sessions, groups
    )


def validate_config(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
    """Raise ConfigurationError if this engine cannot honour ``config``."""
    if not isinstance(config, (TLSClientConfiguration, TLSServerConfiguration)):
        raise TypeError(f"expected a TLS configuration, not {type(config).__name__}")
    reject_ids(config, "openssl")
    _cipher_plan(config)


# -- errors ------------------------------------------------------------------------------------

# Alerts and reasons meaning the peer (or we) rejected a certificate.
_CERT_REASONS = (
    "CERTIFICATE",
    "UNKNOWN_CA",
    "PEER_DID_NOT_RETURN",
    "CERTIFICATE_REQUIRED",
    "NO_CERTIFICATE",
)


def _translate(exc: Exception, handshaking: bool) -> TLSError:
    """The TLSError for an exception raised by the ssl module (caller chains it)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "certificate rejected"
        return CertificateVerificationError(reason, f"certificate verification failed: {reason}")
    if isinstance(exc, ssl.SSLWantReadError):
        return WantReadError("more TLS data must be read from the network")
    if isinstance(exc, ssl.SSLWantWriteError):
        return WantWriteError("TLS data must be written to the network first")
    if isinstance(exc, ssl.SSLEOFError):
        if handshaking:
            return HandshakeClosedError("the peer closed the connection during the TLS handshake")
        return RaggedEOF("the peer closed the connection without a TLS close_notify")
    if isinstance(exc, ssl.SSLZeroReturnError) and handshaking:
        # The same event rustls reports this way (one class per event on every engine).
        return HandshakeClosedError("the peer sent close_notify during the TLS handshake")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return CertificateVerificationError(
                "the client sent no certificate",
                "the client sent no certificate, but one is required",
            )
        if "ALERT" in reason and any(m in reason for m in _CERT_REASONS):
            return CertificateVerificationError(
                f"peer rejected our certificate ({reason})",
                f"the peer rejected our certificate: {reason}",
            )
        if reason in ("WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "HTTP_REQUEST"):
            return ProtocolError(f"TLS protocol error: {reason} (is the peer speaking TLS?)")
        if reason in ("NO_SUITABLE_KEY_SHARE", "NO_SHARED_GROUPS"):
            return ProtocolError(
                f"TLS protocol error: {reason}: no key exchange group in common with the peer "
                "(compare the groups= option, or the ssl bridge's set_ecdh_curve, on both sides)"
            )
        return ProtocolError(f"TLS protocol error: {reason}")
    if isinstance(exc, OSError):
        if handshaking and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            return HandshakeClosedError(
                f"the peer closed the connection during the TLS handshake ({exc.strerror})"
            )
        return map_os_error(exc, "TLS connection failed")
    return TLSError(str(exc))


# -- buffers -----------------------------------------------------------------------------------


def _version_of(name: str | None) -> TLSVersion | None:
    if name == "TLSv1.3":
        return TLSVersion.TLSv1_3
    if name == "TLSv1.2":
        return TLSVersion.TLSv1_2
    return None


def _cipher_of(info: tuple[str, str, int] | None) -> CipherSuite | int | None:
    if info is None:
        return None
    suite = _ID_BY_NAME.get(info[0])
    return cipher_from_id(suite) if suite is not None else None


def _chain_of(c_obj: Any) -> list[bytes]:
    """DER of the certificates the peer sent, leaf first (empty before the handshake)."""
    if c_obj is None:
        return []
    chain = c_obj.get_unverified_chain() or []
    return [cert.public_bytes(_ssl.ENCODING_DER) for cert in chain]


def _protocol_of(name: str | None) -> NextProtocol | bytes | None:
    return protocol_from_bytes(name.encode("latin-1")) if name else None


class _CSSLObject(Protocol):
    """What this module uses of the C ``_ssl._SSLSocket`` (typeshed does not describe it)."""

    server_side: bool
    server_hostname: str | None
    session_reused: bool

    def read(self, size: int, buffer: Buffer = ..., /) -> bytes | int: ...
    def write(self, data: Buffer, /) -> int: ...
    def do_handshake(self) -> None: ...
    def shutdown(self) -> Any: ...
    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    def selected_alpn_protocol(self) -> str | None: ...
    def getpeercert(self, der: bool = False, /) -> Any: ...
    def get_unverified_chain(self) -> list[Any] | None: ...


_wrap_bio: Callable[..., _CSSLObject] = _ssl._SSLContext._wrap_bio  # type: ignore[attr-defined]
_pending: Callable[[ssl.MemoryBIO], int] = operator.attrgetter("pending")


def _attach_sessions(
    cache: SessionCache,
    c_obj: Any,
    sock: ssl.SSLSocket | None,
    server_hostname: str,
    port: int | None,
    offered: ClientSession | None,
) -> ClientSession:
    """Before a client handshake: collect the connection's sessions and offer one from
    ``offered`` or the cache. OpenSSL's callback finds the sink on the C object's ``owner``:
    the ``ssl.SSLSocket`` of a socket, or for a buffer (whose C object has no owner) the
    ``ClientSession`` itself, which the buffer keeps alive (``owner`` is a weak reference)."""
    bag = cache.new_session(server_hostname, port)
    if sock is None:
        c_obj.owner = bag
    else:
        setattr(sock, _openssl_ffi.SESSION_SINK, bag._unitls_session_sink)
    value = cache.take(bag._key, offered)
    if value is not None:
        _openssl_ffi.set_session(c_obj, value)
        if not value.tls13:
            # OpenSSL hands over no new session when it resumes a TLS 1.2 one (unless the
            # server renews its ticket): this connection's session is the one it resumed.
            bag._tls12 = value
    return bag


class OpenSSLBuffer:
    """A TLSBuffer over the C ``_ssl._SSLSocket`` that ``SSLContext._wrap_bio`` returns (the
    object ``ssl.SSLObject`` wraps) and two ``ssl.MemoryBIO``s.

    No Python layer sits between the caller and ``_ssl``: ``read``/``write``/``do_handshake``
    are one Python frame each (``ssl.SSLObject``'s own methods are one too), and
    ``process_outgoing``, ``outgoing_bytes_buffered`` and ``incoming_bytes_buffered`` are C
    callables bound per connection (``MemoryBIO.read``, ``partial(attrgetter("pending"), bio)``).
    """

    __slots__ = (
        "_context",
        "_done",
        "_failure",
        "_first",
        "_in",
        "_obj",
        "_out",
        "_session",
        "incoming_bytes_buffered",
        "outgoing_bytes_buffered",
        "process_outgoing",
    )

    #: process_incoming copies its argument at once (see ``unitls.extensions``).
    copies_incoming = True

    #: Ciphertext bytes received and not yet consumed by OpenSSL.
    incoming_bytes_buffered: Callable[[], int]
    #: Ciphertext bytes waiting to be sent.
    outgoing_bytes_buffered: Callable[[], int]
    #: Up to ``amount_bytes_for_network`` bytes of ciphertext for the peer (``MemoryBIO.read``).
    process_outgoing: Callable[[int], bytes]

    def __init__(
        self,
        context: OpenSSLClientContext | OpenSSLServerContext,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None,
        sessions: tuple[SessionCache, int | None, ClientSession | None] | None = None,
    ) -> None:
        self._context = context
        self._in = incoming = ssl.MemoryBIO()
        self._out = outgoing = ssl.MemoryBIO()
        # What ssl.SSLObject._create does, minus the wrapper (no owner: the SNI callback gets
        # this C object, whose ``context`` it may switch).
        self._obj: _CSSLObject = _wrap_bio(
            ssl_context,
            incoming,
            outgoing,
            server_hostname is None,
            ssl_context._encode_hostname(server_hostname),  # type: ignore[attr-defined]
        )
        self.process_outgoing = outgoing.read
        self.outgoing_bytes_buffered = functools.partial(_pending, outgoing)
        self.incoming_bytes_buffered = functools.partial(_pending, incoming)
        self._done = False
        self._failure: TLSError | None = None  # the fatal one (see _error)
        self._first: bytes | None = None  # the start of what the peer sent (see _error)
        self._session: ClientSession | None = None
        if sessions is not None and server_hostname is not None:
            cache, port, offered = sessions
            self._session = _attach_sessions(cache, self._obj, None, server_hostname, port, offered)

    def read(self, amt: int, buffer: Buffer | None = None) -> bytes | int:
        try:
            data = self._obj.read(amt) if buffer is None else self._obj.read(amt, buffer)
        except ssl.SSLZeroReturnError:
            data = b"" if buffer is None else 0
        except (ssl.SSLError, OSError) as exc:
            raise self._error(exc) from exc
        # Nothing more: the peer's close_notify, or OpenSSL's answer once a fatal alert was
        # received (it counts the alert as the peer's shutdown): that failure again, then.
        if data or self._failure is None:
            return data
        raise _again(self._failure)

    def write(self, buf: Buffer) -> int:
        try:
            return self._obj.write(buf)
        except (ssl.SSLError, OSError) as exc:
            # (After a failure OpenSSL may call any write "shut down": the failure says why.)
            if self._failure is None and getattr(exc, "reason", None) == "PROTOCOL_IS_SHUTDOWN":
                raise TLSError("cannot write: close_notify was already sent (shutdown)") from exc
            raise self._error(exc) from exc

    def do_handshake(self) -> None:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError as exc:
            # Every flight but the last ends here: the error without _error's checks (an EOF
            # and a kept failure take the general path). Here rather than in _error: only from
            # do_handshake does a WantRead mean the handshake is unfinished, which _error must
            # otherwise ask OpenSSL (a read may complete a handshake nobody started).
            if self._failure is None and not self._in.eof:
                raise WantReadError("more TLS data must be read from the network") from exc
            raise self._error(exc) from exc
        except (ssl.SSLError, OSError) as exc:
            raise self._error(exc) from exc
        self._done = True

    def process_incoming_into(self, data_from_network: bytes, buffer: Buffer) -> int:
        """``process_incoming``, then plaintext into ``buffer`` as far as it is ready, in one
        call (``unitls.extensions.SupportsIncomingInto``): the bytes read."""
        self.process_incoming(data_from_network)
        if not self._done:
            return 0
        view = memoryview(buffer)
        size = view.nbytes
        read: Callable[[int, memoryview], int] = self._obj.read  # type: ignore[assignment]
        got = 0
        while got < size:
            try:
                n = read(size - got, view[got:] if got else view)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break  # the next read says which
            except (ssl.SSLError, OSError) as exc:
                self._error(exc)  # kept: the next read raises it
                break
            if not n:
                break  # the peer's close_notify (the next read returns b"")
            got += n
        return got

    def _error(self, exc: Exception) -> TLSError:
        """The TLSError for ``exc``. A fatal one is kept and given again (a copy) for every
        later failure: OpenSSL reports a failed connection's next read as an EOF
        (``SSLEOFError``), where every engine repeats the failure that ended it."""
        if self._failure is not None:
            return _again(self._failure)
        failure = self._translate(exc)
        if not isinstance(failure, (WantReadError, WantWriteError)):
            self._failure = failure
        return failure

    def _translate(self, exc: Exception) -> TLSError:
        if not self._done and self._obj.version() is not None:
            self._done = True
        if isinstance(exc, ssl.SSLWantReadError) and self._in.eof:
            if not self._done:
                return HandshakeClosedError(
                    "the peer closed the connection during the TLS handshake"
                )
            return RaggedEOF("the peer closed the connection without a TLS close_notify")
        first = self._first
        if (
            not self._done
            and getattr(exc, "reason", None) == "UNEXPECTED_MESSAGE"
            and first is not None
            and first[:1] == b"\x15"
            and first[5:7] == b"\x01\x00"
        ):
            # A close_notify alert as the peer's first record: OpenSSL calls it an unexpected
            # message; for every engine it is the peer closing during the handshake.
            return HandshakeClosedError("the peer sent close_notify during the TLS handshake")
        return _translate(exc, not self._done)

    def shutdown(self) -> None:
        if self._obj.version() is None:
            return  # nothing to close before a handshake
        try:
            self._obj.shutdown()
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass  # close_notify is queued; the peer's arrives later (or never)
        except (ssl.SSLError, OSError) as exc:
            raise self._error(exc) from exc

    def process_incoming(self, data_from_network: bytes) -> None:
        # The fast path, once the first bytes are kept and the buffer has room: one C call
        # (``MemoryBIO.write`` returns 0 for empty input, which is EOF). Anything unusual (not
        # bytes-like, written after EOF) takes the checked path below for its error.
        incoming = self._in
        if self._first is not None and incoming.pending <= _INCOMING_LIMIT:
            try:
                if incoming.write(data_from_network):
                    return
            except (TypeError, ssl.SSLError):
                pass
        self._process_incoming_checked(data_from_network)

    def _process_incoming_checked(self, data_from_network: bytes) -> None:
        try:
            size = memoryview(data_from_network).nbytes
        except TypeError:
            raise TypeError(
                "process_incoming() takes a bytes-like object (b'' for EOF), not "
                f"{type(data_from_network).__name__}"
            ) from None
        if not size:
            self._in.write_eof()
            return
        if self._first is None:
            self._first = bytes(memoryview(data_from_network).cast("B")[:7])
        if self._in.pending > _INCOMING_LIMIT:
            raise WantReadError("incoming buffer is full: read() decrypted data first")
        try:
            self._in.write(data_from_network)
        except ssl.SSLError as exc:
            raise TLSError("data received after the transport reported EOF") from exc

    def getpeercert(self) -> bytes | None:
        try:
            der: bytes | None = self._obj.getpeercert(True)
            return der
        except ValueError:
            return None

    def getpeercertchain(self) -> list[bytes]:
        """DER of every certificate the peer sent, leaf first (an extension to the PEP)."""
        return _chain_of(self._obj)

    # OpenSSL knows the suite and the protocol before the handshake has finished; the PEP says
    # None until it has (version() is None until then).
    def cipher(self) -> CipherSuite | int | None:
        obj = self._obj
        return None if obj.version() is None else _cipher_of(obj.cipher())

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        obj = self._obj
        return None if obj.version() is None else _protocol_of(obj.selected_alpn_protocol())

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        return _version_of(self._obj.version())

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session (False before it completes)."""
        return bool(self._obj.session_reused)

    @property
    def negotiated_group(self) -> str | None:
        """IANA name of the key exchange group used (``"x25519"``, ``"secp256r1"``...); None
        before the handshake and where OpenSSL cannot be asked (see ``_negotiated_group_reader``)."""
        return _group_of(self._obj)

    @property
    def context(self) -> OpenSSLClientContext | OpenSSLServerContext:
        return self._context

    @property
    def server_name(self) -> str | None:
        """Server side: the host name the client sent (SNI; None without, or where OpenSSL
        cannot be asked); client side: the name used for SNI and verification."""
        obj = self._obj
        if obj.server_side:
            return sni_name(_openssl_ffi.sni_host_name(obj))
        return obj.server_hostname

    @property
    def session(self) -> ClientSession | None:
        """Client side: what the server sent for resuming (see ``unitls.extensions``)."""
        return self._session

    def __repr__(self) -> str:
        side = "server" if self._obj.server_side else f"client to {self._obj.server_hostname!r}"
        return f"<OpenSSLBuffer {side} version={self._obj.version()}>"


# -- sockets -----------------------------------------------------------------------------------


def _again(failure: TLSError) -> TLSError:
    """A new exception equal to ``failure`` (same class, arguments and attributes), to raise
    once more without growing the first one's traceback. Not ``copy.copy``: that calls
    ``__init__`` with ``args``, which rebuilds the message of classes that compose it."""
    again = type(failure).__new__(type(failure), *failure.args)
    again.__dict__.update(failure.__dict__)
    return again


def _write_after_close() -> TLSError:
    return TLSError("cannot write: close_notify was already sent (shutdown)")


class _ZeroReturn(TLSError):
    """The peer's close_notify met by a read (internal: the read returns the empty result)."""


# The spin before a blocking read lasts this many times the native sockets' (``UNITLS_SPIN_US``,
# 30 us by default). A peer's answer reaches this engine later than a native socket: after the
# peer's and this thread's extra GIL handoffs (the spin, then ``_ssl``'s read, each release the
# GIL). 100-byte round trips, two threads, 2026-12-02 (``benchmarks/ab_core.py roundtrip_socket
# openssl``): 26,100-30,600/s with 30 us, 37,900-43,000 with 100, 34,400-39,400 with this scale
# (stdlib in the same runs: 14,400-19,400).
_SPIN_SCALE = 3

# While one thread uses an OpenSSLSocket, the longest an OpenSSL call waits at a time (the
# call is then repeated until the deadline): the bound on how long a second thread waits to
# switch the socket to shared use (see OpenSSLSocket).
_SLICE = 0.05


def _set_openssl_timeout(ssl_sock: ssl.SSLSocket, timeout: float) -> None:
    # socket.settimeout() makes a system call even when nothing changes.
    if ssl_sock.gettimeout() != timeout:
        ssl_sock.settimeout(timeout)


class OpenSSLSocket(_SocketBase):
    """A connected TLSSocket over ``ssl.SSLSocket`` (OpenSSL's C record layer on the socket).

    Theory of operation: it follows the driver's rules (``unitls._drive``) with two modes, since
    OpenSSL's connection objects are not thread-safe (a read processing a post-handshake message
    while another thread writes breaks the connection) while the fast path is one C call that
    also does the waiting:

    * *single* (from the start): every call runs under ``_lock`` and lets OpenSSL wait for the
      socket itself, at most ``_SLICE`` at a time (repeated until the operation's deadline);
    * *shared*: the first time a thread finds ``_lock`` held, the socket becomes shared for
      good: OpenSSL never waits (the next holder of ``_lock`` makes the ``SSLSocket``
      non-blocking), calls still run under ``_lock``, and waiting (``poll``) happens outside it,
      so a reader never waits for a writer (full duplex). The switch waits at most about one
      slice for the other thread's call.

    A timeout is a deadline for the whole call in both modes. A reset is a ragged EOF when
    reading and a ``TLSConnectionError`` when writing; ``shutdown(SHUT_WR)`` sends close_notify
    and reading stays TLS-protected.

    A blocking read in single mode that finds nothing to read spins first (``_native.SpinWait``,
    GIL released, up to three times ``UNITLS_SPIN_US``: see ``_SPIN_SCALE``) before OpenSSL
    sleeps in its own ``poll()``: the same rule as the native sockets' waits
    (``rust/src/sockio.rs``), where it is explained.
    """

    __slots__ = (
        "_close_sent",
        "_closed",
        "_context",
        "_done",
        "_lock",
        "_nagle_after_first_write",
        "_shared",
        "_sock",
        "_spin",
        "_ssl",
        "_timeout",
    )

    def __init__(
        self,
        ssl_sock: ssl.SSLSocket,
        context: OpenSSLClientContext | OpenSSLServerContext,
    ) -> None:
        self._timeout = ssl_sock.gettimeout()
        self._shared = False
        self._ssl = ssl_sock
        self._sock: socket.socket = ssl_sock
        self._context = context
        self._lock = threading.Lock()
        self._closed = False
        self._done = False
        self._close_sent = False
        self._nagle_after_first_write = False  # see _no_delay_until_first_write
        self._spin = SpinWait(_SPIN_SCALE) if SpinWait is not None else None
        _set_openssl_timeout(ssl_sock, self._openssl_timeout())

    def _openssl_timeout(self) -> float:
        """How long one OpenSSL call may wait (see the class docstring)."""
        timeout = self._timeout
        if self._shared or timeout == 0:
            return 0.0
        return _SLICE if timeout is None else min(timeout, _SLICE)

    def settimeout(self, value: float | None) -> None:
        """Blocking (None), bounded (seconds: a deadline for each call as a whole) or
        non-blocking (0), as for socket.socket."""
        self._timeout = _check_timeout(value)
        with self._lock:
            if self._ssl.fileno() != -1:
                _set_openssl_timeout(self._ssl, self._openssl_timeout())

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def _call(
        self,
        deadline: Deadline | str,
        writing: bool,
        fn: Callable[..., Any],
        *args: Any,
        failed: Exception | None = None,
    ) -> Any:
        """``fn(*args)`` (an ``SSLSocket`` method) under the lock, repeated until it completes
        or the deadline passes (a name: the deadline starts with the first retry); ``failed``:
        what a first attempt raised. Errors come out as TLSErrors."""
        if self._closed:
            raise TLSError("the TLS socket is closed")
        lock = self._lock
        while True:
            if failed is None:
                if not lock.acquire(False):
                    # Another thread is inside an OpenSSL call (which returns within a slice):
                    # shared from now on.
                    self._shared = True
                    lock.acquire()
                try:
                    if self._shared:  # OpenSSL never waits: set by the first call since the switch
                        _set_openssl_timeout(self._ssl, 0.0)
                    return fn(*args)
                except (ssl.SSLError, OSError) as exc:
                    failed = exc
                finally:
                    lock.release()
            error, failed = failed, None
            if self._closed:  # by another thread, while this one was inside
                raise TLSError("the TLS socket is closed") from error
            want: bool | None
            if isinstance(error, ssl.SSLWantReadError):
                want = False
            elif isinstance(error, ssl.SSLWantWriteError):
                want = True
            elif isinstance(error, TimeoutError):
                want = None  # single mode: OpenSSL waited a slice
            else:
                raise self._error(error, writing) from error
            if isinstance(deadline, str):
                # The operation started with the first attempt, in which OpenSSL itself may
                # have waited its timeout (a slice) already.
                spent = 0.0 if want is not None else self._ssl.gettimeout() or 0.0
                deadline = Deadline(self._timeout, deadline, spent)
            if deadline.nonblocking:
                if want:
                    raise WantWriteError("TLS data must be written to the network first")
                raise WantReadError("no TLS data available on the socket yet")
            remaining = deadline.remaining()  # TLSTimeoutError once it is over
            if want is not None and self._shared:
                # A slice at a time, like OpenSSL's own waits: a close() by another thread
                # (which a poll() on the closed descriptor would never see) ends the call.
                wait_fd(
                    self._ssl.fileno(),
                    not want,
                    want,
                    _SLICE if remaining is None else min(remaining, _SLICE),
                )

    def do_handshake(self) -> None:
        self._call("handshake", False, self._handshake_call())
        self._done = True

    def _handshake_within(self, deadline: Deadline) -> None:
        """The handshake within ``deadline`` (connect: what the TCP connect left)."""
        self._call(deadline, False, self._handshake_call())
        self._done = True

    def _handshake_call(self) -> Callable[[], None]:
        # The C object's: ``SSLSocket.do_handshake`` adds a frame and resets the socket's
        # timeout (a system call) on every attempt.
        c_obj = self._ssl._sslobj  # type: ignore[attr-defined]
        return self._ssl.do_handshake if c_obj is None else c_obj.do_handshake

    # The fast path of each call is inline: one uncontended lock around one C call, made on the
    # C ``_ssl._SSLSocket`` behind the ``ssl.SSLSocket`` (its ``_sslobj``), skipping ssl.py's
    # Python frames (None: its TLS layer is gone, after close()).

    def recv(self, bufsize: int) -> bytes:
        lock = self._lock
        failed = None
        c_obj = self._ssl._sslobj  # type: ignore[attr-defined]
        if not self._shared and c_obj is not None and lock.acquire(False):
            try:
                if self._spin is not None and self._timeout != 0 and not c_obj.pending():
                    self._spin.readable(self._ssl.fileno())
                data: bytes = c_obj.read(bufsize)
                if not self._done:
                    self._done = True
                return data
            except (ssl.SSLError, OSError) as exc:
                failed = exc  # handled below
            finally:
                lock.release()
        try:
            data = self._call("recv", False, self._ssl.recv, bufsize, failed=failed)
        except _ZeroReturn:
            return b""
        if not self._done:
            self._done = True
        return data

    def recv_into(self, buffer: Buffer, nbytes: int = 0) -> int:
        lock = self._lock
        failed = None
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        c_obj = self._ssl._sslobj  # type: ignore[attr-defined]
        if not self._shared and c_obj is not None and lock.acquire(False):
            try:
                if self._spin is not None and self._timeout != 0 and not c_obj.pending():
                    self._spin.readable(self._ssl.fileno())
                n: int = c_obj.read(nbytes, buffer)
                if not self._done:
                    self._done = True
                return n
            except (ssl.SSLError, OSError) as exc:
                failed = exc  # handled below
            finally:
                lock.release()
        try:
            n = self._call("recv", False, self._ssl.recv_into, buffer, nbytes, failed=failed)
        except _ZeroReturn:
            return 0
        if not self._done:
            self._done = True
        return n

    def send(self, data: Buffer) -> int:
        if self._close_sent:
            raise _write_after_close()
        n: int = self._call("send", True, self._ssl.send, data)
        if not self._done:
            self._done = True
        if self._nagle_after_first_write:
            self._first_write_done()
        return n

    def _no_delay_until_first_write(self) -> None:
        """Client sockets from ``connect()``: Nagle off now, on again after the first write
        (why: ``unitls._socket.no_delay``; the Rust ``SocketCore`` has the same method)."""
        no_delay(self._ssl)
        self._nagle_after_first_write = True

    def _first_write_done(self) -> None:
        self._nagle_after_first_write = False
        if self._ssl.fileno() != -1:
            no_delay(self._ssl, on=False)

    def sendall(self, data: Buffer) -> None:
        if self._close_sent:
            raise _write_after_close()
        c_obj = self._ssl._sslobj  # type: ignore[attr-defined]
        send = self._ssl.send if c_obj is None else c_obj.write
        lock = self._lock
        failed = None
        if not self._shared and c_obj is not None and lock.acquire(False):
            try:
                # OpenSSL writes it all (or raises): partial writes are not enabled.
                send(data)
                if not self._done:
                    self._done = True
                if self._nagle_after_first_write:
                    self._first_write_done()
                return
            except (ssl.SSLError, OSError) as exc:
                failed = exc  # handled below
            finally:
                lock.release()
        view = memoryview(data).cast("B")
        deadline = Deadline(self._timeout, "sendall")  # for the whole call
        while view:
            # (After a partial write OpenSSL is retried with the same bytes: ``view``.)
            view = view[self._call(deadline, True, send, view, failed=failed) :]
            failed = None
        if not self._done:
            self._done = True
        if self._nagle_after_first_write:
            self._first_write_done()

    def _error(self, exc: Exception, writing: bool) -> TLSError:
        if self._closed or self._ssl.fileno() == -1:
            return TLSError("the TLS socket is closed")
        if isinstance(exc, ssl.SSLZeroReturnError) and self._done:
            return _ZeroReturn()  # the peer's close_notify: recv returns b""
        handshaking = not self._done
        if isinstance(exc, BlockingIOError):
            if writing:
                return WantWriteError("the socket's send buffer is full")
            return WantReadError("no TLS data available on the socket yet")
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)) and not handshaking:
            if writing:
                return map_os_error(exc, "sending TLS data failed")
            return RaggedEOF("the peer reset the connection without a TLS close_notify")
        if writing and not handshaking and isinstance(exc, ssl.SSLEOFError):
            # OpenSSL's name for a write to a peer that reset or closed: the same event is a
            # TLSConnectionError on every engine.
            return TLSConnectionError(
                errno.ECONNRESET, "sending TLS data failed: the peer closed the connection"
            )
        return _translate(exc, handshaking)

    def close(self, force: bool = False) -> None:
        """Send close_notify and close. ``force=False`` waits for the peer's close_notify (the
        socket's timeout, five seconds when blocking, bounds the whole close; non-blocking:
        WantReadError until it came). ``force=True`` does not wait."""
        if self._closed:
            return
        s = self._ssl
        timeout = self._timeout
        try:
            if self._done:
                wait = 0.0 if force else (_CLOSE_WAIT if timeout is None else timeout)
                if not force:
                    # The peer's answer is awaited (now, or over the caller's retries when
                    # non-blocking): Nagle would hold our close_notify (and the tail of the
                    # last record) until the peer's delayed ACK, 40 ms on Linux. (A forced close
                    # closes the socket at once: its FIN pushes what Nagle holds.)
                    no_delay(s)
                if not wait:
                    # OpenSSL itself must not wait either (a slice in single mode: forced
                    # closes took a round trip, waiting for the peer's close_notify).
                    with self._lock:
                        s.settimeout(0.0)
                self._call(Deadline(wait, "close"), False, s.unwrap)
        except WantReadError:
            if not force and timeout == 0:
                raise
        except (TLSError, ValueError):
            pass  # the peer is gone or misbehaved; closing is all that is left to do
        self._closed = True
        s.close()

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        """Like ``socket.shutdown``; ``SHUT_WR``/``SHUT_RDWR`` send close_notify first. Reading
        after ``SHUT_WR`` stays TLS-protected (until the peer's close_notify)."""
        if self._closed:
            raise TLSError("the TLS socket is closed")
        s = self._ssl
        if how != socket.SHUT_RD and not self._close_sent and self._done:
            c_obj = s._sslobj  # type: ignore[attr-defined]
            with self._lock:
                _close_notify(c_obj, s, Deadline(self._timeout, "shutdown"))
            self._close_sent = True
        try:
            # The socket's own shutdown: ssl.SSLSocket.shutdown() would drop the TLS state, and
            # recv() would then return the raw TCP stream.
            socket.socket.shutdown(s, how)
        except OSError as exc:
            raise map_os_error(exc, "shutdown failed") from exc

    def listen(self, backlog: int) -> None:
        raise TLSError("listen() is for server sockets made by ServerContext.connect()")

    def accept(self) -> tuple[OpenSSLSocket, tuple[str | None, int]]:
        raise TLSError("accept() is for server sockets made by ServerContext.connect()")

    @property
    def context(self) -> OpenSSLClientContext | OpenSSLServerContext:
        return self._context

    def getpeercert(self) -> bytes | None:
        try:
            return self._ssl.getpeercert(binary_form=True)
        except ValueError:
            return None

    def getpeercertchain(self) -> list[bytes]:
        """DER of every certificate the peer sent, leaf first (an extension to the PEP)."""
        return _chain_of(getattr(self._ssl, "_sslobj", None))

    def cipher(self) -> CipherSuite | int | None:
        s = self._ssl
        return None if s.version() is None else _cipher_of(s.cipher())

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        s = self._ssl
        return None if s.version() is None else _protocol_of(s.selected_alpn_protocol())

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        return _version_of(self._ssl.version())

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session (False before it completes)."""
        return bool(self._ssl.session_reused)

    @property
    def negotiated_group(self) -> str | None:
        """IANA name of the key exchange group used; None before the handshake and where
        OpenSSL cannot be asked (see ``_negotiated_group_reader``)."""
        return _group_of(getattr(self._ssl, "_sslobj", None))

    def pending(self) -> int:
        """Decrypted bytes ready to be read without touching the network."""
        with self._lock:
            return self._ssl.pending()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._ssl.fileno()}"
        return f"<OpenSSLSocket {state} version={self._ssl.version()}>"


_SUPPORTED_GROUPS = _probe_groups()


# -- contexts ----------------------------------------------------------------------------------


class OpenSSLClientContext(ClientContextBase[ssl.SSLContext]):
    """A client context: ``connect`` for sockets, ``create_buffer`` for in-memory use.

    Connections resume earlier sessions from this context's cache, keyed by server name and
    port, unless ``resumption=False`` (see the module docstring).
    """

    __slots__ = ("_sessions",)
    engine_name = "openssl"
    supported_groups = _SUPPORTED_GROUPS
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSClientConfiguration) -> ssl.SSLContext:
        verify, check_hostname = self._verification()
        self._sessions = SessionCache(self._resumption and _openssl_ffi.AVAILABLE)
        return _shared_client_context(
            configuration, verify, check_hostname, self._keylog, groups=self._groups
        )

    def _new_buffer(self, server_hostname: str, port: int | None, session: object) -> OpenSSLBuffer:
        offered = None
        if session is not None:
            offered = self._sessions.check_offered(session, server_hostname)
        return OpenSSLBuffer(self, self._native, server_hostname, (self._sessions, port, offered))

    def clear_session_cache(self) -> None:
        """Forget every cached session: the next connections make full handshakes."""
        self._sessions.clear()

    def stdlib_context(self) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` this context's connections run on (for the ``ssl`` bridge)."""
        return self._native

    def connect(
        self, address: tuple[str | None, int], *, timeout: Any = DEFAULT_TIMEOUT
    ) -> OpenSSLSocket:
        """Connect, handshake and verify the server against ``address``'s host.

        ``timeout`` (seconds, None: block) bounds the TCP connect and the handshake and stays
        the socket's timeout; by default ``socket.getdefaulttimeout()``, as for ``socket``.
        """
        host = address[0] if isinstance(address, tuple) and address else None
        if not host:
            raise ValueError("a client needs a host name or address to connect to")
        if timeout is DEFAULT_TIMEOUT:
            timeout = socket.getdefaulttimeout()
        name = check_server_hostname(host)  # what is verified and sent (SNI)
        deadline = Deadline(timeout, "connect")
        sock = open_connection(address, timeout)
        try:
            ssl_sock = self._native.wrap_socket(
                sock,
                server_hostname=name,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,
            )
        except BaseException:
            sock.close()
            raise
        try:
            c_obj = ssl_sock._sslobj  # type: ignore[attr-defined]
            _attach_sessions(self._sessions, c_obj, ssl_sock, name, address[1], None)
        except BaseException:
            ssl_sock.close()
            raise
        tls = OpenSSLSocket(ssl_sock, self)
        tls._no_delay_until_first_write()  # no delayed-ACK wait for the first request
        try:
            tls._handshake_within(deadline)  # what the TCP connect left of the timeout
        except TLSError:
            linger_close(ssl_sock, _CLIENT_LINGER)  # the alert is out: let it arrive
            raise
        except BaseException:
            ssl_sock.close()
            raise
        return tls


class _ServerContexts:
    """A server configuration as OpenSSL contexts: one per group of signing chains for the same
    names (see ``_chain_groups``; the first is the default), with the names and addresses each
    group's leaves are valid for."""

    __slots__ = ("chain_names", "contexts", "default")

    def __init__(self, contexts: list[ssl.SSLContext], chains: Sequence[SigningChain]) -> None:
        self.contexts = contexts
        self.default = contexts[0]
        self.chain_names = [_names_of(c) for c in chains] if len(chains) > 1 else []

    def for_address(self, local_address: str | None) -> ssl.SSLContext:
        if local_address and self.chain_names:
            try:
                ip = str(ipaddress.ip_address(local_address))
            except ValueError:
                return self.default
            for ctx, (_dns, ips) in zip(self.contexts, self.chain_names, strict=True):
                if ip in ips:
                    return ctx
        return self.default


class OpenSSLServerContext(ServerContextBase[_ServerContexts]):
    """A server context: ``connect`` binds and listens, ``create_buffer`` for in-memory use.

    Tickets are encrypted under this context's own keys, which rotate every 6 hours;
    ``session_tickets=False`` stops issuing tickets and caching sessions (every handshake is
    full). See the module docstring.
    """

    __slots__ = ()
    engine_name = "openssl"
    supported_groups = _SUPPORTED_GROUPS
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSServerConfiguration) -> _ServerContexts:
        tickets = self._session_tickets
        contexts = _server_contexts(
            configuration, tickets, self._keylog, session_cache=tickets, kx_groups=self._groups
        )
        groups = _chain_groups(configuration.certificate_chain)
        return _ServerContexts(contexts, [group[0] for group in groups])

    def _new_buffer(self, local_address: str | None) -> OpenSSLBuffer:
        return OpenSSLBuffer(self, self._native.for_address(local_address), None)

    def stdlib_context(self) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` this context's connections start on (for the ``ssl`` bridge;
        its SNI callback switches to the context of the chain the client asked for)."""
        return self._native.default

    def _accept(self, conn: socket.socket) -> OpenSSLSocket:
        try:
            ssl_sock = self._native.default.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=False
            )
        except (ssl.SSLError, OSError) as exc:
            # ssl.py checks the connection while wrapping: a client that already closed (after
            # sending bytes, or not) fails here, before any handshake.
            raise HandshakeClosedError(
                f"the client closed the connection before the TLS handshake ({exc})"
            ) from exc
        return OpenSSLSocket(ssl_sock, self)


IMPLEMENTATION: TLSImplementation[OpenSSLClientContext, OpenSSLServerContext] = (
    engine_implementation(OpenSSLClientContext, OpenSSLServerContext)
)
