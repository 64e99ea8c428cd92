"""Standard-library clients and servers running on the bridge (every engine)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import logging
import os
import socket
import ssl
import struct
import urllib.request
import xmlrpc.client
import xmlrpc.server
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
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
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
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
    _pop_commands(LineIO(sock), sock, server)


def _pop_commands(io: LineIO, sock: socket.socket, server: LineServer) -> None:
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


# -- more mail and FTP: STARTTLS for IMAP, implicit TLS for POP3 ------------------------------


def _imap_starttls_session(sock: socket.socket, server: LineServer) -> None:
    io = LineIO(sock)
    tls = False
    io.send("* OK IMAP4rev1 ready")
    while line := io.recv():
        tag, _, command = line.partition(" ")
        verb = command.split(" ")[0].upper()
        if verb == "CAPABILITY":
            # RFC 3501: STARTTLS (and LOGINDISABLED) only before TLS is up.
            caps = "IMAP4rev1 AUTH=PLAIN" if tls else "IMAP4rev1 STARTTLS LOGINDISABLED"
            io.send(f"* CAPABILITY {caps}")
            io.send(f"{tag} OK CAPABILITY completed")
        elif verb == "STARTTLS" and not tls:
            io.send(f"{tag} OK Begin TLS negotiation now")
            io.rewrap(server.tls.wrap_socket(sock, server_side=True))
            tls = True
        elif verb == "LOGIN":
            io.send(f"{tag} OK LOGIN completed" if tls else f"{tag} NO LOGIN needs TLS")
        elif verb == "NOOP":
            io.send(f"{tag} OK NOOP completed")
        elif verb == "LOGOUT":
            io.send("* BYE bye")
            io.send(f"{tag} OK LOGOUT completed")
            return
        else:
            io.send(f"{tag} BAD unknown")


def test_imaplib_starttls(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    import imaplib

    with line_server(_imap_starttls_session, plain_server) as server:
        imap = imaplib.IMAP4("127.0.0.1", server.server_address[1], timeout=TIMEOUT)
        try:
            assert "STARTTLS" in imap.capabilities
            assert imap.starttls(ssl_context=bridge_client)[0] == "OK"
            assert isinstance(imap.sock, ssl.SSLSocket) and imap.sock.context is bridge_client
            assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")
            # imaplib asked for the capabilities again over TLS: no STARTTLS any more.
            assert "STARTTLS" not in imap.capabilities
            assert imap.login("user", "pass")[0] == "OK"
            assert imap.noop()[0] == "OK"
        finally:
            imap.logout()
    assert not server.errors


def _pops_session(sock: socket.socket, server: LineServer) -> None:
    tls = server.tls.wrap_socket(sock, server_side=True)
    _pop_commands(LineIO(tls), tls, server)


def test_poplib_pop3_ssl(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    import poplib

    with line_server(_pops_session, plain_server) as server:
        pop = poplib.POP3_SSL(
            "127.0.0.1", server.server_address[1], context=bridge_client, timeout=TIMEOUT
        )
        try:
            assert isinstance(pop.sock, ssl.SSLSocket) and pop.sock.context is bridge_client
            assert pop.getwelcome() == b"+OK POP3 ready"
            pop.user("u")
            pop.pass_("p")
            assert pop.stat() == (1, 42)
        finally:
            pop.quit()
    assert not server.errors


# -- FTP over TLS: every TLS layer ends with our close_notify -----------------------------------


@dataclass
class _FTPEvents:
    """What the pyftpdlib server saw: every log record and every failed TLS handshake."""

    records: list[logging.LogRecord] = field(default_factory=list)
    failed_handshakes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        # TLS trouble on the server side shows up as warnings/errors, failed handshakes,
        # unexpected EOFs (a peer gone without close_notify) or unhandled exceptions.
        bad = ("SysCallError", "Unexpected SSL EOF", "handshake failed", "unhandled exception")
        out = [f"failed handshake in {h}" for h in self.failed_handshakes]
        for rec in self.records:
            msg = rec.getMessage()
            if rec.levelno >= logging.WARNING or any(b in msg for b in bad):
                out.append(msg)
        return out

    def close_notify_received(self, channel: str) -> int:
        """How many ``channel`` ("control"/"data") connections read a close_notify."""
        handler = {"control": "<_Control(", "data": "<_Data("}[channel]
        return sum(
            "recv() -> shutdown(), err: zero-return" in r.getMessage() and handler in r.getMessage()
            for r in self.records
        )


class _Recorder(logging.Handler):
    def __init__(self, events: _FTPEvents) -> None:
        super().__init__(logging.DEBUG)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.records.append(record)


@contextlib.contextmanager
def _pyftpd(cert_files: CertFiles, root: Any) -> Iterator[tuple[int, _FTPEvents]]:
    """A pyftpdlib TLS server (pyOpenSSL) requiring TLS on both channels, with its log."""
    pytest.importorskip("OpenSSL")
    authorizers = pytest.importorskip("pyftpdlib.authorizers")
    handlers = pytest.importorskip("pyftpdlib.handlers")
    servers = pytest.importorskip("pyftpdlib.servers")
    import threading

    events = _FTPEvents()
    auth = authorizers.DummyAuthorizer()
    auth.add_user("user", "pass", str(root), perm="elradfmw")

    # pyftpdlib logs handlers by class name: these names tell the two channels apart.
    class _Data(handlers.TLS_DTPHandler):  # type: ignore[misc,name-defined]
        def handle_failed_ssl_handshake(self) -> None:
            events.failed_handshakes.append("data channel")
            super().handle_failed_ssl_handshake()

    class _Control(handlers.TLS_FTPHandler):  # type: ignore[misc,name-defined]
        dtp_handler = _Data

        def handle_failed_ssl_handshake(self) -> None:
            events.failed_handshakes.append("control channel")
            super().handle_failed_ssl_handshake()

    _Control.certfile = str(cert_files.cert_file)
    _Control.keyfile = str(cert_files.key_file)
    _Control.authorizer = auth
    _Control.tls_control_required = True
    _Control.tls_data_required = True
    logger = logging.getLogger("pyftpdlib")
    recorder = _Recorder(events)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(recorder)
    logger.setLevel(logging.DEBUG)  # pyftpdlib reports TLS shutdown details at DEBUG only
    logger.propagate = False
    server = servers.FTPServer(("127.0.0.1", 0), _Control)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"timeout": 0.05, "blocking": True}, daemon=True
    )
    thread.start()
    try:
        yield server.address[1], events
    finally:
        server.close_all()
        thread.join(TIMEOUT)
        logger.removeHandler(recorder)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


@pytest.fixture
def unwraps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ssl.SSLSocket, BaseException | None]]:
    """Every ``ssl.SSLSocket.unwrap()`` call as (socket, exception or None): instrumentation
    around the real method (ftplib calls it on its data connections), not a mock."""
    calls: list[tuple[ssl.SSLSocket, BaseException | None]] = []
    original = ssl.SSLSocket.unwrap

    def recording(self: ssl.SSLSocket) -> Any:
        try:
            result = original(self)
        except BaseException as exc:
            calls.append((self, exc))
            raise
        calls.append((self, None))
        return result

    monkeypatch.setattr(ssl.SSLSocket, "unwrap", recording)
    return calls


def test_ftplib_prot_p_close_notify(
    cert_files: CertFiles,
    tmp_path: Any,
    bridge_client: SSLContext,
    unwraps: list[tuple[ssl.SSLSocket, BaseException | None]],
) -> None:
    import ftplib

    root = tmp_path / "ftp"
    root.mkdir()
    (root / "file.bin").write_bytes(BULK * 4)
    with _pyftpd(cert_files, root) as (port, events):
        ftp = ftplib.FTP_TLS(context=bridge_client, timeout=TIMEOUT)
        try:
            ftp.connect("127.0.0.1", port)
            ftp.login("user", "pass")
            ftp.prot_p()
            control = ftp.sock
            assert isinstance(control, ssl.SSLSocket) and control.context is bridge_client
            chunks: list[bytes] = []
            ftp.retrbinary("RETR file.bin", chunks.append)  # download
            assert b"".join(chunks) == BULK * 4
            ftp.storbinary("STOR up.bin", io.BytesIO(b"uploaded" * 1000))  # upload
            listing: list[str] = []
            ftp.retrlines("LIST", listing.append)  # text download
            assert any("up.bin" in entry for entry in listing)
            # Three protected data connections, each a bridge socket, each unwrapped by ftplib:
            # our close_notify went out and the server's came back.
            assert len(unwraps) == 3, unwraps
            for sock, error in unwraps:
                assert error is None, error
                assert sock is not control and sock.context is bridge_client
            assert len({id(sock) for sock, _ in unwraps}) == 3
            assert ftp.voidcmd("NOOP").startswith("200")
            # ftplib's quit() closes the control channel without close_notify (so does plain
            # ssl); ccc() is its only way to send one, which pyftpdlib does not implement.
            # Close the TLS layer the way ccc() does: unwrap, then the server answers with its
            # own close_notify and hangs up.
            plain = control.unwrap()
            assert plain is control and control.version() is None  # cleartext now
            assert len(unwraps) == 4 and unwraps[3] == (control, None)
        finally:
            ftp.close()
        # The server read our close_notify on the upload's data channel (downloads end with
        # the server's close_notify first, so it closes before reading ours) and on the
        # control channel. It logs that before sending its own, which our unwrap waited for.
        assert events.close_notify_received("data") == 1
        assert events.close_notify_received("control") == 1
    assert not events.problems(), events.problems()  # server stopped: its log is complete
    assert (root / "up.bin").read_bytes() == b"uploaded" * 1000


# pyftpdlib answers CCC with "500 not understood": CCC is tested against the stand-in below.


def _ftp_session(sock: socket.socket, server: LineServer) -> None:
    """An FTP control channel stand-in: AUTH TLS, login, CCC (back to cleartext), QUIT."""
    io = LineIO(sock)
    io.send("220 ready")
    while line := io.recv():
        verb = line.split(" ")[0].upper()
        if verb == "AUTH":
            io.send("234 AUTH TLS ok")
            io.rewrap(server.tls.wrap_socket(sock, server_side=True))
        elif verb == "USER":
            io.send("331 password please")
        elif verb == "PASS":
            io.send("230 logged in")
        elif verb == "CCC":
            io.send("200 CCC ok")
            tls = io.sock
            assert isinstance(tls, ssl.SSLSocket)
            # A complete unwrap: ours goes out, the client's close_notify must come in.
            io.rewrap(tls.unwrap())
            server.events.append("unwrapped")  # type: ignore[attr-defined]
        elif verb == "NOOP":
            tls_now = isinstance(io.sock, ssl.SSLSocket) and io.sock.version() is not None
            io.send(f"200 NOOP ok ({'tls' if tls_now else 'cleartext'})")
        elif verb == "QUIT":
            io.send("221 bye")
            return
        else:
            io.send("502 not implemented")


@contextlib.contextmanager
def _ftp_standin(tls: ssl.SSLContext) -> Iterator[LineServer]:
    with line_server(_ftp_session, tls) as server:
        server.events = []  # type: ignore[attr-defined]
        yield server


def test_ftplib_ccc(
    bridge_client: SSLContext,
    plain_server: ssl.SSLContext,
    unwraps: list[tuple[ssl.SSLSocket, BaseException | None]],
) -> None:
    import ftplib

    with _ftp_standin(plain_server) as server:
        ftp = ftplib.FTP_TLS(context=bridge_client, timeout=TIMEOUT)
        try:
            ftp.connect("127.0.0.1", server.server_address[1])
            ftp.login("user", "pass")
            control = ftp.sock
            assert isinstance(control, ssl.SSLSocket) and control.context is bridge_client
            assert ftp.voidcmd("NOOP") == "200 NOOP ok (tls)"
            assert ftp.ccc().startswith("200")
            # Both close_notify alerts crossed exactly: the next command is cleartext on
            # both sides, with no TLS byte left over in either direction.
            # (The stand-in's own unwrap, on a plain ssl socket, is recorded too.)
            assert [u for u in unwraps if u[0].context is bridge_client] == [(control, None)]
            assert ftp.voidcmd("NOOP") == "200 NOOP ok (cleartext)"
            ftp.quit()
        finally:
            ftp.close()
        assert server.events == ["unwrapped"]  # type: ignore[attr-defined]
    assert not server.errors


# -- injection: the stdlib's mail and FTP clients verify without a context ---------------------


def test_smtplib_starttls_no_context_untrusted(
    injected: None, plain_server: ssl.SSLContext
) -> None:
    smtplib = pytest.importorskip("smtplib")
    controller_mod = pytest.importorskip("aiosmtpd.controller")

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    controller = controller_mod.Controller(
        Sink(), hostname="127.0.0.1", port=0, tls_context=plain_server, require_starttls=True
    )
    _start_controller(controller)
    try:
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            # The test CA is in no system store: a verifying default context must refuse it.
            with pytest.raises(ssl.SSLCertVerificationError):
                smtp.starttls()
            assert not isinstance(smtp.sock, ssl.SSLSocket)
    finally:
        controller.stop()


_SMTP_CHILD = """
import json, smtplib, ssl, sys
import unitls.compat
from unitls.compat import SSLContext

engine, port = sys.argv[1], int(sys.argv[2])
unitls.compat.inject_into_ssl(engine)
try:
    paths = ssl.get_default_verify_paths()
    contexts = []
    original = ssl._create_stdlib_context  # the injected one: record what smtplib gets

    def spy(*args, **kwargs):
        ctx = original(*args, **kwargs)
        contexts.append(ctx)
        return ctx

    ssl._create_stdlib_context = spy
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.starttls()  # no context argument
        ctx = contexts[0]
        smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: hi\\r\\n\\r\\ninjected")
        print(json.dumps({
            "cafile": paths.cafile,
            "bridge": isinstance(ctx, SSLContext) and isinstance(smtp.sock.context, SSLContext),
            "engine": ctx.implementation.name,
            "verify": ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname,
            "version": smtp.sock.version(),
        }))
finally:
    unitls.compat.extract_from_ssl()
"""


def test_smtplib_starttls_no_context_trusted_via_ssl_cert_file(
    engine: Engine, cert_files: CertFiles, plain_server: ssl.SSLContext
) -> None:
    # SSL_CERT_FILE is read when the system store is first loaded, and both engines keep that
    # store for the life of the process: only a fresh interpreter sees it reliably.
    import subprocess
    import sys

    controller_mod = pytest.importorskip("aiosmtpd.controller")
    if engine.name not in unitls.implementations():
        pytest.skip(f"engine {engine.name!r} cannot be named in a child process")
    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)
            return "250 OK"

    controller = controller_mod.Controller(
        Sink(), hostname="127.0.0.1", port=0, tls_context=plain_server, require_starttls=True
    )
    _start_controller(controller)
    src = os.path.dirname(os.path.dirname(os.path.abspath(unitls.__file__)))
    env = dict(os.environ)
    env["SSL_CERT_FILE"] = str(cert_files.ca_file)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    try:
        child = subprocess.run(
            [sys.executable, "-c", _SMTP_CHILD, engine.name, str(controller.port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        controller.stop()
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result == {
        "cafile": str(cert_files.ca_file),
        "bridge": True,
        "engine": engine.name,
        "verify": True,
        "version": result["version"],
    }
    assert result["version"] in ("TLSv1.2", "TLSv1.3")
    assert len(received) == 1 and b"injected" in received[0]


def test_ftplib_no_context_untrusted(injected: None, plain_server: ssl.SSLContext) -> None:
    import ftplib

    with _ftp_standin(plain_server) as server:
        ftp = ftplib.FTP_TLS(timeout=TIMEOUT)  # context made now, while injected
        try:
            assert isinstance(ftp.context, SSLContext)
            assert ftp.context.verify_mode == ssl.CERT_REQUIRED and ftp.context.check_hostname
            ftp.connect("127.0.0.1", server.server_address[1])
            with pytest.raises(ssl.SSLCertVerificationError):
                ftp.login("user", "pass")  # AUTH TLS first
        finally:
            ftp.close()


def test_imaplib_ssl_no_context_untrusted(injected: None, plain_server: ssl.SSLContext) -> None:
    import imaplib

    with line_server(_imap_session, plain_server) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            imaplib.IMAP4_SSL("127.0.0.1", server.server_address[1], timeout=TIMEOUT)


# -- errors seen through http.client: the same exceptions as the stdlib's ssl ------------------


def _plain_http_session(sock: socket.socket, server: LineServer) -> None:
    # An HTTP/1.1 server taking the ClientHello for a bad request.
    sock.recv(65536)
    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):  # until the client hangs up: closing earlier could send a RST
        pass


def _reset_session(sock: socket.socket, server: LineServer) -> None:
    sock.recv(65536)  # the ClientHello
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, no FIN first (socketserver would shut down SHUT_WR before closing)


def _eof_session(sock: socket.socket, server: LineServer) -> None:
    sock.recv(65536)
    sock.shutdown(socket.SHUT_WR)  # a clean TCP FIN in the middle of the handshake
    while sock.recv(65536):
        pass


def _https_failure(context: ssl.SSLContext, port: int) -> BaseException:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=TIMEOUT)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
    except Exception as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("the request succeeded against a server that does not speak TLS")


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        (_plain_http_session, ssl.SSLError),
        (_reset_session, (ConnectionResetError, ssl.SSLError)),
        (_eof_session, ssl.SSLEOFError),
    ],
    ids=["plain-http", "reset", "eof"],
)
def test_http_client_errors_match_stdlib(
    bridge_client: SSLContext,
    plain_client: ssl.SSLContext,
    plain_server: ssl.SSLContext,
    session: Any,
    expected: Any,
) -> None:
    with line_server(session, plain_server) as server:
        port = server.server_address[1]
        reference = _https_failure(plain_client, port)
        got = _https_failure(bridge_client, port)
    # The reference pins down the stdlib's behaviour here (so a mismatch in the test setup
    # shows up as such), then the bridge must raise the same class (or a subclass) and errno.
    assert isinstance(reference, expected) and isinstance(reference, OSError), repr(reference)
    assert isinstance(got, type(reference)), f"bridge: {got!r}, stdlib: {reference!r}"
    assert got.errno == reference.errno, f"bridge: {got!r}, stdlib: {reference!r}"
    assert not isinstance(got, unitls.TLSError)  # translated, not a raw engine error
    assert not isinstance(got, TimeoutError)
