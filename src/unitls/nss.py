"""The NSS engine: PEP 748 over Mozilla's NSS (3.87 or newer, with NSPR), through unitls' own
extension (``unitls._native``), which opens NSS at run time.

Importing this module fails with ``ImportError`` (and ``get_implementation("nss")`` with a
``ConfigurationError``) saying what to install when NSS is missing; the other engines do not
need it. Like rustls, this path imports neither ``ssl`` nor ``cryptography``, and its sockets
are the extension's native ones (``unitls._nativesock``): NSS's session runs on the same
``TlsSession`` trait.

What differs from the other engines, all decided in Rust (``rust/src/nss/``):
- NSS has no context object: a configuration becomes *model sockets* every connection copies;
  cipher suites are enabled one by one by IANA id, in the configured order. It has no CCM
  suites; a list of only CCM suites is a ``ConfigurationError``.
- Certificates, keys and trust anchors come from memory (no NSS database); the configured
  anchors are the only ones trusted, and verdicts (SAN-only names, whole-label wildcards) are
  those of the other engines, not NSS's own (which falls back to the subject CN).
- NSS 3.87 cannot use Ed25519/Ed448 keys: a ``ConfigurationError`` at configuration.
- Servers resume TLS 1.3 sessions only: NSS's TLS 1.2 session cache and ticket key are
  process-wide, so TLS 1.2 resumption would cross server contexts. Clients keep sessions in
  unitls' cache (keyed by name and port) through NSS's resumption tokens.
- Key logs hold TLS 1.3 secrets only (from ``SSL_SecretCallback``; NSS has no call for the
  exporter secret or a TLS 1.2 master secret).
"""

from __future__ import annotations

from . import _native
from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._engine import ClientContextBase, ServerContextBase, engine_implementation
from ._native_engine import NativeBuffer, NativeEngine, check_session
from ._nativesock import NativeClientSockets, NativeServerSockets
from ._protocols import TLSImplementation

__all__ = [
    "IMPLEMENTATION",
    "LIBRARY_VERSION",
    "NssBuffer",
    "NssClientContext",
    "NssServerContext",
]

_AVAILABLE, _STATUS = _native.nss_status()
if not _AVAILABLE:
    raise ImportError(_STATUS)

#: "NSS 3.87.1 (NSPR 4.35)": the library found at run time.
LIBRARY_VERSION: str = _STATUS

_ENGINE = NativeEngine(
    "nss",
    frozenset(_native.nss_supported_cipher_suites()),
    "NSS has no CCM suites",
    _native.NssClientConfig,
    _native.NssServerConfig,
)
# x25519, secp256r1, secp384r1, secp521r1 (NSS's default order).
_GROUPS = tuple(_native.nss_supported_groups())


def validate_config(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
    """Raise ConfigurationError if this engine cannot honour ``config``."""
    _ENGINE.validate(config)


class NssBuffer(NativeBuffer):
    """A TLSBuffer over an NSS connection (client or server)."""

    __slots__ = ()


class NssClientContext(NativeClientSockets, ClientContextBase[_native.NssClientConfig]):
    """A client context: ``connect`` for sockets, ``create_buffer`` for in-memory use.

    Connections from one context resume earlier sessions (TLS 1.3 tickets, TLS 1.2 tickets or
    ids) from a cache keyed by server name and port unless ``resumption=False``: NSS hands each
    session over as a resumption token, kept in unitls' cache, not NSS's process-wide one.
    Key logging (``keylog_filename``/``SSLKEYLOGFILE``) covers TLS 1.3 only, without
    ``EXPORTER_SECRET``: with TLS 1.2 allowed it is a ``ConfigurationError``.
    """

    __slots__ = ()
    engine_name = "nss"
    supported_groups = _GROUPS
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSClientConfiguration) -> _native.NssClientConfig:
        verify, check_hostname = self._verification()
        return _ENGINE.client_config(
            configuration, verify, check_hostname, self._resumption, self._keylog, self._groups
        )

    def _new_buffer(self, server_hostname: str, port: int | None, session: object) -> NssBuffer:
        conn = self._native.new_connection(server_hostname, port, check_session(session))
        return NssBuffer(self, conn, server_hostname)

    def clear_session_cache(self) -> None:
        """Forget every cached session: the next connections make full handshakes."""
        self._native.clear_session_cache()


class NssServerContext(NativeServerSockets, ServerContextBase[_native.NssServerConfig]):
    """A server context: ``connect`` binds and listens, ``create_buffer`` for in-memory use.

    TLS 1.3 clients may resume (TLS 1.2 ones cannot: NSS's session cache is process-wide).
    NSS encrypts every ticket under one process-wide key that never changes (NSS 3.87 has no
    per-context or rotating ticket keys); a ticket carries a token naming this context and a
    6-hour period, and is accepted in that period and the next, by this context only.
    ``session_tickets=False`` makes every handshake a full one. Key logging as for clients.
    """

    __slots__ = ()
    engine_name = "nss"
    supported_groups = _GROUPS
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSServerConfiguration) -> _native.NssServerConfig:
        return _ENGINE.server_config(
            configuration, self._session_tickets, self._keylog, self._groups
        )

    def _new_buffer(self, local_address: str | None) -> NssBuffer:
        return NssBuffer(self, self._native.new_connection(local_address))


IMPLEMENTATION: TLSImplementation[NssClientContext, NssServerContext] = engine_implementation(
    NssClientContext, NssServerContext
)
