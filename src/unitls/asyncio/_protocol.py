"""``TLSProtocol`` (socket side) and ``TLSTransport`` (application side): TLS over asyncio events.

Theory of operation
-------------------
asyncio brings events, so this shell does not wait or retry itself: it hands what each event
brings to the driver's ``Core`` (``unitls._drive``: the engine, its *backlog* of refused
ciphertext and the transport's *eof*) and then does whatever the engine can do now.

* ``buffer_updated``/``eof_received``: ``Core.feed``/``feed_eof``. A refused chunk waits in the
  backlog and the socket stops reading (``_update_raw_reading``) until plaintext has been read.
  While the connection is open, the application reads (not paused, not a BufferedProtocol) and
  nothing is backlogged, ``buffer_updated`` gives the chunk to the engine's
  ``process_incoming_into`` instead, which makes the first read in the same call
  (``SupportsIncomingInto``: rustls then decrypts the chunk's records straight into the
  plaintext view); ``_do_read`` goes on from the bytes it produced.
* Then, while handshaking, ``Core.handshake_step``; once open, ``_do_read`` hands the engine's
  plaintext to the application (``Core.read_available`` refills from the backlog) until the engine
  wants more ciphertext, the application pauses reading, or the peer's close_notify / a ragged
  EOF ends reading.
* After every step, ``_flush`` writes the engine's ciphertext to the socket transport (which
  buffers: asyncio transports never refuse a write; ``drain()`` sees their buffer).

The connection's state (``_State``) only moves forward, through ``_set_state``:

    HANDSHAKE ──► OPEN ──► CLOSING ──► CLOSED
        └──────────────────►┘  └─────────►┘
    (and any state ──► CLOSED when the socket transport is lost)

HANDSHAKE: the application protocol has not been told of the connection (its ``connection_made``
runs on entering OPEN); a failure or ``handshake_timeout`` aborts and fails the waiter. OPEN: data
flows both ways; the peer's close_notify calls ``eof_received`` (a true result keeps writing
possible). CLOSING: our close_notify is out (or the connection failed); incoming plaintext is
discarded until the peer's close_notify, its EOF or ``shutdown_timeout``. CLOSED: the socket
transport is gone; ``connection_lost`` has been scheduled for the application.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import threading
import warnings
from asyncio import selector_events
from collections.abc import Callable, Iterable
from typing import Any, Final

from .._config import TLSServerConfiguration
from .._drive import Core
from .._errors import (
    HandshakeClosedError,
    ProtocolError,
    RaggedEOF,
    TLSConnectionError,
    TLSError,
    TLSTimeoutError,
    WantReadError,
    WantWriteError,
)
from .._extensions import (
    SupportsIncomingInto,
    SupportsIncomingViews,
    SupportsSessionInfo,
    implements,
)
from .._protocols import ClientContext, ServerContext, TLSBuffer
from .._socket import server_buffer

__all__ = ["TLSProtocol", "TLSTransport"]

_log = logging.getLogger("unitls.asyncio")

# Ciphertext taken from the socket per recv_into: large chunks mean fewer engine calls.
_RECV_SIZE: Final = 256 * 1024
# Plaintext collected from the engine before one data_received call (coalesces 16 KiB records).
_PLAIN_SIZE: Final = 256 * 1024

_LAZY_KEYS: Final = frozenset(
    {"peercert", "cipher", "tls_version", "alpn_protocol", "negotiated_group", "session_resumed"}
)


class _State(enum.IntEnum):
    """Where a connection is (see the module docstring); it only moves forward."""

    HANDSHAKE = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


_ALLOWED: Final = {
    _State.HANDSHAKE: frozenset({_State.OPEN, _State.CLOSING, _State.CLOSED}),
    _State.OPEN: frozenset({_State.CLOSING, _State.CLOSED}),
    _State.CLOSING: frozenset({_State.CLOSED}),
    _State.CLOSED: frozenset(),
}


class _Scratch(threading.local):
    """Per-thread scratch buffers shared by all connections of that thread's event loop.

    Both are only used synchronously (filled, then copied out before any other connection can
    run), so 300 connections cost 512 KiB, not 150 MiB. A proactor loop keeps a receive pending
    on the buffer across callbacks, so only selector loops share the receive buffer.
    """

    def __init__(self) -> None:
        self.recv = memoryview(bytearray(_RECV_SIZE))
        self.plain = memoryview(bytearray(_PLAIN_SIZE))


_scratch = _Scratch()


def _is_server_context(context: ClientContext | ServerContext) -> bool:
    # The two Protocols have the same members; the configuration types tell them apart.
    return isinstance(context.configuration, TLSServerConfiguration)


def _feed_into(buffer: TLSBuffer) -> Callable[[Any, Any], int] | None:
    if implements(buffer, SupportsIncomingInto):
        return buffer.process_incoming_into  # type: ignore[attr-defined,no-any-return]
    return None


def _wrap_os_error(exc: BaseException) -> BaseException:
    if isinstance(exc, TLSError) or not isinstance(exc, OSError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    wrapped = TLSConnectionError(exc.errno or errno.EIO, f"the TLS connection was lost: {reason}")
    wrapped.__cause__ = exc
    return wrapped


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")


class TLSTransport(asyncio.Transport):
    """The transport an application protocol sees: plaintext in, plaintext out."""

    __slots__ = ("_closed", "_tls")

    def __init__(self, tls: TLSProtocol) -> None:
        super().__init__()
        self._tls = tls
        self._closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tls._get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._tls._set_app_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._tls._app_protocol

    def is_closing(self) -> bool:
        return self._closed or self._tls._state >= _State.CLOSING

    def close(self) -> None:
        """Send close_notify, then close once the peer answered (or ``shutdown_timeout``)."""
        self._closed = True
        self._tls._start_close()

    def abort(self) -> None:
        """Close the socket at once: no close_notify, buffered data is lost."""
        self._closed = True
        self._tls._abort()

    def is_reading(self) -> bool:
        return not self._tls._app_reading_paused and self._tls._state < _State.CLOSING

    def pause_reading(self) -> None:
        self._tls._pause_app_reading()

    def resume_reading(self) -> None:
        self._tls._resume_app_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._tls._raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._tls._write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._tls._raw
        if raw is None:
            return (0, 0)
        return raw.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if data:
            self._tls._write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        # One engine write: small pieces share a record instead of one record each.
        data = b"".join(list_of_data)
        if data:
            self._tls._write(data)

    def write_eof(self) -> None:
        """Send close_notify and half-close TCP; reading goes on (TLS 1.3 half-close)."""
        self._tls._write_eof()

    def can_write_eof(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<TLSTransport {self._tls!r}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # Only an open connection was ever handed to the application.
        if not self._closed and self._tls._state == _State.OPEN:
            self._closed = True
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)


class TLSProtocol(asyncio.BufferedProtocol):
    """The socket-side protocol: runs a ``TLSBuffer`` between a socket transport and an app.

    Usually made for you by the functions of this package; exposed for ``loop.create_server``-
    style code that builds its own factories. See the module docstring for how it works.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        buffer: TLSBuffer,
        context: ClientContext | ServerContext,
        app_protocol: asyncio.BaseProtocol,
        *,
        server_hostname: str | None = None,
        handshake_timeout: float | None = 60.0,
        shutdown_timeout: float | None = 30.0,
        allow_ragged_eof: bool = False,
        waiter: asyncio.Future[None] | None = None,
        call_connection_made: bool = True,
    ) -> None:
        _check_timeout("handshake_timeout", handshake_timeout)
        _check_timeout("shutdown_timeout", shutdown_timeout)
        self._loop = loop
        self._core = Core(buffer)
        self._context = context
        self._server_hostname = server_hostname
        self._handshake_timeout = handshake_timeout
        self._shutdown_timeout = shutdown_timeout
        self._allow_ragged_eof = allow_ragged_eof
        self._waiter = waiter
        self._call_connection_made = call_connection_made
        self._raw: asyncio.Transport | None = None
        self._app_transport = TLSTransport(self)
        self._app_protocol: asyncio.BaseProtocol = app_protocol
        self._app_buffered = isinstance(app_protocol, asyncio.BufferedProtocol)
        # start_tls: the application is already connected (to the plain transport).
        self._app_connected = not call_connection_made
        self._state = _State.HANDSHAKE
        self._exc: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._app_reading_paused = False
        self._raw_reading_paused = False
        self._raw_writing_paused = False
        self._ragged = False
        self._initial = b""  # STARTTLS: handshake bytes the plain reader had already taken
        self._writes_after_close = 0
        self._plain_view = _scratch.plain
        # Engines that copy process_incoming's argument get a view of the receive buffer.
        self._zero_copy = implements(buffer, SupportsIncomingViews)
        self._feed_into = _feed_into(buffer)
        if isinstance(loop, selector_events.BaseSelectorEventLoop):
            self._recv_view = _scratch.recv
        else:
            self._recv_view = memoryview(bytearray(_RECV_SIZE))
        self._extra: dict[str, Any] = {
            "tls_buffer": buffer,
            "tls_context": context,
            "server_hostname": server_hostname,
        }
        self._by_address = False  # set by create_server (see connection_made)

    @property
    def _buffer(self) -> TLSBuffer:
        return self._core.buffer

    def _set_buffer(self, buffer: TLSBuffer) -> None:
        self._core = Core(buffer)
        self._zero_copy = implements(buffer, SupportsIncomingViews)
        self._feed_into = _feed_into(buffer)
        self._extra["tls_buffer"] = buffer

    def _set_state(self, new: _State) -> None:
        """Move to ``new``; staying is a no-op, going back is a bug."""
        old = self._state
        if new != old:
            if new not in _ALLOWED[old]:
                raise RuntimeError(f"unitls.asyncio: illegal transition {old.name} -> {new.name}")
            self._state = new

    def __repr__(self) -> str:
        return f"<TLSProtocol {self._state.name.lower()} {self._buffer!r}>"

    # -- extra info and app protocol ---------------------------------------------------------

    def _get_extra_info(self, name: str, default: Any) -> Any:
        if name in self._extra:
            return self._extra[name]
        if name in _LAZY_KEYS:
            if self._state == _State.HANDSHAKE:
                return default
            # Computed on demand: handshakes per second should not pay for unused values.
            buffer = self._buffer
            if name == "peercert":
                value: Any = buffer.getpeercert()
            elif name == "cipher":
                value = buffer.cipher()
            elif name == "tls_version":
                value = buffer.negotiated_tls_version
            elif name == "negotiated_group":
                value = buffer.negotiated_group if isinstance(buffer, SupportsSessionInfo) else None
            elif name == "session_resumed":
                value = bool(getattr(buffer, "session_resumed", False))
            else:
                value = buffer.negotiated_protocol()
            self._extra[name] = value
            return value
        if name == "ragged_eof":
            return self._ragged
        if self._raw is not None:
            return self._raw.get_extra_info(name, default)
        return default

    def _set_app_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app_protocol = protocol
        self._app_buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def _write_buffer_size(self) -> int:
        raw = self._raw
        size = self._buffer.outgoing_bytes_buffered()
        if raw is not None:
            size += raw.get_write_buffer_size()
        return size

    # -- the socket side (asyncio.BufferedProtocol) ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        if self._by_address:
            # A server with several chains: the address the client reached picks the default
            # chain for clients without SNI (the factory could not know it yet).
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self._set_buffer(server_buffer(self._context, sock))  # type: ignore[arg-type]
        if self._handshake_timeout is not None:
            self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_timed_out)
        self._do_handshake()
        if self._initial and self._state == _State.HANDSHAKE:
            data, self._initial = self._initial, b""
            self._feed(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._recv_view

    def buffer_updated(self, nbytes: int) -> None:
        if self._state == _State.CLOSED:
            return
        view = self._recv_view[:nbytes]
        if (
            self._feed_into is not None
            and self._state == _State.OPEN
            and not (self._app_reading_paused or self._app_buffered)
            and not (self._core.backlogged or self._core.peer_closed)
        ):
            self._feed_and_read(self._feed_into, view if self._zero_copy else bytes(view))
        else:
            self._feed(view if self._zero_copy else bytes(view))

    def eof_received(self) -> bool:
        if self._state != _State.CLOSED:
            try:
                self._core.feed_eof()
            except TLSError as exc:
                self._fatal(exc)
            else:
                self._advance()
        # We close the socket ourselves once TLS has had its say (and the app, if it keeps the
        # write side open after the peer's close_notify).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self._state
        self._set_state(_State.CLOSED)
        self._cancel_timer()
        final = self._exc
        if final is None and exc is not None:
            final = _wrap_os_error(exc)
        if previous == _State.HANDSHAKE:
            if final is None:
                final = HandshakeClosedError(
                    "the connection closed before the TLS handshake completed"
                )
            self._set_waiter(final)
        if self._app_connected:
            self._app_connected = False
            app_exc = final if isinstance(final, Exception) else None
            self._loop.call_soon(self._app_protocol.connection_lost, app_exc)
        self._raw = None

    def pause_writing(self) -> None:
        self._raw_writing_paused = True
        if self._app_connected:
            self._call_app(self._app_protocol.pause_writing)

    def resume_writing(self) -> None:
        self._raw_writing_paused = False
        if self._app_connected:
            self._call_app(self._app_protocol.resume_writing)

    # -- the TLS machinery ---------------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            if not self._core.feed(data):
                self._update_raw_reading()  # the engine is full: stop the socket for now
        except TLSError as exc:
            self._fatal(exc)
            return
        self._advance()

    def _feed_and_read(
        self, feed_into: Callable[[Any, Any], int], data: bytes | memoryview
    ) -> None:
        """``_feed`` then ``_do_read`` with the engine's first read made in the same call (see
        ``SupportsIncomingInto``): while the application reads, rustls decrypts a received
        chunk's records into the plaintext view instead of queueing most of its ciphertext."""
        core = self._core
        try:
            with core.lock:
                ready = feed_into(data, self._plain_view)
        except WantReadError:
            self._feed(data)  # the engine is full: the backlog takes it, as in _feed
            return
        except TLSError as exc:
            self._fatal(exc)
            return
        self._do_read(ready)

    def _advance(self) -> None:
        if self._state == _State.HANDSHAKE:
            self._do_handshake()
        else:
            self._do_read()

    def _do_handshake(self) -> None:
        try:
            self._core.handshake_step()
        except WantReadError:
            self._flush()
            return
        except Exception as exc:
            self._fatal(exc)
            return
        self._flush()
        self._cancel_timer()
        self._set_state(_State.OPEN)
        if not self._app_connected:
            self._app_connected = True
            try:
                self._app_protocol.connection_made(self._app_transport)
            except Exception as exc:
                self._fatal(exc, "connection_made() failed")
                return
            if self._raw_writing_paused:
                self._call_app(self._app_protocol.pause_writing)
        self._set_waiter(None)
        # The last flight may carry application data (and session tickets) already.
        if self._state == _State.OPEN:
            self._do_read()

    def _do_read(self, ready: int = 0) -> None:
        """Hand plaintext to the application; ``ready``: bytes already in the plaintext view
        (``_feed_and_read``, which only runs while the application reads)."""
        if self._state in (_State.HANDSHAKE, _State.CLOSED) or self._core.peer_closed:
            return
        discard = self._state == _State.CLOSING
        if not self._app_reading_paused or discard:
            self._read_plaintext(discard, ready)
        if self._state < _State.CLOSED:
            self._update_raw_reading()  # the backlog may have gone into the engine
            self._flush()  # e.g. a KeyUpdate answer or a session ticket acknowledgement

    def _read_plaintext(self, discard: bool, ready: int = 0) -> None:
        """Hand the engine's plaintext to the app until the engine wants more ciphertext, the app
        pauses, or reading ends (close_notify, ragged EOF, failure). ``ready``: bytes already
        read into ``_plain_view``, for a reading application that is not a BufferedProtocol.

        Reads until the engine raises ``WantReadError`` (the only way to learn of close_notify
        and ragged EOFs, so it is provoked once per received chunk, not once per record).
        """
        core = self._core
        while True:
            # The app may have closed from data_received: deliver nothing more after that.
            discard = discard or self._state != _State.OPEN
            app = self._app_protocol
            if self._app_buffered and not discard:
                assert isinstance(app, asyncio.BufferedProtocol)
                try:
                    view = memoryview(app.get_buffer(_PLAIN_SIZE)).cast("B")
                except Exception as exc:
                    self._fatal(exc, "get_buffer() failed")
                    return
                if not view.nbytes:
                    self._fatal(RuntimeError("get_buffer() returned an empty buffer"))
                    return
            else:
                view = self._plain_view
            size = view.nbytes
            off, ready = ready, 0
            end: BaseException | None = None
            eof = False
            # ``core.read_available`` inlined: this loop runs once per TLS record.
            read, lock = core.buffer.read, core.lock
            try:
                while off < size:
                    try:
                        with lock:
                            n = read(size - off, view[off:] if off else view)
                    except WantReadError:
                        if not core.starved(False):
                            raise
                        continue
                    if not n:
                        eof = True
                        break
                    off += n  # type: ignore[operator]  # an int: read into a buffer
            except WantReadError:
                pass
            except RaggedEOF as exc:
                end = exc
            except Exception as exc:
                self._fatal(exc)
                return
            if off and not discard:
                try:
                    if self._app_buffered:
                        app.buffer_updated(off)  # type: ignore[attr-defined]
                    else:
                        app.data_received(bytes(view[:off]))  # type: ignore[attr-defined]
                except Exception as exc:
                    self._fatal(exc, "data_received() failed")
                    return
            if eof:
                self._on_peer_close()
                return
            if end is not None:
                self._on_ragged_eof(end)
                return
            if off < size:
                return  # the engine has nothing more for now
            if self._state == _State.CLOSED or (
                self._app_reading_paused and self._state == _State.OPEN
            ):
                return

    def _on_peer_close(self) -> None:
        self._core.peer_closed = True
        raw = self._raw
        if self._state == _State.CLOSING:
            # We had said close_notify already: both sides are done.
            if raw is not None:
                raw.close()
            return
        keep_open = False
        try:
            keep_open = bool(self._app_protocol.eof_received())  # type: ignore[attr-defined]
        except Exception as exc:
            self._fatal(exc, "eof_received() failed")
            return
        if self._core.close_sent and self._state == _State.OPEN:
            # write_eof() earlier, the peer's close_notify now: nothing can flow either way.
            self._set_state(_State.CLOSING)
            if raw is not None:
                raw.close()
        elif not keep_open:
            self._start_close()

    def _on_ragged_eof(self, exc: BaseException) -> None:
        self._ragged = True
        if self._state == _State.CLOSING or self._allow_ragged_eof:
            self._on_peer_close()
            return
        self._fatal(exc)

    def _flush(self) -> None:
        data = self._core.take_outgoing()
        if data:
            raw = self._raw
            if raw is not None and not raw.is_closing():
                raw.write(data)

    def _update_raw_reading(self) -> None:
        raw = self._raw
        if raw is None or self._state == _State.CLOSED:
            return
        want = not self._core.backlogged and (
            not self._app_reading_paused or self._state != _State.OPEN
        )
        if want and self._raw_reading_paused:
            self._raw_reading_paused = False
            raw.resume_reading()
        elif not want and not self._raw_reading_paused:
            self._raw_reading_paused = True
            raw.pause_reading()

    # -- application requests -------------------------------------------------------------------

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _State.OPEN or self._core.close_sent:
            # Like asyncio's transports: writes after close are dropped, with a warning.
            self._writes_after_close += 1
            if self._writes_after_close == 5:
                _log.warning("TLS transport: write() called after close() or write_eof()")
            return
        core = self._core
        buffer = core.buffer
        try:
            with core.lock:
                n = buffer.write(data)
                if n < len(data):
                    # Engines may write short (the PEP allows it); loop over the rest.
                    view = memoryview(data).cast("B")[n:]
                    while view:
                        n = buffer.write(view)
                        if n <= 0:
                            raise ProtocolError("the TLS engine accepted no data on write()")
                        view = view[n:]
        except (WantReadError, WantWriteError) as exc:
            # Only a renegotiation could cause this after the handshake; PEP 748 has none.
            self._fatal(ProtocolError(f"the TLS engine could not take written data: {exc}"))
            return
        except Exception as exc:
            self._fatal(exc)
            return
        self._flush()

    def _write_eof(self) -> None:
        if self._state != _State.OPEN or self._core.close_sent:
            return
        try:
            self._core.queue_close_notify()
        except TLSError as exc:
            self._fatal(exc)
            return
        self._flush()
        raw = self._raw
        if self._core.peer_closed:
            if raw is not None:
                raw.close()
        elif raw is not None and raw.can_write_eof():
            raw.write_eof()

    def _start_close(self) -> None:
        state = self._state
        if state >= _State.CLOSING:
            return
        raw = self._raw
        self._set_state(_State.CLOSING)
        if state == _State.HANDSHAKE:
            if raw is not None:
                raw.abort()
            return
        core = self._core
        if not core.close_sent:
            try:
                core.queue_close_notify()
                self._flush()
            except TLSError as exc:
                _log.debug("sending close_notify failed: %s", exc)
        if raw is None:
            return
        if core.peer_closed or core.eof_received:
            raw.close()
            return
        if raw.can_write_eof():
            raw.write_eof()
        if self._shutdown_timeout is not None:
            self._timer = self._loop.call_later(self._shutdown_timeout, self._shutdown_timed_out)
        # Keep reading (and discarding) until the peer's close_notify or EOF. Scheduled, not
        # called: close() may come from inside data_received, in the middle of a read loop.
        self._update_raw_reading()
        self._loop.call_soon(self._do_read)

    def _abort(self) -> None:
        if self._state == _State.CLOSED:
            return
        self._set_state(_State.CLOSING)
        raw = self._raw
        if raw is not None:
            raw.abort()

    def _pause_app_reading(self) -> None:
        self._app_reading_paused = True
        self._update_raw_reading()

    def _resume_app_reading(self) -> None:
        if not self._app_reading_paused:
            return
        self._app_reading_paused = False
        self._update_raw_reading()
        if self._state == _State.OPEN:
            # Plaintext may be waiting in the engine; deliver it outside the caller's frame.
            self._loop.call_soon(self._do_read)

    # -- failures and timers -------------------------------------------------------------------

    def _fatal(self, exc: BaseException, what: str | None = None) -> None:
        if self._state == _State.CLOSED:
            return
        if what is not None:
            self._loop.call_exception_handler(
                {
                    "message": f"unitls.asyncio: {what}",
                    "exception": exc,
                    "transport": self._app_transport,
                    "protocol": self._app_protocol,
                }
            )
        if self._exc is None:
            self._exc = exc
        handshaking = self._state == _State.HANDSHAKE
        self._set_state(_State.CLOSING)
        self._cancel_timer()
        if handshaking:
            self._set_waiter(exc)
            if isinstance(exc, TLSError) and self._call_connection_made:
                _log.debug("TLS handshake failed: %s", exc)
        raw = self._raw
        if raw is None:
            return
        # Deliver the engine's alert when the socket buffer is empty; otherwise don't wait.
        if not raw.is_closing() and raw.get_write_buffer_size() == 0:
            try:
                self._flush()
            except Exception:
                pass
            raw.close()
        else:
            raw.abort()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state == _State.HANDSHAKE:
            self._fatal_abort(
                TLSTimeoutError(
                    f"the TLS handshake did not complete within {self._handshake_timeout} "
                    "seconds (handshake_timeout)"
                )
            )

    def _shutdown_timed_out(self) -> None:
        self._timer = None
        if self._state == _State.CLOSING:
            self._fatal_abort(
                TLSTimeoutError(
                    f"the peer did not answer close_notify within {self._shutdown_timeout} "
                    "seconds (shutdown_timeout)"
                )
            )

    def _fatal_abort(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        if self._state == _State.HANDSHAKE:
            self._set_waiter(exc)
        self._set_state(_State.CLOSING)
        raw = self._raw
        if raw is not None:
            raw.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _set_waiter(self, exc: BaseException | None) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if waiter.done():
            return
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)

    def _call_app(self, method: Callable[[], object]) -> None:
        try:
            method()
        except Exception as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"unitls.asyncio: protocol.{method.__name__}() failed",
                    "exception": exc,
                    "transport": self._app_transport,
                    "protocol": self._app_protocol,
                }
            )
