"""Third-party clients and servers on the bridge: urllib3, requests, httpx, aiohttp, trio, anyio,
websockets, uvicorn (each skipped when not installed; every engine)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from compat_servers import (
    BULK,
    TIMEOUT,
    CertFiles,
    bridge_client,
    bridge_server,
    cert_files,
    https_server,
    plain_client,
    plain_server,
)

import unitls.compat
from unitls.compat import SSLContext

__all__ = ["bridge_client", "bridge_server", "cert_files", "plain_client", "plain_server"]

Engine = unitls.TLSImplementation[Any, Any]


@pytest.fixture
def plain_https(plain_server: ssl.SSLContext) -> Iterator[int]:
    with https_server(plain_server) as port:
        yield port


@pytest.fixture
def wraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every connection the bridge makes (to prove a library really went through it)."""
    calls: list[str] = []
    orig_socket, orig_bio = SSLContext._wrap_socket, SSLContext._wrap_bio

    def spy_socket(self: SSLContext, *args: Any, **kwargs: Any) -> Any:
        calls.append("socket")
        return orig_socket(self, *args, **kwargs)

    def spy_bio(self: SSLContext, *args: Any, **kwargs: Any) -> Any:
        calls.append("bio")
        return orig_bio(self, *args, **kwargs)

    monkeypatch.setattr(SSLContext, "_wrap_socket", spy_socket)
    monkeypatch.setattr(SSLContext, "_wrap_bio", spy_bio)
    return calls


@pytest.fixture
def injected(engine: Engine) -> Iterator[None]:
    unitls.compat.inject_into_ssl(engine)
    try:
        yield
    finally:
        unitls.compat.extract_from_ssl()


# -- urllib3 / requests ------------------------------------------------------------------------


def test_urllib3(bridge_client: SSLContext, plain_https: int, wraps: list[str]) -> None:
    urllib3 = pytest.importorskip("urllib3")
    with urllib3.PoolManager(ssl_context=bridge_client, timeout=TIMEOUT) as pool:
        for _ in range(3):
            r = pool.request("GET", f"https://127.0.0.1:{plain_https}/bulk?n=8")
            assert r.status == 200 and r.data == BULK * 8
    assert wraps == ["socket"]  # one pooled connection


def test_urllib3_injected_ca_certs(
    injected: None, cert_files: CertFiles, plain_https: int, wraps: list[str]
) -> None:
    urllib3 = pytest.importorskip("urllib3")
    with urllib3.PoolManager(ca_certs=str(cert_files.ca_file), timeout=TIMEOUT) as pool:
        r = pool.request("GET", f"https://127.0.0.1:{plain_https}/u3")
        assert r.data == b"hello from /u3"
    assert wraps
    with urllib3.PoolManager(timeout=TIMEOUT, retries=False) as pool:
        with pytest.raises(urllib3.exceptions.SSLError) as info:
            pool.request("GET", f"https://127.0.0.1:{plain_https}/")
        assert isinstance(info.value.__context__ or info.value.__cause__, ssl.SSLError)


def test_requests_injected(
    injected: None, cert_files: CertFiles, plain_https: int, wraps: list[str]
) -> None:
    requests = pytest.importorskip("requests")
    with requests.Session() as session:
        r = session.get(
            f"https://127.0.0.1:{plain_https}/rq", verify=str(cert_files.ca_file), timeout=TIMEOUT
        )
        assert r.text == "hello from /rq"
        r = session.post(
            f"https://127.0.0.1:{plain_https}/",
            data=b"d" * 100_000,
            verify=str(cert_files.ca_file),
            timeout=TIMEOUT,
        )
        assert r.content == b"d" * 100_000
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"https://127.0.0.1:{plain_https}/", timeout=TIMEOUT)
    assert wraps


# -- httpx (sync, async, HTTP/2) ---------------------------------------------------------------


def test_httpx_sync(bridge_client: SSLContext, plain_https: int, wraps: list[str]) -> None:
    httpx = pytest.importorskip("httpx")
    with httpx.Client(verify=bridge_client, timeout=TIMEOUT) as client:
        r = client.get(f"https://127.0.0.1:{plain_https}/hx")
        assert r.text == "hello from /hx" and r.http_version == "HTTP/1.1"
    assert wraps == ["socket"]


def test_httpx_async(bridge_client: SSLContext, plain_https: int, wraps: list[str]) -> None:
    httpx = pytest.importorskip("httpx")

    async def main() -> None:
        async with httpx.AsyncClient(verify=bridge_client, timeout=TIMEOUT) as client:
            r = await client.get(f"https://127.0.0.1:{plain_https}/bulk?n=16")
            assert r.content == BULK * 16

    asyncio.run(main())
    assert wraps == ["bio"]


async def _h2_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    try:
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers)[b":path"]
                    body = b"h2 says " + path
                    conn.send_headers(
                        event.stream_id,
                        [(":status", "200"), ("content-length", str(len(body)))],
                    )
                    conn.send_data(event.stream_id, body, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
    finally:
        writer.close()


def test_httpx_http2_alpn(
    engine: Engine, bridge_client: SSLContext, plain_server: ssl.SSLContext
) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    plain_server.set_alpn_protocols(["h2", "http/1.1"])

    async def main() -> None:
        server = await asyncio.start_server(_h2_server, "127.0.0.1", 0, ssl=plain_server)
        port = server.sockets[0].getsockname()[1]
        async with server:
            async with httpx.AsyncClient(verify=bridge_client, http2=True, timeout=TIMEOUT) as c:
                r = await c.get(f"https://127.0.0.1:{port}/two")
                assert r.http_version == "HTTP/2" and r.text == "h2 says /two"

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


# -- aiohttp -----------------------------------------------------------------------------------


def test_aiohttp_client_and_server(
    bridge_client: SSLContext, bridge_server: SSLContext, wraps: list[str]
) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=b"aiohttp " + request.path.encode())

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=bridge_server)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"https://127.0.0.1:{port}/ah", ssl=bridge_client) as r:
                    assert await r.read() == b"aiohttp /ah"
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert wraps.count("bio") == 2  # client and server side


# -- trio / anyio ------------------------------------------------------------------------------


class ThreadEchoServer:
    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.ctx = ctx
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            raw, _ = self.listener.accept()
        except OSError:
            return
        raw.settimeout(TIMEOUT)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                while data := conn.recv(65536):
                    conn.sendall(data.upper())
                conn.unwrap()  # answer the client's close_notify (anyio insists on it)
        except OSError:
            pass

    def close(self) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()


def test_trio_sslstream(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    trio = pytest.importorskip("trio")
    server = ThreadEchoServer(plain_server)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            stream = trio.SSLStream(tcp, bridge_client, server_hostname="localhost")
            await stream.do_handshake()
            payload = b"t" * 300_000  # send_all ignores short writes: write() must take it all
            await stream.send_all(payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await stream.receive_some(65536)
            assert bytes(got) == payload.upper()
            assert stream.selected_alpn_protocol() is None and stream.version()
            await stream.aclose()

    try:
        trio.run(main)
    finally:
        server.close()


def test_anyio(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    anyio = pytest.importorskip("anyio")
    server = ThreadEchoServer(plain_server)

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            stream = await anyio.connect_tcp(
                "127.0.0.1", server.port, ssl_context=bridge_client, tls_hostname="localhost"
            )
            async with stream:
                payload = b"y" * 300_000
                await stream.send(payload)
                got = bytearray()
                while len(got) < len(payload):
                    got += await stream.receive()
                assert bytes(got) == payload.upper()

    try:
        anyio.run(main, backend="asyncio")
    finally:
        server.close()


# -- websockets --------------------------------------------------------------------------------


def test_websockets(bridge_client: SSLContext, bridge_server: SSLContext) -> None:
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.sync.client import connect as sync_connect

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message[::-1])

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, ssl=bridge_server) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            uri = f"wss://127.0.0.1:{port}/"
            async with connect(uri, ssl=bridge_client, server_hostname="localhost") as ws:
                await ws.send("hello")
                assert await ws.recv() == "olleh"

            # The sync client wraps a blocking socket: the SSLSocket path.
            def sync() -> str:
                with sync_connect(uri, ssl=bridge_client, server_hostname="localhost") as ws:
                    ws.send("abc")
                    return str(ws.recv(timeout=TIMEOUT))

            assert await asyncio.to_thread(sync) == "cba"

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


# -- uvicorn -----------------------------------------------------------------------------------


def test_uvicorn_injected(
    injected: None, cert_files: CertFiles, plain_client: ssl.SSLContext, wraps: list[str]
) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    import http.client

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"7")]}
        )
        await send({"type": "http.response.body", "body": b"uvicorn"})

    # uvicorn builds its own ssl.SSLContext from files: injection routes it through the bridge.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ssl_certfile=str(cert_files.cert_file),
        ssl_keyfile=str(cert_files.key_file),
        log_level="critical",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=plain_client, timeout=TIMEOUT)
        try:
            conn.request("GET", "/", headers={"Host": "localhost"})
            assert conn.getresponse().read() == b"uvicorn"
        finally:
            conn.close()
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
    assert "bio" in wraps
