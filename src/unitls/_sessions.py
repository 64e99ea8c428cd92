"""A client context's session cache, for engines whose library hands sessions to Python (the
OpenSSL engine; rustls keeps the same design in Rust, ``rust/src/resumption.rs``).

Sessions are kept per connection in a ``ClientSession`` (what one connection received: TLS 1.2
sessions and TLS 1.3 tickets, which arrive after the handshake); the context's ``SessionCache``
lists those per key, ``(server name in lower case, port or None)``, newest last, and takes from
them for new connections. A ``ClientSession`` is also what a client buffer exports as
``session``: offered to ``create_buffer(..., session=...)`` it resumes exactly that session.

Rules (the same on every engine): a TLS 1.3 ticket is used at most once (tickets are meant to
be single use: RFC 8446 C.4); a TLS 1.2 session is reused until a newer one replaces it; a
connection keeps its 8 newest tickets; the cache remembers ``MAX_SERVERS`` keys, ``MAX_BAGS``
connections each, forgetting the least recently used. One lock per context guards it all
(sessions arrive from OpenSSL callbacks on whatever thread runs the connection).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Protocol

__all__ = ["MAX_SERVERS", "ClientSession", "SessionCache"]

MAX_SERVERS = 128
MAX_BAGS = 4
MAX_TICKETS = 8

Key = tuple[str, int | None]


class _Value(Protocol):
    """An engine's session: ``tls13`` tells a single-use TLS 1.3 ticket from a TLS 1.2 session."""

    tls13: bool


class ClientSession:
    """The sessions one client connection received (opaque: offer it to ``create_buffer(...,
    session=...)`` of the same context and server name to resume)."""

    __slots__ = ("__weakref__", "_cache", "_key", "_tls12", "_tls13")

    def __init__(self, cache: SessionCache, key: Key) -> None:
        self._cache = cache
        self._key = key
        self._tls12: Any = None
        self._tls13: list[Any] = []

    @property
    def server_name(self) -> str:
        return self._key[0]

    @property
    def port(self) -> int | None:
        return self._key[1]

    @property
    def resumable(self) -> bool:
        """Whether it still holds a TLS 1.2 session or a TLS 1.3 ticket."""
        return self._tls12 is not None or bool(self._tls13)

    def _unitls_session_sink(self, value: _Value) -> None:
        """Where the engine's callback hands what this connection receives (the name is
        ``unitls._openssl_ffi.SESSION_SINK``)."""
        self._cache.received(self, value)

    def _empty(self) -> bool:
        return self._tls12 is None and not self._tls13

    def __repr__(self) -> str:
        name, port = self._key
        where = f"{name}:{port}" if port is not None else name
        tls12 = "yes" if self._tls12 is not None else "no"
        return f"<ClientSession {where} tls12={tls12} tls13_tickets={len(self._tls13)}>"


class SessionCache:
    """One client context's sessions (``enabled=False``: none cached, offered ones still work)."""

    __slots__ = ("_enabled", "_lock", "_servers")

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._lock = threading.Lock()
        self._servers: OrderedDict[Key, list[ClientSession]] = OrderedDict()

    def new_session(self, server_name: str, port: int | None) -> ClientSession:
        """The (empty) session object of a new connection."""
        return ClientSession(self, (server_name.lower(), port))

    def check_offered(self, session: object, server_name: str) -> ClientSession:
        """``session`` if it may be offered to a connection of this context to ``server_name``."""
        if not isinstance(session, ClientSession):
            raise TypeError(
                f"session must come from a buffer's .session, not {type(session).__name__}"
            )
        if session._cache is not self:
            raise ValueError(
                "the session belongs to another client context: sessions resume only with the "
                "context that made them"
            )
        if session._key[0] != server_name.lower():
            raise ValueError(
                f"the session was made with server {session._key[0]!r}, not "
                f"{server_name.lower()!r}: a session resumes only with the server name it was "
                "verified for"
            )
        return session

    def received(self, bag: ClientSession, value: _Value) -> None:
        """A connection received ``value`` (called from the engine's callback)."""
        with self._lock:
            if value.tls13:
                bag._tls13.append(value)
                del bag._tls13[:-MAX_TICKETS]
            else:
                bag._tls12 = value
            if not self._enabled:
                return
            bags = self._servers.get(bag._key)
            if bags is None:
                while len(self._servers) >= MAX_SERVERS:
                    self._servers.popitem(last=False)
                bags = self._servers[bag._key] = []
            else:
                self._servers.move_to_end(bag._key)
            bags[:] = [b for b in bags if b is not bag and not b._empty()]
            bags.append(bag)
            del bags[:-MAX_BAGS]

    def take(self, key: Key, offered: ClientSession | None) -> Any:
        """A session to offer on a new connection to ``key``: from ``offered`` if given, else
        the newest in the cache (a TLS 1.3 ticket first, then a TLS 1.2 session); or None."""
        if offered is None and (not self._enabled or key not in self._servers):
            return None  # the common miss, without the lock (a dict lookup is atomic)
        with self._lock:
            if offered is not None:
                bags = [offered]
            else:
                bags = self._servers.get(key, [])
            for bag in reversed(bags):
                if bag._tls13:
                    value = bag._tls13.pop()
                    break
            else:
                value = next((b._tls12 for b in reversed(bags) if b._tls12 is not None), None)
            if offered is None and bags:
                bags[:] = [b for b in bags if not b._empty()]
            return value

    def clear(self) -> None:
        with self._lock:
            self._servers.clear()
