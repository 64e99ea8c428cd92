"""Standard-library clients and servers running on the bridge (every engine)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import urllib.request
import xmlrpc.client
import xmlrpc.server
from collections.abc import Iterator
from typing import Any

import pytest
from compat_servers import (
    BULK,
    TIMEOUT,
    CertFiles,
    LineIO,
    LineServer,
    bridge_client,
    bridge_server,
    cert_files,
    https_server,
    line_server,
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
def injected(engine: Engine) -> Iterator[None]:
    unitls.compat.inject_into_ssl(engine)
    try:
        yield
    finally:
        unitls.compat.extract_from_ssl()


# -- HTTP --------------------------------------------------------------------------------------


def test_http_client(bridge_client: SSLContext, plain_https: int) -> None:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", plain_https, context=bridge_client, timeout=TIMEOUT
    )
    try:
        for path in ("/a", "/b"):  # keep-alive: two requests on one connection
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b"hello from " + path.encode()
        conn.request("GET", "/bulk?n=32")
        assert conn.getresponse().read() == BULK * 32
        body = b"p" * 200_000
        conn.request("POST", "/echo", body=body)
        assert conn.getresponse().read() == body
        assert isinstance(conn.sock, ssl.SSLSocket)
    finally:
        conn.close()


def test_http_client_default_context_injected(
    injected: None, cert_files: CertFiles, plain_https: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No context given: http.client asks ssl for the default one, which is now the bridge
    # (with post_handshake_auth set by http.client, harmless on a client). Trust the test CA
    # through create_default_context (not SSL_CERT_FILE: engines cache the system store).
    monkeypatch.setattr(
        ssl,
        "_create_default_https_context",
        lambda: ssl.create_default_context(cafile=str(cert_files.ca_file)),
    )
    conn = http.client.HTTPSConnection("127.0.0.1", plain_https, timeout=TIMEOUT)
    try:
        conn.request("GET", "/x")
        assert conn.getresponse().read() == b"hello from /x"
        assert isinstance(conn.sock.context, SSLContext)
    finally:
        conn.close()


def test_urllib_request(bridge_client: SSLContext, plain_https: int) -> None:
    url = f"https://127.0.0.1:{plain_https}/peer"
    with urllib.request.urlopen(url, context=bridge_client, timeout=TIMEOUT) as resp:
        info = json.loads(resp.read())
    assert info["version"] in ("TLSv1.2", "TLSv1.3")


def test_urllib_verification_error(engine: Engine, plain_https: int) -> None:
    ctx = SSLContext(implementation=engine)
    ctx.load_default_certs()  # the test CA is not in the system store
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(f"https://127.0.0.1:{plain_https}/", context=ctx, timeout=TIMEOUT)
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_xmlrpc(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)
    server.register_function(lambda a, b: a + b, "add")
    server.socket = plain_server.wrap_socket(server.socket, server_side=True)
    import threading

    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        port = server.server_address[1]
        proxy = xmlrpc.client.ServerProxy(f"https://127.0.0.1:{port}/", context=bridge_client)
        with proxy:
            assert proxy.add(2, 3) == 5
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def test_http_server_on_bridge(bridge_server: SSLContext, plain_client: ssl.SSLContext) -> None:
    with https_server(bridge_server) as port:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=plain_client, timeout=TIMEOUT)
        try:
            conn.request("GET", "/peer")
            info = json.loads(conn.getresponse().read())
            assert info["version"] in ("TLSv1.2", "TLSv1.3")
            conn.request("GET", "/bulk?n=16")
            assert conn.getresponse().read() == BULK * 16
        finally:
            conn.close()


def test_bridge_client_and_server(bridge_server: SSLContext, bridge_client: SSLContext) -> None:
    with https_server(bridge_server) as port:
        url = f"https://127.0.0.1:{port}/both"
        with urllib.request.urlopen(url, context=bridge_client, timeout=TIMEOUT) as resp:
            assert resp.read() == b"hello from /both"


# -- asyncio -----------------------------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
    finally:
        writer.close()


def test_asyncio_client(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=plain_server)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=bridge_client, server_hostname="localhost"
            )
            ssl_object = writer.get_extra_info("ssl_object")
            assert isinstance(ssl_object, ssl.SSLObject)
            assert writer.get_extra_info("peercert")["subject"]
            payload = b"a" * 500_000
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(len(payload))
            assert got == payload.upper()
            writer.close()
            await writer.wait_closed()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_asyncio_server(bridge_server: SSLContext, plain_client: ssl.SSLContext) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=bridge_server)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=plain_client, server_hostname="localhost"
            )
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"HELLO"
            writer.close()
            await writer.wait_closed()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_asyncio_start_tls(bridge_client: SSLContext, bridge_server: SSLContext) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(bridge_server)
        await _echo(reader, writer)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"GO\n"
            await writer.start_tls(bridge_client, server_hostname="localhost")
            writer.write(b"secret")
            assert await reader.readexactly(6) == b"SECRET"
            writer.close()
            await writer.wait_closed()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_asyncio_verification_error(engine: Engine, plain_server: ssl.SSLContext) -> None:
    ctx = SSLContext(implementation=engine)
    ctx.load_default_certs()

    async def main() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=plain_server)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
                )

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


# -- mail and FTP ------------------------------------------------------------------------------


def test_smtp_starttls_and_smtps(
    engine: Engine, injected: None, cert_files: CertFiles, plain_server: ssl.SSLContext
) -> None:
    smtplib = pytest.importorskip("smtplib")
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)
            return "250 OK"

    starttls = controller_mod.Controller(
        Sink(), hostname="127.0.0.1", port=0, tls_context=plain_server, require_starttls=True
    )
    _start_controller(starttls)
    try:
        with smtplib.SMTP("127.0.0.1", starttls.port, timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            # Injected: ssl._create_stdlib_context now verifies, so give it the CA via cafile.
            ctx = ssl._create_stdlib_context(cafile=str(cert_files.ca_file))
            assert isinstance(ctx, SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
            smtp.starttls(context=ctx)
            assert isinstance(smtp.sock, ssl.SSLSocket)
            smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: hi\r\n\r\nstarttls")
    finally:
        starttls.stop()
    smtps = controller_mod.Controller(
        Sink(), hostname="127.0.0.1", port=0, ssl_context=plain_server
    )
    _start_controller(smtps)
    try:
        ctx = ssl.create_default_context(cafile=str(cert_files.ca_file))
        with smtplib.SMTP_SSL("127.0.0.1", smtps.port, context=ctx, timeout=TIMEOUT) as smtp:
            smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: hi\r\n\r\nsmtps")
    finally:
        smtps.stop()
    assert len(received) == 2 and b"starttls" in received[0] and b"smtps" in received[1]


def _start_controller(controller: Any) -> None:
    # Controller.start() needs a fixed port and probes the server with a client of its own
    # (with ssl injected, one without our CA): start its loop directly on port 0 instead.
    import threading

    controller.loop.set_exception_handler(lambda loop, ctx: None)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(controller.loop)
        controller.server_coro = controller._create_server()
        controller.server = controller.loop.run_until_complete(controller.server_coro)
        ready.set()
        controller.loop.run_forever()

    controller._thread = threading.Thread(target=run, daemon=True)
    controller._thread.start()
    assert ready.wait(TIMEOUT)
    controller.port = controller.server.sockets[0].getsockname()[1]


def _imap_session(sock: socket.socket, server: LineServer) -> None:
    io = LineIO(server.tls.wrap_socket(sock, server_side=True))
    io.send("* OK IMAP4rev1 ready")
    while line := io.recv():
        tag, _, command = line.partition(" ")
        verb = command.split(" ")[0].upper()
        if verb == "CAPABILITY":
            io.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
            io.send(f"{tag} OK CAPABILITY completed")
        elif verb == "LOGIN":
            io.send(f"{tag} OK LOGIN completed")
        elif verb == "NOOP":
            io.send(f"{tag} OK NOOP completed")
        elif verb == "LOGOUT":
            io.send("* BYE bye")
            io.send(f"{tag} OK LOGOUT completed")
            return
        else:
            io.send(f"{tag} BAD unknown")


def test_imaplib(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    import imaplib

    with line_server(_imap_session, plain_server) as server:
        port = server.server_address[1]
        imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=bridge_client, timeout=TIMEOUT)
        try:
            assert imap.login("user", "pass")[0] == "OK"
            assert imap.noop()[0] == "OK"
        finally:
            imap.logout()
    assert not server.errors


def _pop_session(sock: socket.socket, server: LineServer) -> None:
    io = LineIO(sock)
    io.send("+OK POP3 ready")
    while line := io.recv():
        verb = line.split(" ")[0].upper()
        if verb == "CAPA":
            io.send("+OK capabilities")
            io.send("STLS")
            io.send("USER")
            io.send(".")
        elif verb == "STLS":
            io.send("+OK begin TLS")
            io.rewrap(server.tls.wrap_socket(sock, server_side=True))
        elif verb in ("USER", "PASS", "NOOP"):
            io.send("+OK")
        elif verb == "STAT":
            io.send("+OK 1 42")
        elif verb == "QUIT":
            io.send("+OK bye")
            return
        else:
            io.send("-ERR unknown")


def test_poplib_stls(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    import poplib

    with line_server(_pop_session, plain_server) as server:
        pop = poplib.POP3("127.0.0.1", server.server_address[1], timeout=TIMEOUT)
        try:
            pop.stls(context=bridge_client)
            assert isinstance(pop.sock, ssl.SSLSocket)
            pop.user("u")
            pop.pass_("p")
            assert pop.stat() == (1, 42)
        finally:
            pop.quit()
    assert not server.errors


def test_ftplib_prot_p(
    engine: Engine, cert_files: CertFiles, tmp_path: Any, bridge_client: SSLContext
) -> None:
    pytest.importorskip("OpenSSL")
    authorizers = pytest.importorskip("pyftpdlib.authorizers")
    handlers = pytest.importorskip("pyftpdlib.handlers")
    servers = pytest.importorskip("pyftpdlib.servers")
    import ftplib
    import logging
    import threading

    logging.getLogger("pyftpdlib").setLevel(logging.CRITICAL)
    root = tmp_path / "ftp"
    root.mkdir()
    (root / "file.bin").write_bytes(BULK * 4)
    auth = authorizers.DummyAuthorizer()
    auth.add_user("user", "pass", str(root), perm="elradfmw")

    class Handler(handlers.TLS_FTPHandler):
        pass

    Handler.certfile = str(cert_files.cert_file)
    Handler.keyfile = str(cert_files.key_file)
    Handler.authorizer = auth
    Handler.tls_control_required = True
    Handler.tls_data_required = True
    server = servers.FTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"timeout": 0.05, "blocking": True}, daemon=True
    )
    thread.start()
    try:
        ftp = ftplib.FTP_TLS(context=bridge_client, timeout=TIMEOUT)
        ftp.connect("127.0.0.1", server.address[1])
        ftp.login("user", "pass")
        ftp.prot_p()
        chunks: list[bytes] = []
        ftp.retrbinary("RETR file.bin", chunks.append)
        assert b"".join(chunks) == BULK * 4
        import io

        ftp.storbinary("STOR up.bin", io.BytesIO(b"uploaded" * 1000))
        ftp.quit()
        assert (root / "up.bin").read_bytes() == b"uploaded" * 1000
    finally:
        server.close_all()
        thread.join(TIMEOUT)
