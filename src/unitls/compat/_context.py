"""``unitls.compat.SSLContext``: a real ``ssl.SSLContext`` whose connections run on a PEP 748 engine.

The object is an ordinary OpenSSL context as far as its settings go (so every setter, getter and
``load_*`` call behaves and validates exactly like the stdlib's); the bridge only overrides the two
private factories ``_wrap_socket``/``_wrap_bio``. At wrap time the current settings are turned into
an immutable PEP configuration, and the PEP context made from it is cached under those settings:
urllib3 and httpcore mutate contexts between connections, yet equal settings reuse one context.
"""

from __future__ import annotations

import _ssl
import base64
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._config import TLSClientConfiguration, TLSServerConfiguration
from .._enums import TLS13_SUITES, CipherSuite, NextProtocol, TLSVersion
from .._errors import ConfigurationError
from .._objects import Certificate, PrivateKey, SigningChain, TrustStore
from .._protocols import ClientContext, ServerContext, TLSImplementation
from .._registry import get_implementation
from ._nativeobj import NativeSocketTLS, native_sslobj
from ._sslobj import BioTLS, SocketTLS

__all__ = [
    "ORIGINAL_SSLCONTEXT",
    "IgnoredSettingWarning",
    "SSLContext",
    "UnsupportedSettingError",
    "safe_property",
]


def _find_original() -> type[ssl.SSLContext]:
    # ssl.SSLContext may already be rebound (by us or another injector): find the stdlib's.
    for cls in ssl.SSLContext.__mro__:
        if cls.__module__ == "ssl" and cls.__name__ == "SSLContext":
            return cls
    raise ImportError("cannot find the ssl module's own SSLContext class")


#: The stdlib's class. ssl.py's setters look up the module global ``SSLContext``; the bridge (and
#: injection) must never depend on it (see ``safe_property``).
ORIGINAL_SSLCONTEXT: type[ssl.SSLContext] = _find_original()
_C = _ssl._SSLContext


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


def safe_property(name: str) -> property:
    """ssl.py's property ``name`` with a setter that goes straight to ``_ssl._SSLContext``.

    ssl.py's setters call ``super(SSLContext, SSLContext)``, looking up the *module global*: once
    injection rebinds it to a subclass, they find themselves again and recurse forever.
    """
    original = ORIGINAL_SSLCONTEXT.__dict__[name]
    assert isinstance(original, property)
    c_descriptor = _C.__dict__[name]

    def fset(self: ssl.SSLContext, value: Any) -> None:
        if name == "minimum_version" and value == ssl.TLSVersion.SSLv3:
            self.options &= ~ssl.Options.OP_NO_SSLv3
        c_descriptor.__set__(self, value)

    return property(original.fget, fset, None, original.__doc__)


SAFE_PROPERTIES = ("verify_mode", "minimum_version", "maximum_version", "options", "verify_flags")

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)
_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----(.+?)-----END \1-----", re.DOTALL
)


def _der_to_pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def _pem_certs(data: bytes) -> list[bytes]:
    """DER of every ``CERTIFICATE`` block (skipping comments and other blocks, as OpenSSL does)."""
    return [base64.b64decode(b"".join(m.group(1).split())) for m in _PEM_CERT.finditer(data)]


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


def _read(path: Any, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UnsupportedSettingError(f"cannot read {what} {path!r}: {exc.strerror}") from exc


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
                ders += _pem_certs(_read(paths.cafile, "system CA file"))
            elif paths.capath and os.path.isdir(paths.capath):
                for entry in sorted(os.scandir(paths.capath), key=lambda e: e.name):
                    if entry.is_file():
                        try:
                            ders += _pem_certs(_read(entry.path, "system CA"))
                        except UnsupportedSettingError:
                            continue
            _system_pem = b"".join(_der_to_pem(d) for d in dict.fromkeys(ders))
        return _system_pem


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
_CACHE_LIMIT = 64

_insecure_lock = threading.Lock()
_insecure_impls: dict[str, TLSImplementation[Any, Any]] = {}


def _insecure_impl(name: str) -> TLSImplementation[Any, Any]:
    from ..insecure import get_insecure_implementation

    with _insecure_lock:
        impl = _insecure_impls.get(name)
        if impl is None:
            impl = _insecure_impls[name] = get_insecure_implementation(name)
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


if TYPE_CHECKING:
    _Base = ssl.SSLContext
else:
    _Base = ORIGINAL_SSLCONTEXT


def _c_get(ctx: ssl.SSLContext, name: str) -> int:
    """A setting straight from ``_ssl._SSLContext`` (a plain int, no ssl.py wrapper)."""
    return int(_C.__dict__[name].__get__(ctx))


class SSLContext(_Base):
    """An ``ssl.SSLContext`` whose sockets and objects run their TLS on a PEP 748 engine.

    ``wrap_socket``/``wrap_bio`` return genuine ``ssl.SSLSocket``/``ssl.SSLObject`` objects, so
    every library that takes an ``ssl.SSLContext`` works unchanged. ``implementation``: an engine
    name, a ``unitls.TLSImplementation``, or None for ``unitls.get_implementation()``.

    Settings without a PEP 748 equivalent are refused with ``UnsupportedSettingError`` when the
    context is used (or set, for ``sni_callback``): ``CERT_OPTIONAL``, TLS below 1.2, server-side
    post-handshake authentication, CRL checking, encrypted private keys.
    """

    # The engine used when none is given (injection sets this on a subclass).
    _unitls_default: str | TLSImplementation[Any, Any] | None = None

    verify_mode = safe_property("verify_mode")
    minimum_version = safe_property("minimum_version")
    maximum_version = safe_property("maximum_version")
    options = safe_property("options")
    verify_flags = safe_property("verify_flags")

    _unitls_impl: TLSImplementation[Any, Any]
    _unitls_ca: dict[bytes, None]
    _unitls_system_ca: bool
    _unitls_chain: SigningChain | None
    _unitls_alpn: tuple[bytes, ...]
    _unitls_ciphers: tuple[int, ...] | None
    _unitls_generation: int
    _unitls_cache: dict[tuple[Any, ...], tuple[ClientContext | ServerContext, bool]]

    def __new__(
        cls,
        protocol: int | None = ssl.PROTOCOL_TLS_CLIENT,
        *args: Any,
        implementation: str | TLSImplementation[Any, Any] | None = None,
        **kwargs: Any,
    ) -> SSLContext:
        if protocol in _OLD_PROTOCOLS:
            raise UnsupportedSettingError(
                f"ssl.{_OLD_PROTOCOLS[protocol]} is TLS below 1.2, which unitls engines never "
                "negotiate: use ssl.PROTOCOL_TLS_CLIENT or ssl.PROTOCOL_TLS_SERVER"
            )
        self: SSLContext = super().__new__(cls, protocol)
        state = self.__dict__
        state["_unitls_impl"] = _resolve(
            implementation if implementation is not None else cls._unitls_default
        )
        state["_unitls_ca"] = {}
        state["_unitls_system_ca"] = False
        state["_unitls_chain"] = None
        state["_unitls_alpn"] = ()
        state["_unitls_ciphers"] = None
        state["_unitls_generation"] = 0
        state["_unitls_cache"] = {}
        return self

    def __init__(
        self,
        protocol: int | None = ssl.PROTOCOL_TLS_CLIENT,
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
            ders += _pem_certs(_read(cafile, "cafile"))
        if capath is not None:
            for entry in sorted(os.scandir(capath), key=lambda e: e.name):
                if entry.is_file():
                    ders += _pem_certs(_read(entry.path, "CA file"))
        if isinstance(cadata, str):
            ders += _pem_certs(cadata.encode("ascii"))
        elif cadata is not None:
            ders += _der_certs(bytes(memoryview(cadata)))
        for der in ders:
            self._unitls_ca[der] = None
        self._changed()

    def set_default_verify_paths(self) -> None:
        super().set_default_verify_paths()
        self._unitls_system_ca = True
        self._changed()

    def load_cert_chain(
        self,
        certfile: Any,
        keyfile: Any = None,
        password: str | bytes | bytearray | Callable[[], str | bytes | bytearray] | None = None,
    ) -> None:
        cert_data = _read(certfile, "certfile")
        key_data = _read(keyfile, "keyfile") if keyfile is not None else cert_data
        match = _PEM_KEY.search(key_data)
        where = keyfile if keyfile is not None else certfile
        if match is None:
            raise UnsupportedSettingError(
                f"load_cert_chain: no PEM private key found in {where!r} (the bridge reads PEM "
                "keys: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
            )
        if match.group(1).startswith(b"ENCRYPTED") or b"ENCRYPTED" in match.group(2)[:200]:
            # Checked before OpenSSL sees the file: it would prompt on the terminal.
            raise UnsupportedSettingError(
                f"load_cert_chain: the private key in {where!r} is encrypted; the unitls bridge "
                "cannot take a password (PEP 748 keys are unencrypted): decrypt the key, keep it "
                "readable only by this user, and load it without a password"
            )
        ders = _pem_certs(cert_data)
        if not ders:
            raise UnsupportedSettingError(f"load_cert_chain: no PEM certificate in {certfile!r}")
        super().load_cert_chain(certfile, keyfile, password)  # OpenSSL checks the key matches
        self._unitls_chain = SigningChain(
            (Certificate.from_buffer(_der_to_pem(ders[0])), PrivateKey.from_buffer(match.group(0))),
            [Certificate.from_buffer(_der_to_pem(d)) for d in ders[1:]],
        )
        self._changed()

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

    # Settings the engines decide for themselves: kept on the OpenSSL object (so getters answer
    # as usual) but announced, never silently dropped.

    def set_ecdh_curve(self, name: str, /) -> None:
        super().set_ecdh_curve(name)
        _ignored(f"set_ecdh_curve({name!r})", "the engine chooses the key exchange group")

    def load_dh_params(self, path: Any, /) -> None:
        super().load_dh_params(path)
        _ignored("load_dh_params()", "unitls engines never negotiate finite-field DHE suites")

    @property
    def keylog_filename(self) -> Any:
        return _C.__dict__["keylog_filename"].__get__(self)

    @keylog_filename.setter
    def keylog_filename(self, value: Any) -> None:
        _C.__dict__["keylog_filename"].__set__(self, value)
        if value is not None:
            _ignored(f"keylog_filename = {value!r}", "no TLS key log is written")

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
    def sni_callback(self) -> None:
        return None

    @sni_callback.setter
    def sni_callback(self, value: object) -> None:
        if value is not None:
            raise UnsupportedSettingError(
                "sni_callback / set_servername_callback is not supported by the unitls bridge "
                "(PEP 748 servers pick their certificate by SNI themselves): build a "
                "unitls.TLSServerConfiguration with one SigningChain per name instead"
            )

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
        side = "client certificates" if server else "the server's certificate"
        raise UnsupportedSettingError(
            f"verify_mode = CERT_REQUIRED but no CA certificates are loaded to verify {side}: "
            "call load_default_certs() (the system's) or load_verify_locations()"
        )

    def _unitls_context(self, server_side: bool) -> tuple[ClientContext | ServerContext, bool]:
        """The PEP context for the current settings (cached) and whether peers are verified."""
        key = (
            server_side,
            _c_get(self, "verify_mode"),
            self.check_hostname,
            _c_get(self, "minimum_version"),
            _c_get(self, "maximum_version"),
            _c_get(self, "options") & (ssl.OP_NO_TLSv1_2 | ssl.OP_NO_TLSv1_3),
            self.post_handshake_auth,
            _c_get(self, "verify_flags") & _CRL_FLAGS,
            self._unitls_generation,
        )
        cache = self._unitls_cache
        found = cache.get(key)
        if found is None:
            found = self._build(server_side)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = found
        return found

    def _build(self, server_side: bool) -> tuple[ClientContext | ServerContext, bool]:
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
        try:
            if server_side:
                if self.post_handshake_auth:
                    raise UnsupportedSettingError(
                        "post_handshake_auth = True on a server context: post-handshake client "
                        "authentication is not supported by PEP 748 engines"
                    )
                if self._unitls_chain is None:
                    raise UnsupportedSettingError(
                        "a server-side wrap needs a certificate: call load_cert_chain() first"
                    )
                verify = verify_mode == ssl.CERT_REQUIRED
                server_config = TLSServerConfiguration(
                    certificate_chain=[self._unitls_chain],
                    trust_store=self._trust_store(True) if verify else None,
                    **common,
                )
                return impl.server_context(server_config), verify
            verify = verify_mode == ssl.CERT_REQUIRED
            client_config = TLSClientConfiguration(
                certificate_chain=self._unitls_chain,
                trust_store=self._trust_store(False) if verify else None,
                **common,
            )
            if verify and self.check_hostname:
                return impl.client_context(client_config), True
            return self._insecure_client(client_config, verify), verify
        except UnsupportedSettingError:
            raise
        except ConfigurationError as exc:
            raise UnsupportedSettingError(
                f"the {impl.name} engine cannot honour this SSLContext's settings: {exc}"
            ) from exc

    def _insecure_client(self, config: TLSClientConfiguration, verify: bool) -> ClientContext:
        from ..insecure import InsecureConfiguration, warn

        what = "check_hostname = False" if verify else "verify_mode = CERT_NONE"
        warn(
            f"ssl.SSLContext bridge with {what}: the server is not authenticated "
            "(acceptable for testing only)",
            stacklevel=5,
        )
        impl = _insecure_impl(self._unitls_impl.name)
        insecure = InsecureConfiguration(
            disable_verification=not verify, disable_hostname_check=True
        )
        ctx: ClientContext = impl.client_context(config, insecure)
        return ctx

    # -- the factories ssl.SSLSocket and ssl.SSLObject call ----------------------------------

    def _wrap_socket(
        self,
        sock: ssl.SSLSocket,
        server_side: bool,
        server_hostname: str | None = None,
        *,
        owner: Any = None,
        session: Any = None,
    ) -> SocketTLS | NativeSocketTLS:
        pep, verified = self._unitls_context(server_side)
        _check_hostname(self, server_side, server_hostname, session)
        native = _native_context(pep)
        if native is not None:
            return _C._wrap_socket(  # type: ignore[attr-defined,no-any-return]
                native, sock, server_side, server_hostname, owner=owner, session=None
            )
        obj = native_sslobj(sock, self, pep, server_side, server_hostname, owner, verified)
        if obj is not None:
            return obj
        return SocketTLS(sock, self, pep, server_side, server_hostname, owner, verified)

    def _wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool,
        server_hostname: str | None = None,
        *,
        owner: Any = None,
        session: Any = None,
    ) -> BioTLS:
        pep, verified = self._unitls_context(server_side)
        _check_hostname(self, server_side, server_hostname, session)
        native = _native_context(pep)
        if native is not None:
            return _C._wrap_bio(  # type: ignore[attr-defined,no-any-return]
                native, incoming, outgoing, server_side, server_hostname, owner=owner, session=None
            )
        return BioTLS(incoming, outgoing, self, pep, server_side, server_hostname, owner, verified)


def _native_context(pep: ClientContext | ServerContext) -> ssl.SSLContext | None:
    """The OpenSSL engine's own ``ssl.SSLContext`` behind ``pep``, if it is that engine.

    The OpenSSL engine translates a PEP configuration into stdlib ``SSLContext`` objects (SNI
    selection included); handing their C ``_SSLSocket``/``_SSLObject`` to ssl.py is that engine's
    native path: the stdlib's own I/O loop, no Python code per read or write.
    """
    from .._extensions import SupportsStdlibContext

    if isinstance(pep, SupportsStdlibContext):
        native: ssl.SSLContext = pep.stdlib_context()
        return native
    return None


class IgnoredSettingWarning(RuntimeWarning):
    """An ``ssl.SSLContext`` setting the bridge accepts but the PEP 748 engine does not use."""


def _ignored(setting: str, why: str) -> None:
    import warnings

    warnings.warn(
        f"{setting} has no effect on the unitls bridge: {why}", IgnoredSettingWarning, stacklevel=3
    )


def _is_known(proto: bytes) -> bool:
    return proto in {p.value for p in NextProtocol}


def _check_hostname(
    ctx: ssl.SSLContext, server_side: bool, server_hostname: str | None, session: Any
) -> None:
    if server_side:
        if server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
    elif ctx.check_hostname and not server_hostname:
        raise ValueError("check_hostname requires server_hostname")
    if session is not None:
        raise ValueError("the unitls bridge does not resume ssl.SSLSession sessions")
