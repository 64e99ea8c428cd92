"""Native asyncio TLS on any engine, built on the PEP's ``TLSBuffer`` (never on ``ssl``).

Streams:

    ctx = unitls.get_implementation("rustls").client_context(config)
    reader, writer = await unitls.asyncio.open_connection("example.org", 443, context=ctx)

    server = await unitls.asyncio.start_server(handle, "127.0.0.1", 8443, context=server_ctx)

Protocols: ``create_connection`` / ``create_server`` take an ordinary ``asyncio.Protocol`` (or
``BufferedProtocol``) factory and hand it a ``TLSTransport``. STARTTLS: ``start_tls`` (a transport
or a ``StreamWriter``) and ``upgrade`` (a reader/writer pair), on the client and the server side.

Semantics (the choices this module makes):

* The application protocol's ``connection_made`` runs only after the handshake succeeded. A failed
  handshake closes the socket and raises the engine's ``TLSError`` subclass from
  ``open_connection`` / ``create_connection`` / ``start_tls`` (server side: the connection is
  dropped and logged at debug level). ``handshake_timeout`` seconds without completion abort the
  socket with ``TLSTimeoutError``.
* ``close()`` sends close_notify, half-closes TCP, then waits up to ``shutdown_timeout`` seconds for
  the peer's close_notify (or EOF) before closing the socket; on timeout the socket is aborted and
  the protocol's ``connection_lost`` gets a ``TLSTimeoutError``. ``abort()`` closes at once.
* ``write_eof()`` sends close_notify and half-closes TCP while reading goes on (TLS 1.3 half-close;
  a TLS 1.2 peer usually answers with its own close_notify, ending the read side too).
* The peer's close_notify calls ``eof_received()``; as for plain TCP, a true return value keeps the
  connection open for writing (streams do this: ``reader.read()`` returns ``b""`` and the writer
  still works until ``close()``).
* A ragged EOF (the transport ended without close_notify) is an error by default: the protocol's
  ``connection_lost`` receives ``RaggedEOF``, so ``StreamReader.read()`` raises it (note that a
  ``StreamReader`` then raises before returning data it had buffered). Pass
  ``allow_ragged_eof=True`` to treat it as an ordinary EOF (for protocols that detect truncation
  themselves, such as HTTP with a content length); ``get_extra_info("ragged_eof")`` tells.
* Transport failures reach ``connection_lost`` as ``TLSConnectionError`` (also a
  ``ConnectionError``), with the ``OSError`` as ``__cause__``.
* Back-pressure: ``pause_reading()`` stops reading the socket (plaintext stays in the engine);
  writes are encrypted at once and the socket transport's buffer is what the write limits govern,
  so ``StreamWriter.drain()`` waits exactly as on plain TCP.

``get_extra_info`` keys: ``peername``, ``sockname``, ``socket`` (and any other key of the socket
transport), ``peercert`` (DER bytes or None), ``cipher`` (``CipherSuite`` or int), ``tls_version``
(``TLSVersion``), ``alpn_protocol`` (``NextProtocol``, bytes or None), ``negotiated_group``
(the key exchange group's IANA name, e.g. ``"X25519MLKEM768"``, if the engine tells),
``session_resumed`` (whether the handshake resumed a session; False if the engine does not
tell), ``tls_buffer``,
``tls_context``, ``server_hostname``, ``ragged_eof``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import warnings
from asyncio import selector_events
from collections.abc import Callable, Iterable
from typing import Any, Final, overload

from ._config import TLSServerConfiguration
from ._errors import (
    HandshakeClosedError,
    ProtocolError,
    RaggedEOF,
    TLSConnectionError,
    TLSError,
    TLSTimeoutError,
    WantReadError,
    WantWriteError,
)
from ._extensions import SupportsIncomingViews, SupportsSessionInfo
from ._protocols import ClientContext, ServerContext, TLSBuffer
from ._socket import client_buffer, map_os_error, server_buffer

__all__ = [
    "TLSProtocol",
    "TLSTransport",
    "create_connection",
    "create_server",
    "open_connection",
    "start_server",
    "start_tls",
    "upgrade",
]

_log = logging.getLogger(__name__)

# Ciphertext taken from the socket per recv_into: large chunks mean fewer engine calls.
_RECV_SIZE: Final = 256 * 1024
# Plaintext collected from the engine before one data_received call (coalesces 16 KiB records).
_PLAIN_SIZE: Final = 256 * 1024
_DEFAULT_LIMIT: Final = 2**16  # asyncio.streams' default line limit

_HANDSHAKE: Final = 0
_OPEN: Final = 1
_CLOSING: Final = 2
_CLOSED: Final = 3

_LAZY_KEYS: Final = frozenset(
    {"peercert", "cipher", "tls_version", "alpn_protocol", "negotiated_group", "session_resumed"}
)


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


def _wrap_os_error(exc: BaseException) -> BaseException:
    if isinstance(exc, TLSError) or not isinstance(exc, OSError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    wrapped = TLSConnectionError(exc.errno or errno.EIO, f"the TLS connection was lost: {reason}")
    wrapped.__cause__ = exc
    return wrapped


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
        return self._closed or self._tls._state >= _CLOSING

    def close(self) -> None:
        """Send close_notify, then close once the peer answered (or ``shutdown_timeout``)."""
        self._closed = True
        self._tls._start_close()

    def abort(self) -> None:
        """Close the socket at once: no close_notify, buffered data is lost."""
        self._closed = True
        self._tls._abort()

    def is_reading(self) -> bool:
        return not self._tls._app_reading_paused and self._tls._state < _CLOSING

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
        if not self._closed and self._tls._state == _OPEN:
            self._closed = True
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)


class TLSProtocol(asyncio.BufferedProtocol):
    """The socket-side protocol: runs a ``TLSBuffer`` between a socket transport and an app.

    Usually made for you by the functions of this module; exposed for ``loop.create_server``-style
    code that builds its own factories.
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
        self._buffer = buffer
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
        self._state = _HANDSHAKE
        self._exc: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._app_reading_paused = False
        self._raw_reading_paused = False
        self._raw_writing_paused = False
        self._raw_eof = False  # the socket reported EOF
        self._peer_closed = False  # close_notify (or an accepted ragged EOF) seen
        self._ragged = False
        self._eof_sent = False  # our close_notify went out
        self._pending_in: bytes | None = None  # ciphertext the engine refused (queue full)
        self._initial = b""  # STARTTLS: handshake bytes the plain reader had already taken
        self._writes_after_close = 0
        self._plain_view = _scratch.plain
        # Engines that copy process_incoming's argument get a view of the receive buffer.
        self._zero_copy = isinstance(buffer, SupportsIncomingViews)
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

    def _set_buffer(self, buffer: TLSBuffer) -> None:
        self._buffer = buffer
        # Engines that copy process_incoming's argument get a view of the receive buffer.
        self._zero_copy = isinstance(buffer, SupportsIncomingViews)
        self._extra["tls_buffer"] = buffer

    def __repr__(self) -> str:
        state = ("handshake", "open", "closing", "closed")[self._state]
        return f"<TLSProtocol {state} {self._buffer!r}>"

    # -- extra info and app protocol ---------------------------------------------------------

    def _get_extra_info(self, name: str, default: Any) -> Any:
        if name in self._extra:
            return self._extra[name]
        if name in _LAZY_KEYS:
            if self._state == _HANDSHAKE:
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
        if self._initial and self._state == _HANDSHAKE:
            data, self._initial = self._initial, b""
            self._feed(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._recv_view

    def buffer_updated(self, nbytes: int) -> None:
        if self._state == _CLOSED:
            return
        view = self._recv_view[:nbytes]
        self._feed(view if self._zero_copy else bytes(view))

    def eof_received(self) -> bool:
        self._raw_eof = True
        if self._state != _CLOSED:
            self._feed(b"")
        # We close the socket ourselves once TLS has had its say (and the app, if it keeps the
        # write side open after the peer's close_notify).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self._state
        self._state = _CLOSED
        self._cancel_timer()
        final = self._exc
        if final is None and exc is not None:
            final = _wrap_os_error(exc)
        if previous == _HANDSHAKE:
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
        if self._pending_in is not None:
            # Still waiting for room (the socket is paused; an EOF may arrive regardless).
            self._pending_in += data
            return
        try:
            self._buffer.process_incoming(data)  # type: ignore[arg-type]
        except WantReadError:
            if self._state == _HANDSHAKE:
                self._fatal(ProtocolError("the TLS engine refused handshake data (queue full)"))
                return
            # The engine's queue is full until plaintext is read: hold the chunk, stop the socket.
            self._pending_in = bytes(data)
            self._update_raw_reading()
        except TLSError as exc:
            self._fatal(exc)
            return
        if self._state == _HANDSHAKE:
            self._do_handshake()
        else:
            self._do_read()

    def _do_handshake(self) -> None:
        try:
            self._buffer.do_handshake()
        except WantReadError:
            if self._raw_eof and self._pending_in is None:
                self._fatal(
                    HandshakeClosedError("the peer closed the connection during the TLS handshake")
                )
                return
            self._flush()
            return
        except Exception as exc:
            self._fatal(exc)
            return
        self._flush()
        self._cancel_timer()
        self._state = _OPEN
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
        if self._state == _OPEN:
            self._do_read()

    def _do_read(self) -> None:
        state = self._state
        if state == _HANDSHAKE or state == _CLOSED or self._peer_closed:
            return
        buffer = self._buffer
        while True:
            discard = self._state == _CLOSING
            if self._app_reading_paused and not discard:
                break
            if not self._read_once(buffer, discard):
                break
            if self._pending_in is not None:
                data, self._pending_in = self._pending_in, None
                try:
                    buffer.process_incoming(data)
                except WantReadError:
                    self._pending_in = data
                    if not self._progress:
                        self._fatal(
                            ProtocolError(
                                "the TLS engine refuses more ciphertext but has no plaintext "
                                "to read"
                            )
                        )
                        return
                    continue
                except TLSError as exc:
                    self._fatal(exc)
                    return
                if self._raw_eof:
                    buffer.process_incoming(b"")  # the EOF that arrived while we held data
                self._update_raw_reading()
                continue
            break
        if self._state < _CLOSED:
            self._flush()  # e.g. a KeyUpdate answer or a session ticket acknowledgement

    def _read_once(self, buffer: TLSBuffer, discard: bool) -> bool:
        """Drain the engine's plaintext to the app; False when the connection's reading ended.

        Reads until the engine raises ``WantReadError`` (the only way to learn of close_notify
        and ragged EOFs, so it is provoked once per received chunk, not once per record).
        """
        self._progress = False
        while True:
            # The app may have closed from data_received: deliver nothing more after that.
            discard = discard or self._state != _OPEN
            app = self._app_protocol
            if self._app_buffered and not discard:
                assert isinstance(app, asyncio.BufferedProtocol)
                try:
                    view = memoryview(app.get_buffer(_PLAIN_SIZE)).cast("B")
                except Exception as exc:
                    self._fatal(exc, "get_buffer() failed")
                    return False
                if not view.nbytes:
                    self._fatal(RuntimeError("get_buffer() returned an empty buffer"))
                    return False
            else:
                view = self._plain_view
            size = view.nbytes
            off = 0
            end: BaseException | None = None
            eof = False
            try:
                while off < size:
                    n = buffer.read(size - off, view[off:])
                    assert isinstance(n, int)
                    if not n:
                        eof = True
                        break
                    off += n
            except WantReadError:
                pass
            except RaggedEOF as exc:
                end = exc
            except Exception as exc:
                self._fatal(exc)
                return False
            if off:
                self._progress = True
                if not discard:
                    try:
                        if self._app_buffered:
                            app.buffer_updated(off)  # type: ignore[attr-defined]
                        else:
                            app.data_received(bytes(view[:off]))  # type: ignore[attr-defined]
                    except Exception as exc:
                        self._fatal(exc, "data_received() failed")
                        return False
            if eof:
                self._on_peer_close()
                return False
            if end is not None:
                self._on_ragged_eof(end)
                return False
            if off < size:
                return True  # the engine has nothing more for now
            if self._state == _CLOSED or (self._app_reading_paused and self._state == _OPEN):
                return False

    def _on_peer_close(self) -> None:
        self._peer_closed = True
        raw = self._raw
        if self._state == _CLOSING:
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
        if self._eof_sent and self._state == _OPEN:
            # write_eof() earlier, the peer's close_notify now: nothing can flow either way.
            self._state = _CLOSING
            if raw is not None:
                raw.close()
        elif not keep_open:
            self._start_close()

    def _on_ragged_eof(self, exc: BaseException) -> None:
        self._ragged = True
        if self._state == _CLOSING or self._allow_ragged_eof:
            self._on_peer_close()
            return
        self._fatal(exc)

    def _flush(self) -> None:
        buffer = self._buffer
        n = buffer.outgoing_bytes_buffered()
        if n:
            raw = self._raw
            data = buffer.process_outgoing(n)
            if raw is not None and not raw.is_closing():
                raw.write(data)

    def _update_raw_reading(self) -> None:
        raw = self._raw
        if raw is None or self._state == _CLOSED:
            return
        want = self._pending_in is None and (not self._app_reading_paused or self._state != _OPEN)
        if want and self._raw_reading_paused:
            self._raw_reading_paused = False
            raw.resume_reading()
        elif not want and not self._raw_reading_paused:
            self._raw_reading_paused = True
            raw.pause_reading()

    # -- application requests -------------------------------------------------------------------

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or self._eof_sent:
            # Like asyncio's transports: writes after close are dropped, with a warning.
            self._writes_after_close += 1
            if self._writes_after_close == 5:
                _log.warning("TLS transport: write() called after close() or write_eof()")
            return
        buffer = self._buffer
        try:
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
        if self._state != _OPEN or self._eof_sent:
            return
        self._eof_sent = True
        try:
            self._buffer.shutdown()
        except TLSError as exc:
            self._fatal(exc)
            return
        self._flush()
        raw = self._raw
        if self._peer_closed:
            if raw is not None:
                raw.close()
        elif raw is not None and raw.can_write_eof():
            raw.write_eof()

    def _start_close(self) -> None:
        state = self._state
        if state >= _CLOSING:
            return
        raw = self._raw
        self._state = _CLOSING
        if state == _HANDSHAKE:
            if raw is not None:
                raw.abort()
            return
        if not self._eof_sent:
            self._eof_sent = True
            try:
                self._buffer.shutdown()
                self._flush()
            except TLSError as exc:
                _log.debug("sending close_notify failed: %s", exc)
        if raw is None:
            return
        if self._peer_closed or self._raw_eof:
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
        if self._state == _CLOSED:
            return
        if self._state < _CLOSING:
            self._state = _CLOSING
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
        if self._state == _OPEN:
            # Plaintext may be waiting in the engine; deliver it outside the caller's frame.
            self._loop.call_soon(self._do_read)

    # -- failures and timers -------------------------------------------------------------------

    def _fatal(self, exc: BaseException, what: str | None = None) -> None:
        if self._state == _CLOSED:
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
        handshaking = self._state == _HANDSHAKE
        if self._state < _CLOSING:
            self._state = _CLOSING
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
        if self._state == _HANDSHAKE:
            self._fatal_abort(
                TLSTimeoutError(
                    f"the TLS handshake did not complete within {self._handshake_timeout} "
                    "seconds (handshake_timeout)"
                )
            )

    def _shutdown_timed_out(self) -> None:
        self._timer = None
        if self._state == _CLOSING:
            self._fatal_abort(
                TLSTimeoutError(
                    f"the peer did not answer close_notify within {self._shutdown_timeout} "
                    "seconds (shutdown_timeout)"
                )
            )

    def _fatal_abort(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        if self._state == _HANDSHAKE:
            self._set_waiter(exc)
        self._state = _CLOSING
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

    _progress = False


# -- public helpers -------------------------------------------------------------------------


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    for key in ("ssl", "ssl_handshake_timeout", "ssl_shutdown_timeout", "server_hostname"):
        if key in kwargs:
            raise TypeError(
                f"unitls.asyncio does not take {key}=: pass context= (a unitls context), "
                "handshake_timeout= and shutdown_timeout= instead"
            )


def _client_buffer(
    context: ClientContext | ServerContext, server_hostname: str | None, port: object
) -> TLSBuffer:
    """``port`` (the server's, when it is a number) keys the engine's session cache."""
    if _is_server_context(context):
        raise TypeError("a client connection needs a ClientContext, not a ServerContext")
    if not server_hostname:
        raise ValueError(
            "server_hostname is needed (for SNI and the certificate check) when host is not given"
        )
    number = port if isinstance(port, int) and not isinstance(port, bool) else None
    return client_buffer(context, server_hostname, number)  # type: ignore[arg-type]


async def create_connection(
    loop: asyncio.AbstractEventLoop | None,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | None = None,
    port: int | None = None,
    *,
    context: ClientContext,
    server_hostname: str | None = None,
    handshake_timeout: float | None = 60.0,
    shutdown_timeout: float | None = 30.0,
    allow_ragged_eof: bool = False,
    **kwargs: Any,
) -> tuple[TLSTransport, asyncio.BaseProtocol]:
    """Connect, complete the TLS handshake, then call the protocol's ``connection_made``.

    ``server_hostname`` defaults to ``host``. Other keyword arguments go to
    ``loop.create_connection`` (``sock=``, ``local_addr=``, ``family=``, ...). Raises the engine's
    ``TLSError`` subclass if the handshake fails; the socket is then closed.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    _check_kwargs(kwargs)
    _check_timeout("handshake_timeout", handshake_timeout)
    _check_timeout("shutdown_timeout", shutdown_timeout)
    if server_hostname is None:
        server_hostname = host
    buffer = _client_buffer(context, server_hostname, port)
    waiter: asyncio.Future[None] = loop.create_future()
    app_protocol = protocol_factory()
    tls = TLSProtocol(
        loop,
        buffer,
        context,
        app_protocol,
        server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
        shutdown_timeout=shutdown_timeout,
        allow_ragged_eof=allow_ragged_eof,
        waiter=waiter,
    )
    # (host and port may be None with sock=: typeshed's overloads cannot express it.)
    try:
        raw, _ = await loop.create_connection(lambda: tls, host, port, **kwargs)  # type: ignore[arg-type]
    except OSError as exc:
        # Like the engines' sockets: a TLSError subclass (still an OSError), cause chained.
        raise map_os_error(exc, f"connecting to {host}:{port} failed") from exc
    try:
        await waiter
    except BaseException:
        # Handshake failure or cancellation: never leave a half-open socket behind.
        raw.abort()
        raise
    return tls._app_transport, app_protocol


async def create_server(
    loop: asyncio.AbstractEventLoop | None,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | list[str] | None = None,
    port: int | None = None,
    *,
    context: ServerContext,
    handshake_timeout: float | None = 60.0,
    shutdown_timeout: float | None = 30.0,
    allow_ragged_eof: bool = False,
    **kwargs: Any,
) -> asyncio.Server:
    """Serve TLS: each accepted connection is handshaken, then given to a new protocol.

    Other keyword arguments go to ``loop.create_server``. Connections whose handshake fails or
    times out are closed and logged at debug level (logger ``unitls.asyncio``).
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    _check_kwargs(kwargs)
    _check_timeout("handshake_timeout", handshake_timeout)
    _check_timeout("shutdown_timeout", shutdown_timeout)
    if not _is_server_context(context):
        raise TypeError("a server needs a ServerContext, not a ClientContext")
    running_loop = loop

    by_address = (
        hasattr(context, "create_buffer_for") and len(context.configuration.certificate_chain) > 1
    )

    def factory() -> TLSProtocol:
        protocol = TLSProtocol(
            running_loop,
            context.create_buffer(),
            context,
            protocol_factory(),
            handshake_timeout=handshake_timeout,
            shutdown_timeout=shutdown_timeout,
            allow_ragged_eof=allow_ragged_eof,
        )
        protocol._by_address = by_address
        return protocol

    return await loop.create_server(factory, host, port, **kwargs)


async def open_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    context: ClientContext,
    server_hostname: str | None = None,
    handshake_timeout: float | None = 60.0,
    shutdown_timeout: float | None = 30.0,
    allow_ragged_eof: bool = False,
    limit: int = _DEFAULT_LIMIT,
    **kwargs: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` over TLS with a unitls ``ClientContext``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(
        loop,
        lambda: protocol,
        host,
        port,
        context=context,
        server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
        shutdown_timeout=shutdown_timeout,
        allow_ragged_eof=allow_ragged_eof,
        **kwargs,
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str | list[str] | None = None,
    port: int | None = None,
    *,
    context: ServerContext,
    handshake_timeout: float | None = 60.0,
    shutdown_timeout: float | None = 30.0,
    allow_ragged_eof: bool = False,
    limit: int = _DEFAULT_LIMIT,
    **kwargs: Any,
) -> asyncio.Server:
    """``asyncio.start_server`` over TLS with a unitls ``ServerContext``."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(
        loop,
        factory,
        host,
        port,
        context=context,
        handshake_timeout=handshake_timeout,
        shutdown_timeout=shutdown_timeout,
        allow_ragged_eof=allow_ragged_eof,
        **kwargs,
    )


async def _start_tls_transport(
    transport: asyncio.BaseTransport,
    context: ClientContext | ServerContext,
    server_hostname: str | None,
    server_side: bool | None,
    handshake_timeout: float | None,
    shutdown_timeout: float | None,
    allow_ragged_eof: bool,
    initial: bytes = b"",
) -> TLSTransport:
    if not isinstance(transport, asyncio.Transport):
        raise TypeError(f"start_tls needs an asyncio.Transport, not {type(transport).__name__}")
    is_server = _is_server_context(context)
    if server_side is not None and server_side != is_server:
        raise ValueError(
            f"server_side={server_side} contradicts the {'server' if is_server else 'client'} "
            "context given"
        )
    if is_server:
        if server_hostname is not None:
            raise ValueError("a server context takes no server_hostname")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            buffer = server_buffer(context, sock)  # type: ignore[arg-type]
        else:
            buffer = context.create_buffer()  # type: ignore[call-arg]
    else:
        peer = transport.get_extra_info("peername")
        port = peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else None
        buffer = _client_buffer(context, server_hostname, port)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    tls = TLSProtocol(
        loop,
        buffer,
        context,
        transport.get_protocol(),
        server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
        shutdown_timeout=shutdown_timeout,
        allow_ragged_eof=allow_ragged_eof,
        waiter=waiter,
        call_connection_made=False,
    )
    tls._initial = initial
    # As loop.start_tls does: no plaintext may slip past between the two protocols.
    transport.pause_reading()
    transport.set_protocol(tls)
    conmade = loop.call_soon(tls.connection_made, transport)
    resume = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        conmade.cancel()
        resume.cancel()
        transport.abort()
        raise
    return tls._app_transport


@overload
async def start_tls(
    transport: asyncio.StreamWriter,
    context: ClientContext | ServerContext,
    *,
    server_hostname: str | None = ...,
    server_side: bool | None = ...,
    handshake_timeout: float | None = ...,
    shutdown_timeout: float | None = ...,
    allow_ragged_eof: bool = ...,
) -> asyncio.StreamWriter: ...


@overload
async def start_tls(
    transport: asyncio.BaseTransport,
    context: ClientContext | ServerContext,
    *,
    server_hostname: str | None = ...,
    server_side: bool | None = ...,
    handshake_timeout: float | None = ...,
    shutdown_timeout: float | None = ...,
    allow_ragged_eof: bool = ...,
) -> TLSTransport: ...


async def start_tls(
    transport: asyncio.BaseTransport | asyncio.StreamWriter,
    context: ClientContext | ServerContext,
    *,
    server_hostname: str | None = None,
    server_side: bool | None = None,
    handshake_timeout: float | None = 60.0,
    shutdown_timeout: float | None = 30.0,
    allow_ragged_eof: bool = False,
) -> TLSTransport | asyncio.StreamWriter:
    """STARTTLS: run a TLS handshake over an established plain connection.

    With a transport: its current protocol keeps running, over the returned ``TLSTransport``
    (the protocol's ``connection_made`` is not called again). With a ``StreamWriter``: the writer
    (and its reader) now run over TLS and the same writer is returned. The side follows the
    context (``server_side``, if given, must agree). A failed or cancelled handshake aborts the
    connection and raises.
    """
    if isinstance(transport, asyncio.StreamWriter):
        writer = transport
        await writer.drain()
        protocol = writer.transport.get_protocol()
        # Bytes the plain reader already took (a client's hello racing our drain) belong to TLS;
        # they are fed to the engine as ciphertext, so pipelined plaintext cannot sneak in.
        initial = b""
        reader = getattr(writer, "_reader", None)
        if isinstance(reader, asyncio.StreamReader) and reader._buffer:  # type: ignore[attr-defined]
            initial = bytes(reader._buffer)  # type: ignore[attr-defined]
            reader._buffer.clear()  # type: ignore[attr-defined]
        new = await _start_tls_transport(
            writer.transport,
            context,
            server_hostname,
            server_side,
            handshake_timeout,
            shutdown_timeout,
            allow_ragged_eof,
            initial,
        )
        # What StreamWriter.start_tls does: swap the transport under the writer and protocol.
        writer._transport = new  # type: ignore[attr-defined]
        replace = getattr(protocol, "_replace_writer", None)
        if replace is not None:
            replace(writer)
        return writer
    return await _start_tls_transport(
        transport,
        context,
        server_hostname,
        server_side,
        handshake_timeout,
        shutdown_timeout,
        allow_ragged_eof,
    )


async def upgrade(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ClientContext | ServerContext,
    server_hostname: str | None = None,
    *,
    handshake_timeout: float | None = 60.0,
    shutdown_timeout: float | None = 30.0,
    allow_ragged_eof: bool = False,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """STARTTLS for streams: returns the (reader, writer) pair now running over TLS.

    A server context upgrades the server side. Bytes the reader holds unread are handed to the
    TLS engine as handshake data (a client's hello may race the server's reply), never returned
    as plaintext.
    """
    await start_tls(
        writer,
        context,
        server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
        shutdown_timeout=shutdown_timeout,
        allow_ragged_eof=allow_ragged_eof,
    )
    return reader, writer
