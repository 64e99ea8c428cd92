"""unitls.asyncio against real peers: every engine pair, and stdlib asyncio TLS both ways."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias, TypeVar

import pytest

import unitls
import unitls.asyncio as uasyncio
from unitls import NextProtocol, TLSClientConfiguration, TLSServerConfiguration, TLSVersion
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]
T = TypeVar("T")

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run with a bound: a broken implementation fails instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the client's close_notify, then close (close_notify back)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture(scope="module")
def stdlib_server_ctx(
    server_cert: Issued, tmp_path_factory: pytest.TempPathFactory
) -> ssl.SSLContext:
    d = tmp_path_factory.mktemp("pem")
    cert, key = d / "chain.pem", d / "key.pem"
    cert.write_bytes(server_cert.chain_pem)
    key.write_bytes(server_cert.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@pytest.fixture(scope="module")
def stdlib_client_ctx(ca: CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    return ctx


# -- our client x our server, every engine pair -----------------------------------------------


def test_echo_every_engine_pair(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    server_cert: Issued,
) -> None:
    sctx = server_engine.server_context(server_config)
    cctx = client_engine.client_context(client_config)
    payload = os.urandom(3 * 1024 * 1024 + 7)

    async def main() -> None:
        server = await uasyncio.start_server(echo_handler, HOST, 0, context=sctx)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            info = writer.get_extra_info
            assert info("peercert") == server_cert.cert_der
            assert info("tls_version") in (TLSVersion.TLSv1_2, TLSVersion.TLSv1_3)
            assert info("cipher") is not None
            assert info("alpn_protocol") is None
            assert isinstance(info("tls_buffer"), unitls.TLSBuffer)
            assert info("tls_context") is cctx
            assert info("peername")[1] == port_of(server)
            assert info("sockname")[0] == HOST
            assert info("socket") is not None
            assert info("server_hostname") == "localhost"
            assert info("no such key", 42) == 42

            # Small messages (one record each), then a large one (many records).
            for i in range(20):
                msg = b"ping %d" % i
                writer.write(msg)
                assert await reader.readexactly(len(msg)) == msg
            reader_task = asyncio.ensure_future(reader.readexactly(len(payload)))
            writer.write(payload)
            await writer.drain()
            assert await reader_task == payload

            writer.write_eof()  # close_notify: the server echoes the rest and closes
            assert await reader.read() == b""
            assert writer.get_extra_info("ragged_eof") is False
            writer.close()
            await writer.wait_closed()

    run(main())


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3])
def test_write_eof_half_close(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_cert: Issued,
    version: TLSVersion,
) -> None:
    """After our close_notify the peer keeps writing, and we keep reading."""
    sctx = server_engine.server_context(
        TLSServerConfiguration(
            certificate_chain=[server_cert.signing_chain()], highest_supported_version=version
        )
    )
    cctx = client_engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's close_notify
        for _ in range(10):
            writer.write(hashlib.sha256(request).digest())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            assert writer.can_write_eof()
            assert writer.get_extra_info("tls_version") == version
            writer.write(b"request " * 1000)
            writer.write_eof()
            answer = await reader.read()
            assert answer == hashlib.sha256(b"request " * 1000).digest() * 10
            writer.close()
            await writer.wait_closed()

    run(main())


def test_mutual_tls_and_alpn(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, client_cert: Issued
) -> None:
    sctx = server_engine.server_context(
        TLSServerConfiguration(
            certificate_chain=[server_cert.signing_chain()],
            trust_store=ca.trust_store(),
            inner_protocols=[NextProtocol.H2, NextProtocol.HTTP1],
        )
    )
    cctx = client_engine.client_context(
        TLSClientConfiguration(
            trust_store=ca.trust_store(),
            certificate_chain=client_cert.signing_chain(),
            inner_protocols=[NextProtocol.HTTP1],
        )
    )
    seen: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["peercert"] = writer.get_extra_info("peercert")
        seen["alpn"] = writer.get_extra_info("alpn_protocol")
        writer.write(b"hi")
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            assert writer.get_extra_info("alpn_protocol") == NextProtocol.HTTP1
            assert await reader.read() == b"hi"
            writer.close()
            await writer.wait_closed()

    run(main())
    assert seen == {"peercert": client_cert.cert_der, "alpn": NextProtocol.HTTP1}


# -- stdlib asyncio TLS as the peer ------------------------------------------------------------


def test_unitls_client_stdlib_server(
    engine: Impl, client_config: TLSClientConfiguration, stdlib_server_ctx: ssl.SSLContext
) -> None:
    cctx = engine.client_context(client_config)
    payload = os.urandom(2 * 1024 * 1024)

    async def main() -> None:
        server = await asyncio.start_server(echo_handler, HOST, 0, ssl=stdlib_server_ctx)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
            task = asyncio.ensure_future(reader.readexactly(len(payload)))
            writer.write(payload)
            await writer.drain()
            assert await task == payload
            writer.close()
            await writer.wait_closed()

    run(main())


def test_stdlib_client_unitls_server(
    engine: Impl,
    server_config: TLSServerConfiguration,
    stdlib_client_ctx: ssl.SSLContext,
) -> None:
    sctx = engine.server_context(server_config)
    payload = os.urandom(2 * 1024 * 1024)

    async def main() -> None:
        server = await uasyncio.start_server(echo_handler, HOST, 0, context=sctx)
        async with server:
            reader, writer = await asyncio.open_connection(
                HOST, port_of(server), ssl=stdlib_client_ctx, server_hostname="localhost"
            )
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
            task = asyncio.ensure_future(reader.readexactly(len(payload)))
            writer.write(payload)
            await writer.drain()
            assert await task == payload
            writer.close()
            await writer.wait_closed()

    run(main())


def test_stdlib_server_closes_first(
    engine: Impl, client_config: TLSClientConfiguration, stdlib_server_ctx: ssl.SSLContext
) -> None:
    """The stdlib server says goodbye and closes: we read the data, then a clean EOF."""
    cctx = engine.client_context(client_config)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await asyncio.start_server(handler, HOST, 0, ssl=stdlib_server_ctx)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            assert await reader.read() == b"bye"
            writer.close()
            await writer.wait_closed()

    run(main())


# -- protocol-level API ------------------------------------------------------------------------


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.made = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.eof = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


class BufferedCollect(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(1000)  # small: forces several get_buffer calls per chunk
        self.data = bytearray()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buf[:nbytes]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


@pytest.mark.parametrize("app", [Collect, BufferedCollect])
def test_protocol_api(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    app: Callable[[], asyncio.BaseProtocol],
) -> None:
    sctx = engine.server_context(server_config)
    cctx = engine.client_context(client_config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers: list[Collect] = []

        def server_factory() -> Collect:
            p = Collect()
            servers.append(p)
            return p

        server = await uasyncio.create_server(loop, server_factory, HOST, 0, context=sctx)
        async with server:
            transport, proto = await uasyncio.create_connection(
                None, app, HOST, port_of(server), context=cctx, server_hostname="localhost"
            )
            assert isinstance(transport, uasyncio.TLSTransport)
            assert transport.get_protocol() is proto
            assert transport.is_reading() and not transport.is_closing()
            transport.set_write_buffer_limits(high=1 << 20)
            assert transport.get_write_buffer_limits()[1] <= 1 << 20
            transport.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
            transport.write(b"d" * 100_000)
            await servers[0].made
            srv_transport = servers[0].transport
            assert srv_transport is not None
            while len(servers[0].data) < 100_003:
                await asyncio.sleep(0.01)
            assert bytes(servers[0].data) == b"abc" + b"d" * 100_000
            with pytest.raises(TypeError):
                transport.write("text")  # type: ignore[arg-type]
            srv_transport.write(b"x" * 50_000)
            srv_transport.close()  # close_notify: the client protocol returns False -> closes
            assert await proto.lost is None  # type: ignore[attr-defined]
            assert bytes(proto.data) == b"x" * 50_000  # type: ignore[attr-defined]
            assert transport.is_closing()
            transport.write(b"dropped")  # after close: ignored, like asyncio's transports
            transport.close()  # idempotent
            assert await servers[0].lost is None

    run(main())


def test_server_without_sni_serves_the_chain_for_the_address(
    client_engine: Impl, server_engine: Impl, ca: CA
) -> None:
    """A client connecting to an IP sends no SNI: the server's chain naming that IP is used."""
    by_name = ca.issue("first.example")
    by_ip = ca.issue("second.example", HOST)
    server_ctx = server_engine.server_context(
        TLSServerConfiguration([by_name.signing_chain(), by_ip.signing_chain()])
    )
    client_ctx = client_engine.client_context(TLSClientConfiguration(trust_store=ca.trust_store()))

    async def main() -> bytes | None:
        server = await uasyncio.start_server(echo_handler, HOST, 0, context=server_ctx)
        try:
            _reader, writer = await uasyncio.open_connection(
                HOST, port_of(server), context=client_ctx
            )
            peer: bytes | None = writer.get_extra_info("peercert")
            writer.close()
            await writer.wait_closed()
            return peer
        finally:
            server.close()
            await server.wait_closed()

    assert run(main()) == by_ip.cert_der
