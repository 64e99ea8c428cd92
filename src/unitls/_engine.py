"""The engine layer: what every engine shares, so that a new engine is a page of code.

An engine module provides two context classes built on ``ClientContextBase`` and
``ServerContextBase`` and fills in only its own steps:

- ``validate(configuration)`` (a staticmethod): raise ``ConfigurationError`` for what the engine
  cannot do. It is also the ``validate_config`` of the engine's ``TLSImplementation``.
- ``_compile(configuration)``: translate the configuration once into the engine's native form
  (stored as ``self._native``). Client contexts read ``self._verification()`` to learn whether
  the insecure module turned checks off; ``self._resumption`` / ``self._session_tickets`` hold
  the session options.
- ``_new_buffer(...)``: a ``TLSBuffer``. Clients get the server hostname, the port (or None) and
  an offered session (or None); servers get the local address the connection reached (or
  None), which picks the default chain for clients that send no SNI.
- ``clear_session_cache()`` (clients): forget the cached sessions.

Everything else is here, written once: argument and type checks, ``validate_config`` at
construction, the ``configuration`` property, ``create_buffer``/``create_buffer_for``, sockets
(through the generic driver unless the engine overrides ``connect`` or ``_accept``), STARTTLS
``upgrade``, ``__repr__``, and the insecure variants (``unitls.insecure`` derives them from the
two classes). ``engine_implementation()`` makes the ``TLSImplementation``.

Also here: helpers for engines (version bounds, cipher lists, reading key material).

Options every engine's contexts take (keyword-only, beyond the PEP):

- Session resumption. A client context keeps a bounded cache of sessions keyed by server name
  *and* port and resumes from it by default (TLS 1.3 tickets, each used once; TLS 1.2 tickets or
  session ids, reused until refused); ``resumption=False`` turns the cache off. Sockets know the
  port (``connect(address)``, STARTTLS on a connected socket); ``create_buffer(name, port=...)``
  takes it for buffers, and buffers made without one share sessions by name among themselves.
  A client buffer's ``session`` (when the engine has one) offered as
  ``create_buffer(name, session=...)`` resumes exactly that session, cache or not. A server
  context issues tickets by default, under keys that rotate; ``session_tickets=False`` turns
  tickets and the server's session cache off (every handshake is full).
- Key exchange groups. ``groups=("x25519", "secp256r1")`` names the groups a context offers
  (clients, in that order, the first getting a key share) or accepts (servers: of several
  groups both sides have, OpenSSL and rustls take the one the client sent a share for, NSS
  follows the server's order, asking for another share if needed), by their names in IANA's
  TLS Supported Groups registry (any case); the default is the engine's own list (rustls:
  X25519MLKEM768 first). A group the engine cannot do is a
  ``ConfigurationError`` naming those it can; only post-quantum hybrids with TLS 1.3 disabled
  is one too (they exist in TLS 1.3 only). It is the escape hatch for peers or middleboxes that
  choke on large post-quantum key shares, and for measuring like for like.
- Key logging for Wireshark. With ``keylog_filename=PATH``, or else when the ``SSLKEYLOGFILE``
  environment variable is set (and Python was not started with ``-E``), every connection's
  secrets are appended to that file in the NSS key log format (``CLIENT_RANDOM`` for TLS 1.2;
  ``CLIENT_HANDSHAKE_TRAFFIC_SECRET``, ``SERVER_HANDSHAKE_TRAFFIC_SECRET``,
  ``CLIENT_TRAFFIC_SECRET_0``, ``SERVER_TRAFFIC_SECRET_0``, ``EXPORTER_SECRET`` for TLS 1.3),
  one line per ``write()`` on a file opened with ``O_APPEND`` (safe with many threads and
  processes), created with mode 0600. The path is resolved when the context is made; a file that
  cannot be opened is a ``ConfigurationError`` then, not a silent loss.

What an engine cannot do of this it says in its docstring and refuses with ``ConfigurationError``
(NSS: servers resume TLS 1.3 only; key logs hold TLS 1.3 secrets only, without
``EXPORTER_SECRET``, so key logging with TLS 1.2 allowed is refused).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._enums import TLS13_SUITES, CipherSuite, TLSVersion
from ._errors import ConfigurationError
from ._protocols import TLSImplementation
from ._socket import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_TIMEOUT,
    StartTLSMixin,
    connect_with_buffer,
    listen_with_buffers,
)

if TYPE_CHECKING:
    import socket

    from ._objects import Certificate, PrivateKey, TrustStore
    from ._protocols import TLSBuffer, TLSSocket

TLS12 = 0x0303
TLS13 = 0x0304

_LOW = {
    None: TLS12,
    TLSVersion.MINIMUM_SUPPORTED: TLS12,
    TLSVersion.TLSv1_2: TLS12,
    TLSVersion.TLSv1_3: TLS13,
    TLSVersion.MAXIMUM_SUPPORTED: TLS13,
}
_HIGH = {
    None: TLS13,
    TLSVersion.MINIMUM_SUPPORTED: TLS12,
    TLSVersion.TLSv1_2: TLS12,
    TLSVersion.TLSv1_3: TLS13,
    TLSVersion.MAXIMUM_SUPPORTED: TLS13,
}
VERSION_ENUM = {TLS12: TLSVersion.TLSv1_2, TLS13: TLSVersion.TLSv1_3}


# IANA's TLS Supported Groups registry (names with the registry's case) for the groups any
# engine here can negotiate, by codepoint.
GROUP_NAMES: dict[int, str] = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001A: "brainpoolP256r1",
    0x001B: "brainpoolP384r1",
    0x001C: "brainpoolP512r1",
    0x001D: "x25519",
    0x001E: "x448",
    0x001F: "brainpoolP256r1tls13",
    0x0020: "brainpoolP384r1tls13",
    0x0021: "brainpoolP512r1tls13",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
    0x0200: "MLKEM512",
    0x0201: "MLKEM768",
    0x0202: "MLKEM1024",
    0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
}
_GROUP_BY_NAME = {name.lower(): group for group, name in GROUP_NAMES.items()}

# Groups that exist in TLS 1.3 only (ML-KEM, alone or in a hybrid).
_TLS13_ONLY_GROUPS = frozenset({0x0200, 0x0201, 0x0202, 0x11EB, 0x11EC, 0x11ED})


def group_name(group: int) -> str:
    """A negotiated group's IANA name (a codepoint outside ``GROUP_NAMES`` as ``0x....``)."""
    return GROUP_NAMES.get(group) or f"0x{group:04x}"


def check_groups(
    groups: Sequence[str] | None,
    engine: str,
    supported: Sequence[int],
    config: TLSClientConfiguration | TLSServerConfiguration,
) -> tuple[int, ...] | None:
    """The ``groups`` option as codepoints in the order given (None: the engine's default).

    TypeError/ValueError for a malformed value (not a sequence of names, empty, unknown or
    repeated names); ``ConfigurationError`` for groups ``engine`` cannot do (``supported``) and
    for a list that only TLS 1.3 can use when ``config`` disables TLS 1.3.
    """
    if groups is None:
        return None
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise TypeError(
            "groups must be a sequence of group names, e.g. ('x25519', 'secp256r1'), "
            f"not {type(groups).__name__}"
        )
    if not groups:
        raise ValueError("groups must name at least one key exchange group (None: the default)")
    ids: list[int] = []
    for name in groups:
        if not isinstance(name, str):
            raise TypeError(f"groups must hold group names (str), not {type(name).__name__}")
        group = _GROUP_BY_NAME.get(name.lower())
        if group is None:
            raise ValueError(
                f"unknown key exchange group {name!r}: use a name from IANA's TLS Supported "
                "Groups registry, e.g. 'x25519', 'secp256r1', 'X25519MLKEM768'"
            )
        if group in ids:
            raise ValueError(f"key exchange group {GROUP_NAMES[group]!r} is listed twice")
        ids.append(group)
    lacking = [GROUP_NAMES[g] for g in ids if g not in supported]
    if lacking:
        can = (
            f"choose among {', '.join(GROUP_NAMES[g] for g in supported)}"
            if supported
            else "it cannot choose groups (leave groups=None)"
        )
        raise ConfigurationError(
            f"the {engine} engine cannot do the key exchange group(s) {', '.join(lacking)}: {can}"
        )
    if _HIGH[config.highest_supported_version] < TLS13 and all(
        g in _TLS13_ONLY_GROUPS for g in ids
    ):
        raise ConfigurationError(
            f"the key exchange group(s) {', '.join(GROUP_NAMES[g] for g in ids)} exist in TLS "
            "1.3 only, which the configuration disables: add a classical group such as x25519 "
            "or allow TLS 1.3"
        )
    return tuple(ids)


def version_bounds(config: TLSClientConfiguration | TLSServerConfiguration) -> tuple[int, int]:
    """(lowest, highest) wire versions; never below TLS 1.2."""
    return _LOW[config.lowest_supported_version], _HIGH[config.highest_supported_version]


def versions(config: TLSClientConfiguration | TLSServerConfiguration) -> list[int]:
    low, high = version_bounds(config)
    return [v for v in (TLS12, TLS13) if low <= v <= high]


def split_ciphers(ids: list[int]) -> tuple[list[int], list[int]]:
    """(TLS 1.3 suites, TLS 1.2 suites) of a cipher id list, order kept."""
    return [c for c in ids if c in TLS13_SUITES], [c for c in ids if c not in TLS13_SUITES]


def suite_name(suite: int) -> str:
    try:
        return CipherSuite(suite).name
    except ValueError:
        return f"{suite:#06x}"


def read_source(obj: Certificate | PrivateKey | TrustStore, what: str) -> bytes:
    """The bytes of a buffer- or file-backed object (``from_id`` must be rejected earlier)."""
    if obj.buffer is not None:
        return obj.buffer
    if obj.path is not None:
        from ._objects import read_file

        return read_file(obj.path, what)
    raise ConfigurationError(f"{what} {obj!r} has no buffer or file to read")


def validate_common(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
    """What no engine may do, whatever its library allows: secure by default and on request.

    Cipher suites must be AEAD suites with forward secrecy (the members of ``CipherSuite``); a
    raw id naming anything else (CBC, RC4, static RSA key exchange, ...) is refused.
    """
    if not isinstance(config, (TLSClientConfiguration, TLSServerConfiguration)):
        raise TypeError(f"expected a TLS configuration, not {type(config).__name__}")
    if config.ciphers is None:
        return
    known = {int(s) for s in CipherSuite}
    weak = [int(c) for c in config.ciphers if int(c) not in known]
    if weak:
        raise ConfigurationError(
            f"cipher suite(s) {', '.join(f'{c:#06x}' for c in weak)} are not AEAD suites with "
            "forward secrecy, the only ones unitls negotiates: choose among unitls.CipherSuite "
            "(or pass ciphers=None for the secure defaults)"
        )


def reject_ids(config: TLSClientConfiguration | TLSServerConfiguration, engine: str) -> None:
    """Raise ConfigurationError if any certificate, key or trust store is ``from_id``."""
    from ._objects import SigningChain

    chains = config.certificate_chain
    if isinstance(chains, SigningChain):
        chains = (chains,)
    for chain in chains or ():
        cert, key = chain.leaf
        for obj, what in [(cert, "certificate"), (key, "private key")] + [
            (c, "chain certificate") for c in chain.chain
        ]:
            if obj is not None and obj.id is not None:
                raise ConfigurationError(
                    f"the {engine} engine cannot load a {what} from an identifier "
                    f"({obj!r}): load it from a buffer or a file"
                )
    store = config.trust_store
    if store is not None and store.id is not None:
        raise ConfigurationError(
            f"the {engine} engine cannot load a trust store from an identifier ({store!r}): "
            "use TrustStore.system(), from_buffer() or from_file()"
        )


# -- the context base classes ------------------------------------------------------------------

_Native = TypeVar("_Native")


def check_server_hostname(server_hostname: object) -> str:
    """The name a client buffer verifies and sends (SNI), checked like ``ssl`` checks it.

    A fully qualified name's trailing dot is dropped: SNI carries names without it (RFC 6066),
    and the certificate names the same host without it (rustls did this on its own; OpenSSL
    failed the verification, and NSS sent the dot).
    """
    if not isinstance(server_hostname, str):
        raise TypeError(f"server_hostname must be a str, not {type(server_hostname).__name__}")
    if "\x00" in server_hostname:
        raise TypeError("server_hostname must not contain a NUL character")
    name = server_hostname[:-1] if server_hostname.endswith(".") else server_hostname
    if not name:
        raise ValueError("create_buffer needs the server's host name (for SNI and checks)")
    return name


def sni_name(sent: str | None) -> str | None:
    """The host name a client sent in SNI, as every engine's server buffers report it
    (``server_name``): lowercase, without a trailing dot (engines differ on both otherwise)."""
    return sent.rstrip(".").lower() if sent else None


def check_port(port: object) -> int | None:
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535 or None, not {port!r}")
    return port


def keylog_path(keylog_filename: object) -> str | None:
    """The key log file a new context writes to: ``keylog_filename``, else ``SSLKEYLOGFILE``
    (ignored under ``python -E``), else None. The file is opened once here (created with mode
    0600) so that a path that cannot be written is a ConfigurationError now."""
    if keylog_filename is None:
        if sys.flags.ignore_environment:
            return None
        path = os.environ.get("SSLKEYLOGFILE") or None
        origin = "SSLKEYLOGFILE"
    elif isinstance(keylog_filename, (str, os.PathLike)):
        path = os.fspath(keylog_filename)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        origin = "keylog_filename"
        if not path:
            raise ValueError("keylog_filename must not be empty (None: use SSLKEYLOGFILE)")
    else:
        raise TypeError(
            f"keylog_filename must be a path (str or os.PathLike) or None, "
            f"not {type(keylog_filename).__name__}"
        )
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        fix = "unset it or point it" if origin == "SSLKEYLOGFILE" else "point it"
        raise ConfigurationError(
            f"cannot open the TLS key log file {path!r} ({origin}): {reason}; {fix} at a "
            "writable file"
        ) from exc
    os.close(fd)
    return path


class ClientContextBase(StartTLSMixin, Generic[_Native]):
    """An engine's client context (see the module docstring for what a subclass fills in).

    ``resumption=False`` turns off the session cache (every handshake is a full one unless a
    session is offered explicitly); ``groups`` names the key exchange groups to offer (default:
    the engine's); ``keylog_filename`` names a key log file (default: the ``SSLKEYLOGFILE``
    environment variable). See the module docstring.
    """

    __slots__ = ("_configuration", "_groups", "_keylog", "_native", "_resumption")

    #: The engine's short name, for messages and ``repr``.
    engine_name: ClassVar[str] = "engine"
    #: The key exchange groups (IANA codepoints) the engine can be asked for (``groups``).
    supported_groups: ClassVar[tuple[int, ...]] = ()

    def __init__(
        self,
        configuration: TLSClientConfiguration,
        *,
        resumption: bool = True,
        groups: Sequence[str] | None = None,
        keylog_filename: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(configuration, TLSClientConfiguration):
            raise TypeError(
                f"expected a TLSClientConfiguration, not {type(configuration).__name__}"
            )
        if not isinstance(resumption, bool):
            raise TypeError("resumption must be a bool")
        validate_common(configuration)
        type(self).validate(configuration)
        self._configuration = configuration
        self._resumption = resumption
        self._groups = check_groups(groups, self.engine_name, self.supported_groups, configuration)
        self._keylog = keylog_path(keylog_filename)
        self._native: _Native = self._compile(configuration)

    @staticmethod
    def validate(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
        """Raise ConfigurationError if the engine cannot honour ``config``."""
        raise NotImplementedError

    def _compile(self, configuration: TLSClientConfiguration) -> _Native:
        raise NotImplementedError

    def _new_buffer(self, server_hostname: str, port: int | None, session: Any) -> TLSBuffer:
        raise NotImplementedError

    def clear_session_cache(self) -> None:
        """Forget every cached session: the next connections make full handshakes."""
        raise NotImplementedError

    def _verification(self) -> tuple[bool, bool]:
        """(verify the certificate chain, check the hostname): both, unless insecure."""
        return True, True

    @property
    def configuration(self) -> TLSClientConfiguration:
        return self._configuration

    def create_buffer(
        self, server_hostname: str, *, port: int | None = None, session: Any = None
    ) -> TLSBuffer:
        """A new in-memory client connection to ``server_hostname`` (SNI and name checks).

        ``port``: the server's port, which keys the session cache with the name (buffers made
        without it share sessions by name among themselves). ``session``: a ``session`` taken
        from an earlier buffer of this context, to resume exactly that one (ValueError if it
        belongs to another context or server name).
        """
        return self._new_buffer(check_server_hostname(server_hostname), check_port(port), session)

    def connect(self, address: tuple[str | None, int], *, timeout: Any = DEFAULT_TIMEOUT) -> Any:
        """Connect, handshake and verify the server against ``address``'s host.

        ``timeout`` (seconds, None: block) bounds the TCP connect and the handshake and stays
        the socket's timeout; by default ``socket.getdefaulttimeout()``, as for ``socket``.
        """
        return connect_with_buffer(self, address, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._configuration!r}>"


class ServerContextBase(StartTLSMixin, Generic[_Native]):
    """An engine's server context (see the module docstring for what a subclass fills in).

    ``session_tickets=False`` stops issuing resumption tickets and caching sessions (every
    handshake is full); ``groups`` names the key exchange groups to accept (default: the
    engine's); ``keylog_filename`` names a key log file (default: the
    ``SSLKEYLOGFILE`` environment variable). See the module docstring.
    """

    __slots__ = ("_configuration", "_groups", "_keylog", "_native", "_session_tickets")

    engine_name: ClassVar[str] = "engine"
    supported_groups: ClassVar[tuple[int, ...]] = ()

    def __init__(
        self,
        configuration: TLSServerConfiguration,
        *,
        session_tickets: bool = True,
        groups: Sequence[str] | None = None,
        keylog_filename: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(configuration, TLSServerConfiguration):
            raise TypeError(
                f"expected a TLSServerConfiguration, not {type(configuration).__name__}"
            )
        if not isinstance(session_tickets, bool):
            raise TypeError("session_tickets must be a bool")
        validate_common(configuration)
        type(self).validate(configuration)
        self._configuration = configuration
        self._session_tickets = session_tickets
        self._groups = check_groups(groups, self.engine_name, self.supported_groups, configuration)
        self._keylog = keylog_path(keylog_filename)
        self._native: _Native = self._compile(configuration)

    @staticmethod
    def validate(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
        """Raise ConfigurationError if the engine cannot honour ``config``."""
        raise NotImplementedError

    def _compile(self, configuration: TLSServerConfiguration) -> _Native:
        raise NotImplementedError

    def _new_buffer(self, local_address: str | None) -> TLSBuffer:
        raise NotImplementedError

    @property
    def configuration(self) -> TLSServerConfiguration:
        return self._configuration

    def create_buffer(self) -> TLSBuffer:
        """A new in-memory server connection."""
        return self._new_buffer(None)

    def create_buffer_for(self, local_address: str | None) -> TLSBuffer:
        """A server buffer for a connection that reached ``local_address`` (an IP): clients
        that send no SNI get the first chain whose leaf names that address."""
        if local_address is not None and not isinstance(local_address, str):
            raise TypeError("local_address must be a str (an IP address) or None")
        return self._new_buffer(local_address)

    def connect(
        self,
        address: tuple[str | None, int],
        *,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> Any:
        """Bind and listen on ``address``; ``accept()`` returns handshaken connections, running
        several clients' handshakes at once, each within ``handshake_timeout`` seconds (None: no
        limit; see ``unitls._socket.BufferListener``)."""
        return listen_with_buffers(self, address, self._accept, handshake_timeout)

    def _accept(self, conn: socket.socket) -> TLSSocket:
        """The TLS socket (not yet handshaken) for an accepted connection; the generic driver
        over ``create_buffer_for`` unless the engine has its own sockets."""
        from ._socket import BufferSocket, server_buffer

        return BufferSocket(conn, server_buffer(self, conn), self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._configuration!r}>"


_C = TypeVar("_C", bound=ClientContextBase[Any])
_S = TypeVar("_S", bound=ServerContextBase[Any])


def engine_implementation(client: type[_C], server: type[_S]) -> TLSImplementation[_C, _S]:
    """The ``TLSImplementation`` of an engine built on the base classes."""
    if client.validate is not server.validate:
        raise TypeError("an engine's client and server contexts must share one validate()")
    engine_validate = client.validate

    def validate_config(config: TLSClientConfiguration | TLSServerConfiguration) -> None:
        validate_common(config)
        engine_validate(config)

    validate_config.__doc__ = engine_validate.__doc__
    return TLSImplementation(
        client_context=client,
        server_context=server,
        validate_config=validate_config,
        name=client.engine_name,
    )
