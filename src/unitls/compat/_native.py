"""The ``_sslobj`` of bridge sockets and objects on the OpenSSL engine.

ssl.py calls its ``_sslobj`` for every operation. On the OpenSSL engine that is the C object
``_ssl`` made from the engine's own ``ssl.SSLContext``: the stdlib's own I/O loop, no Python code
per read or write. ``NativeTLS`` stands in front of it only to answer ``.context`` with the bridge
context the caller wrapped with (the C object's is the engine's): the methods ssl.py calls are the
C object's bound methods, stored on the instance, so a call costs one dictionary look-up more than
with the stdlib and no Python frame.

Sockets get ``LockedTLS`` instead, because OpenSSL's connection objects are not thread-safe: with
the stdlib, a thread reading while another writes on one ``SSLSocket`` breaks the connection when
the read handles a post-handshake message (a TLS 1.3 session ticket, a key update) during the
write: garbage on the wire, ``[SSL] internal error``, at times a segmentation fault (measured:
1 in 100 to 1 in 20 of 24 MiB full-duplex echoes, 0 in 200 with a server sending no tickets).
``LockedTLS`` lets one thread at a time into the C object and never lets it wait there for
long: the C object sees a socket object of its own on the user's descriptor
(``_BorrowedSocket``), whose timeout is ours, so the user's socket keeps its timeout; its theory
of operation is in its docstring. What it costs: its ``read``/``write`` fast path is the
extension's ``LockedCall`` (an uncontended lock and a look at the user's timeout, ~1% of a bulk
download; the same in Python cost 6%), and for a blocking socket (timeout None) an ``fcntl`` per
call to keep the descriptor non-blocking (CPython makes it blocking again at every
``settimeout(None)``, ssl.py's ``do_handshake``'s included).
"""

from __future__ import annotations

import _socket
import _ssl
import errno
import os
import ssl
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

from .._drive import wait_fd

__all__ = ["LockedTLS", "NativeTLS", "check_session_owner"]

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


# While one thread uses a socket, the longest the C object waits at a time (the call is then
# repeated until the user's deadline): the bound on how long a second thread waits to switch the
# socket to shared use, and on how long a waiting thread takes to notice a close() by another.
_SLICE = 0.05

_TIMED_OUT = {
    "read": "The read operation timed out",
    "write": "The write operation timed out",
    "do_handshake": "The handshake operation timed out",
}
_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class PyLockState:
    """The extension's ``LockState`` in Python (used without the extension): a lock, the mode
    (``shared``) and the borrowed socket's ``timeout``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquire = self._lock.acquire
        self.release = self._lock.release
        self.shared = False
        self.timeout = 0.0

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


try:
    from .._native import LockedCall, LockState
except ImportError:  # built without the extension
    LockedCall = None  # type: ignore[assignment,misc]
    LockState = PyLockState  # type: ignore[assignment,misc]


class _BorrowedSocket(_socket.socket):
    """The user's descriptor as the C object's socket, with a timeout of its own: it never
    closes the descriptor (the user's socket owns it), not even from a garbage collection that
    finalizes it before the ``LockedTLS`` holding it."""

    __slots__ = ("__weakref__",)

    def __del__(self) -> None:
        self.detach()


class LockedTLS(NativeTLS):
    """The C object of an ``ssl.SSLSocket`` on the OpenSSL engine, one thread inside at a time.

    Theory of operation (the OpenSSL engine's ``OpenSSLSocket`` has the same two modes): the C
    object runs on a ``_BorrowedSocket`` of the user's descriptor, whose timeout is ours to set,
    and the descriptor is kept non-blocking (the user's timeout lives on in their socket object
    and is read at every call, as ``_ssl`` reads it):

    * *single* (from the start): each call takes ``_lock`` and lets the C object wait for the
      socket itself, at most ``_SLICE`` at a time (``TimeoutError``: repeated until the user's
      deadline), so one thread costs an uncontended lock and a look at the user's timeout
      more than the stdlib (``read``/``write``: the extension's ``LockedCall``);
    * *shared*: the first time a thread finds ``_lock`` held, the socket becomes shared for good:
      the C object never waits (timeout 0, ``SSLWant*Error``), calls still run under ``_lock``,
      and waiting (``poll``) happens outside it, so a reader never holds up a writer. The switch
      waits at most about one slice for the other thread's call.

    A timeout is a deadline for the whole call in both modes, as in ``_ssl``; a non-blocking
    socket (timeout 0) gets the C object's ``SSLWant*Error``. ``read``/``write``/``do_handshake``/
    ``shutdown`` and what reads state that a concurrent read changes (``pending``, ``session``,
    post-handshake authentication) run under the lock; the other methods are the C object's.
    """

    _LOCKED = (
        "do_handshake",
        "shutdown",
        "pending",
        "verify_client_post_handshake",
    )

    def __init__(self, c_obj: Any, context: Any, user: Any, borrowed: _BorrowedSocket) -> None:
        super().__init__(c_obj, context)
        state = self.__dict__
        for name in self._LOCKED:
            state.pop(name, None)  # the class's locked methods, not the C object's
        # The lock, the mode (shared) and the borrowed socket's timeout (0 at wrap time).
        lock = state["_lock"] = LockState() if LockedCall is not None else PyLockState()
        user_ref = state["_user"] = weakref.ref(user)  # no cycle: the SSLSocket holds this
        state["_borrowed"] = borrowed
        state["read"] = _fast_path(self, "read", c_obj.read, lock, user_ref)
        state["write"] = _fast_path(self, "write", c_obj.write, lock, user_ref)

    @classmethod
    def wrap(
        cls, context: Any, inner: Any, sock: Any, server_side: bool, hostname: Any, **kw: Any
    ) -> LockedTLS:
        """``_ssl._wrap_socket`` on a borrowed socket of ``sock``'s descriptor."""
        borrowed = _BorrowedSocket(sock.family, sock.type, sock.proto, sock.fileno())
        borrowed.settimeout(0.0)  # for the C object; the descriptor stays as the user has it
        if sock.gettimeout() is None:  # (ssl.py wraps before it connects)
            os.set_blocking(borrowed.fileno(), True)
        c_obj = _ssl._SSLContext._wrap_socket(  # type: ignore[attr-defined]
            inner, borrowed, server_side, hostname, **kw
        )
        return cls(c_obj, context, sock, borrowed)

    def _enter(self) -> float | None:
        """Under ``_lock``, before a C call: the user's timeout, the descriptor non-blocking and
        the borrowed socket's timeout set for the mode."""
        user = self._user()
        fd = -1 if user is None else user.fileno()
        if fd == -1:
            raise OSError(errno.EBADF, "the SSL socket was closed")
        timeout: float | None = user.gettimeout()
        if timeout is None:
            # CPython makes the descriptor blocking at every settimeout(None) (ssl.py's
            # do_handshake's included), and a blocking recv() would hold the lock.
            if os.get_blocking(fd):
                os.set_blocking(fd, False)
            wanted = 0.0 if self._lock.shared else _SLICE
        else:
            wanted = 0.0 if self._lock.shared else min(timeout, _SLICE)
        if wanted != self._lock.timeout:
            self._borrowed.settimeout(wanted)  # (any timeout >= 0 keeps it non-blocking)
            self._lock.timeout = wanted
        return timeout

    def _call(
        self, name: str, method: Any, args: tuple[Any, ...], failed: BaseException | None = None
    ) -> Any:
        """``method(*args)`` (the C object's ``name``) under the lock, repeated until it
        completes or the user's deadline passes; ``failed``: what a first attempt raised."""
        lock = self._lock
        deadline = None
        waited = lock.timeout  # what a C call that timed out waited
        while True:
            if failed is None:
                if not lock.acquire(False):
                    # Another thread is inside a C call (which returns within a slice).
                    lock.shared = True
                    lock.acquire()
                try:
                    self._enter()
                    waited = lock.timeout  # (as _enter() set it for this attempt)
                    return method(*args)
                except (*_WANT, TimeoutError) as exc:
                    failed = exc
                finally:
                    lock.release()
            error, failed = failed, None
            user = self._user()
            timeout = None if user is None else user.gettimeout()
            if timeout == 0:
                raise error  # non-blocking: the C object's SSLWant*Error, as the stdlib
            now = time.monotonic()
            if deadline is None and timeout is not None:
                spent = waited if isinstance(error, TimeoutError) else 0.0
                deadline = now + timeout - spent
            if deadline is not None and now >= deadline:
                writing = isinstance(error, ssl.SSLWantWriteError)
                raise TimeoutError(_TIMED_OUT.get(name, _TIMED_OUT["write" if writing else "read"]))
            if isinstance(error, _WANT):  # shared: wait outside the lock, a slice at a time
                writing = isinstance(error, ssl.SSLWantWriteError)
                wait = _SLICE if deadline is None else min(_SLICE, deadline - now)
                if user is not None and user.fileno() != -1:
                    wait_fd(user.fileno(), not writing, writing, wait)
            # (TimeoutError: the C object waited a slice; go on.)

    # read and write: see _fast_path.

    def do_handshake(self) -> None:
        self._call("do_handshake", self._c.do_handshake, ())

    def shutdown(self) -> Any:
        """Unwrap: close_notify sent and the peer's received; the user's socket (the C object
        would return the borrowed one), back in the blocking mode its timeout says."""
        self._call("shutdown", self._c.shutdown, ())
        user = self._user()
        if user is not None and user.fileno() != -1:
            user.settimeout(user.gettimeout())
        return user

    def pending(self) -> int:
        with self._lock:
            n: int = self._c.pending()
        return n

    def verify_client_post_handshake(self) -> None:
        with self._lock:
            self._c.verify_client_post_handshake()

    @property
    def session(self) -> Any:
        with self._lock:
            return NativeTLS.session.fget(self)  # type: ignore[attr-defined]

    @session.setter
    def session(self, value: Any) -> None:
        NativeTLS.session.fset(self, value)  # type: ignore[attr-defined]


def _fast_path(
    tls: LockedTLS, name: str, method: Any, lock: Any, user_ref: weakref.ref[Any]
) -> Any:
    """``tls.read``/``tls.write``: the extension's ``LockedCall`` (ssl.py calls it for every
    read and write; in single mode it is one uncontended lock around one C call, the rest being
    ``LockedTLS._call``'s), or ``_call`` itself without the extension."""
    tls_ref = weakref.ref(tls)  # (tls holds what this returns)
    if LockedCall is not None:
        return LockedCall(name, method, lock, user_ref, tls_ref, _SLICE)

    def call(*args: Any) -> Any:
        return tls_ref()._call(name, method, args)  # type: ignore[union-attr]

    return call
