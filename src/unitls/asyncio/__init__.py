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
tell), ``tls_buffer``, ``tls_context``, ``server_hostname``, ``ragged_eof``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, overload

from .._protocols import ClientContext, ServerContext, TLSBuffer
from .._socket import client_buffer, map_os_error, server_buffer
from ._protocol import TLSProtocol, TLSTransport, _check_timeout, _is_server_context

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

_DEFAULT_LIMIT: Final = 2**16  # asyncio.streams' default line limit


# -- public helpers -------------------------------------------------------------------------


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


def _adopt_transport(protocol: asyncio.BaseProtocol, writer: asyncio.StreamWriter) -> None:
    """Point a ``StreamReaderProtocol`` at ``writer``'s (new) transport, as
    ``StreamWriter.start_tls`` does: ``_replace_writer(writer)`` up to Python 3.12,
    ``_replace_transport(transport)`` from 3.13 (the old name is gone there)."""
    replace_transport = getattr(protocol, "_replace_transport", None)
    if replace_transport is not None:
        replace_transport(writer.transport)
        return
    replace_writer = getattr(protocol, "_replace_writer", None)
    if replace_writer is not None:
        replace_writer(writer)


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
        _adopt_transport(protocol, writer)
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
