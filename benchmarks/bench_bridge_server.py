"""Bridge *servers*: an ``ssl.SSLSocket`` from ``unitls.compat.SSLContext`` on each engine,
against a plain ``ssl.SSLContext`` server, with the same stdlib client on the other end.

Two rows per engine, MiB/s over loopback TCP (64 KiB ``sendall``s, 256 KiB ``recv_into``s), in
alternating rounds (stdlib, bridge, bridge, stdlib, ...), the median of each side:

- ``bridge server receives``: the client uploads, the server decrypts;
- ``bridge server sends``: the server encrypts, the client downloads.

The stdlib client is the same for both sides, so on fast engines it can be the limit (the
ratio then shows that the server is no longer the slower end). Run as a script for a table::

    python benchmarks/bench_bridge_server.py [seconds per measurement]
"""

from __future__ import annotations

import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import unitls
from unitls._bench import side_by_side
from unitls._certgen import CA
from unitls.compat import ORIGINAL_SSLCONTEXT, SSLContext

CHUNK = bytes(64 * 1024)
_TIMEOUT = 30.0


def _receive(server: ssl.SSLContext, client: ssl.SSLContext, seconds: float) -> float:
    """MiB/s the server decrypts while the client sends for ``seconds``."""
    return _transfer(server, client, seconds, server_sends=False)


def _send(server: ssl.SSLContext, client: ssl.SSLContext, seconds: float) -> float:
    """MiB/s the client receives while the server sends for ``seconds``."""
    return _transfer(server, client, seconds, server_sends=True)


def _transfer(
    server: ssl.SSLContext, client: ssl.SSLContext, seconds: float, server_sends: bool
) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(_TIMEOUT)
    result: list[float] = []
    errors: list[BaseException] = []

    def sender(tls: ssl.SSLSocket) -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(16):
                tls.sendall(CHUNK)

    def receiver(tls: ssl.SSLSocket) -> None:
        view = memoryview(bytearray(256 * 1024))
        total, start, last = 0, time.perf_counter(), 0.0
        while n := tls.recv_into(view):
            total += n
            last = time.perf_counter()
        result.append(total / max(last - start, 1e-9) / (1 << 20))

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(_TIMEOUT)
            with server.wrap_socket(raw, server_side=True) as tls:
                (sender if server_sends else receiver)(tls)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=_TIMEOUT)
        with client.wrap_socket(raw, server_hostname="localhost") as tls:
            (receiver if server_sends else sender)(tls)
        thread.join(_TIMEOUT)
    finally:
        listener.close()
    if errors:
        raise errors[0]
    return result[0]


def run(seconds: float = 1.0) -> list[dict[str, Any]]:
    ca = CA.create("bench_bridge_server CA")
    leaf = ca.issue("localhost", "127.0.0.1")
    client = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=ca.cert_pem.decode())
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(leaf.chain_pem)
        key.write_bytes(leaf.key_pem)

        def server_context(engine: str | None) -> ssl.SSLContext:
            if engine is None:
                ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_SERVER)
            else:
                ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
            ctx.load_cert_chain(cert, key)
            return ctx

        plain = server_context(None)
        bridges = {engine: server_context(engine) for engine in unitls.implementations()}
    benches: list[tuple[str, Callable[[ssl.SSLContext, ssl.SSLContext, float], float]]] = [
        ("bridge server receives", _receive),
        ("bridge server sends", _send),
    ]
    return [
        side_by_side(
            name,
            engine,
            "MiB/s",
            partial(bench, plain, client),
            partial(bench, bridge, client),
            seconds,
        )
        for name, bench in benches
        for engine, bridge in bridges.items()
    ]


if __name__ == "__main__":
    for row in run(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0):
        print(
            f"{row['name']:24} {row['engine']:8} {row['value']:>8.1f} {row['baseline']:>8.1f} "
            f"{row['unit']:6} {row['ratio']:>5.2f}x"
        )
