"""``unitls serve``: a small TLS server like ``openssl s_server -www`` (or an echo server).

Connections are served concurrently: the listener runs the handshakes of waiting clients at once
(each within ``--timeout``), and each connection is handled in a thread of its own. ``--timeout``
is also a deadline: for the whole request (page mode), or for each read (echo mode, an idle
timeout). A slow or silent client therefore holds only its own thread.
"""

from __future__ import annotations

import argparse
import datetime
import html
import sys
import textwrap
import threading
import time
from typing import Any

from .._config import TLSServerConfiguration
from .._errors import RaggedEOF, TLSError, TLSTimeoutError
from .._extensions import SupportsSessionInfo
from .common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    GROUPS_HELP,
    CLIError,
    cert_subject,
    cli_error_from,
    fmt_alpn,
    fmt_cipher,
    fmt_version,
    get_engine,
    load_signing_chain,
    load_trust_store,
    note,
    parse_alpn,
    parse_groups,
    parse_port,
    parse_version,
    positive_float,
    with_groups,
)

_DEFAULT_PORT = 4433
_DEFAULT_TIMEOUT = 30.0
_MAX_REQUEST = 64 * 1024
# Connections served at once; further clients wait for a free slot (in the kernel's queue).
_MAX_CONNECTIONS = 64
# How long to wait for the client's close_notify after answering (draining before the close
# keeps a TCP reset from eating our own close_notify).
_CLOSE_WAIT = 2.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run a TLS server that shows each connection's parameters (like openssl s_server -www)",
        description=textwrap.fill(
            (
                "Serves TLS on HOST:PORT. By default each connection gets one small HTTP page showing "
                "what was negotiated (the whole request is read, answered once, then close_notify is "
                "sent); --echo sends back whatever the client sends instead. Without --cert a "
                "throwaway CA and certificate for localhost/127.0.0.1/::1 are made in memory: save the "
                "CA with --write-ca FILE and trust it with `unitls connect --cafile FILE`."
            ),
            78,
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        default=str(_DEFAULT_PORT),
        help=f"port to listen on (default {_DEFAULT_PORT}; 0: any free port, printed at start)",
    )
    p.add_argument("--engine", help="TLS engine to use (see: unitls engines); default openssl")
    p.add_argument("--cert", metavar="FILE", help="server certificate chain (PEM, leaf first)")
    p.add_argument("--key", metavar="FILE", help="private key of --cert (PEM or DER, unencrypted)")
    p.add_argument(
        "--write-ca",
        metavar="FILE",
        help="with a generated certificate: write the throwaway CA's certificate (PEM) here",
    )
    p.add_argument(
        "--client-ca",
        metavar="FILE",
        help="require client certificates issued by these PEM CAs (mutual TLS)",
    )
    p.add_argument(
        "--alpn",
        action="append",
        metavar="PROTO",
        help="accept this ALPN protocol (repeatable, in preference order)",
    )
    p.add_argument("--tls-min", metavar="VER", help="lowest TLS version: 1.2 or 1.3")
    p.add_argument("--tls-max", metavar="VER", help="highest TLS version: 1.2 or 1.3")
    p.add_argument("--groups", metavar="G1,G2", help=GROUPS_HELP)
    p.add_argument("--echo", action="store_true", help="echo the client's data instead of a page")
    p.add_argument("--once", action="store_true", help="serve one connection, then exit")
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        help=(
            "per-connection deadline for the handshake, for reading the request (page mode) and "
            f"for each read (echo mode), in seconds (default {_DEFAULT_TIMEOUT:g})"
        ),
    )
    p.set_defaults(handler=run)


def _generated_chain(args: argparse.Namespace) -> tuple[Any, str]:
    from cryptography.hazmat.primitives import hashes

    from .._certgen import CA

    ca = CA.create("unitls serve throwaway CA")
    names = ["localhost", "127.0.0.1", "::1"]
    if args.host and args.host not in names and args.host not in ("0.0.0.0", "::"):
        names.append(args.host)
    leaf = ca.issue(*names)
    fingerprint = ca.cert.fingerprint(hashes.SHA256()).hex(":")
    info = f"generated a throwaway certificate for {', '.join(names)}; CA SHA-256 {fingerprint}"
    if args.write_ca:
        try:
            with open(args.write_ca, "wb") as f:
                f.write(ca.cert_pem)
        except OSError as exc:
            raise CLIError(
                f"cannot write --write-ca file {args.write_ca!r}: {exc.strerror or exc}", EXIT_USAGE
            ) from None
        info += f"\nCA certificate written to {args.write_ca} (trust it: --cafile {args.write_ca})"
    else:
        info += "\n(save the CA with --write-ca FILE to let clients verify this server)"
    return leaf.signing_chain(), info


def build_config(args: argparse.Namespace) -> tuple[TLSServerConfiguration, str]:
    if args.cert:
        if args.write_ca:
            raise CLIError(
                "--write-ca only applies to a generated certificate (no --cert)", EXIT_USAGE
            )
        chain = load_signing_chain(args.cert, args.key)
        info = f"serving the certificate in {args.cert}"
    elif args.key:
        raise CLIError("--key needs --cert", EXIT_USAGE)
    else:
        chain, info = _generated_chain(args)
    trust = load_trust_store(args.client_ca, "--client-ca") if args.client_ca else None
    try:
        config = TLSServerConfiguration(
            certificate_chain=[chain],
            inner_protocols=parse_alpn(args.alpn),
            lowest_supported_version=parse_version(args.tls_min, "--tls-min"),
            highest_supported_version=parse_version(args.tls_max, "--tls-max"),
            trust_store=trust,
        )
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    return config, info


def run(args: argparse.Namespace) -> int:
    port = parse_port(args.port, "--port", allow_zero=True)
    timeout = positive_float(args.timeout, "--timeout") or _DEFAULT_TIMEOUT
    impl = get_engine(args.engine)
    config, info = build_config(args)
    groups = parse_groups(args.groups)
    try:
        ctx = with_groups(impl.server_context, groups, config)
    except TLSError as exc:
        raise cli_error_from(exc) from None
    try:
        listener = ctx.connect((args.host, port), handshake_timeout=timeout)
    except (TLSError, OSError) as exc:
        raise cli_error_from(exc, f"cannot listen on {args.host}:{port}") from None
    slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
    try:
        bound = listener.getsockname()
        host = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        mode = "echo" if args.echo else "https"
        print(f"Listening on {mode}://{host}:{bound[1]}/ with the {impl.name} engine")
        for line in info.splitlines():
            print(line)
        if args.client_ca:
            print(f"client certificates required, verified against {args.client_ca}")
        print("press Ctrl-C to stop" if not args.once else "serving one connection (--once)")
        sys.stdout.flush()
        while True:
            slots.acquire()
            try:
                conn, addr = listener.accept()
            except (TLSError, OSError) as exc:
                slots.release()
                # One client's failed or timed-out handshake: report it, keep serving.
                err = cli_error_from(exc, "handshake failed")
                if args.once:
                    raise err from None
                note(str(err))
                continue
            if args.once:
                try:
                    return _handle(conn, addr, args, impl.name, timeout)
                finally:
                    slots.release()
            threading.Thread(
                target=_serve_one,
                args=(slots, conn, addr, args, impl.name, timeout),
                daemon=True,
            ).start()
    finally:
        listener.close()
    return EXIT_OK  # pragma: no cover - the loop only exits by return or exception


_print_lock = threading.Lock()


def _serve_one(
    slots: threading.BoundedSemaphore,
    conn: Any,
    addr: Any,
    args: argparse.Namespace,
    engine: str,
    timeout: float,
) -> None:
    try:
        _handle(conn, addr, args, engine, timeout)
    finally:
        slots.release()


def _describe(conn: Any, addr: Any, engine: str) -> list[tuple[str, str]]:
    peer = f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
    return [
        ("client", peer),
        ("engine", engine),
        ("TLS version", fmt_version(conn.negotiated_tls_version)),
        ("cipher", fmt_cipher(conn.cipher())),
        (
            "key exchange",
            (isinstance(conn, SupportsSessionInfo) and conn.negotiated_group) or "unknown",
        ),
        ("ALPN", fmt_alpn(conn.negotiated_protocol())),
        ("client certificate", cert_subject(conn.getpeercert())),
    ]


def _handle(conn: Any, addr: Any, args: argparse.Namespace, engine: str, timeout: float) -> int:
    params = _describe(conn, addr, engine)
    with _print_lock:
        print("connection: " + ", ".join(f"{k} {v}" for k, v in params))
        sys.stdout.flush()
    try:
        conn.settimeout(timeout)
        if args.echo:
            _echo(conn)
        else:
            request = _read_request(conn, time.monotonic() + timeout)
            if request is not None:
                conn.sendall(_page(request, params))
        conn.settimeout(_CLOSE_WAIT)
        conn.close()
    except (TLSError, OSError) as exc:
        err = cli_error_from(exc, f"connection from {params[0][1]}")
        note(str(err))
        try:
            conn.close(force=True)
        except (TLSError, OSError):
            pass
        return err.code
    return EXIT_OK


def _echo(conn: Any) -> None:
    while True:
        try:
            data = conn.recv(65536)
        except RaggedEOF:
            return
        if not data:
            return
        conn.sendall(data)


def _read_request(conn: Any, deadline: float) -> bytes | None:
    """The request head (up to the blank line), or the first line if it is not HTTP.

    None: the client went away without sending anything. The whole request must arrive before
    ``deadline`` (a client sending a byte now and then cannot hold the connection).
    """
    data = b""
    while True:
        for end in (b"\r\n\r\n", b"\n\n"):
            i = data.find(end)
            if i >= 0:
                return data[: i + len(end)]
        first, nl, _ = data.partition(b"\n")
        if nl and b" HTTP/" not in first:
            return first + nl  # not HTTP: answer now rather than wait for a blank line
        if len(data) > _MAX_REQUEST:
            return data[:_MAX_REQUEST]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TLSTimeoutError("the client did not send its request in time (--timeout)")
        conn.settimeout(left)
        try:
            chunk = conn.recv(65536)
        except RaggedEOF:
            chunk = b""
        if not chunk:
            return data or None
        data += chunk


def _page(request: bytes, params: list[tuple[str, str]]) -> bytes:
    first = request.split(b"\n", 1)[0].strip().decode("latin-1")
    is_http = " HTTP/" in first
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>\n" for k, v in params
    )
    body = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>unitls serve</title></head>\n"
        "<body><h1>unitls serve</h1>\n<table>\n"
        f"{rows}"
        f"<tr><th>request</th><td>{html.escape(first)}</td></tr>\n"
        f"<tr><th>time</th><td>{now}</td></tr>\n"
        "</table></body></html>\n"
    ).encode()
    status = "200 OK" if is_http else "400 Bad Request"
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nServer: unitls\r\n\r\n"
    ).encode()
    if first.startswith("HEAD "):
        return head
    return head + body
