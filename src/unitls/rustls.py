"""The rustls engine: PEP 748 over rustls, through unitls' own PyO3 extension (``unitls._rustls``).

No OpenSSL anywhere on this path: this module imports neither ``ssl`` nor ``cryptography``.
Certificates and keys are parsed, chains verified and SNI resolved in Rust. A configuration is
translated once per context into a rustls ``ClientConfig``/``ServerConfig``; per connection only
the rustls connection object exists. Sockets are the generic ``BufferSocket`` (the GIL is released
while rustls works and while the socket blocks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _rustls
from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._engine import (
    TLS12,
    TLS13,
    VERSION_ENUM,
    read_source,
    reject_ids,
    split_ciphers,
    suite_name,
    versions,
)
from ._enums import CipherSuite, NextProtocol, TLSVersion, cipher_from_id, protocol_from_bytes
from ._errors import ConfigurationError
from ._groups import group_name
from ._objects import SigningChain, TrustStore
from ._protocols import TLSImplementation
from ._socket import (
    DEFAULT_TIMEOUT,
    BufferListener,
    BufferSocket,
    StartTLSMixin,
    connect_with_buffer,
    listen_with_buffers,
)
from .insecure import (
    InsecureClientContextMixin,
    InsecureServerContextMixin,
    InsecureTLSImplementation,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "IMPLEMENTATION",
    "LIBRARY_VERSION",
    "RustlsBuffer",
    "RustlsClientContext",
    "RustlsServerContext",
    "insecure_implementation",
]

LIBRARY_VERSION: str = f"rustls {_rustls.RUSTLS_VERSION}"

_SUPPORTED = frozenset(_rustls.supported_cipher_suites())


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
        raise ConfigurationError(
            f"none of the cipher suites ({names}) can be used by the rustls engine with the TLS "
            "versions allowed (rustls has no CCM suites); add a GCM or ChaCha20-Poly1305 suite"
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
    verify: bool = True,
    check_hostname: bool = True,
    resumption: bool = True,
) -> _rustls.ClientConfig:
    ca_certs, system = _trust(config.trust_store)
    chain_certs: list[bytes] | None = None
    key: bytes | None = None
    if config.certificate_chain is not None:
        chain_certs, key = _chain_material(config.certificate_chain)
    return _rustls.ClientConfig(
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
    )


def _server_config(
    config: TLSServerConfiguration, session_tickets: bool = True
) -> _rustls.ServerConfig:
    client_cas = None
    if config.trust_store is not None:
        client_cas = _trust(config.trust_store)[0]
    return _rustls.ServerConfig(
        chains=[_chain_material(chain) for chain in config.certificate_chain],
        client_ca_certs=client_cas,
        require_client_cert=client_cas is not None,
        cipher_suites=_cipher_ids(config),
        versions=versions(config),
        alpn=_alpn(config),
        session_tickets=session_tickets,
    )


class RustlsBuffer:
    """A TLSBuffer over a rustls connection (client or server)."""

    __slots__ = ("_conn", "_context")

    def __init__(
        self, context: RustlsClientContext | RustlsServerContext, conn: _rustls.Connection
    ) -> None:
        self._context = context
        self._conn = conn

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
    def negotiated_group(self) -> str | None:
        """IANA name of the key exchange group used (``"X25519MLKEM768"``, ``"x25519"``...);
        None before the handshake completes and after a TLS 1.2 resumption (no key exchange)."""
        group = self._conn.negotiated_group()
        return None if group is None else group_name(group)

    @property
    def context(self) -> RustlsClientContext | RustlsServerContext:
        return self._context

    @property
    def server_name(self) -> str | None:
        """Server side: the SNI name the client sent."""
        return self._conn.server_name()

    def __repr__(self) -> str:
        return f"<RustlsBuffer version={self.negotiated_tls_version}>"


class RustlsClientContext(StartTLSMixin):
    """A client context: ``connect`` for sockets, ``create_buffer`` for in-memory use.

    Connections from one context resume earlier sessions (TLS 1.3 tickets, TLS 1.2 ids)
    unless ``resumption=False``.
    """

    __slots__ = ("_configuration", "_resumption", "_rustls_config")

    def __init__(self, configuration: TLSClientConfiguration, *, resumption: bool = True) -> None:
        if not isinstance(configuration, TLSClientConfiguration):
            raise TypeError(
                f"expected a TLSClientConfiguration, not {type(configuration).__name__}"
            )
        validate_config(configuration)
        self._configuration = configuration
        self._resumption = resumption
        self._rustls_config = self._build(configuration)

    def _build(self, configuration: TLSClientConfiguration) -> _rustls.ClientConfig:
        return _client_config(configuration, resumption=self._resumption)

    @property
    def configuration(self) -> TLSClientConfiguration:
        return self._configuration

    def connect(
        self, address: tuple[str | None, int], *, timeout: Any = DEFAULT_TIMEOUT
    ) -> BufferSocket:
        """Connect, handshake and verify the server against ``address``'s host.

        ``timeout`` (seconds, None: block) bounds the TCP connect and the handshake and stays
        the socket's timeout; by default ``socket.getdefaulttimeout()``, as for ``socket``.
        """
        return connect_with_buffer(self, address, timeout)

    def create_buffer(self, server_hostname: str) -> RustlsBuffer:
        if not isinstance(server_hostname, str) or not server_hostname:
            raise ValueError("create_buffer needs the server's host name (for SNI and checks)")
        return RustlsBuffer(self, self._rustls_config.new_connection(server_hostname))

    def __repr__(self) -> str:
        return f"<RustlsClientContext {self._configuration!r}>"


class RustlsServerContext(StartTLSMixin):
    """A server context: ``connect`` binds and listens, ``create_buffer`` for in-memory use.

    ``session_tickets=False`` stops issuing resumption tickets (every handshake is full).
    """

    __slots__ = ("_configuration", "_rustls_config")

    def __init__(
        self, configuration: TLSServerConfiguration, *, session_tickets: bool = True
    ) -> None:
        if not isinstance(configuration, TLSServerConfiguration):
            raise TypeError(
                f"expected a TLSServerConfiguration, not {type(configuration).__name__}"
            )
        validate_config(configuration)
        self._configuration = configuration
        self._rustls_config = _server_config(configuration, session_tickets)

    @property
    def configuration(self) -> TLSServerConfiguration:
        return self._configuration

    def connect(self, address: tuple[str | None, int]) -> BufferListener[BufferSocket]:
        """Bind and listen on ``address``; ``accept()`` returns handshaken connections."""
        return listen_with_buffers(self, address)

    def create_buffer(self) -> RustlsBuffer:
        return RustlsBuffer(self, self._rustls_config.new_connection())

    def create_buffer_for(self, local_address: str | None) -> RustlsBuffer:
        """A server buffer for a connection that reached ``local_address`` (an IP): clients
        that send no SNI get the first chain whose leaf names that address."""
        return RustlsBuffer(self, self._rustls_config.new_connection(local_address))

    def __repr__(self) -> str:
        return f"<RustlsServerContext {self._configuration!r}>"


IMPLEMENTATION: TLSImplementation[RustlsClientContext, RustlsServerContext] = TLSImplementation(
    client_context=RustlsClientContext,
    server_context=RustlsServerContext,
    validate_config=validate_config,
    name="rustls",
)


class InsecureRustlsClientContext(InsecureClientContextMixin, RustlsClientContext):
    """A client context that may skip certificate and/or hostname verification."""

    __slots__ = ("_insecure",)

    def _build(self, configuration: TLSClientConfiguration) -> _rustls.ClientConfig:
        return _client_config(
            configuration,
            not self._insecure.disable_verification,
            not self._insecure.disable_hostname_check,
            self._resumption,
        )


class InsecureRustlsServerContext(InsecureServerContextMixin, RustlsServerContext):
    """A server context made through the insecure module (see InsecureServerContextMixin)."""

    __slots__ = ("_insecure",)


def insecure_implementation() -> InsecureTLSImplementation[Any, Any]:
    """The insecure variant of this engine (warns; see ``unitls.insecure``)."""
    return InsecureTLSImplementation(
        client_context=InsecureRustlsClientContext,
        server_context=InsecureRustlsServerContext,
        validate_config=validate_config,
        name="rustls",
    )
