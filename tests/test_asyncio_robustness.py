"""unitls.asyncio failure paths, flow control, STARTTLS, cancellation and leaks (real sockets)."""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import pytest

import unitls
import unitls.asyncio as uasyncio
from unitls import TLSClientConfiguration, TLSServerConfiguration
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]
T = TypeVar("T")

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def silent_server() -> tuple[asyncio.Server, list[asyncio.StreamWriter]]:
    """A plain TCP server that accepts and never says a word (never answers a ClientHello)."""
    held: list[asyncio.StreamWriter] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client goes away
        writer.close()

    return await asyncio.start_server(handler, HOST, 0), held


# -- handshake failures --------------------------------------------------------------------------


def test_handshake_timeout(engine: Impl, client_config: TLSClientConfiguration) -> None:
    cctx = engine.client_context(client_config)

    async def main() -> None:
        server, held = await silent_server()
        async with server:
            before = fd_count()
            with pytest.raises(unitls.TLSTimeoutError, match="handshake_timeout"):
                await uasyncio.open_connection(
                    HOST,
                    port_of(server),
                    context=cctx,
                    server_hostname="localhost",
                    handshake_timeout=0.3,
                )
            await asyncio.sleep(0.05)
            assert fd_count() <= before + len(held)  # our socket is gone; the server's remains
            for w in held:
                w.close()

    run(main())


def test_server_handshake_timeout(engine: Impl, server_config: TLSServerConfiguration) -> None:
    """A client that connects and sends nothing is dropped after handshake_timeout."""
    sctx = engine.server_context(server_config)

    async def main() -> None:
        called = False

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal called
            called = True

        server = await uasyncio.start_server(handler, HOST, 0, context=sctx, handshake_timeout=0.3)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port_of(server))
            assert await reader.read() == b""  # the server gave up and closed
            writer.close()
            assert not called

    run(main())


def test_peer_closes_during_handshake(engine: Impl, client_config: TLSClientConfiguration) -> None:
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            with pytest.raises(unitls.HandshakeClosedError):
                await uasyncio.open_connection(
                    HOST, port_of(server), context=cctx, server_hostname="localhost"
                )

    run(main())


def test_certificate_failure_and_server_survives(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    sctx = server_engine.server_context(server_config)
    good = client_engine.client_context(client_config)
    other_ca = CA.create("someone else")
    bad = client_engine.client_context(TLSClientConfiguration(trust_store=other_ca.trust_store()))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            before = fd_count()
            for _ in range(3):
                with pytest.raises(unitls.CertificateVerificationError):
                    await uasyncio.open_connection(
                        HOST, port_of(server), context=bad, server_hostname="localhost"
                    )
            with pytest.raises(unitls.CertificateVerificationError):
                await uasyncio.open_connection(
                    HOST, port_of(server), context=good, server_hostname="wrong.example"
                )
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=good, server_hostname="localhost"
            )
            assert await reader.read() == b"ok"
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            assert fd_count() <= before

    run(main())


def test_missing_client_certificate(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_config: TLSClientConfiguration,
) -> None:
    """TLS 1.3: the client may learn of the rejection only when it reads; either way a TLSError."""
    sctx = server_engine.server_context(
        TLSServerConfiguration(
            certificate_chain=[server_cert.signing_chain()], trust_store=ca.trust_store()
        )
    )
    cctx = client_engine.client_context(client_config)
    handled = False

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handled
        handled = True

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            before = fd_count()
            with pytest.raises(unitls.TLSError):
                reader, writer = await uasyncio.open_connection(
                    HOST, port_of(server), context=cctx, server_hostname="localhost"
                )
                try:
                    writer.write(b"hello?")
                    await reader.read()
                finally:
                    writer.close()
            await asyncio.sleep(0.05)
            assert fd_count() <= before
        assert not handled

    run(main())


def test_not_tls_peer(engine: Impl, client_config: TLSClientConfiguration) -> None:
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\nthis is not TLS at all\r\n" * 10)
        await writer.drain()
        await reader.read()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            with pytest.raises(unitls.TLSError):
                await uasyncio.open_connection(
                    HOST, port_of(server), context=cctx, server_hostname="localhost"
                )

    run(main())


def test_connection_refused(engine: Impl, client_config: TLSClientConfiguration) -> None:
    cctx = engine.client_context(client_config)

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, HOST, 0)
        port = port_of(server)
        server.close()
        await server.wait_closed()
        with pytest.raises(unitls.TLSConnectionError, match="connecting to") as info:
            await uasyncio.open_connection(HOST, port, context=cctx, server_hostname="localhost")
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    run(main())


def test_bad_arguments(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    cctx = engine.client_context(client_config)
    sctx = engine.server_context(server_config)

    async def main() -> None:
        with pytest.raises(TypeError, match="context="):
            await uasyncio.open_connection(HOST, 1, context=cctx, ssl=True)
        with pytest.raises(TypeError, match="ClientContext"):
            await uasyncio.open_connection(HOST, 1, context=sctx)
        with pytest.raises(TypeError, match="ServerContext"):
            await uasyncio.start_server(lambda r, w: None, HOST, 0, context=cctx)
        with pytest.raises(ValueError, match="handshake_timeout"):
            await uasyncio.open_connection(HOST, 1, context=cctx, handshake_timeout=0)
        with pytest.raises(ValueError, match="server_hostname"):
            await uasyncio.open_connection(None, None, context=cctx)

    run(main())


# -- cancellation ----------------------------------------------------------------------------


def test_cancel_during_handshake(engine: Impl, client_config: TLSClientConfiguration) -> None:
    cctx = engine.client_context(client_config)

    async def main() -> None:
        server, held = await silent_server()
        async with server:
            baseline_tasks = len(asyncio.all_tasks())
            before = fd_count()
            for _ in range(5):
                task = asyncio.ensure_future(
                    uasyncio.open_connection(
                        HOST, port_of(server), context=cctx, server_hostname="localhost"
                    )
                )
                while len(held) < 1:
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                # The server sees the socket go away: no half-open connection is left.
                await asyncio.sleep(0.05)
                held.clear()
            await asyncio.sleep(0.05)
            assert fd_count() <= before
            assert len(asyncio.all_tasks()) == baseline_tasks

    run(main())


def test_cancel_at_every_step(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    """Cancel open_connection after 0, 1, 2, ... loop iterations: never a leaked socket."""
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            tasks_before = asyncio.all_tasks()
            before = fd_count()
            completed = 0
            for steps in range(40):
                task = asyncio.ensure_future(
                    uasyncio.open_connection(
                        HOST, port_of(server), context=cctx, server_hostname="localhost"
                    )
                )
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    _reader, writer = await task
                except asyncio.CancelledError:
                    continue
                completed += 1  # finished before the cancel: close it properly
                writer.close()
                await writer.wait_closed()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if fd_count() <= before and asyncio.all_tasks() == tasks_before:
                    break
            assert fd_count() <= before
            assert asyncio.all_tasks() == tasks_before
            assert completed < 40  # some cancellations did land mid-way

    run(main())


def test_cancel_read_and_close(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    """Cancelling a pending read leaves a usable connection; close then ends it cleanly."""
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(4) == b"ping"
        writer.write(b"pong")
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(10), 0.1)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"pong"
            writer.close()
            await writer.wait_closed()

    run(main())


# -- EOF and shutdown semantics -----------------------------------------------------------------


def test_ragged_eof(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    sctx = server_engine.server_context(server_config)
    cctx = client_engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"truncated")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # no close_notify

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            # Default: the truncation is an error.
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            assert await reader.readexactly(9) == b"truncated"
            with pytest.raises(unitls.RaggedEOF):
                await reader.read()
            writer.close()
            with pytest.raises(unitls.RaggedEOF):
                await writer.wait_closed()

            # allow_ragged_eof=True: an ordinary EOF, reported in the extra info.
            reader, writer = await uasyncio.open_connection(
                HOST,
                port_of(server),
                context=cctx,
                server_hostname="localhost",
                allow_ragged_eof=True,
            )
            assert await reader.read() == b"truncated"
            assert writer.get_extra_info("ragged_eof") is True
            writer.close()
            await writer.wait_closed()

            # Having sent our close_notify (write_eof) does not excuse the peer's truncation.
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            writer.write_eof()
            assert await reader.readexactly(9) == b"truncated"
            with pytest.raises(unitls.RaggedEOF):
                await reader.read()
            writer.close()

    run(main())


def test_shutdown_timeout(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    """A peer that never answers close_notify: close() gives up after shutdown_timeout."""
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)
    held: list[asyncio.StreamWriter] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keeps its side open after our close_notify (eof_received -> True)

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            before = fd_count()
            _reader, writer = await uasyncio.open_connection(
                HOST,
                port_of(server),
                context=cctx,
                server_hostname="localhost",
                shutdown_timeout=0.3,
            )
            writer.close()
            with pytest.raises(unitls.TLSTimeoutError, match="shutdown_timeout"):
                await writer.wait_closed()
            for w in held:
                w.transport.abort()
            await asyncio.sleep(0.05)
            assert fd_count() <= before

    run(main())


def test_peer_reset_is_connection_error(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        sock = writer.get_extra_info("socket")
        import socket
        import struct

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            writer.write(b"x")
            with pytest.raises((unitls.TLSConnectionError, unitls.RaggedEOF)):
                await reader.read()
            writer.close()

    run(main())


# -- flow control ---------------------------------------------------------------------------


def test_drain_blocks_on_slow_reader(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    sctx = server_engine.server_context(server_config)
    cctx = client_engine.client_context(client_config)
    total = 48 * 1024 * 1024
    chunk = os.urandom(1024 * 1024)

    async def main() -> None:
        go = asyncio.Event()
        received = 0
        server_transports: list[asyncio.Transport] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            assert isinstance(writer.transport, asyncio.Transport)
            server_transports.append(writer.transport)
            await go.wait()
            while data := await reader.read(1 << 20):
                received += len(data)
            writer.close()
            await writer.wait_closed()

        server = await uasyncio.start_server(handler, HOST, 0, context=sctx, limit=1 << 16)
        async with server:
            _reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            writer.transport.set_write_buffer_limits(high=256 * 1024)
            sent = 0
            drain: asyncio.Future[None] | None = None
            while sent < total:
                writer.write(chunk)
                sent += len(chunk)
                drain = asyncio.ensure_future(writer.drain())
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if not drain.done():
                    break  # the reader is not reading: writing is paused
                await drain
            assert drain is not None and not drain.done(), "drain() never blocked"
            assert writer.transport.get_write_buffer_size() > 0
            # The server app is not reading: its TLS transport stopped reading the socket.
            assert not server_transports[0].is_reading()
            go.set()
            await drain
            while sent < total:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
            writer.close()
            await writer.wait_closed()
            while received < sent:
                await asyncio.sleep(0.01)
            assert received == sent

    run(main())


def test_pause_resume_reading(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)
    payload = os.urandom(4 * 1024 * 1024)

    async def main() -> None:
        server = await uasyncio.start_server(sender(payload), HOST, 0, context=sctx)
        async with server:
            transport, proto = await uasyncio.create_connection(
                None, Sink, HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            assert isinstance(proto, Sink)
            transport.pause_reading()
            assert not transport.is_reading()
            await asyncio.sleep(0.2)
            paused_at = len(proto.data)
            await asyncio.sleep(0.1)
            assert len(proto.data) == paused_at  # nothing delivered while paused
            transport.resume_reading()
            await proto.lost
            assert bytes(proto.data) == payload

    run(main())


def test_pausing_from_data_received_loses_and_reorders_nothing(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    """An application that pauses reading inside data_received and resumes later, while large
    chunks keep coming: rustls decrypts them straight into the plaintext view while the
    application reads (``SupportsIncomingInto``) and queues them while it is paused."""
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)
    payload = os.urandom(8 * 1024 * 1024)

    class Pauser(Sink):
        transport: asyncio.Transport
        calls_while_paused = 0
        paused = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if self.paused:
                self.calls_while_paused += 1
            super().data_received(data)
            if len(self.data) // (1024 * 1024) % 2 == 0 and not self.paused:
                self.paused = True
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(0.005, self.resume)

        def resume(self) -> None:
            self.paused = False
            self.transport.resume_reading()

    async def main() -> None:
        server = await uasyncio.start_server(sender(payload, 300_000), HOST, 0, context=sctx)
        async with server:
            _, proto = await uasyncio.create_connection(
                None, Pauser, HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            assert isinstance(proto, Pauser)
            await proto.lost
            assert proto.calls_while_paused == 0
            assert bytes(proto.data) == payload

    run(main())


def sender(
    payload: bytes, piece: int = 0
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]:
    """A ``start_server`` handler that sends ``payload`` (written ``piece`` bytes at a time),
    then closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        step = piece or len(payload)
        for start in range(0, len(payload), step):
            writer.write(payload[start : start + step])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return handler


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


# -- STARTTLS ------------------------------------------------------------------------------------


def test_starttls_both_sides(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    server_cert: Issued,
) -> None:
    sctx = server_engine.server_context(server_config)
    cctx = client_engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\r\n"
        writer.write(b"220 go ahead\r\n")
        reader, writer = await uasyncio.upgrade(reader, writer, sctx)
        assert writer.get_extra_info("tls_version") is not None
        line = await reader.readline()
        writer.write(b"secret reply to " + line)
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port_of(server))
            writer.write(b"STARTTLS\r\n")
            assert await reader.readline() == b"220 go ahead\r\n"
            reader, writer = await uasyncio.upgrade(reader, writer, cctx, "localhost")
            assert writer.get_extra_info("peercert") == server_cert.cert_der
            writer.write(b"hello\n")
            assert await reader.readline() == b"secret reply to hello\n"
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

    run(main())


def test_starttls_transport_against_stdlib(
    engine: Impl, client_config: TLSClientConfiguration, server_cert: Issued, tmp_path: Path
) -> None:
    """start_tls on a bare transport, with the stdlib's StreamWriter.start_tls as the server."""
    (tmp_path / "c.pem").write_bytes(server_cert.chain_pem)
    (tmp_path / "k.pem").write_bytes(server_cert.key_pem)
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sslctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"OK\n")
        await writer.start_tls(sslctx)
        writer.write(b"over tls: " + await reader.readline())
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port_of(server))
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"OK\n"
            tls_transport = await uasyncio.start_tls(
                writer.transport, cctx, server_hostname="localhost"
            )
            assert isinstance(tls_transport, uasyncio.TLSTransport)
            # The stream protocol keeps running over the new transport.
            protocol: Any = tls_transport.get_protocol()
            writer2 = asyncio.StreamWriter(
                tls_transport, protocol, reader, asyncio.get_running_loop()
            )
            uasyncio._adopt_transport(protocol, writer2)  # (Python 3.13 renamed the hook)
            writer2.write(b"x\n")
            assert await reader.readline() == b"over tls: x\n"
            writer2.close()

    run(main())


def test_starttls_stdlib_client_unitls_server(
    engine: Impl, server_config: TLSServerConfiguration, ca: CA
) -> None:
    """The stdlib's StreamWriter.start_tls as the client, our upgrade() on the server side."""
    sctx = engine.server_context(server_config)
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    sslctx.load_verify_locations(cadata=ca.cert_pem.decode())

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"OK\n")
        reader, writer = await uasyncio.upgrade(reader, writer, sctx)
        writer.write(b"over tls: " + await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port_of(server))
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"OK\n"
            await writer.start_tls(sslctx, server_hostname="localhost")
            writer.write(b"y\n")
            assert await reader.readline() == b"over tls: y\n"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_starttls_handshake_failure_closes(
    engine: Impl, client_config: TLSClientConfiguration
) -> None:
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"OK\n")
        await reader.read()  # never starts TLS: only drains
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port_of(server))
            writer.write(b"STARTTLS\n")
            await reader.readline()
            with pytest.raises(unitls.TLSTimeoutError):
                await uasyncio.upgrade(reader, writer, cctx, "localhost", handshake_timeout=0.3)
            assert writer.transport.is_closing()

    run(main())


# -- scale and leaks -------------------------------------------------------------------------------


def test_many_concurrent_connections_no_leaks(
    engine: Impl, client_config: TLSClientConfiguration, server_config: TLSServerConfiguration
) -> None:
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)
    n = 300

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(data[::-1])
        writer.close()
        await writer.wait_closed()

    async def one(port: int, i: int) -> None:
        reader, writer = await uasyncio.open_connection(
            HOST, port, context=cctx, server_hostname="localhost"
        )
        msg = b"connection %d" % i
        writer.write(msg)
        writer.write_eof()
        assert await reader.read() == msg[::-1]
        writer.close()
        await writer.wait_closed()

    async def round_(port: int) -> None:
        await asyncio.gather(*(one(port, i) for i in range(n)))

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx, backlog=n)
        async with server:
            port = port_of(server)
            tasks_before = asyncio.all_tasks()
            fds_before = fd_count()
            await round_(port)  # warm-up: caches, allocator pools
            await asyncio.sleep(0.1)
            gc.collect()
            tracemalloc.start()
            try:
                mem_before = tracemalloc.get_traced_memory()[0]
                await round_(port)
                await asyncio.sleep(0.1)
                gc.collect()
                mem_after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            assert fd_count() <= fds_before
            leftover = asyncio.all_tasks() - tasks_before
            assert not leftover, leftover
            # Per-connection state must not survive the connection (1 MiB of slack overall).
            assert mem_after - mem_before < 1 << 20, mem_after - mem_before

    run(main(), timeout=100)


# -- the rustls path without the ssl module ------------------------------------------------------


def test_rustls_asyncio_without_ssl_module() -> None:
    if "rustls" not in unitls.implementations():
        pytest.skip("the rustls engine is not available here")
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ssl"] = None  # any `import ssl` now fails
        import asyncio
        import unitls, unitls.asyncio as ua
        from unitls._certgen import CA

        ca = CA.create("no-ssl root")
        leaf = ca.issue("localhost", "127.0.0.1")
        impl = unitls.get_implementation("rustls")
        sctx = impl.server_context(
            unitls.TLSServerConfiguration(certificate_chain=[leaf.signing_chain()]))
        cctx = impl.client_context(unitls.TLSClientConfiguration(trust_store=ca.trust_store()))

        async def handler(r, w):
            w.write((await r.read()).upper())
            w.close()
            await w.wait_closed()

        async def main():
            server = await ua.start_server(handler, "127.0.0.1", 0, context=sctx)
            async with server:
                port = server.sockets[0].getsockname()[1]
                r, w = await ua.open_connection("127.0.0.1", port, context=cctx,
                                                server_hostname="localhost")
                w.write(b"no ssl here")
                w.write_eof()
                assert await r.read() == b"NO SSL HERE"
                w.close()
                await w.wait_closed()

        asyncio.run(asyncio.wait_for(main(), 20))
        assert sys.modules["ssl"] is None
        print("OK")
        """
    )
    env = dict(os.environ)
    src = str(Path(unitls.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
