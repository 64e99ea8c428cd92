"""The Python half shared by the engines in ``unitls._native`` (rustls, NSS).

Their configurations take the same constructor arguments and their connections are the same
``_native.Connection``, so turning a PEP configuration into those arguments and wrapping a
connection as a ``TLSBuffer`` is written once, here. An engine module (``unitls.rustls``,
``unitls.nss``) only names its native classes and the suites its library has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from . import _native
from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._engine import (
    TLS12,
    TLS13,
    VERSION_ENUM,
    group_name,
    read_source,
    reject_ids,
    sni_name,
    split_ciphers,
    suite_name,
    versions,
)
from ._enums import CipherSuite, NextProtocol, TLSVersion, cipher_from_id, protocol_from_bytes
from ._errors import ConfigurationError
from ._objects import SigningChain, TrustStore

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["NativeBuffer", "NativeEngine", "check_session"]


class NativeBuffer:
    """A ``TLSBuffer`` over a ``_native.Connection`` (client or server).

    The data path (``read``, ``write``, ``do_handshake``, ``shutdown``, ``process_incoming``,
    ``process_incoming_into``, ``process_outgoing`` and the two byte counts) is the connection's
    own methods, bound per buffer: no Python frame between the caller and the engine. The PEP's rules on those calls
    (EOF, data after EOF, close_notify during the handshake) live in ``rust/src/conn.rs``.
    """

    __slots__ = (
        "_conn",
        "_context",
        "_name",
        "do_handshake",
        "incoming_bytes_buffered",
        "outgoing_bytes_buffered",
        "process_incoming",
        "process_incoming_into",
        "process_outgoing",
        "read",
        "shutdown",
        "write",
    )

    #: process_incoming copies its argument at once (see ``unitls.extensions``).
    copies_incoming = True

    #: Up to ``amt`` bytes of plaintext, or into ``buffer`` (returning the count).
    read: Callable[..., bytes | int]
    #: Encrypt plaintext; takes all of it once the handshake is complete.
    write: Callable[[Buffer], int]
    #: Drive the handshake; WantReadError until it completes.
    do_handshake: Callable[[], None]
    #: Queue close_notify for the peer.
    shutdown: Callable[[], None]
    #: Ciphertext from the peer; empty means the transport's EOF (data after it: TLSError).
    process_incoming: Callable[[Buffer], None]
    #: process_incoming, then plaintext into a buffer, in one call (``SupportsIncomingInto``).
    process_incoming_into: Callable[[Buffer, Buffer], int]
    #: Ciphertext bytes received and not yet consumed.
    incoming_bytes_buffered: Callable[[], int]
    #: Up to ``amount_bytes_for_network`` bytes of ciphertext for the peer.
    process_outgoing: Callable[[int], bytes]
    #: Ciphertext bytes waiting to be sent.
    outgoing_bytes_buffered: Callable[[], int]

    def __init__(
        self, context: Any, conn: _native.Connection, server_hostname: str | None = None
    ) -> None:
        self._context = context
        self._conn = conn
        self._name = server_hostname  # clients: the name given to create_buffer
        self.read = conn.read
        self.write = conn.write
        self.do_handshake = conn.do_handshake
        self.shutdown = conn.shutdown
        self.process_incoming = conn.process_incoming
        self.process_incoming_into = conn.process_incoming_into
        self.incoming_bytes_buffered = conn.incoming_bytes_buffered
        self.process_outgoing = conn.process_outgoing
        self.outgoing_bytes_buffered = conn.outgoing_bytes_buffered

    def native_connection(self) -> _native.Connection:
        """The extension's connection (``unitls.extensions.SupportsNativeIO``)."""
        return self._conn

    # Like OpenSSL: the peer's certificates only once the handshake (and so their
    # verification) has completed.
    def getpeercert(self) -> bytes | None:
        conn = self._conn
        return conn.peer_certificate() if conn.handshake_complete() else None

    def getpeercertchain(self) -> list[bytes]:
        """DER of every certificate the peer sent, leaf first (an extension to the PEP)."""
        conn = self._conn
        return list(conn.peer_chain()) if conn.handshake_complete() else []

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
    def context(self) -> Any:
        return self._context

    @property
    def server_name(self) -> str | None:
        """Server side: the host name the client sent (SNI; None without); client side: the
        name used for SNI and verification."""
        name = self._name
        return sni_name(self._conn.server_name()) if name is None else name

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
        group = self._conn.negotiated_group_id()
        return None if group is None else group_name(group)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} version={self.negotiated_tls_version}>"


class _ClientConfig(Protocol):
    def new_connection(
        self,
        server_name: str,
        port: int | None = None,
        session: _native.ClientSession | None = None,
    ) -> _native.Connection: ...

    def clear_session_cache(self) -> None: ...


def check_session(session: object) -> _native.ClientSession | None:
    """A session offered to ``create_buffer``: one a buffer of these engines exported."""
    if session is not None and not isinstance(session, _native.ClientSession):
        raise TypeError(
            f"session must come from a client buffer's .session, not {type(session).__name__}"
        )
    return session


class _ServerConfig(Protocol):
    def new_connection(self, local_address: str | None = None) -> _native.Connection: ...


_C = TypeVar("_C", bound=_ClientConfig)
_S = TypeVar("_S", bound=_ServerConfig)


def _alpn(config: TLSClientConfiguration | TLSServerConfiguration) -> list[bytes]:
    return [p.value if isinstance(p, NextProtocol) else p for p in config.inner_protocols]


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


class NativeEngine(Generic[_C, _S]):
    """One engine of ``unitls._native``: its name, the suites its library has (``lacks`` says
    what it lacks, for messages) and its configuration classes."""

    def __init__(
        self,
        name: str,
        supported: frozenset[int],
        lacks: str,
        client_config: Callable[..., _C],
        server_config: Callable[..., _S],
    ) -> None:
        self.name = name
        self.supported = supported
        self.lacks = lacks
        self._client_config = client_config
        self._server_config = server_config

    def cipher_ids(
        self, config: TLSClientConfiguration | TLSServerConfiguration
    ) -> list[int] | None:
        """The suites to enable (those the library lacks dropped), or ConfigurationError when
        none of them can be used."""
        if config.ciphers is None:
            return None
        ids = [int(c) for c in config.ciphers]
        usable = [c for c in ids if c in self.supported]
        enabled = versions(config)
        tls13, tls12 = split_ciphers(usable)
        if not ((TLS13 in enabled and tls13) or (TLS12 in enabled and tls12)):
            names = ", ".join(suite_name(c) for c in ids)
            lacks = f" ({self.lacks})" if any(c not in self.supported for c in ids) else ""
            raise ConfigurationError(
                f"none of the cipher suites ({names}) can be used by the {self.name} engine with "
                f"the TLS versions allowed{lacks}: add a GCM or ChaCha20-Poly1305 suite of an "
                "allowed version"
            )
        return usable

    def validate(self, config: TLSClientConfiguration | TLSServerConfiguration) -> None:
        """Raise ConfigurationError if this engine cannot honour ``config``."""
        if not isinstance(config, (TLSClientConfiguration, TLSServerConfiguration)):
            raise TypeError(f"expected a TLS configuration, not {type(config).__name__}")
        reject_ids(config, self.name)
        self.cipher_ids(config)
        if isinstance(config, TLSServerConfiguration) and config.trust_store is not None:
            if config.trust_store.is_system:
                raise ConfigurationError(
                    f"the {self.name} engine verifies client certificates against given CAs "
                    "only: use TrustStore.from_buffer()/from_file() with the client CA, not "
                    "system()"
                )

    def client_config(
        self,
        config: TLSClientConfiguration,
        verify: bool,
        check_hostname: bool,
        resumption: bool,
        keylog: str | None = None,
        groups: tuple[int, ...] | None = None,
    ) -> _C:
        ca_certs, system = _trust(config.trust_store)
        chain_certs: list[bytes] | None = None
        key: bytes | None = None
        if config.certificate_chain is not None:
            chain_certs, key = _chain_material(config.certificate_chain)
        return self._client_config(
            ca_certs=ca_certs if verify else None,
            system_roots=system and verify,
            client_chain=chain_certs,
            client_key=key,
            cipher_suites=self.cipher_ids(config),
            versions=versions(config),
            alpn=_alpn(config),
            verify_certificates=verify,
            verify_hostname=check_hostname and verify,
            resumption=resumption,
            keylog_path=keylog,
            groups=groups,
        )

    def server_config(
        self,
        config: TLSServerConfiguration,
        session_tickets: bool,
        keylog: str | None = None,
        groups: tuple[int, ...] | None = None,
    ) -> _S:
        client_cas = None
        if config.trust_store is not None:
            client_cas = _trust(config.trust_store)[0]
        return self._server_config(
            chains=[_chain_material(chain) for chain in config.certificate_chain],
            client_ca_certs=client_cas,
            require_client_cert=client_cas is not None,
            cipher_suites=self.cipher_ids(config),
            versions=versions(config),
            alpn=_alpn(config),
            session_tickets=session_tickets,
            keylog_path=keylog,
            groups=groups,
        )
