"""The PEP's protocol classes (contexts, socket, buffer) and ``TLSImplementation``."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._enums import CipherSuite, NextProtocol, TLSVersion

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "ClientContext",
    "ServerContext",
    "TLSBuffer",
    "TLSImplementation",
    "TLSSocket",
]


@runtime_checkable
class TLSSocket(Protocol):
    """A socket.socket-like object whose traffic is protected by TLS."""

    @abstractmethod
    def __init__(self, *args: object, **kwargs: object) -> None:
        """Not for users: contexts construct sockets in ``connect()``."""

    @abstractmethod
    def recv(self, bufsize: int) -> bytes:
        """Receive up to ``bufsize`` bytes of plaintext (``b''`` at a clean EOF)."""

    @abstractmethod
    def send(self, bytes: Buffer) -> int:
        """Send plaintext; returns how many bytes were taken."""

    @abstractmethod
    def close(self, force: bool = False) -> None:
        """Send close_notify and close (``force=False`` waits for the peer's close_notify)."""

    @abstractmethod
    def listen(self, backlog: int) -> None:
        """Enable a server socket to accept connections."""

    @abstractmethod
    def accept(self) -> tuple[TLSSocket, tuple[str | None, int]]:
        """Accept a connection and complete its handshake."""

    @abstractmethod
    def getsockname(self) -> tuple[str | None, int]:
        """The local address."""

    @abstractmethod
    def getpeercert(self) -> bytes | None:
        """The DER bytes of the peer's leaf certificate, if any."""

    @abstractmethod
    def getpeername(self) -> tuple[str | None, int]:
        """The remote address."""

    @property
    @abstractmethod
    def context(self) -> ClientContext | ServerContext:
        """The context this socket was made from."""

    @abstractmethod
    def cipher(self) -> CipherSuite | int | None:
        """The negotiated cipher suite (an int for suites the enum lacks), None before."""

    @abstractmethod
    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        """The ALPN protocol chosen, None if none was."""

    @property
    @abstractmethod
    def negotiated_tls_version(self) -> TLSVersion | None:
        """The negotiated TLS version, None before the handshake."""


@runtime_checkable
class TLSBuffer(Protocol):
    """An in-memory TLS channel: ciphertext in and out, plaintext read and written."""

    @abstractmethod
    def read(self, amt: int, buffer: Buffer | None = None) -> bytes | int:
        """Read up to ``amt`` bytes of plaintext (into ``buffer`` if given: returns the count)."""

    @abstractmethod
    def write(self, buf: Buffer) -> int:
        """Encrypt ``buf`` into the outgoing buffer; returns how many bytes were taken."""

    @abstractmethod
    def do_handshake(self) -> None:
        """Perform the handshake, including certificate and hostname verification."""

    @abstractmethod
    def cipher(self) -> CipherSuite | int | None:
        """The negotiated cipher suite, None before the handshake."""

    @abstractmethod
    def negotiated_protocol(self) -> NextProtocol | bytes | None:
        """The ALPN protocol chosen, None if none was."""

    @property
    @abstractmethod
    def context(self) -> ClientContext | ServerContext:
        """The context this buffer was made from."""

    @property
    @abstractmethod
    def negotiated_tls_version(self) -> TLSVersion | None:
        """The negotiated TLS version, None before the handshake."""

    @abstractmethod
    def shutdown(self) -> None:
        """Send close_notify."""

    @abstractmethod
    def process_incoming(self, data_from_network: bytes) -> None:
        """Feed ciphertext from the network (``b''`` signals the transport's EOF)."""

    @abstractmethod
    def incoming_bytes_buffered(self) -> int:
        """Ciphertext bytes received and not yet processed."""

    @abstractmethod
    def process_outgoing(self, amount_bytes_for_network: int) -> bytes:
        """Take up to that many bytes of ciphertext to send."""

    @abstractmethod
    def outgoing_bytes_buffered(self) -> int:
        """Ciphertext bytes waiting to be sent."""

    @abstractmethod
    def getpeercert(self) -> bytes | None:
        """The DER bytes of the peer's leaf certificate, if any."""


@runtime_checkable
class ClientContext(Protocol):
    """Makes client-side TLS sockets and buffers from a ``TLSClientConfiguration``."""

    @abstractmethod
    def __init__(self, configuration: TLSClientConfiguration) -> None:
        """Create a client context (validating the configuration)."""

    @property
    @abstractmethod
    def configuration(self) -> TLSClientConfiguration:
        """The configuration this context was made from."""

    @abstractmethod
    def connect(self, address: tuple[str | None, int]) -> TLSSocket:
        """Connect to ``address`` and complete the handshake (SNI and name check: the host)."""

    @abstractmethod
    def create_buffer(self, server_hostname: str) -> TLSBuffer:
        """A new in-memory client connection to ``server_hostname``."""


@runtime_checkable
class ServerContext(Protocol):
    """Makes server-side TLS sockets and buffers from a ``TLSServerConfiguration``."""

    @abstractmethod
    def __init__(self, configuration: TLSServerConfiguration) -> None:
        """Create a server context (validating the configuration)."""

    @property
    @abstractmethod
    def configuration(self) -> TLSServerConfiguration:
        """The configuration this context was made from."""

    @abstractmethod
    def connect(self, address: tuple[str | None, int]) -> TLSSocket:
        """Bind to ``address`` and listen; ``accept()`` returns handshaken connections."""

    @abstractmethod
    def create_buffer(self) -> TLSBuffer:
        """A new in-memory server connection."""


_ClientContext = TypeVar("_ClientContext", bound=ClientContext)
_ServerContext = TypeVar("_ServerContext", bound=ServerContext)


class TLSImplementation(Generic[_ClientContext, _ServerContext]):
    """An engine: its context classes and the check of what configurations it supports."""

    __slots__ = ("_client_context", "_name", "_server_context", "_validate_config")

    def __init__(
        self,
        client_context: type[_ClientContext],
        server_context: type[_ServerContext],
        validate_config: Callable[[TLSClientConfiguration | TLSServerConfiguration], None],
        *,
        name: str | None = None,
    ) -> None:
        self._client_context = client_context
        self._server_context = server_context
        self._validate_config = validate_config
        self._name = name or client_context.__module__

    @property
    def client_context(self) -> type[_ClientContext]:
        """The concrete client context class."""
        return self._client_context

    @property
    def server_context(self) -> type[_ServerContext]:
        """The concrete server context class."""
        return self._server_context

    @property
    def validate_config(
        self,
    ) -> Callable[[TLSClientConfiguration | TLSServerConfiguration], None]:
        """Raises ``ConfigurationError`` when this engine cannot honour a configuration."""
        return self._validate_config

    @property
    def name(self) -> str:
        """A short name for the engine (``"openssl"``, ``"rustls"``, ...)."""
        return self._name

    def __repr__(self) -> str:
        return f"<TLSImplementation {self._name}>"
