"""unitls.asyncio vs stdlib asyncio TLS: bulk throughput and handshakes per second, per engine.

Both ends run in one event loop over 127.0.0.1 (the client sends, the server counts), so every
number includes encryption and decryption. The baseline is stdlib asyncio with plain
``ssl.SSLContext``s (the stdlib server sends no session tickets: ``num_tickets = 0``), measured in
the same run, alternating with each engine, because absolute numbers drift between runs. The
unitls servers issue no session tickets either (``session_tickets=False``), so rustls clients cannot
resume: every handshake counted is a full one. The engines make the stdlib's key exchange
(``groups=LIKE_STDLIB_GROUPS``, see ``unitls._bench``): X25519 on both sides.

Usage: ``python benchmarks/bench_asyncio.py [seconds]`` prints a table; ``run(seconds)`` returns
the rows (``name``, ``engine``, ``value``, ``unit``, ``baseline``, ``ratio``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import unitls
import unitls.asyncio as uasyncio
from unitls._bench import LIKE_STDLIB_GROUPS, side_by_side
from unitls._certgen import CA

HOST = "127.0.0.1"
CHUNK = 256 * 1024
CONCURRENCY = 4  # handshakes in flight

ServerFactory = Callable[[Callable[[], asyncio.BaseProtocol]], Awaitable[asyncio.Server]]
ClientFactory = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class _Sink(asyncio.Protocol):
    received = 0

    def data_received(self, data: bytes) -> None:
        _Sink.received += len(data)

    def eof_received(self) -> bool:
        return False


class _CloseAtOnce(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def _bulk(serve: ServerFactory, connect: ClientFactory, seconds: float) -> float:
    """MiB/s pushed from a StreamWriter to a counting protocol."""
    server = await serve(_Sink)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await connect(port)
    chunk = os.urandom(CHUNK)
    for _ in range(8):  # warm-up
        writer.write(chunk)
        await writer.drain()
    while _Sink.received < 8 * CHUNK:
        await asyncio.sleep(0.001)
    _Sink.received = 0
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        writer.write(chunk)
        sent += CHUNK
        await writer.drain()
    while _Sink.received < sent:
        await asyncio.sleep(0.0005)
    elapsed = time.perf_counter() - start
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, unitls.TLSError):
        pass
    server.close()
    await server.wait_closed()
    return sent / elapsed / (1024 * 1024)


async def _handshakes(serve: ServerFactory, connect: ClientFactory, seconds: float) -> float:
    """Full handshakes (connect, handshake, close) per second, CONCURRENCY at a time."""
    server = await serve(_CloseAtOnce)
    port = server.sockets[0].getsockname()[1]
    done = 0

    async def once() -> None:
        reader, writer = await connect(port)
        try:
            await reader.read()
        except (OSError, unitls.TLSError):
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, unitls.TLSError):
            pass

    async def worker(deadline: float) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await once()
            done += 1

    await asyncio.gather(*(worker(time.perf_counter() + 0.2) for _ in range(CONCURRENCY)))
    done = 0
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds) for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    server.close()
    await server.wait_closed()
    return done / elapsed


class _Setup:
    def __init__(self, tmp: str) -> None:
        ca = CA.create("bench root")
        leaf = ca.issue("localhost", "127.0.0.1")
        cert, key = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        with open(cert, "wb") as f:
            f.write(leaf.chain_pem)
        with open(key, "wb") as f:
            f.write(leaf.key_pem)
        # Built once: context construction is not what is measured.
        self.std_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.std_server.load_cert_chain(cert, key)
        self.std_server.num_tickets = 0
        self.std_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.std_client.load_verify_locations(cadata=ca.cert_pem.decode())
        self.server_config = unitls.TLSServerConfiguration(certificate_chain=[leaf.signing_chain()])
        self.client_config = unitls.TLSClientConfiguration(trust_store=ca.trust_store())

    def stdlib(self) -> tuple[ServerFactory, ClientFactory]:
        async def serve(factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.Server:
            loop = asyncio.get_running_loop()
            return await loop.create_server(factory, HOST, 0, ssl=self.std_server, backlog=128)

        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(
                HOST, port, ssl=self.std_client, server_hostname="localhost"
            )

        return serve, connect

    def unitls(self, engine: str) -> tuple[ServerFactory, ClientFactory]:
        impl = unitls.get_implementation(engine)
        try:
            # Full handshakes only and the stdlib's key exchange, as on the stdlib side (our
            # engines' options; others lack them).
            sctx = impl.server_context(
                self.server_config, session_tickets=False, groups=LIKE_STDLIB_GROUPS
            )
            cctx = impl.client_context(self.client_config, groups=LIKE_STDLIB_GROUPS)
        except TypeError:
            sctx = impl.server_context(self.server_config)
            cctx = impl.client_context(self.client_config)

        async def serve(factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.Server:
            return await uasyncio.create_server(None, factory, HOST, 0, context=sctx, backlog=128)

        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await uasyncio.open_connection(
                HOST, port, context=cctx, server_hostname="localhost"
            )

        return serve, connect


def _measure(
    measure: Callable[[ServerFactory, ClientFactory, float], Coroutine[Any, Any, float]],
    sides: Callable[[], tuple[ServerFactory, ClientFactory]],
    seconds: float,
) -> float:
    return asyncio.run(measure(*sides(), seconds))


def run(seconds: float = 2.0) -> list[dict[str, Any]]:
    """Each engine vs the stdlib, ``seconds`` per measurement (split in alternating rounds)."""
    with tempfile.TemporaryDirectory() as tmp:
        setup = _Setup(tmp)
        return [
            side_by_side(
                name,
                engine,
                unit,
                partial(_measure, measure, setup.stdlib),
                partial(_measure, measure, partial(setup.unitls, engine)),
                seconds,
                digits=1,
            )
            for name, measure, unit in (
                ("asyncio bulk throughput", _bulk, "MiB/s"),
                ("asyncio handshakes", _handshakes, "handshakes/s"),
            )
            for engine in unitls.implementations()
        ]


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'benchmark':<26} {'engine':<8} {'value':>10} {'stdlib':>10} {'ratio':>7}  unit"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<26} {r['engine']:<8} {r['value']:>10.1f} {r['baseline']:>10.1f} "
            f"{r['ratio']:>7.3f}  {r['unit']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(_table(run(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)))
