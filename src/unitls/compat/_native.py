"""The ``_sslobj`` of bridge sockets and objects on the OpenSSL engine.

ssl.py calls its ``_sslobj`` for every operation. On the OpenSSL engine that is the C object
``_ssl`` made from the engine's own ``ssl.SSLContext``: the stdlib's own I/O loop, no Python code
per read or write. ``NativeTLS`` stands in front of it only to answer ``.context`` with the bridge
context the caller wrapped with (the C object's is the engine's): the methods ssl.py calls are the
C object's bound methods, stored on the instance, so a call costs one dictionary look-up more than
with the stdlib and no Python frame.
"""

from __future__ import annotations

import _ssl
import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["NativeTLS", "check_session_owner"]

# Which bridge context each ssl.SSLSession came from, by session id. Client contexts with equal
# settings share the engine's ssl.SSLContext, so _ssl.c alone would not refuse a session from
# another bridge context ("Session refers to a different SSLContext.", as the stdlib says).
# SSLSession objects take no weak references and are new objects on every read: hence the id.
_SESSION_LIMIT = 4096
_session_lock = threading.Lock()
_session_owners: OrderedDict[bytes, weakref.ref[Any]] = OrderedDict()


def _remember_session(session: Any, context: Any) -> None:
    with _session_lock:
        _session_owners[session.id] = weakref.ref(context)
        _session_owners.move_to_end(session.id)
        while len(_session_owners) > _SESSION_LIMIT:
            _session_owners.popitem(last=False)


def check_session_owner(context: Any, session: Any) -> None:
    """ValueError if ``session`` came from a connection of another bridge context."""
    if session is None or not isinstance(session, _ssl.SSLSession):
        return  # _ssl.c reports None/the wrong type itself
    with _session_lock:
        owner = _session_owners.get(session.id)
    if owner is not None and owner() is not context:
        raise ValueError("Session refers to a different SSLContext.")


# Everything ssl.SSLSocket/SSLObject (and test code using _sslobj) call.
_METHODS = (
    "read",
    "write",
    "do_handshake",
    "pending",
    "shutdown",
    "getpeercert",
    "cipher",
    "version",
    "selected_alpn_protocol",
    "shared_ciphers",
    "compression",
    "get_channel_binding",
    "verify_client_post_handshake",
    "get_verified_chain",
    "get_unverified_chain",
)


class NativeTLS:
    """A C ``_ssl._SSLSocket`` whose ``context`` is the bridge context (see module docstring)."""

    def __init__(self, c_obj: Any, context: Any) -> None:
        state = self.__dict__
        state["_c"] = c_obj
        state["_context"] = context
        for name in _METHODS:
            method = getattr(c_obj, name, None)
            if method is not None:
                state[name] = method

    def __getattr__(self, name: str) -> Any:
        # Read-only attributes (server_side, server_hostname, session_reused) and anything a
        # later Python adds.
        return getattr(self.__dict__["_c"], name)

    @property
    def context(self) -> Any:
        return self._context

    @context.setter
    def context(self, value: Any) -> None:
        """Switch the connection to ``value``'s certificate and settings, as an SNI callback
        does: a bridge context on the OpenSSL engine lends its engine context; a plain stdlib
        context is used as it is."""
        if value is self._context:
            return
        switch_to = getattr(value, "_native_for", None)
        if switch_to is not None:
            inner = switch_to(self._c.server_side)
            if inner is None:
                raise ValueError(
                    "cannot switch a connection on the openssl engine to an SSLContext of the "
                    f"{value.implementation.name} engine"
                )
            self._c.context = inner
        elif isinstance(value, _ssl._SSLContext):
            self._c.context = value
        else:
            raise TypeError("The value must be a SSLContext")
        self.__dict__["_context"] = value

    @property
    def owner(self) -> Any:
        return self._c.owner

    @owner.setter
    def owner(self, value: Any) -> None:
        self._c.owner = value

    @property
    def session(self) -> Any:
        session = self._c.session
        if session is not None:
            _remember_session(session, self._context)
        return session

    @session.setter
    def session(self, value: Any) -> None:
        check_session_owner(self._context, value)
        self._c.session = value

    def __repr__(self) -> str:
        return f"<unitls.compat NativeTLS {self._c!r}>"
