"""The rustls engine: PEP 748 over rustls, through unitls' own PyO3 extension (``unitls._native``).

No OpenSSL anywhere on this path: this module imports neither ``ssl`` nor ``cryptography``.
Certificates and keys are parsed, chains verified and SNI resolved in Rust. A configuration is
translated once per context into a rustls ``ClientConfig``/``ServerConfig``; per connection only
the rustls connection object exists. Sockets (``connect``, accepted connections, ``upgrade``) are
``unitls._nativesock.NativeSocket``: the extension does the socket I/O itself, GIL released, no
Python per TLS record; ``unitls.upgrade_socket`` still runs the generic Python driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _native
from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._engine import (
    TLS12,
    TLS13,
    VERSION_ENUM,
    ClientContextBase,
    ServerContextBase,
    engine_implementation,
    read_source,
    reject_ids,
    split_ciphers,
    suite_name,
    versions,
)
from ._enums import CipherSuite, NextProtocol, TLSVersion, cipher_from_id, protocol_from_bytes
from ._errors import ConfigurationError
from ._nativesock import NativeClientSockets, NativeServerSockets
from ._objects import SigningChain, TrustStore
from ._protocols import TLSImplementation

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "IMPLEMENTATION",
    "LIBRARY_VERSION",
    "RustlsBuffer",
    "RustlsClientContext",
    "RustlsServerContext",
]

LIBRARY_VERSION: str = f"rustls {_native.RUSTLS_VERSION}"

_SUPPORTED = frozenset(_native.supported_cipher_suites())


def _alpn(config: TLSClientConfiguration | TLSServerConfiguration) -> list[bytes]:
    return [p.value if isinstance(p, NextProtocol) else p for p in config.inner_protocols]


def _cipher_ids(config: TLSClientConfiguration | TLSServerConfiguration) -> list[int] | None:
    """The suites to enable, or ConfigurationError when none of them can be used."""
    if config.ciphers is None:
        return None
    ids = [int(c) for c in config.ciphers]
    usable = [c for c in ids if c in _SUPPORTED]
    enabled = versions(config)
    tls13, tls12 = split_ciphers(usable)
    if not ((TLS13 in enabled and tls13) or (TLS12 in enabled and tls12)):
        names = ", ".join(suite_name(c) for c in ids)
        ccm = " (rustls has no CCM suites)" if any(c not in _SUPPORTED for c in ids) else ""
        raise ConfigurationError(
            f"none of the cipher suites ({names}) can be used by the rustls engine with the TLS "
            f"versions allowed{ccm}: add a GCM or ChaCha20-Poly1305 suite of an allowed version"
        )
    return usable


def _trust(store: TrustStore | None) -> tuple[list[bytes] | None, bool]:
    if store is None or store.is_system:
        return None, True
    return [read_source(store, "trust store")], False


def _chain_material(chain: SigningChain) -> tuple[list[bytes], bytes]:
    cert, key = chain.leaf
    certs = [read_source(cert, "certificate")]
    certs += [read_source(c, "chain certificate") for c in chain.chain]
    if key is not None:
        key_data = read_source(key, "private key")
    elif b"PRIVATE KEY-----" in certs[0]:
        key_data = certs[0]  # the PEP allows the key inside the certificate's buffer or file
    else:
        raise ConfigurationError(
            f"signing chain for {cert!r} has no private key: pass one in leaf=(cert, key)"
        )
    return certs, key_data


def validate_config(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
    """Raise ConfigurationError if this engine cannot honour ``config``."""
    if not isinstance(config, (TLSClientConfiguration, TLSServerConfiguration)):
        raise TypeError(f"expected a TLS configuration, not {type(config).__name__}")
    reject_ids(config, "rustls")
    _cipher_ids(config)
    if isinstance(config, TLSServerConfiguration) and config.trust_store is not None:
        if config.trust_store.is_system:
            raise ConfigurationError(
                "the rustls engine verifies client certificates against given CAs only: "
                "use TrustStore.from_buffer()/from_file() with the client CA, not system()"
            )


def _client_config(
    config: TLSClientConfiguration,
    verify: bool,
    check_hostname: bool,
    resumption: bool,
    keylog: str | None,
) -> _native.RustlsClientConfig:
    ca_certs, system = _trust(config.trust_store)
    chain_certs: list[bytes] | None = None
    key: bytes | None = None
    if config.certificate_chain is not None:
        chain_certs, key = _chain_material(config.certificate_chain)
    return _native.RustlsClientConfig(
        ca_certs=ca_certs if verify else None,
        system_roots=system and verify,
        client_chain=chain_certs,
        client_key=key,
        cipher_suites=_cipher_ids(config),
        versions=versions(config),
        alpn=_alpn(config),
        verify_certificates=verify,
        verify_hostname=check_hostname and verify,
        resumption=resumption,
        keylog_path=keylog,
    )


def _server_config(
    config: TLSServerConfiguration, session_tickets: bool, keylog: str | None
) -> _native.RustlsServerConfig:
    client_cas = None
    if config.trust_store is not None:
        client_cas = _trust(config.trust_store)[0]
    return _native.RustlsServerConfig(
        chains=[_chain_material(chain) for chain in config.certificate_chain],
        client_ca_certs=client_cas,
        require_client_cert=client_cas is not None,
        cipher_suites=_cipher_ids(config),
        versions=versions(config),
        alpn=_alpn(config),
        session_tickets=session_tickets,
        keylog_path=keylog,
    )


class RustlsBuffer:
    """A TLSBuffer over a rustls connection (client or server)."""

    __slots__ = ("_conn", "_context")

    #: process_incoming copies its argument at once (see ``unitls.extensions``).
    copies_incoming = True

    def __init__(
        self, context: RustlsClientContext | RustlsServerContext, conn: _native.Connection
    ) -> None:
        self._context = context
        self._conn = conn

    def native_connection(self) -> _native.Connection:
        """The extension's connection (``unitls.extensions.SupportsNativeIO``)."""
        return self._conn

    def read(self, amt: int, buffer: Buffer | None = None) -> bytes | int:
        if buffer is None:
            return self._conn.read(amt)
        return self._conn.read_into(buffer, amt)

    def write(self, buf: Buffer) -> int:
        return self._conn.write(buf)

    def do_handshake(self) -> None:
        self._conn.do_handshake()

    def shutdown(self) -> None:
        self._conn.shutdown()

    def process_incoming(self, data_from_network: bytes) -> None:
        self._conn.process_incoming(data_from_network)

    def incoming_bytes_buffered(self) -> int:
        return self._conn.incoming_bytes_buffered()

    def process_outgoing(self, amount_bytes_for_network: int) -> bytes:
        return self._conn.process_outgoing(amount_bytes_for_network)

    def outgoing_bytes_buffered(self) -> int:
        return self._conn.outgoing_bytes_buffered()

    def getpeercert(self) -> bytes | None:
        return self._conn.peer_certificate()

    def getpeercertchain(self) -> list[bytes]:
        """DER of every certificate the peer sent, leaf first (an extension to the PEP)."""
        return list(self._conn.peer_chain())

    def cipher(self) -> CipherSuite | int | None:
        suite = self._conn.cipher_suite()
        return None if suite is None else cipher_from_id(suite)

    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        proto = self._conn.alpn_protocol()
        return None if proto is None else protocol_from_bytes(proto)

    @property
    def negotiated_tls_version(self) -> TLSVersion | None:
        version = self._conn.protocol_version()
        return None if version is None else VERSION_ENUM.get(version)

    @property
    def context(self) -> RustlsClientContext | RustlsServerContext:
        return self._context

    @property
    def server_name(self) -> str | None:
        """Server side: the SNI name the client sent."""
        return self._conn.server_name()

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session."""
        return self._conn.session_resumed()

    @property
    def session(self) -> _native.ClientSession | None:
        """Client side: what the server sent for resuming (see ``unitls.extensions``)."""
        return self._conn.client_session()

    @property
    def negotiated_group(self) -> str | None:
        """The key exchange group's IANA name; None before the handshake."""
        return self._conn.negotiated_group()

    def __repr__(self) -> str:
        return f"<RustlsBuffer version={self.negotiated_tls_version}>"


class RustlsClientContext(NativeClientSockets, ClientContextBase[_native.RustlsClientConfig]):
    """A client context: ``connect`` for sockets, ``create_buffer`` for in-memory use.

    Connections from one context resume earlier sessions (TLS 1.3 tickets, TLS 1.2 tickets or
    ids) from a cache keyed by server name and port, unless ``resumption=False`` (rustls' own
    cache knows names only: each connection gets a store that knows its port, see
    ``rust/src/resumption.rs``).
    """

    __slots__ = ()
    engine_name = "rustls"
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSClientConfiguration) -> _native.RustlsClientConfig:
        verify, check_hostname = self._verification()
        return _client_config(configuration, verify, check_hostname, self._resumption, self._keylog)

    def _new_buffer(self, server_hostname: str, port: int | None, session: object) -> RustlsBuffer:
        if session is not None and not isinstance(session, _native.ClientSession):
            raise TypeError(
                f"session must come from a rustls buffer's .session, not {type(session).__name__}"
            )
        return RustlsBuffer(self, self._native.new_connection(server_hostname, port, session))

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
    validate = staticmethod(validate_config)

    def _compile(self, configuration: TLSServerConfiguration) -> _native.RustlsServerConfig:
        return _server_config(configuration, self._session_tickets, self._keylog)

    def _new_buffer(self, local_address: str | None) -> RustlsBuffer:
        return RustlsBuffer(self, self._native.new_connection(local_address))


IMPLEMENTATION: TLSImplementation[RustlsClientContext, RustlsServerContext] = engine_implementation(
    RustlsClientContext, RustlsServerContext
)
