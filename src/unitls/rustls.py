"""The rustls engine: PEP 748 over rustls, through unitls' own PyO3 extension (``unitls._native``).

No OpenSSL anywhere on this path: this module imports neither ``ssl`` nor ``cryptography``.
Certificates and keys are parsed, chains verified and SNI resolved in Rust. A configuration is
translated once per context into a rustls ``ClientConfig``/``ServerConfig``; per connection only
the rustls connection object exists. Sockets (``connect``, accepted connections, ``upgrade``) are
``unitls._nativesock.NativeSocket``: the extension does the socket I/O itself, GIL released, no
Python per TLS record; ``unitls.upgrade_socket`` still runs the generic Python driver. What this
module shares with the other Rust engine is in ``unitls._native_engine``.
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
    "RustlsBuffer",
    "RustlsClientContext",
    "RustlsServerContext",
]

LIBRARY_VERSION: str = f"rustls {_native.RUSTLS_VERSION}"

_ENGINE = NativeEngine(
    "rustls",
    frozenset(_native.supported_cipher_suites()),
    "rustls has no CCM suites",
    _native.RustlsClientConfig,
    _native.RustlsServerConfig,
)


def validate_config(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
    """Raise ConfigurationError if this engine cannot honour ``config``."""
    _ENGINE.validate(config)


def _client_config(
    config: TLSClientConfiguration,
    verify: bool,
    check_hostname: bool,
    resumption: bool,
    keylog: str | None = None,
    groups: tuple[int, ...] | None = None,
) -> _native.RustlsClientConfig:
    return _ENGINE.client_config(config, verify, check_hostname, resumption, keylog, groups)


def _server_config(
    config: TLSServerConfiguration,
    session_tickets: bool,
    keylog: str | None,
    groups: tuple[int, ...] | None = None,
) -> _native.RustlsServerConfig:
    return _ENGINE.server_config(config, session_tickets, keylog, groups)


# X25519MLKEM768 first (the default order), then x25519, secp256r1, secp384r1.
_GROUPS = tuple(_native.supported_groups())


class RustlsBuffer(NativeBuffer):
    """A TLSBuffer over a rustls connection (client or server)."""

    __slots__ = ()


class RustlsClientContext(NativeClientSockets, ClientContextBase[_native.RustlsClientConfig]):
    """A client context: ``connect`` for sockets, ``create_buffer`` for in-memory use.

    Connections from one context resume earlier sessions (TLS 1.3 tickets, TLS 1.2 tickets or
    ids) from a cache keyed by server name and port, unless ``resumption=False`` (rustls' own
    cache knows names only: each connection gets a store that knows its port, see
    ``rust/src/resumption.rs``).
    """

    __slots__ = ()
    engine_name = "rustls"
    supported_groups = _GROUPS
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSClientConfiguration) -> _native.RustlsClientConfig:
        verify, check_hostname = self._verification()
        return _client_config(
            configuration, verify, check_hostname, self._resumption, self._keylog, self._groups
        )

    def _new_buffer(self, server_hostname: str, port: int | None, session: object) -> RustlsBuffer:
        conn = self._native.new_connection(server_hostname, port, check_session(session))
        return RustlsBuffer(self, conn, server_hostname)

    def clear_session_cache(self) -> None:
        """Forget every cached session: the next connections make full handshakes."""
        self._native.clear_session_cache()


class RustlsServerContext(NativeServerSockets, ServerContextBase[_native.RustlsServerConfig]):
    """A server context: ``connect`` binds and listens, ``create_buffer`` for in-memory use.

    Tickets come from rustls' ``Ticketer``: a new ChaCha20-Poly1305 key every 6 hours, the
    previous one still accepted (tickets live 6 to 12 hours); TLS 1.2 clients without tickets
    resume from a cache of 256 sessions. ``session_tickets=False`` turns both off (every
    handshake is full).
    """

    __slots__ = ()
    engine_name = "rustls"
    supported_groups = _GROUPS
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSServerConfiguration) -> _native.RustlsServerConfig:
        return _server_config(configuration, self._session_tickets, self._keylog, self._groups)

    def _new_buffer(self, local_address: str | None) -> RustlsBuffer:
        return RustlsBuffer(self, self._native.new_connection(local_address))


IMPLEMENTATION: TLSImplementation[RustlsClientContext, RustlsServerContext] = engine_implementation(
    RustlsClientContext, RustlsServerContext
)
