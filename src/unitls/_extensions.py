"""What unitls engines offer beyond the PEP, as typed protocols (``unitls.extensions``).

Code that wants an extension checks for it with ``isinstance`` instead of probing attributes;
a third-party engine gets the same treatment by providing the same members. Every built-in
engine implements all of these unless a docstring says otherwise.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import socket

    from ._protocols import TLSBuffer

__all__ = [
    "SupportsConnectTimeout",
    "SupportsCreateBufferFor",
    "SupportsIncomingInto",
    "SupportsIncomingViews",
    "SupportsNativeIO",
    "SupportsPeerCertChain",
    "SupportsServerName",
    "SupportsSessionCache",
    "SupportsSessionExport",
    "SupportsSessionInfo",
    "SupportsStdlibContext",
    "SupportsUpgrade",
]


@runtime_checkable
class SupportsPeerCertChain(Protocol):
    """Sockets and buffers: every certificate the peer sent."""

    @abstractmethod
    def getpeercertchain(self) -> list[bytes]:
        """DER of the peer's certificates, leaf first (empty before the handshake)."""


@runtime_checkable
class SupportsServerName(Protocol):
    """Buffers: the server name of the connection. Server side: the host name the client sent
    (SNI), lowercase and without a trailing dot, None without SNI (clients reaching an IP
    address send none); client side: the name used for SNI and verification (a trailing dot
    dropped). The same on every built-in engine (``test_conformance_buffer.py``)."""

    @property
    @abstractmethod
    def server_name(self) -> str | None: ...


@runtime_checkable
class SupportsSessionInfo(Protocol):
    """Sockets and buffers: what the handshake negotiated beyond the PEP's accessors."""

    @property
    @abstractmethod
    def session_resumed(self) -> bool:
        """Whether the handshake resumed an earlier session (False before it completes)."""

    @property
    @abstractmethod
    def negotiated_group(self) -> str | None:
        """The key exchange group by its IANA name ("x25519", "X25519MLKEM768", ...)."""


@runtime_checkable
class SupportsSessionCache(Protocol):
    """Client contexts: a bounded session cache keyed by server name and port (on by default,
    off with ``resumption=False``). ``create_buffer`` takes the port, which sockets know, and
    optionally a session exported by an earlier buffer (``SupportsSessionExport``) to resume
    exactly that one."""

    @abstractmethod
    def create_buffer(
        self, server_hostname: str, *, port: int | None = None, session: Any = None
    ) -> TLSBuffer: ...

    @abstractmethod
    def clear_session_cache(self) -> None:
        """Forget every cached session."""


@runtime_checkable
class SupportsSessionExport(Protocol):
    """Client buffers: ``session``, an opaque object holding what the server sent for resuming
    (TLS 1.3 tickets arrive after the handshake, with the first data read), to offer to
    ``create_buffer(..., session=...)`` of the same context. None on servers. Each TLS 1.3
    ticket in it is used once (offer the newest connection's session again); a TLS 1.2 session
    resumes until the server refuses it."""

    @property
    @abstractmethod
    def session(self) -> Any: ...


@runtime_checkable
class SupportsCreateBufferFor(Protocol):
    """Server contexts: a buffer for a connection that reached a given local address (a client
    sending no SNI then gets the chain whose leaf names that address)."""

    @abstractmethod
    def create_buffer_for(self, local_address: str | None) -> TLSBuffer: ...


@runtime_checkable
class SupportsConnectTimeout(Protocol):
    """Client contexts: ``connect(address, timeout=...)`` bounds the TCP connect and handshake."""

    @abstractmethod
    def connect(self, address: tuple[str | None, int], *, timeout: Any = ...) -> Any: ...


@runtime_checkable
class SupportsUpgrade(Protocol):
    """Contexts: STARTTLS, running TLS on an already connected plain socket."""

    @abstractmethod
    def upgrade(self, sock: socket.socket, server_hostname: str | None = None) -> Any: ...


@runtime_checkable
class SupportsIncomingInto(Protocol):
    """Buffers that take ciphertext and give the plaintext it completes in one call.

    ``process_incoming_into(data, buffer)`` is ``process_incoming(data)`` followed by reading
    into ``buffer`` as far as plaintext is ready; it returns the bytes read. It raises only what
    ``process_incoming`` raises (``WantReadError``: nothing was taken, as there); what ended the
    reading part (nothing more yet, the end of the stream, a failure) is what the next ``read``
    reports. rustls decrypts the records into ``buffer`` as it takes them: separate calls make
    it queue the ciphertext it cannot take while it holds 16 KiB of plaintext, a copy of most
    of every large chunk received. ``buffer`` may share memory with ``data`` (an engine that
    decrypts while it reads the ciphertext copies the ciphertext first, then).
    """

    @abstractmethod
    def process_incoming_into(self, data_from_network: Any, buffer: Any) -> int: ...


@runtime_checkable
class SupportsIncomingViews(Protocol):
    """Buffers whose ``process_incoming`` copies its argument before returning: callers may
    pass a view of a reusable receive buffer instead of a ``bytes`` copy."""

    copies_incoming: ClassVar[bool]


@runtime_checkable
class SupportsStdlibContext(Protocol):
    """Contexts built on the stdlib ``ssl`` module: the ``ssl.SSLContext`` that runs their
    connections (the ``ssl`` bridge hands its C objects to ``ssl.py`` directly)."""

    @abstractmethod
    def stdlib_context(self) -> Any: ...


@runtime_checkable
class SupportsNativeIO(Protocol):
    """Buffers of engines built on unitls' extension: the ``unitls._native.Connection`` they run
    on. The extension's native socket classes (``unitls._nativesock``, the ``ssl`` bridge's
    ``_sslobj``) drive it over a file descriptor, with no Python per TLS record."""

    @abstractmethod
    def native_connection(self) -> Any: ...


_IMPLEMENTS: dict[tuple[type, Any], bool] = {}


def implements(obj: object, protocol: Any) -> bool:
    """``isinstance(obj, protocol)`` for these Protocols, remembered per class: a
    runtime-checkable Protocol check walks the Protocol's members on every call (~20 us on
    Python 3.11, several per connection in asyncio's handshakes). The members are methods and
    properties of engine classes, so the answer is the class's."""
    key = (type(obj), protocol)
    found = _IMPLEMENTS.get(key)
    if found is None:
        found = _IMPLEMENTS[key] = isinstance(obj, protocol)
    return found
