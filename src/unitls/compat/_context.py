"""``unitls.compat.SSLContext``: a real ``ssl.SSLContext`` whose connections run on a PEP 748 engine.

The object is an ordinary OpenSSL context as far as its settings go (so every setter, getter and
``load_*`` call behaves and validates exactly like the stdlib's, errors included); the bridge
overrides the two private factories ``_wrap_socket``/``_wrap_bio`` and records what the engine
needs. At wrap time the current settings become an immutable PEP configuration and a ``_Plan``
made from it is cached under those settings: urllib3 and httpcore mutate contexts between
connections, yet equal settings reuse one plan.

Two ways to run a connection:

- The OpenSSL engine (native): the engine translates the configuration into ``ssl.SSLContext``
  objects and ssl.py gets the C object made from them, behind ``NativeTLS``, which reports the
  bridge context as ``.context`` (``LockedTLS`` for sockets: one thread at a time in OpenSSL). A server's are its own (sessions, session statistics and
  ``sni_callback`` stay per context, as in the stdlib); clients share the engine's cached ones
  (the system CAs load once) unless a hook that must not leak to other contexts is set (key log,
  ``_msg_callback``, ECDH curve). Sessions remember their bridge context (``_native.py``).
- Every other engine: ``SocketTLS``/``BioTLS`` run the engine's ``TLSBuffer`` (``_sslobj.py``).
  On engines with native I/O (rustls, NSS) a socket's ``_sslobj`` is the extension's instead
  (``_nativeio.py``): from the start for clients, after the ClientHello for servers (which
  Python reads for ``sni_callback``). ``SSLObject``s keep ``BioTLS``.

Decisions that make the bridge behave like the stdlib where the PEP is silent:

- ``CERT_REQUIRED`` with no CA loaded is a trust store holding one throwaway certificate whose key
  was discarded: nothing verifies against it, so the handshake fails with
  ``SSLCertVerificationError`` and the peer gets the engine's alert, on every engine.
- Key material is checked by OpenSSL first (``super().load_cert_chain``), so missing files and bad
  PEM raise what the stdlib raises; the engine then gets the key decrypted, in memory.
- One certificate chain per key type (RSA, ECDSA, ...), like OpenSSL: the engine picks by the
  client's signature algorithms.
- ``SecurityWarning`` for an unverified client: once per context and settings, on every engine.
"""

from __future__ import annotations

import _ssl
import base64
import os
import re
import ssl
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._config import TLSClientConfiguration, TLSServerConfiguration
from .._enums import TLS13_SUITES, CipherSuite, NextProtocol, TLSVersion
from .._errors import ConfigurationError
from .._nativesock import NativeServerSockets
from .._objects import Certificate, PrivateKey, SigningChain, TrustStore
from .._protocols import ClientContext, TLSImplementation
from .._registry import get_implementation
from .._stdlib import ORIGINAL_SSLCONTEXT
from ._certinfo import verified_chain
from ._hello import report_unraisable
from ._native import LockedTLS, NativeTLS, check_session_owner
from ._nativeio import NativeServerSocketTLS, NativeSocketTLS, native_sslobj
from ._sslobj import BioTLS, SocketTLS, check_offered_session

__all__ = [
    "ORIGINAL_SSLCONTEXT",
    "IgnoredSettingWarning",
    "SSLContext",
    "UnsupportedSettingError",
    "safe_property",
]


#: The stdlib's class. ssl.py's setters look up the module global ``SSLContext``; the bridge (and
#: injection) must never depend on it (see ``safe_property``).
# (found in one place with the OpenSSL engine: unitls._stdlib)
_C = _ssl._SSLContext


def _c_descriptor(name: str) -> Any:
    return _C.__dict__[name]


class UnsupportedSettingError(ssl.SSLError, ConfigurationError):
    """An ``ssl.SSLContext`` setting the bridge cannot honour on a PEP 748 engine.

    An ``ssl.SSLError`` (what callers of the ssl API catch), a ``ValueError`` (what the stdlib
    raises for bad settings) and a ``unitls.ConfigurationError``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(ssl.SSL_ERROR_SSL, message)
        self.reason = "UNSUPPORTED_SETTING"
        self.library = "unitls"

    def __str__(self) -> str:
        return str(self.strerror)


def _msg_callback_property() -> property:
    """ssl.py's ``_msg_callback``, without its look-ups of the module global ``SSLContext``."""
    c_descriptor = _c_descriptor("_msg_callback")

    def fget(self: ssl.SSLContext) -> Any:
        inner = c_descriptor.__get__(self)
        return getattr(inner, "user_function", inner)

    def fset(self: ssl.SSLContext, callback: Any) -> None:
        if callback is None:
            c_descriptor.__set__(self, None)
            return
        if not callable(callback):
            raise TypeError(f"{callback} is not callable.")

        def inner(
            conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: bytes
        ) -> Any:
            # As ssl.py does: plain ints become its enums where they name one.
            try:
                version = ssl.TLSVersion(version)
            except ValueError:
                pass
            try:
                content_type = ssl._TLSContentType(content_type)  # type: ignore[attr-defined]
            except ValueError:
                pass
            if content_type == ssl._TLSContentType.HEADER:  # type: ignore[attr-defined]
                msg_enum = ssl._TLSContentType  # type: ignore[attr-defined]
            elif content_type == ssl._TLSContentType.ALERT:  # type: ignore[attr-defined]
                msg_enum = ssl._TLSAlertType  # type: ignore[attr-defined]
            else:
                msg_enum = ssl._TLSMessageType  # type: ignore[attr-defined]
            try:
                msg_type = msg_enum(msg_type)
            except ValueError:
                pass
            return callback(conn, direction, version, content_type, msg_type, data)

        inner.user_function = callback  # type: ignore[attr-defined]
        c_descriptor.__set__(self, inner)

    original = ORIGINAL_SSLCONTEXT.__dict__["_msg_callback"]
    return property(fget, fset, None, original.__doc__)


def safe_property(name: str) -> property:
    """ssl.py's property ``name`` with accessors that go straight to ``_ssl._SSLContext``.

    ssl.py's accessors call ``super(SSLContext, SSLContext)``, looking up the *module global*:
    once injection rebinds it to a subclass, they find themselves again and recurse forever.
    """
    if name == "_msg_callback":
        return _msg_callback_property()
    original = ORIGINAL_SSLCONTEXT.__dict__[name]
    assert isinstance(original, property)
    c_descriptor = _c_descriptor(name)

    def fset(self: ssl.SSLContext, value: Any) -> None:
        if name == "minimum_version" and value == ssl.TLSVersion.SSLv3:
            self.options &= ~ssl.Options.OP_NO_SSLv3
        c_descriptor.__set__(self, value)

    return property(original.fget, fset, None, original.__doc__)


SAFE_PROPERTIES = (
    "verify_mode",
    "minimum_version",
    "maximum_version",
    "options",
    "verify_flags",
    "_msg_callback",
)

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)
_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----(.+?)-----END \1-----", re.DOTALL
)
# The names OpenSSL looks up in a capath directory: <subject hash>.<n> (CRLs: .r<n>).
_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")


def _der_to_pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def _pem_certs(data: bytes) -> list[bytes]:
    """DER of every ``CERTIFICATE`` block (skipping comments and other blocks, as OpenSSL does)."""
    out = []
    for m in _PEM_CERT.finditer(data):
        try:
            out.append(base64.b64decode(b"".join(m.group(1).split()), validate=True))
        except ValueError:
            continue  # a block OpenSSL could not read either; it reported its own error
    return out


def _der_certs(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates (``load_verify_locations(cadata=bytes)``)."""
    out = []
    while data:
        if len(data) < 2 or data[0] != 0x30:
            raise UnsupportedSettingError("cadata bytes are not DER certificates")
        length, head = data[1], 2
        if length & 0x80:
            count = length & 0x7F
            length, head = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
        out.append(data[: head + length])
        data = data[head + length :]
    return out


def _read(path: Any) -> bytes:
    """A file's bytes; OSError (FileNotFoundError, ...) as ``open()`` raises it."""
    with open(path, "rb") as f:
        return f.read()


_system_lock = threading.Lock()
_system_pem: bytes | None = None


def _system_bundle() -> bytes:
    """The default OpenSSL trust anchors as PEM, for a context mixing them with its own CAs."""
    global _system_pem
    with _system_lock:
        if _system_pem is None:
            paths = ssl.get_default_verify_paths()
            ders: list[bytes] = []
            if paths.cafile:
                ders += _pem_certs(_read(paths.cafile))
            elif paths.capath and os.path.isdir(paths.capath):
                ders += _capath_certs(paths.capath)
            _system_pem = b"".join(_der_to_pem(d) for d in dict.fromkeys(ders))
        return _system_pem


def _capath_certs(capath: Any) -> list[bytes]:
    ders: list[bytes] = []
    for entry in sorted(os.scandir(capath), key=lambda e: e.name):
        name = os.fsdecode(entry.name)
        if _HASHED_NAME.match(name) and entry.is_file():
            try:
                ders += _pem_certs(_read(entry.path))
            except OSError:
                continue  # OpenSSL skips what it cannot read
    return ders


_anchor_lock = threading.Lock()
_anchor_pem: bytes | None = None


def _unusable_trust_store() -> TrustStore:
    """A trust store nothing verifies against: one self-signed CA whose key no longer exists.

    What ``CERT_REQUIRED`` with no CA loaded means in OpenSSL: every peer fails verification in
    the handshake (``unable to get local issuer certificate``), and the peer gets the alert.
    """
    global _anchor_pem
    with _anchor_lock:
        if _anchor_pem is None:
            from .._certgen import CA

            _anchor_pem = CA.create("unitls bridge: no CA certificates loaded").cert_pem
        return TrustStore.from_buffer(_anchor_pem)


_VERSIONS = {
    ssl.TLSVersion.TLSv1_2: TLSVersion.TLSv1_2,
    ssl.TLSVersion.TLSv1_3: TLSVersion.TLSv1_3,
}
_OLD_PROTOCOLS = {
    getattr(ssl, name): name
    for name in ("PROTOCOL_SSLv2", "PROTOCOL_SSLv3", "PROTOCOL_TLSv1", "PROTOCOL_TLSv1_1")
    if hasattr(ssl, name)
}
_CRL_FLAGS = ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN
# The options flags the bridge maps (the others are OpenSSL tuning: see docs/compat.md).
_MAPPED_OPTIONS = ssl.OP_NO_TLSv1_2 | ssl.OP_NO_TLSv1_3 | ssl.OP_NO_TICKET
_CACHE_LIMIT = 64

_insecure_lock = threading.Lock()
_insecure_impls: dict[str, TLSImplementation[Any, Any]] = {}


def _insecure_impl(name: str) -> TLSImplementation[Any, Any]:
    from ..insecure import _already_warned, get_insecure_implementation

    with _insecure_lock:
        impl = _insecure_impls.get(name)
        if impl is None:
            token = _already_warned.set(True)  # the bridge warns once per context itself
            try:
                impl = _insecure_impls[name] = get_insecure_implementation(name)
            finally:
                _already_warned.reset(token)
        return impl


def _resolve(
    implementation: str | TLSImplementation[Any, Any] | None,
) -> TLSImplementation[Any, Any]:
    if implementation is None or isinstance(implementation, str):
        return get_implementation(implementation)
    if isinstance(implementation, TLSImplementation):
        return implementation
    raise TypeError(
        "implementation must be None, an engine name or a unitls.TLSImplementation, "
        f"not {type(implementation).__name__}"
    )


def _is_openssl_engine(impl: TLSImplementation[Any, Any]) -> bool:
    # Not imported here: an engine object of that module means it is loaded (importing it now,
    # while injected, would make it build bridge contexts).
    module = sys.modules.get("unitls.openssl")
    base = getattr(module, "OpenSSLClientContext", None)
    cls = impl.client_context
    return base is not None and isinstance(cls, type) and issubclass(cls, base)


_MSG_CALLBACK = _msg_callback_property()

if TYPE_CHECKING:
    _Base = ssl.SSLContext
else:
    _Base = ORIGINAL_SSLCONTEXT


def _c_get(ctx: ssl.SSLContext, name: str) -> int:
    """A setting straight from ``_ssl._SSLContext`` (a plain int, no ssl.py wrapper)."""
    return int(_c_descriptor(name).__get__(ctx))


def _key_type(cert_der: bytes) -> str:
    """The slot OpenSSL keeps a certificate in: one per public key algorithm."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    key = x509.load_der_x509_certificate(cert_der).public_key()
    for kind, name in (
        (rsa.RSAPublicKey, "RSA"),
        (ec.EllipticCurvePublicKey, "EC"),
        (ed25519.Ed25519PublicKey, "Ed25519"),
        (ed448.Ed448PublicKey, "Ed448"),
        (dsa.DSAPublicKey, "DSA"),
    ):
        if isinstance(key, kind):
            return name
    return type(key).__name__


def _decrypted_key(pem: bytes, password: bytes) -> bytes:
    """An encrypted PEM key as unencrypted PKCS#8 PEM, in memory only."""
    from cryptography.hazmat.primitives import serialization

    try:
        # OpenSSL has just loaded this key and matched it to the certificate; the engine checks
        # it again when it signs with it (as the stdlib, which never runs an RSA key check).
        key = serialization.load_pem_private_key(
            pem, password=password, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as exc:
        raise UnsupportedSettingError(
            f"load_cert_chain: OpenSSL took the private key but the unitls bridge cannot "
            f"decrypt it: {exc}"
        ) from exc
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _NoCertificate:
    """The PEP context of a server with no certificate: wrapping works (as in the stdlib), the
    handshake fails."""

    configuration = None

    def create_buffer(self, *args: Any) -> Any:
        raise ConfigurationError(
            "this server-side SSLContext has no certificate: call load_cert_chain() before "
            "accepting TLS connections"
        )


class _QuietInsecure:
    """An insecure PEP client context whose buffers do not warn again: the bridge warned once for
    the context (as on the OpenSSL engine, whose native path makes no buffers)."""

    __slots__ = ("_pep",)

    def __init__(self, pep: ClientContext) -> None:
        self._pep = pep

    @property
    def configuration(self) -> TLSClientConfiguration:
        return self._pep.configuration

    def create_buffer(self, server_hostname: str, **options: Any) -> Any:
        from ..insecure import _already_warned

        token = _already_warned.set(True)
        try:
            return self._pep.create_buffer(server_hostname, **options)
        finally:
            _already_warned.reset(token)


class _Plan:
    """What connections made with one set of settings run on (cached per settings).

    ``native``: the OpenSSL engine's ``ssl.SSLContext`` objects (the first is the default chain);
    otherwise ``pep``, the PEP context whose buffers ``SocketTLS``/``BioTLS`` run.
    """

    __slots__ = ("config", "engine_sni", "native", "pep", "private", "sni_shim", "verified")

    def __init__(
        self,
        config: TLSClientConfiguration | TLSServerConfiguration | None,
        verified: bool,
        pep: Any = None,
        native: list[ssl.SSLContext] | None = None,
        private: bool = True,
    ) -> None:
        self.config = config
        self.verified = verified  # False: getpeercert() gives {} like an unverified C socket
        self.pep = pep
        self.native = native
        # False: ``native`` is the engine's cache, shared with other contexts of equal settings.
        self.private = private
        # The engine's own SNI chain selector on the native contexts, if it installed one.
        self.engine_sni = native[0].sni_callback if native else None
        self.sni_shim: Any = None

    @property
    def configuration(self) -> TLSClientConfiguration | TLSServerConfiguration | None:
        return self.config


class SSLContext(_Base):
    """An ``ssl.SSLContext`` whose sockets and objects run their TLS on a PEP 748 engine.

    ``wrap_socket``/``wrap_bio`` return genuine ``ssl.SSLSocket``/``ssl.SSLObject`` objects, so
    every library that takes an ``ssl.SSLContext`` works unchanged. ``implementation``: an engine
    name, a ``unitls.TLSImplementation``, or None for ``unitls.get_implementation()``.

    Settings without a PEP 748 equivalent are refused with ``UnsupportedSettingError`` when the
    context is used (see docs/compat.md): ``CERT_OPTIONAL``, TLS below 1.2, server-side
    post-handshake authentication, CRL checking, a key needing a password typed on the terminal.
    """

    # The engine used when none is given (injection sets this on a subclass).
    _unitls_default: str | TLSImplementation[Any, Any] | None = None

    verify_mode = safe_property("verify_mode")
    minimum_version = safe_property("minimum_version")
    maximum_version = safe_property("maximum_version")
    options = safe_property("options")
    verify_flags = safe_property("verify_flags")

    _unitls_impl: TLSImplementation[Any, Any]
    _unitls_native: bool
    _unitls_ca: dict[bytes, None]
    _unitls_system_ca: bool
    _unitls_chains: dict[str, SigningChain]
    _unitls_alpn: tuple[bytes, ...]
    _unitls_ciphers: tuple[int, ...] | None
    _unitls_ecdh_curve: str | None
    _unitls_generation: int
    _unitls_cache: dict[tuple[Any, ...], _Plan]
    _unitls_lock: threading.Lock

    def __new__(
        cls,
        protocol: int | None = None,
        *args: Any,
        implementation: str | TLSImplementation[Any, Any] | None = None,
        **kwargs: Any,
    ) -> SSLContext:
        if protocol is None:
            import warnings

            # The stdlib's default (PROTOCOL_TLS: CERT_NONE, either side) and its warning.
            warnings.warn(
                "ssl.SSLContext() without protocol argument is deprecated.",
                category=DeprecationWarning,
                stacklevel=2,
            )
            protocol = ssl.PROTOCOL_TLS
        if protocol in _OLD_PROTOCOLS:
            raise UnsupportedSettingError(
                f"ssl.{_OLD_PROTOCOLS[protocol]} is TLS below 1.2, which unitls engines never "
                "negotiate: use ssl.PROTOCOL_TLS_CLIENT or ssl.PROTOCOL_TLS_SERVER"
            )
        self: SSLContext = super().__new__(cls, protocol)
        state = self.__dict__
        impl = _resolve(implementation if implementation is not None else cls._unitls_default)
        state["_unitls_impl"] = impl
        state["_unitls_native"] = _is_openssl_engine(impl)
        state["_unitls_ca"] = {}
        state["_unitls_system_ca"] = False
        state["_unitls_chains"] = {}
        state["_unitls_alpn"] = ()
        state["_unitls_ciphers"] = None
        state["_unitls_ecdh_curve"] = None
        state["_unitls_generation"] = 0
        state["_unitls_cache"] = {}
        state["_unitls_lock"] = threading.Lock()
        return self

    def __init__(
        self,
        protocol: int | None = None,
        *args: Any,
        implementation: str | TLSImplementation[Any, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        pass  # everything happens in __new__, like ssl.SSLContext

    @property
    def implementation(self) -> TLSImplementation[Any, Any]:
        """The PEP 748 engine this context's connections run on."""
        return self._unitls_impl

    def __repr__(self) -> str:
        return f"<unitls.compat.SSLContext engine={self._unitls_impl.name!r} at {id(self):#x}>"

    def _changed(self) -> None:
        self._unitls_generation += 1

    # -- settings the bridge records (the OpenSSL context keeps validating them) ----------------

    def load_verify_locations(
        self,
        cafile: Any = None,
        capath: Any = None,
        cadata: Any = None,
    ) -> None:
        super().load_verify_locations(cafile, capath, cadata)
        ders: list[bytes] = []
        if cafile is not None:
            ders += _pem_certs(_read(cafile))
        if capath is not None:
            ders += _capath_certs(capath)
        if isinstance(cadata, str):
            ders += _pem_certs(cadata.encode("ascii"))
        elif cadata is not None:
            ders += _der_certs(bytes(memoryview(cadata)))
        new = [der for der in ders if der not in self._unitls_ca]
        for der in new:
            self._unitls_ca[der] = None
        if new:  # loading the same CAs again (urllib3 does, per connection) changes nothing
            self._changed()

    def set_default_verify_paths(self) -> None:
        super().set_default_verify_paths()
        if not self._unitls_system_ca:
            self._unitls_system_ca = True
            self._changed()

    def load_cert_chain(
        self,
        certfile: Any,
        keyfile: Any = None,
        password: str | bytes | bytearray | Callable[[], str | bytes | bytearray] | None = None,
    ) -> None:
        cert_data = _read(certfile)
        key_data = _read(keyfile) if keyfile is not None else cert_data
        match = _PEM_KEY.search(key_data)
        encrypted = match is not None and (
            match.group(1).startswith(b"ENCRYPTED") or b"ENCRYPTED" in match.group(2)[:200]
        )
        if encrypted and password is None:
            # Checked before OpenSSL sees the file: it would prompt on the terminal, and the
            # engine needs the key decrypted.
            where = keyfile if keyfile is not None else certfile
            raise UnsupportedSettingError(
                f"load_cert_chain: the private key in {where!r} is encrypted and no password "
                "was given (the unitls bridge cannot ask on the terminal): pass password="
            )
        typed: list[bytes] = []
        if callable(password):
            callback = password

            def remember() -> Any:
                value = callback()
                if isinstance(value, (str, bytes, bytearray)):
                    typed.append(value.encode() if isinstance(value, str) else bytes(value))
                return value

            super().load_cert_chain(certfile, keyfile, remember)
        else:
            # OpenSSL first: what it raises (PEM lib, key values mismatch, bad password, type
            # errors) is what the stdlib raises.
            super().load_cert_chain(certfile, keyfile, password)
            if isinstance(password, (str, bytes, bytearray)):
                typed.append(password.encode() if isinstance(password, str) else bytes(password))
        if match is None:
            raise UnsupportedSettingError(
                "load_cert_chain: the unitls bridge reads PEM keys (PRIVATE KEY, RSA PRIVATE KEY, "
                "EC PRIVATE KEY or ENCRYPTED PRIVATE KEY) and found none"
            )
        ders = _pem_certs(cert_data)
        if not ders:
            raise UnsupportedSettingError(f"load_cert_chain: no PEM certificate in {certfile!r}")
        # An unencrypted key goes to the engine as it is (parsing RSA keys is slow).
        pem = _decrypted_key(match.group(0), typed[0]) if encrypted and typed else match.group(0)
        chain = SigningChain(
            (Certificate.from_buffer(_der_to_pem(ders[0])), PrivateKey.from_buffer(pem)),
            [Certificate.from_buffer(_der_to_pem(d)) for d in ders[1:]],
        )
        # Like OpenSSL: one chain per key type (a second RSA chain replaces the first).
        kind = _key_type(ders[0])
        self._unitls_chains.pop(kind, None)
        self._unitls_chains[kind] = chain
        self._changed()

    @property
    def _unitls_chain(self) -> SigningChain | None:
        """The chain a client presents: the one loaded last (PEP clients have one)."""
        chains = list(self._unitls_chains.values())
        return chains[-1] if chains else None

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        protocols = list(alpn_protocols)
        super().set_alpn_protocols(protocols)
        self._unitls_alpn = tuple(p.encode("ascii") for p in protocols)
        self._changed()

    def set_ciphers(self, cipherlist: str) -> None:
        super().set_ciphers(cipherlist)
        # Let OpenSSL expand the string, keep the suites PEP 748 engines offer (all AEAD with
        # forward secrecy); TLS 1.3 suites are not governed by set_ciphers and stay as they are.
        enabled = [c["id"] & 0xFFFF for c in _C.get_ciphers(self)]
        known = {int(s) for s in CipherSuite}
        tls12 = [c for c in enabled if c in known and c not in TLS13_SUITES]
        tls13 = [c for c in enabled if c in TLS13_SUITES]
        if not tls12 and not tls13:
            raise UnsupportedSettingError(
                f"set_ciphers({cipherlist!r}) enables no cipher suite that unitls engines "
                "support (ECDHE with AES-GCM or ChaCha20-Poly1305, or TLS 1.3)"
            )
        # No usable TLS 1.2 suite (e.g. uvicorn's default "TLSv1", all CBC): the engines then
        # speak TLS 1.3 only, stricter than OpenSSL would be, never weaker.
        self._unitls_ciphers = tuple(tls13 + tls12)
        self._changed()

    def set_ecdh_curve(self, name: str, /) -> None:
        """The one key exchange group (OpenSSL's name; OpenSSL 3 uses it in TLS 1.3 too): the
        OpenSSL engine's contexts take it as it is, the other engines as ``groups=(...)``."""
        super().set_ecdh_curve(name)  # ValueError for a name OpenSSL does not know
        name = os.fsdecode(name)  # the stdlib takes bytes too
        if not self._unitls_native and _ecdh_group(name) is None:
            raise UnsupportedSettingError(
                f"set_ecdh_curve({name!r}): the {self._unitls_impl.name} engine has no such key "
                "exchange group; use one of prime256v1, secp384r1, secp521r1, X25519, X448"
            )
        self._unitls_ecdh_curve = name
        self._changed()

    # Settings the engines decide for themselves: kept on the OpenSSL object (so getters answer
    # as usual) but announced, never silently dropped.

    def load_dh_params(self, path: Any, /) -> None:
        super().load_dh_params(path)
        _ignored("load_dh_params()", "unitls engines never negotiate finite-field DHE suites")

    @property
    def keylog_filename(self) -> Any:
        return _c_descriptor("keylog_filename").__get__(self)

    @keylog_filename.setter
    def keylog_filename(self, value: Any) -> None:
        # The stdlib opens the file (and writes its header) here. Connections on the OpenSSL
        # engine log to it natively (see _sync_native); the other engines' contexts get the
        # path (``keylog_filename=``, see _build) and append to it themselves.
        _c_descriptor("keylog_filename").__set__(self, value)
        self._changed()  # on the OpenSSL engine a client then gets engine contexts of its own

    @property
    def hostname_checks_common_name(self) -> bool:
        return bool(ORIGINAL_SSLCONTEXT.__dict__["hostname_checks_common_name"].fget(self))

    @hostname_checks_common_name.setter
    def hostname_checks_common_name(self, value: bool) -> None:
        ORIGINAL_SSLCONTEXT.__dict__["hostname_checks_common_name"].fset(self, value)
        if value:
            _ignored(
                "hostname_checks_common_name = True",
                "unitls engines match names against the subjectAltName only (RFC 6125)",
            )

    @property
    def _msg_callback(self) -> Any:
        return _MSG_CALLBACK.fget(self)  # type: ignore[misc]

    @_msg_callback.setter
    def _msg_callback(self, callback: Any) -> None:
        _MSG_CALLBACK.fset(self, callback)  # type: ignore[misc]
        if self._unitls_native:
            self._changed()  # a client then gets engine contexts of its own (see _build)
        elif callback is not None:
            _ignored(
                "_msg_callback",
                f"the {self._unitls_impl.name} engine does not report TLS messages",
            )

    # sni_callback and set_servername_callback are the stdlib's: the callable is kept on this
    # (C) context, which validates it and clears reference cycles through it. Connections call
    # it with this context (see _sync_native and SNIWait in _sslobj.py).

    def session_stats(self) -> dict[str, int]:
        stats: dict[str, int] = super().session_stats()
        for plan in list(self._unitls_cache.values()):
            for inner in plan.native if plan.native and plan.private else ():
                for key, value in _C.session_stats(inner).items():
                    stats[key] = stats.get(key, 0) + value
        return stats

    # -- settings -> PEP 748 -----------------------------------------------------------------

    def _versions(self) -> tuple[TLSVersion | None, TLSVersion | None]:
        low_ssl = self.minimum_version
        high_ssl = self.maximum_version
        if low_ssl == ssl.TLSVersion.MINIMUM_SUPPORTED:
            low = None
        elif low_ssl in _VERSIONS:
            low = _VERSIONS[low_ssl]
        elif low_ssl == ssl.TLSVersion.MAXIMUM_SUPPORTED:
            low = TLSVersion.TLSv1_3
        else:
            raise UnsupportedSettingError(
                f"minimum_version = {low_ssl!s} allows TLS below 1.2, which unitls engines never "
                "negotiate: set minimum_version = ssl.TLSVersion.TLSv1_2 (or leave the default)"
            )
        if high_ssl == ssl.TLSVersion.MAXIMUM_SUPPORTED:
            high = None
        elif high_ssl in _VERSIONS:
            high = _VERSIONS[high_ssl]
        else:
            raise UnsupportedSettingError(
                f"maximum_version = {high_ssl!s} is below TLS 1.2, which unitls engines never "
                "negotiate: set maximum_version to TLSv1_2, TLSv1_3 or MAXIMUM_SUPPORTED"
            )
        if self.protocol == getattr(ssl, "PROTOCOL_TLSv1_2", None):
            low = high = TLSVersion.TLSv1_2
        options = self.options
        if options & ssl.OP_NO_TLSv1_3:
            high = TLSVersion.TLSv1_2
        if options & ssl.OP_NO_TLSv1_2 and low in (None, TLSVersion.TLSv1_2):
            low = TLSVersion.TLSv1_3
        if low == TLSVersion.TLSv1_3 and high == TLSVersion.TLSv1_2:
            raise UnsupportedSettingError(
                "minimum_version, maximum_version and options (OP_NO_TLSv1_2/OP_NO_TLSv1_3) "
                "leave no TLS version unitls engines can use (TLS 1.2 or 1.3)"
            )
        return low, high

    def _trust_store(self, server: bool) -> TrustStore | None:
        custom = b"".join(_der_to_pem(d) for d in self._unitls_ca)
        if custom and self._unitls_system_ca:
            return TrustStore.from_buffer(custom + _system_bundle())
        if custom:
            return TrustStore.from_buffer(custom)
        if self._unitls_system_ca:
            return TrustStore.system() if server else None
        return _unusable_trust_store()

    def _complete(self, chain: SigningChain) -> SigningChain:
        """``chain`` with the issuers OpenSSL would add from this context's CA certificates when
        the certificate file holds the leaf alone (it sends the chain up to the root)."""
        if chain.chain or not self._unitls_ca:
            return chain
        leaf = chain.leaf[0]
        assert leaf.buffer is not None
        path = verified_chain(
            [ssl.PEM_cert_to_DER_cert(leaf.buffer.decode())], list(self._unitls_ca)
        )
        if len(path) == 1:
            return chain
        return SigningChain(chain.leaf, [Certificate.from_buffer(_der_to_pem(d)) for d in path[1:]])

    def _unitls_anchors(self) -> list[bytes]:
        """DER of every trust anchor (for get_verified_chain on engines without a native one)."""
        anchors = list(self._unitls_ca)
        if self._unitls_system_ca:
            anchors += _pem_certs(_system_bundle())
        return anchors

    def _unitls_context(self, server_side: bool) -> _Plan:
        """The plan for the current settings (cached)."""
        key = (
            server_side,
            _c_get(self, "verify_mode"),
            self.check_hostname,
            _c_get(self, "minimum_version"),
            _c_get(self, "maximum_version"),
            _c_get(self, "options") & _MAPPED_OPTIONS,
            _c_get(self, "num_tickets") if server_side else 0,
            self.post_handshake_auth,
            _c_get(self, "verify_flags") & _CRL_FLAGS,
            self._unitls_generation,
        )
        cache = self._unitls_cache
        found = cache.get(key)
        if found is None:
            with self._unitls_lock:  # one build per settings, even with many threads
                found = cache.get(key)
                if found is None:
                    found = self._build(server_side)
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[key] = found
        return found

    def _build(self, server_side: bool) -> _Plan:
        protocol = self.protocol
        if server_side and protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError("Cannot create a server socket with a PROTOCOL_TLS_CLIENT context")
        if not server_side and protocol == ssl.PROTOCOL_TLS_SERVER:
            raise ValueError("Cannot create a client socket with a PROTOCOL_TLS_SERVER context")
        verify_mode = self.verify_mode
        if verify_mode == ssl.CERT_OPTIONAL:
            raise UnsupportedSettingError(
                "verify_mode = CERT_OPTIONAL has no PEP 748 equivalent: use CERT_REQUIRED "
                "(verify the peer) or, for testing only, CERT_NONE"
            )
        if _c_get(self, "verify_flags") & _CRL_FLAGS:
            raise UnsupportedSettingError(
                "verify_flags with VERIFY_CRL_CHECK_LEAF/CHAIN: CRL checking is not supported "
                "by the unitls bridge"
            )
        low, high = self._versions()
        common: dict[str, Any] = {
            "ciphers": self._unitls_ciphers,
            "inner_protocols": [NextProtocol(p) if _is_known(p) else p for p in self._unitls_alpn],
            "lowest_supported_version": low,
            "highest_supported_version": high,
        }
        impl = self._unitls_impl
        verify = verify_mode == ssl.CERT_REQUIRED
        try:
            if server_side:
                if self.post_handshake_auth:
                    raise UnsupportedSettingError(
                        "post_handshake_auth = True on a server context: post-handshake client "
                        "authentication is not supported by PEP 748 engines"
                    )
                if not self._unitls_chains:
                    return _Plan(None, verify, pep=_NoCertificate())
                server_config = TLSServerConfiguration(
                    certificate_chain=[self._complete(c) for c in self._unitls_chains.values()],
                    trust_store=self._trust_store(True) if verify else None,
                    **common,
                )
                # OP_NO_TICKET: no session tickets. num_tickets (TLS 1.3 tickets per
                # handshake) is OpenSSL's; elsewhere 0 turns tickets off altogether.
                tickets = not self.options & ssl.OP_NO_TICKET
                if self._unitls_native:
                    native = self._native_server(server_config, tickets)
                    return _Plan(server_config, verify, native=native)
                options = self._engine_options()
                if not (tickets and self.num_tickets != 0):
                    options["session_tickets"] = False
                server = impl.server_context(server_config, **options)
                return _Plan(server_config, verify, pep=server)
            client_config = TLSClientConfiguration(
                certificate_chain=self._complete(chain) if (chain := self._unitls_chain) else None,
                trust_store=self._trust_store(False) if verify else None,
                **common,
            )
            secure = verify and self.check_hostname
            if not secure:
                what = "check_hostname = False" if verify else "verify_mode = CERT_NONE"
                from ..insecure import warn

                warn(
                    f"ssl.SSLContext bridge with {what}: the server is not authenticated "
                    "(acceptable for testing only)",
                    stacklevel=7,
                )
            if self._unitls_native:
                # Clients share the engine's contexts (loading the system CAs costs tens of
                # milliseconds per context) unless a hook would then leak to other contexts.
                private = self._unitls_ecdh_curve is not None or self._has_hooks()
                native = self._native_client(client_config, verify, self.check_hostname, private)
                return _Plan(client_config, verify, native=native, private=private)
            if secure:
                client = impl.client_context(client_config, **self._engine_options())
                return _Plan(client_config, True, pep=client)
            return _Plan(client_config, verify, pep=self._insecure_client(client_config, verify))
        except UnsupportedSettingError:
            raise
        except ConfigurationError as exc:
            raise UnsupportedSettingError(
                f"the {impl.name} engine cannot honour this SSLContext's settings: {exc}"
            ) from exc

    def _engine_options(self) -> dict[str, Any]:
        """Keywords for the engine's contexts, only those needed (third-party engines may take
        none): ``keylog_filename`` when set (else they follow ``SSLKEYLOGFILE`` by themselves,
        as the engines do), ``groups`` after ``set_ecdh_curve``."""
        options: dict[str, Any] = {}
        path = _c_descriptor("keylog_filename").__get__(self)
        if path is not None:
            options["keylog_filename"] = os.fsdecode(path)
        if self._unitls_ecdh_curve is not None:
            options["groups"] = (_ecdh_group(self._unitls_ecdh_curve),)
        return options

    def _insecure_client(self, config: TLSClientConfiguration, verify: bool) -> _QuietInsecure:
        from ..insecure import InsecureConfiguration, _already_warned

        impl = _insecure_impl(self._unitls_impl.name)
        token = _already_warned.set(True)  # _build warned for this context
        try:
            insecure = InsecureConfiguration(
                disable_verification=not verify, disable_hostname_check=True
            )
            ctx: ClientContext = impl.client_context(config, insecure, **self._engine_options())
        finally:
            _already_warned.reset(token)
        return _QuietInsecure(ctx)

    # -- the OpenSSL engine's native path ---------------------------------------------------------

    def _native_client(
        self, config: TLSClientConfiguration, verify: bool, check_hostname: bool, private: bool
    ) -> list[ssl.SSLContext]:
        from .. import openssl

        openssl.validate_config(config)
        # sessions=False: bridge sockets keep stdlib sessions only; no engine callback may run
        # inside their SSL_read (see _openssl_ffi.install_client_sessions).
        if not private:
            return [openssl._shared_client_context(config, verify, check_hostname, sessions=False)]
        inner = openssl._client_context(config, verify, check_hostname, sessions=False)
        self._native_extras(inner)
        return [inner]

    def _has_hooks(self) -> bool:
        return (
            _c_descriptor("keylog_filename").__get__(self) is not None
            or _c_descriptor("_msg_callback").__get__(self) is not None
        )

    def _native_server(self, config: TLSServerConfiguration, tickets: bool) -> list[ssl.SSLContext]:
        from .. import openssl

        openssl.validate_config(config)
        contexts = openssl._server_contexts(config, tickets)
        for inner in contexts:
            self._native_extras(inner)
            if tickets:
                inner.num_tickets = self.num_tickets  # TLS 1.3 tickets; TLS 1.2 has its own
        return contexts

    def _native_extras(self, inner: ssl.SSLContext) -> None:
        """Settings only the OpenSSL engine takes, on this context's own engine contexts."""
        if self._unitls_ecdh_curve is not None:
            inner.set_ecdh_curve(self._unitls_ecdh_curve)

    def _sync_native(self, plan: _Plan, server_side: bool) -> None:
        """Carry the hooks that may change at any time onto the engine's contexts (cheap when
        nothing changed): the key log, ``_msg_callback``, and on servers ``sni_callback``."""
        assert plan.native is not None
        if not plan.private:
            return  # no hooks (setting one makes the next plan private)
        keylog = _c_descriptor("keylog_filename")
        msg = _c_descriptor("_msg_callback")
        sni = _c_descriptor("sni_callback")
        wanted_log = keylog.__get__(self)
        wanted_msg = msg.__get__(self)
        wanted_sni = plan.engine_sni
        if server_side and sni.__get__(self) is not None:
            if plan.sni_shim is None:
                plan.sni_shim = _native_sni_shim(self, plan.engine_sni)
            wanted_sni = plan.sni_shim
        for inner in plan.native:
            if keylog.__get__(inner) != wanted_log:
                keylog.__set__(inner, wanted_log)
            if msg.__get__(inner) is not wanted_msg:
                msg.__set__(inner, wanted_msg)
            if server_side and sni.__get__(inner) is not wanted_sni:
                sni.__set__(inner, wanted_sni)

    def _native_for(self, server_side: bool) -> ssl.SSLContext | None:
        """The engine context a native connection switches to when its context becomes this one
        (``sslsock.context = ctx`` in an SNI callback); None if this is not the OpenSSL engine."""
        plan = self._unitls_context(server_side)
        if plan.native is None:
            return None
        self._sync_native(plan, server_side)
        return plan.native[0]

    # -- the factories ssl.SSLSocket and ssl.SSLObject call ----------------------------------

    def _wrap_socket(
        self,
        sock: ssl.SSLSocket,
        server_side: bool,
        server_hostname: str | None = None,
        *,
        owner: Any = None,
        session: Any = None,
    ) -> SocketTLS | LockedTLS | NativeSocketTLS:
        plan = self._unitls_context(server_side)
        _check_hostname(self, server_side, server_hostname)
        if plan.native is not None:
            self._sync_native(plan, server_side)
            check_session_owner(self, session)
            return LockedTLS.wrap(
                self,
                plan.native[0],
                sock,
                server_side,
                server_hostname,
                owner=owner,
                session=session,
            )
        offered = check_offered_session(self, session, server_side)
        # Engines with native I/O (rustls): the extension's _sslobj, no Python per TLS record.
        obj = native_sslobj(
            sock, self, plan.pep, server_side, server_hostname, owner, plan.verified, offered
        )
        if obj is not None:
            return obj
        # Servers on engines with native I/O: Python reads the ClientHello, then the extension
        # takes over (NativeServerSocketTLS).
        shell = SocketTLS
        if server_side and isinstance(plan.pep, NativeServerSockets):
            shell = NativeServerSocketTLS
        tls = shell(sock, self, plan.pep, server_side, server_hostname, owner, plan.verified)
        tls._offered = offered
        return tls

    def _wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool,
        server_hostname: str | None = None,
        *,
        owner: Any = None,
        session: Any = None,
    ) -> BioTLS | NativeTLS:
        plan = self._unitls_context(server_side)
        _check_hostname(self, server_side, server_hostname)
        if plan.native is not None:
            self._sync_native(plan, server_side)
            check_session_owner(self, session)
            c_obj = _C._wrap_bio(  # type: ignore[attr-defined]
                plan.native[0],
                incoming,
                outgoing,
                server_side,
                server_hostname,
                owner=owner,
                session=session,
            )
            return NativeTLS(c_obj, self)
        offered = check_offered_session(self, session, server_side)
        bio = BioTLS(
            incoming, outgoing, self, plan.pep, server_side, server_hostname, owner, plan.verified
        )
        bio._offered = offered
        return bio


def _native_sni_shim(ctx: SSLContext, engine_sni: Any) -> Callable[[Any, str | None, Any], Any]:
    """The SNI callback of a bridge server's engine contexts: the engine's chain selection, then
    the user's ``sni_callback`` called with the bridge context, as the stdlib calls it."""
    ref = weakref.ref(ctx)  # no cycle through the engine contexts
    user_sni = _c_descriptor("sni_callback")

    def shim(sslobj: Any, server_name: str | None, inner: ssl.SSLContext) -> Any:
        if engine_sni is not None:
            engine_sni(sslobj, server_name, inner)
        bridge = ref()
        callback = user_sni.__get__(bridge) if bridge is not None else None
        if callback is None:
            return None
        try:
            return callback(sslobj, server_name, bridge)
        except Exception as exc:
            # What _ssl.c does, but naming the user's callback rather than this shim.
            report_unraisable(exc, callback)
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE

    return shim


class IgnoredSettingWarning(RuntimeWarning):
    """An ``ssl.SSLContext`` setting the bridge accepts but the PEP 748 engine does not use."""


# set_ecdh_curve's names (OpenSSL's short names, and the aliases OpenSSL takes) for the IANA
# names of the engines' ``groups`` option.
_ECDH_GROUPS = {
    "prime256v1": "secp256r1",
    "secp256r1": "secp256r1",
    "p-256": "secp256r1",
    "secp384r1": "secp384r1",
    "p-384": "secp384r1",
    "secp521r1": "secp521r1",
    "p-521": "secp521r1",
    "x25519": "x25519",
    "x448": "x448",
}


def _ecdh_group(name: str) -> str | None:
    return _ECDH_GROUPS.get(name.lower())


def _ignored(setting: str, why: str) -> None:
    import warnings

    warnings.warn(
        f"{setting} has no effect on the unitls bridge: {why}", IgnoredSettingWarning, stacklevel=3
    )


def _is_known(proto: bytes) -> bool:
    return proto in {p.value for p in NextProtocol}


def _check_hostname(ctx: ssl.SSLContext, server_side: bool, server_hostname: str | None) -> None:
    """What ``_ssl.c`` checks when it wraps (ssl.py has already IDNA-encoded the name)."""
    if server_side:
        if server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        return
    if server_hostname is not None:
        if "\x00" in server_hostname:
            raise TypeError("argument must be encoded string without null bytes, not str")
        if not server_hostname or server_hostname.startswith("."):
            raise ValueError(
                "server_hostname cannot be an empty string or start with a leading dot."
            )
    elif ctx.check_hostname:
        raise ValueError("check_hostname requires server_hostname")
