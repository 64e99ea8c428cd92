"""Local peers for the ssl.SSLContext bridge tests (127.0.0.1 only, threads, timeouts)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unitls._certgen import CA, Issued
from unitls.compat import ORIGINAL_SSLCONTEXT

TIMEOUT = 10.0
BULK = b"0123456789abcdef" * 4096  # 64 KiB


@dataclass(frozen=True)
class CertFiles:
    """PEM files for servers that only take paths (written to a per-session temp dir)."""

    ca: CA
    leaf: Issued
    ca_file: Path
    cert_file: Path
    key_file: Path
    client: Issued
    client_cert_file: Path
    client_key_file: Path


def write_certs(ca: CA, leaf: Issued, client: Issued, directory: Path) -> CertFiles:
    paths = {
        "ca.pem": ca.cert_pem,
        "cert.pem": leaf.chain_pem,
        "key.pem": leaf.key_pem,
        "client.pem": client.chain_pem,
        "client-key.pem": client.key_pem,
    }
    for name, data in paths.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)
    return CertFiles(
        ca,
        leaf,
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
        client,
        directory / "client.pem",
        directory / "client-key.pem",
    )


def plain_server_context(files: CertFiles) -> ssl.SSLContext:
    """A stdlib (OpenSSL) server context, the bridge client's reference peer."""
    ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx


def plain_client_context(files: CertFiles) -> ssl.SSLContext:
    ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.ca_file)
    return ctx


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/bulk"):
            n = int(self.path.partition("=")[2] or "16")
            self._send(BULK * n, "application/octet-stream")
            return
        if self.path == "/peer":
            conn = self.connection
            assert isinstance(conn, ssl.SSLSocket)
            info = {
                "version": conn.version(),
                "cipher": conn.cipher()[0] if conn.cipher() else None,
            }
            self._send(json.dumps(info).encode(), "application/json")
            return
        self._send(b"hello from " + self.path.encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._send(self.rfile.read(length))


class _TLSHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # failed handshakes are part of some tests


@contextlib.contextmanager
def https_server(
    context: ssl.SSLContext, handler: type[http.server.BaseHTTPRequestHandler] = Handler
) -> Iterator[int]:
    """An http.server on 127.0.0.1 whose *listening* socket is wrapped by ``context``."""
    server = _TLSHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


class LineServer(socketserver.ThreadingTCPServer):
    """A tiny line-oriented TCP server for mail-protocol stand-ins (one thread per client)."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(
        self, session: Callable[[socket.socket, LineServer], None], tls: ssl.SSLContext
    ) -> None:
        self.session = session
        self.tls = tls
        self.errors: list[BaseException] = []
        outer = self

        class _H(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                sock.settimeout(TIMEOUT)
                try:
                    outer.session(sock, outer)
                except (OSError, ValueError) as exc:
                    outer.errors.append(exc)

        super().__init__(("127.0.0.1", 0), _H)


@contextlib.contextmanager
def line_server(
    session: Callable[[socket.socket, LineServer], None], tls: ssl.SSLContext
) -> Iterator[LineServer]:
    server = LineServer(session, tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


class LineIO:
    """CRLF line reading/writing over a (possibly TLS) socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def recv(self) -> str:
        return self.file.readline().decode().rstrip("\r\n")

    def rewrap(self, sock: socket.socket) -> None:
        self.file.close()
        self.sock = sock
        self.file = sock.makefile("rb")


# -- fixtures shared by the test_compat_* modules (import them by name) ----------------------------

import pytest  # noqa: E402

import unitls  # noqa: E402
from unitls.compat import SSLContext  # noqa: E402


@pytest.fixture(scope="session")
def cert_files(
    ca: CA, server_cert: Issued, client_cert: Issued, tmp_path_factory: pytest.TempPathFactory
) -> CertFiles:
    return write_certs(ca, server_cert, client_cert, tmp_path_factory.mktemp("compat-certs"))


@pytest.fixture
def bridge_client(engine: unitls.TLSImplementation[Any, Any], cert_files: CertFiles) -> SSLContext:
    """A verifying bridge client context trusting the test CA."""
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.load_verify_locations(cadata=cert_files.ca.cert_pem.decode())
    return ctx


@pytest.fixture
def bridge_server(engine: unitls.TLSImplementation[Any, Any], cert_files: CertFiles) -> SSLContext:
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    ctx.load_cert_chain(cert_files.cert_file, cert_files.key_file)
    return ctx


@pytest.fixture
def plain_server(cert_files: CertFiles) -> ssl.SSLContext:
    return plain_server_context(cert_files)


@pytest.fixture
def plain_client(cert_files: CertFiles) -> ssl.SSLContext:
    return plain_client_context(cert_files)
