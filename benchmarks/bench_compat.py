"""The ssl.SSLContext bridge against a plain ssl.SSLContext: http.client GETs/s and bulk MiB/s.

Every client talks to the same local stdlib (OpenSSL) HTTPS server on 127.0.0.1, so the numbers
differ only by the client's TLS path. The row of engine ``no TLS`` is the GETs' bound: the same
client and server code over plain TCP (no TLS at either end) against the stdlib's TLS, in the
same alternating rounds. An engine in the client cannot beat it (its server still does TLS)
but by the machine's swing between rows; a target above it is out of reach of TLS work. Run as
a script for a table::

    python benchmarks/bench_compat.py [seconds per measurement]
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import unitls
from unitls._bench import side_by_side
from unitls._certgen import CA
from unitls.compat import ORIGINAL_SSLCONTEXT, SSLContext

CHUNK = b"x" * (1 << 20)
#: The engine name of the bound row: no TLS at either end.
NO_TLS = "no TLS"
BULK_MIB = 16


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs cap every client at ~25 requests/s

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/bulk":
            self.send_response(200)
            self.send_header("Content-Length", str(len(CHUNK) * BULK_MIB))
            self.end_headers()
            for _ in range(BULK_MIB):
                self.wfile.write(CHUNK)
            return
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextlib.contextmanager
def _server(ca: CA | None) -> Iterator[int]:
    """The HTTPS server (``ca``'s certificate), or with ``ca=None`` the same over plain TCP."""
    server = _Server(("127.0.0.1", 0), _Handler)
    if ca is not None:
        leaf = ca.issue("localhost", "127.0.0.1")
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(leaf.chain_pem)
            key.write_bytes(leaf.key_pem)
            ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _connection(ctx: ssl.SSLContext | None, port: int) -> http.client.HTTPConnection:
    if ctx is None:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)


def _gets_per_second(ctx: ssl.SSLContext | None, port: int, seconds: float) -> float:
    conn = _connection(ctx, port)
    try:
        conn.request("GET", "/")  # connect + handshake outside the timed loop
        conn.getresponse().read()
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            conn.request("GET", "/")
            conn.getresponse().read()
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - start)
    finally:
        conn.close()


def _mib_per_second(ctx: ssl.SSLContext | None, port: int, seconds: float) -> float:
    conn = _connection(ctx, port)
    try:
        total = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            conn.request("GET", "/bulk")
            resp = conn.getresponse()
            while data := resp.read(1 << 18):
                total += len(data)
            now = time.perf_counter()
            if now >= deadline:
                return total / (1 << 20) / (now - start)
    finally:
        conn.close()


def _on_fresh_context(
    bench: Callable[[ssl.SSLContext | None, int, float], float],
    make: Callable[[], ssl.SSLContext | None],
    port: int,
    seconds: float,
) -> float:
    return bench(make(), port, seconds)


def run(seconds: float = 1.0) -> list[dict[str, Any]]:
    """One measurement per (benchmark, engine), each compared with a plain ssl.SSLContext."""
    ca = CA.create("bench_compat CA")
    cadata = ca.cert_pem.decode()

    def plain() -> ssl.SSLContext:
        ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=cadata)
        return ctx

    def bridge(engine: str) -> ssl.SSLContext:
        ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
        ctx.load_verify_locations(cadata=cadata)
        return ctx

    benches: list[tuple[str, str, Callable[[ssl.SSLContext | None, int, float], float]]] = [
        ("http.client GET (keep-alive)", "req/s", _gets_per_second),
        ("http.client bulk download", "MiB/s", _mib_per_second),
    ]
    with _server(ca) as port, _server(None) as plain_port:
        rows = [
            side_by_side(
                name,
                engine,
                unit,
                partial(_on_fresh_context, bench, plain, port),
                partial(_on_fresh_context, bench, partial(bridge, engine), port),
                seconds,
            )
            for name, unit, bench in benches
            for engine in unitls.implementations()
        ]
        name, unit, bench = benches[0]
        bound = side_by_side(
            name,
            NO_TLS,
            unit,
            partial(_on_fresh_context, bench, plain, port),
            partial(bench, None, plain_port),
            seconds,
        )
        bound["bound"] = True  # kept by `unitls bench --engine ...`: it bounds every engine
        return [*rows, bound]


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'benchmark':32} {'engine':8} {'bridge':>10} {'ssl':>10} {'unit':6} {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:32} {r['engine']:8} {r['value']:>10.1f} {r['baseline']:>10.1f} "
            f"{r['unit']:6} {r['ratio']:>6.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(_table(run(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)))
