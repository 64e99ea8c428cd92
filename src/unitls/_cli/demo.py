"""``unitls demo``: every engine against every engine, over sockets and in memory, offline."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._config import TLSClientConfiguration, TLSServerConfiguration
from .._enums import NextProtocol
from .._errors import TLSError, WantReadError
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    CLIError,
    cert_subject,
    fmt_alpn,
    fmt_cipher,
    fmt_version,
    format_table,
    one_line,
)

# Bounds every blocking step so a broken engine fails the pair instead of hanging the demo.
_TIMEOUT = 5.0
_PING = b"ping from the client"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="connect every engine to every engine (sockets and buffers) and show the results",
        description=(
            "Makes a throwaway CA and certificates in memory, starts a local server "
            "(127.0.0.1, any free port) on each engine, connects with each engine over TCP "
            "and in memory, and prints what each pair negotiated. No network access is needed."
        ),
    )
    p.add_argument(
        "--mutual",
        action="store_true",
        help="also authenticate the client with a certificate (mutual TLS)",
    )
    p.set_defaults(handler=run)


@dataclass
class PairResult:
    client: str
    server: str
    mode: str
    version: str = "-"
    cipher: str = "-"
    alpn: str = "-"
    handshake_ms: float | None = None
    server_peer: str = "-"
    client_peer: str = "-"
    error: str | None = None


def _fill(result: PairResult, conn: Any, elapsed: float) -> None:
    result.version = fmt_version(conn.negotiated_tls_version)
    result.cipher = fmt_cipher(conn.cipher())
    result.alpn = fmt_alpn(conn.negotiated_protocol())
    result.handshake_ms = elapsed * 1000
    result.server_peer = cert_subject(conn.getpeercert())


def _socket_pair(
    client_impl: Any,
    server_impl: Any,
    client_config: TLSClientConfiguration,
    server_ctx: Any,
) -> PairResult:
    result = PairResult(client_impl.name, server_impl.name, "socket")
    server_error: list[str] = []
    client_seen: list[str] = []
    listener = server_ctx.connect(("127.0.0.1", 0))
    try:
        listener.settimeout(_TIMEOUT)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(_TIMEOUT)
                    client_seen.append(cert_subject(conn.getpeercert()))
                    data = b""
                    while len(data) < len(_PING):
                        chunk = conn.recv(len(_PING) - len(data))
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(b"echo: " + data)
                    conn.close()
            except (TLSError, OSError) as exc:
                server_error.append(one_line(exc))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            ctx = client_impl.client_context(client_config)
            start = time.perf_counter()
            sock = ctx.connect(("127.0.0.1", port))
            elapsed = time.perf_counter() - start
            with sock:
                sock.settimeout(_TIMEOUT)
                _fill(result, sock, elapsed)
                sock.sendall(_PING)
                reply = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                if reply != b"echo: " + _PING:
                    result.error = f"unexpected reply {reply[:40]!r}"
                sock.close()
        except (TLSError, OSError) as exc:
            result.error = one_line(exc)
        thread.join(_TIMEOUT * 2)
        if thread.is_alive():
            result.error = result.error or "the server thread did not finish"
    finally:
        listener.close()
    if server_error and result.error is None:
        result.error = f"server: {server_error[0]}"
    if client_seen:
        result.client_peer = client_seen[0]
    return result


def _pump(src: Any, dst: Any) -> None:
    n = src.outgoing_bytes_buffered()
    if n:
        dst.process_incoming(src.process_outgoing(n))


def _step(action: Callable[[], Any]) -> bool:
    try:
        action()
    except WantReadError:
        return False
    return True


def handshake_in_memory(client: Any, server: Any, max_rounds: int = 20) -> None:
    """Drive both ends of an in-memory handshake until both are done."""
    c_done = s_done = False
    for _ in range(max_rounds):
        if not c_done:
            c_done = _step(client.do_handshake)
        _pump(client, server)
        if not s_done:
            s_done = _step(server.do_handshake)
        _pump(server, client)
        if c_done and s_done:
            _pump(client, server)
            return
    raise TLSError("the in-memory handshake did not finish (an engine is stuck)")


def _read_all(buf: Any, n: int) -> bytes:
    out = b""
    while len(out) < n:
        try:
            chunk = buf.read(n - len(out))
        except WantReadError:
            break
        assert isinstance(chunk, bytes)
        if not chunk:
            break
        out += chunk
    return out


def _buffer_pair(
    client_impl: Any,
    server_impl: Any,
    client_config: TLSClientConfiguration,
    server_ctx: Any,
) -> PairResult:
    result = PairResult(client_impl.name, server_impl.name, "buffer")
    try:
        ctx = client_impl.client_context(client_config)
        start = time.perf_counter()
        client = ctx.create_buffer("localhost")
        server = server_ctx.create_buffer()
        handshake_in_memory(client, server)
        elapsed = time.perf_counter() - start
        _fill(result, client, elapsed)
        result.client_peer = cert_subject(server.getpeercert())
        client.write(_PING)
        _pump(client, server)
        data = _read_all(server, len(_PING))
        server.write(b"echo: " + data)
        _pump(server, client)
        reply = _read_all(client, len(data) + 6)
        if reply != b"echo: " + _PING:
            result.error = f"unexpected reply {reply[:40]!r}"
        client.shutdown()
        _pump(client, server)
        server.shutdown()
        _pump(server, client)
    except TLSError as exc:
        result.error = one_line(exc)
    return result


def run(args: argparse.Namespace) -> int:
    import unitls
    from unitls._certgen import CA

    started = time.perf_counter()
    names = unitls.implementations()
    if not names:
        raise CLIError("no TLS engine is usable here (try: unitls engines)")
    impls = [unitls.get_implementation(n) for n in names]
    ca = CA.create("unitls demo CA")
    leaf = ca.issue("localhost", "127.0.0.1", "::1")
    client_leaf = ca.issue("unitls demo client", server=False, client=True)
    alpn = [NextProtocol.H2, NextProtocol.HTTP1]
    server_config = TLSServerConfiguration(
        certificate_chain=[leaf.signing_chain()],
        inner_protocols=alpn,
        trust_store=ca.trust_store() if args.mutual else None,
    )
    client_config = TLSClientConfiguration(
        certificate_chain=client_leaf.signing_chain() if args.mutual else None,
        inner_protocols=alpn,
        trust_store=ca.trust_store(),
    )
    results: list[PairResult] = []
    for server_impl in impls:
        try:
            server_ctx = server_impl.server_context(server_config)
        except TLSError as exc:
            for client_impl in impls:
                for mode in ("socket", "buffer"):
                    results.append(
                        PairResult(client_impl.name, server_impl.name, mode, error=one_line(exc))
                    )
            continue
        for client_impl in impls:
            results.append(_socket_pair(client_impl, server_impl, client_config, server_ctx))
            results.append(_buffer_pair(client_impl, server_impl, client_config, server_ctx))

    print(f"unitls demo: {len(impls)} engine(s): {', '.join(names)}")
    print(
        f"server certificate: {cert_subject(leaf.cert_der)} issued by {cert_subject(ca.cert_der)}"
    )
    if args.mutual:
        print(f"client certificate: {cert_subject(client_leaf.cert_der)} (mutual TLS)")
    print()
    headers = [
        "client",
        "server",
        "mode",
        "version",
        "cipher",
        "ALPN",
        "handshake",
        "verified peer",
    ]
    if args.mutual:
        headers.append("client cert")
    headers.append("result")
    rows = []
    for r in results:
        row = [
            r.client,
            r.server,
            r.mode,
            r.version,
            r.cipher,
            r.alpn,
            "-" if r.handshake_ms is None else f"{r.handshake_ms:.1f} ms",
            r.server_peer,
        ]
        if args.mutual:
            row.append(r.client_peer)
        row.append("ok" if r.error is None else "FAILED")
        rows.append(row)
    print(format_table(headers, rows))
    failures = [r for r in results if r.error is not None]
    for r in failures:
        print(f"  {r.client} -> {r.server} ({r.mode}): {r.error}")
    total = time.perf_counter() - started
    print()
    print(
        f"{len(results) - len(failures)}/{len(results)} pairs ok in {total:.2f} s "
        "(handshake: TCP connect + TLS for sockets, TLS only for buffers)"
    )
    return EXIT_OK if not failures else EXIT_ERROR
