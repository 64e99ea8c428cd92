"""OpenSSL calls the stdlib ``ssl`` module does not offer, made through ``ctypes`` on the very
OpenSSL that ``_ssl`` is linked with (for the OpenSSL engine, ``unitls.openssl``).

- Client sessions without serialisation. ``SSLObject.session`` copies a session through DER
  both ways (0.2-0.3 ms per read or offer on an idle machine); instead a new-session
  callback on the client ``SSL_CTX`` hands every session OpenSSL makes (TLS 1.2: after the
  handshake; TLS 1.3: each ticket, as it arrives after the handshake) to the connection that
  received it, and ``SSL_set_session`` offers one to a new connection.
- Server ticket keys that rotate. OpenSSL's own key is random per ``SSL_CTX`` and never changes;
  the stdlib has no ticket-key callback. ``install_ticket_keys`` sets OpenSSL's
  ``SSL_CTX_set_tlsext_ticket_key_evp_cb`` to a callback using ``TicketKeys``: tickets in
  OpenSSL's format (AES-256-CBC, HMAC-SHA256), a new key every 6 hours, the previous key still
  accepted, as rustls' ``Ticketer`` does; every resumed TLS 1.3 handshake gets a new ticket.
- Turning a server's session cache off (``session_tickets=False`` means full handshakes only,
  but OpenSSL would still resume TLS 1.2 session ids from its cache).
- The key exchange group a connection used (``SSL_get_negotiated_group``), and a context's list
  of groups (``SSL_CTX_set1_groups_list``: the stdlib's ``set_ecdh_curve`` takes one).

Trust: a pointer read from a CPython object is used only after OpenSSL confirms it (the
``SSL *`` of an ``_ssl._SSLSocket`` must carry that very object as its app data, which
``_ssl`` sets; an ``SSL_CTX *`` must report the context's options). Where ``ctypes`` cannot
reach OpenSSL this way (another interpreter, a library without the symbols), ``AVAILABLE`` is
False and the engine does without: its clients do not resume and its servers keep OpenSSL's
own, fixed ticket key (``unitls.openssl`` says so in its docstring).

Callbacks run inside OpenSSL calls that ``_ssl`` makes with the GIL released; ``ctypes`` takes the
GIL for them. They never raise: any failure means "no ticket" or "no session", never a failed
handshake.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "AVAILABLE",
    "Session",
    "TicketKeys",
    "disable_session_cache",
    "install_client_sessions",
    "install_ticket_keys",
    "negotiated_group_nid",
    "set_groups",
    "set_session",
]

_P = ctypes.c_void_p
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_GET_NEGOTIATED_GROUP = 134  # SSL_get_negotiated_group(), a macro over SSL_ctrl
_SSL_CTRL_SET_GROUPS_LIST = 92  # SSL_CTX_set1_groups_list(), a macro over SSL_CTX_ctrl
_SSL_SESS_CACHE_OFF = 0x0
_SSL_SESS_CACHE_CLIENT = 0x1
_SSL_SESS_CACHE_NO_INTERNAL_STORE = 0x200
_TLS1_3_VERSION = 0x0304
_TLSEXT_NAMETYPE_HOST_NAME = 0
# OSSL_PARAM data types and "not set" marker (openssl/core.h).
_OSSL_PARAM_UTF8_STRING = 4
_OSSL_PARAM_OCTET_STRING = 5
_OSSL_PARAM_UNMODIFIED = ctypes.c_size_t(-1).value

#: How long a ticket key issues tickets; it is accepted for as long again after that.
TICKET_KEY_ROTATION = 6 * 60 * 60


class _Lib:
    """The OpenSSL functions used here, with their C signatures."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]

        def fn(name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(lib, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        c_int, c_long = ctypes.c_int, ctypes.c_long
        self.SSL_CTX_ctrl = fn("SSL_CTX_ctrl", c_long, _P, c_int, c_long, _P)
        self.SSL_CTX_get_options = fn("SSL_CTX_get_options", ctypes.c_uint64, _P)
        self.SSL_CTX_sess_set_new_cb = fn("SSL_CTX_sess_set_new_cb", None, _P, _P)
        self.SSL_CTX_set_tlsext_ticket_key_evp_cb = fn(
            "SSL_CTX_set_tlsext_ticket_key_evp_cb", c_int, _P, _P
        )
        self.SSL_get_SSL_CTX = fn("SSL_get_SSL_CTX", _P, _P)
        self.SSL_ctrl = fn("SSL_ctrl", c_long, _P, c_int, c_long, _P)
        self.SSL_get_ex_data = fn("SSL_get_ex_data", _P, _P, c_int)
        self.SSL_get_servername = fn("SSL_get_servername", ctypes.c_char_p, _P, c_int)
        self.SSL_version = fn("SSL_version", c_int, _P)
        self.SSL_set_session = fn("SSL_set_session", c_int, _P, _P)
        self.SSL_SESSION_free = fn("SSL_SESSION_free", None, _P)
        self.SSL_SESSION_dup = fn("SSL_SESSION_dup", _P, _P)
        self.SSL_SESSION_get_protocol_version = fn("SSL_SESSION_get_protocol_version", c_int, _P)
        self.EVP_aes_256_cbc = fn("EVP_aes_256_cbc", _P)
        self.EVP_EncryptInit_ex = fn("EVP_EncryptInit_ex", c_int, _P, _P, _P, _P, _P)
        self.EVP_DecryptInit_ex = fn("EVP_DecryptInit_ex", c_int, _P, _P, _P, _P, _P)
        self.EVP_MAC_CTX_set_params = fn("EVP_MAC_CTX_set_params", c_int, _P, _P)


def _load() -> _Lib | None:
    if sys.implementation.name != "cpython" or ssl.OPENSSL_VERSION_INFO < (3, 0):
        return None
    try:
        return _Lib()
    except (OSError, AttributeError):
        return None


_lib = _load()
_WORD = ctypes.sizeof(_P)
# CPython's PySSLSocket: PyObject_HEAD; PyObject *Socket; SSL *ssl; PySSLContext *ctx; ...
_SSL_SLOT = object.__basicsize__ + _WORD
_CTX_SLOT = _SSL_SLOT + _WORD
_SSLSocketType: Any = getattr(ssl._ssl, "_SSLSocket", None)  # type: ignore[attr-defined]


def _ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    """The ``SSL_CTX *`` CPython keeps right after the object header of an ``_SSLContext``,
    trusted only if OpenSSL reports the same options for it as the context does."""
    assert _lib is not None
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or _lib.SSL_CTX_get_options(ptr) != ctx.options & 0xFFFF_FFFF_FFFF_FFFF:
        return None
    return ptr


def _ssl_pointer(c_obj: Any) -> int | None:
    """The ``SSL *`` of an ``_ssl._SSLSocket``, trusted only if the slot after it holds the
    object's own context and OpenSSL reports the object itself as the ``SSL``'s app data."""
    assert _lib is not None
    if type(c_obj) is not _SSLSocketType:
        return None
    address = id(c_obj)
    if ctypes.c_void_p.from_address(address + _CTX_SLOT).value != id(c_obj.context):
        return None
    ptr = ctypes.c_void_p.from_address(address + _SSL_SLOT).value
    if not ptr or _lib.SSL_get_ex_data(ptr, 0) != address:
        return None
    return ptr


def _ssl_of(c_obj: Any) -> int | None:
    """``_ssl_pointer`` where this module can reach OpenSSL (``AVAILABLE``), else None."""
    return _ssl_pointer(c_obj) if AVAILABLE else None


def _ctx_of(ctx: ssl.SSLContext) -> int | None:
    """``_ctx_pointer`` where this module can reach OpenSSL (``AVAILABLE``), else None."""
    return _ctx_pointer(ctx) if AVAILABLE else None


def _check() -> bool:
    """Whether every pointer check passes on this interpreter (tried once on a real object)."""
    if _lib is None or _SSLSocketType is None or _SSLSocketType.__basicsize__ < _CTX_SLOT + _WORD:
        return False
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx_ptr = _ctx_pointer(ctx)
        obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="probe.invalid")
        ssl_ptr = _ssl_pointer(obj._sslobj)  # type: ignore[attr-defined]
        return bool(ctx_ptr and ssl_ptr and _lib.SSL_get_SSL_CTX(ssl_ptr) == ctx_ptr)
    except Exception:
        return False


#: Whether this module can reach OpenSSL (CPython with OpenSSL 3 and the expected layouts).
AVAILABLE: bool = _check()


def _c_obj_of(ssl_ptr: int) -> Any:
    """The ``_ssl._SSLSocket`` of an ``SSL *``, inside an OpenSSL callback on that connection
    (``_ssl`` stores the object as the ``SSL``'s app data; it is alive while OpenSSL works)."""
    assert _lib is not None
    address = _lib.SSL_get_ex_data(ssl_ptr, 0)
    if not address:
        return None
    c_obj = ctypes.cast(address, ctypes.py_object).value
    return c_obj if type(c_obj) is _SSLSocketType else None


def negotiated_group_nid(c_obj: Any) -> int | None:
    """OpenSSL's NID of the key exchange group of a connection whose handshake is complete
    (``SSL_get_negotiated_group``; Python's ``ssl`` has no call for it before 3.15)."""
    ptr = _ssl_of(c_obj)
    if ptr is None:
        return None
    assert _lib is not None
    nid = _lib.SSL_ctrl(ptr, _SSL_CTRL_GET_NEGOTIATED_GROUP, 0, None)
    return int(nid) if nid > 0 else None


def sni_host_name(c_obj: Any) -> str | None:
    """Server side: the host name the client sent in its SNI extension (``SSL_get_servername``;
    Python's ``ssl`` only shows it to an ``sni_callback``); None without one."""
    ptr = _ssl_of(c_obj)
    if ptr is None:
        return None
    assert _lib is not None
    name = _lib.SSL_get_servername(ptr, _TLSEXT_NAMETYPE_HOST_NAME)
    return name.decode("ascii", "replace") if name else None


# -- client sessions ---------------------------------------------------------------------------


class Session:
    """One OpenSSL ``SSL_SESSION`` (a reference owned by this object, freed with it).

    OpenSSL marks the session a connection holds "not resumable" when that connection is freed
    without a close_notify (an old TLS 1.0 rule; TLS 1.1 dropped it, rustls and Go do not
    follow it). So a ``Session`` is never a connection's own object: it is copied
    (``SSL_SESSION_dup``, no serialisation) when received and again when offered.
    """

    __slots__ = ("_ptr", "tls13")

    def __init__(self, ptr: int) -> None:
        assert _lib is not None
        self._ptr = ptr
        self.tls13 = _lib.SSL_SESSION_get_protocol_version(ptr) == _TLS1_3_VERSION

    def __del__(self) -> None:
        ptr, self._ptr = self._ptr, 0
        if ptr and _lib is not None:
            _lib.SSL_SESSION_free(ptr)


#: The attribute of an ``SSLObject``/``SSLSocket`` naming the function that takes its sessions.
SESSION_SINK = "_unitls_session_sink"


def _on_new_session(ssl_ptr: int, session_ptr: int) -> int:
    # Always 0: OpenSSL then drops the reference it took for us (the sink gets a copy).
    try:
        c_obj = _c_obj_of(ssl_ptr)
        sink = getattr(c_obj.owner, SESSION_SINK, None) if c_obj is not None else None
        if sink is not None and _lib is not None:
            copy = _lib.SSL_SESSION_dup(session_ptr)
            if copy:
                sink(Session(copy))
    except BaseException:
        pass  # no session kept: the next connection makes a full handshake
    return 0


_NEW_SESSION_CB = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P)(_on_new_session)


def install_client_sessions(ctx: ssl.SSLContext, hand_over: bool = True) -> bool:
    """Make OpenSSL hand each new session of ``ctx``'s connections to the sink its
    ``SSLObject``/``SSLSocket`` names (``SESSION_SINK``); OpenSSL's own client cache stays off.

    ``hand_over=False``: the cache mode only, no callback (the ``ssl`` bridge, whose sockets
    have no sink). The callback runs Python inside ``SSL_read`` when tickets arrive, waiting for
    the GIL mid-read; a bridge ``SSLSocket`` may have another thread in ``SSL_write`` on the
    same connection meanwhile (websockets' sync client does), which OpenSSL tolerates only while
    the read's processing of post-handshake messages is short."""
    ptr = _ctx_of(ctx)
    if ptr is None:
        return False
    assert _lib is not None
    mode = _SSL_SESS_CACHE_CLIENT | _SSL_SESS_CACHE_NO_INTERNAL_STORE
    _lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, mode, None)
    if hand_over:
        _lib.SSL_CTX_sess_set_new_cb(ptr, ctypes.cast(_NEW_SESSION_CB, _P))
    return True


def set_session(c_obj: Any, session: Session) -> bool:
    """Offer ``session`` on the not yet started connection ``c_obj`` (an ``_ssl._SSLSocket``)."""
    ptr = _ssl_of(c_obj)
    if ptr is None:
        return False
    assert _lib is not None
    if session.tls13:
        # A ticket is offered once and then dropped: the connection may have it.
        return bool(_lib.SSL_set_session(ptr, session._ptr) == 1)
    copy = _lib.SSL_SESSION_dup(session._ptr)  # see Session: reused, so never shared
    if not copy:
        return False
    try:
        return bool(_lib.SSL_set_session(ptr, copy) == 1)
    finally:
        _lib.SSL_SESSION_free(copy)  # SSL_set_session took its own reference


def disable_session_cache(ctx: ssl.SSLContext) -> bool:
    """Turn off a server context's session cache (no session-id resumption)."""
    ptr = _ctx_of(ctx)
    if ptr is None:
        return False
    assert _lib is not None
    _lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
    return True


def set_groups(ctx: ssl.SSLContext, names: str) -> bool | None:
    """``SSL_CTX_set1_groups_list(ctx, names)`` (names separated by ``:``): whether OpenSSL
    took the list; None where this module cannot reach OpenSSL."""
    ptr = _ctx_of(ctx)
    if ptr is None:
        return None
    assert _lib is not None
    raw = ctypes.create_string_buffer(names.encode("ascii"))
    return bool(_lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.addressof(raw)) == 1)


# -- server ticket keys ------------------------------------------------------------------------


class _OsslParam(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_char_p),
        ("data_type", ctypes.c_uint),
        ("data", _P),
        ("data_size", ctypes.c_size_t),
        ("return_size", ctypes.c_size_t),
    ]


class _TicketKey:
    """A key name, an AES-256 key and an HMAC-SHA256 key (with its ``OSSL_PARAM`` list)."""

    __slots__ = ("aes", "digest", "hmac", "name", "params")

    def __init__(self) -> None:
        self.name = os.urandom(16)
        self.aes = ctypes.create_string_buffer(os.urandom(32), 32)
        self.hmac = ctypes.create_string_buffer(os.urandom(32), 32)
        self.digest = ctypes.create_string_buffer(b"SHA256")
        self.params = (_OsslParam * 3)(
            _OsslParam(
                b"key",
                _OSSL_PARAM_OCTET_STRING,
                ctypes.addressof(self.hmac),
                32,
                _OSSL_PARAM_UNMODIFIED,
            ),
            _OsslParam(
                b"digest",
                _OSSL_PARAM_UTF8_STRING,
                ctypes.addressof(self.digest),
                6,
                _OSSL_PARAM_UNMODIFIED,
            ),
            _OsslParam(None, 0, None, 0, 0),
        )


class TicketKeys:
    """The ticket keys of one server context: a new key every ``TICKET_KEY_ROTATION``
    seconds, the previous one still accepted."""

    __slots__ = ("_current", "_lock", "_next", "_previous", "_rotation")

    def __init__(self, rotation: float = TICKET_KEY_ROTATION) -> None:
        self._rotation = rotation
        self._lock = threading.Lock()
        self._current = _TicketKey()
        self._previous: _TicketKey | None = None
        self._next = time.monotonic() + rotation

    def rotate(self) -> None:
        """Start a new key now (the current one becomes the previous, the previous is gone)."""
        with self._lock:
            self._previous, self._current = self._current, _TicketKey()
            self._next = time.monotonic() + self._rotation

    def for_encryption(self) -> _TicketKey:
        if time.monotonic() >= self._next:
            self.rotate()
        return self._current

    def for_decryption(self, name: bytes) -> tuple[_TicketKey | None, bool]:
        """(the key named ``name`` or None, whether it is the current one)."""
        current, previous = self._current, self._previous
        if name == current.name:
            return current, True
        if previous is not None and name == previous.name:
            return previous, False
        return None, False


#: The attribute of an ``ssl.SSLContext`` holding its ``TicketKeys``.
TICKET_KEYS = "_unitls_ticket_keys"
_aes_256_cbc = _lib.EVP_aes_256_cbc() if _lib is not None else None


def _on_ticket_key(
    ssl_ptr: int, key_name: int, iv: int, cipher_ctx: int, mac_ctx: int, encrypt: int
) -> int:
    # Return values (SSL_CTX_set_tlsext_ticket_key_evp_cb(3)): 1 done, 2 (decrypting) accepted
    # but renew the ticket, 0 no ticket / ticket not accepted (a full handshake), <0 error.
    # Decrypting answers 2 for a TLS 1.3 ticket: with a callback OpenSSL sends a new ticket
    # after a resumed handshake only for a ticket to renew (with its own keys it sends one),
    # and clients use each ticket once, so they need a new one every time. A TLS 1.2 ticket is
    # renewed only when its key is the previous one (a renewed ticket changes the client's
    # session, which ``ssl`` users compare).
    try:
        assert _lib is not None
        # The context the connection runs on now (the SNI callback may have switched it; the
        # contexts of one server share their keys).
        c_obj = _c_obj_of(ssl_ptr)
        keys: TicketKeys | None = getattr(getattr(c_obj, "context", None), TICKET_KEYS, None)
        if keys is None:
            return 0
        if encrypt:
            key = keys.for_encryption()
            ctypes.memmove(iv, os.urandom(16), 16)
            ctypes.memmove(key_name, key.name, 16)
            init: Callable[..., int] = _lib.EVP_EncryptInit_ex
            current = True
        else:
            found, current = keys.for_decryption(ctypes.string_at(key_name, 16))
            if found is None:
                return 0
            key = found
            init = _lib.EVP_DecryptInit_ex
            if _lib.SSL_version(ssl_ptr) == _TLS1_3_VERSION:
                current = False  # renew (see above)
        if init(cipher_ctx, _aes_256_cbc, None, ctypes.addressof(key.aes), iv) != 1:
            return 0
        if _lib.EVP_MAC_CTX_set_params(mac_ctx, key.params) != 1:
            return 0
        return 1 if current else 2
    except BaseException:
        return 0


_TICKET_KEY_CB = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P, _P, _P, _P, ctypes.c_int)(_on_ticket_key)


def install_ticket_keys(ctx: ssl.SSLContext, keys: TicketKeys) -> bool:
    """Encrypt ``ctx``'s session tickets with ``keys`` (share one ``TicketKeys`` between the
    contexts of one server: the SNI callback may switch a connection between them)."""
    ptr = _ctx_of(ctx)
    if ptr is None:
        return False
    assert _lib is not None
    setattr(ctx, TICKET_KEYS, keys)
    return bool(
        _lib.SSL_CTX_set_tlsext_ticket_key_evp_cb(ptr, ctypes.cast(_TICKET_KEY_CB, _P)) == 1
    )
