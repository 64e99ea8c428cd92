"""``unitls connect HOST[:PORT]``: a TLS client like ``openssl s_client``."""

from __future__ import annotations

import argparse
import socket
import sys
import textwrap
import time
from typing import Any

from .._config import TLSClientConfiguration
from .._errors import RaggedEOF, TLSError, TLSTimeoutError
from .._extensions import SupportsPeerCertChain, SupportsSessionInfo, SupportsUpgrade
from .common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_VERIFY,
    GROUPS_HELP,
    CLIError,
    cli_error_from,
    describe_cert,
    fmt_alpn,
    fmt_cipher,
    fmt_version,
    get_engine,
    load_signing_chain,
    load_trust_store,
    note,
    parse_alpn,
    parse_groups,
    parse_host_port,
    parse_version,
    positive_float,
    with_groups,
)

_DEFAULT_TIMEOUT = 10.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "connect",
        help="connect to a TLS server and show what was negotiated (like openssl s_client)",
        description=textwrap.fill(
            (
                "Connects to HOST[:PORT] (default port 443; IPv6 as [::1]:443), completes the TLS "
                "handshake, and prints the negotiated version, cipher suite, ALPN protocol and the "
                "peer's certificate. If standard input is not a terminal, its contents are sent and "
                "the reply is printed until the server closes the connection."
            ),
            78,
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="HOST[:PORT]", help="server to connect to")
    p.add_argument("--engine", help="TLS engine to use (see: unitls engines); default openssl")
    p.add_argument(
        "--alpn",
        action="append",
        metavar="PROTO",
        help="offer this ALPN protocol (repeatable, in preference order), e.g. h2",
    )
    p.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust these PEM CA certificates instead of the system store",
    )
    p.add_argument(
        "--servername",
        metavar="NAME",
        help="name for SNI and certificate verification (default: HOST)",
    )
    p.add_argument("--tls-min", metavar="VER", help="lowest TLS version: 1.2 or 1.3")
    p.add_argument("--tls-max", metavar="VER", help="highest TLS version: 1.2 or 1.3")
    p.add_argument("--groups", metavar="G1,G2", help=GROUPS_HELP)
    p.add_argument(
        "--cert", metavar="FILE", help="client certificate (PEM, leaf first) for mutual TLS"
    )
    p.add_argument("--key", metavar="FILE", help="private key of --cert (PEM or DER, unencrypted)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (testing only: anyone can impersonate it)",
    )
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        help=f"give up connecting or waiting for data after this long (default {_DEFAULT_TIMEOUT:g})",
    )
    p.set_defaults(handler=run)


def build_config(args: argparse.Namespace) -> TLSClientConfiguration:
    chain = None
    if args.cert:
        chain = load_signing_chain(args.cert, args.key)
    elif args.key:
        raise CLIError("--key needs --cert", EXIT_USAGE)
    trust = load_trust_store(args.cafile, "--cafile") if args.cafile else None
    try:
        return TLSClientConfiguration(
            certificate_chain=chain,
            inner_protocols=parse_alpn(args.alpn),
            lowest_supported_version=parse_version(args.tls_min, "--tls-min"),
            highest_supported_version=parse_version(args.tls_max, "--tls-max"),
            trust_store=trust,
        )
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def make_context(
    engine: str | None,
    config: TLSClientConfiguration,
    insecure: bool,
    groups: tuple[str, ...] | None = None,
) -> Any:
    if insecure:
        from ..insecure import InsecureConfiguration, get_insecure_implementation

        try:
            impl = get_insecure_implementation(engine)
        except TLSError as exc:
            raise CLIError(f"--engine: {exc}", EXIT_USAGE) from None
        return with_groups(
            impl.client_context, groups, config, InsecureConfiguration(disable_verification=True)
        )
    return with_groups(get_engine(engine).client_context, groups, config)


def run(args: argparse.Namespace) -> int:
    host, port = parse_host_port(args.target)
    timeout = positive_float(args.timeout, "--timeout") or _DEFAULT_TIMEOUT
    config = build_config(args)
    groups = parse_groups(args.groups)
    engine_name = get_engine(args.engine).name  # reject an unknown engine before anything else
    try:
        ctx = make_context(args.engine, config, args.insecure, groups)
    except TLSError as exc:
        raise cli_error_from(exc) from None
    server_name = args.servername or host
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    start = time.perf_counter()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise cli_error_from(exc, f"could not connect to {where}") from None
    try:
        connected = time.perf_counter()
        peer = raw.getpeername()  # before the upgrade, which may take over the socket
        try:
            if isinstance(ctx, SupportsUpgrade):
                tls = ctx.upgrade(raw, server_hostname=server_name)
            else:
                from .._socket import upgrade_socket

                tls = upgrade_socket(ctx, raw, server_name)
        except (TLSError, OSError) as exc:
            err = cli_error_from(exc, f"TLS handshake with {where} failed")
            if err.code == EXIT_VERIFY and not args.cafile:
                err = CLIError(f"{err} (a private CA? trust it with --cafile FILE)", err.code)
            raise err from None
        done = time.perf_counter()
        with tls:
            tls.settimeout(timeout)
            _print_session(
                args,
                engine_name,
                tls,
                where,
                peer,
                server_name,
                connected - start,
                done - connected,
            )
            if not sys.stdin.isatty():
                _exchange(tls, timeout)
            try:
                tls.close()
            except (TLSError, OSError):
                pass  # the peer may already have gone; the session itself succeeded
    finally:
        raw.close()
    return EXIT_OK


def _print_session(
    args: argparse.Namespace,
    engine: str,
    tls: Any,
    where: str,
    peer: Any,
    server_name: str,
    tcp_time: float,
    tls_time: float,
) -> None:
    out = sys.stdout
    addr = f" ({peer[0]})" if peer else ""
    out.write(f"Connected to {where}{addr} with the {engine} engine\n")
    if args.insecure:
        out.write("  WARNING: certificate verification is DISABLED (--insecure)\n")
    rows = [
        ("TLS version", fmt_version(tls.negotiated_tls_version)),
        ("cipher", fmt_cipher(tls.cipher())),
        (
            "key exchange",
            (isinstance(tls, SupportsSessionInfo) and tls.negotiated_group) or "unknown",
        ),
        ("ALPN", fmt_alpn(tls.negotiated_protocol())),
        ("server name", server_name),
        ("verified", "no (--insecure)" if args.insecure else "yes"),
        ("TCP connect", f"{tcp_time * 1000:.1f} ms"),
        ("TLS handshake", f"{tls_time * 1000:.1f} ms"),
    ]
    for k, v in rows:
        out.write(f"  {k + ':':<15}{v}\n")
    # unitls engines also give the whole chain the peer sent (an extension to the PEP API).
    chain = list(tls.getpeercertchain()) if isinstance(tls, SupportsPeerCertChain) else []
    der = tls.getpeercert()
    if not chain and der:
        chain = [der]
    if not chain:
        out.write("Peer certificate: none\n")
    for depth, cert in enumerate(chain):
        title = "leaf" if depth == 0 else f"chain certificate {depth}"
        out.write(f"Peer certificate {depth} ({title}):\n")
        for k, v in describe_cert(cert):
            out.write(f"  {k + ':':<15}{v}\n")
    out.flush()


def _exchange(tls: Any, timeout: float) -> None:
    """Send all of stdin, then copy the reply to stdout until the server closes.

    A server that stays silent for ``timeout`` seconds after replying (an echo server, HTTP
    keep-alive) ends the exchange normally; one that never replies is a timeout error.
    """
    data = sys.stdin.buffer.read()
    if not data:
        return  # nothing to send (e.g. </dev/null): like s_client, just close
    try:
        tls.sendall(data)
    except (TLSError, OSError) as exc:
        raise cli_error_from(exc, "sending failed") from None
    out = sys.stdout.buffer
    received = 0
    while True:
        try:
            chunk = tls.recv(65536)
        except RaggedEOF:
            note("the server closed the connection without close_notify (possible truncation)")
            break
        except (TLSTimeoutError, TimeoutError) as exc:
            if received:
                note(f"no more data from the server for {timeout:g} s: closing")
                break
            raise cli_error_from(exc, f"no reply within {timeout:g} s") from None
        except (TLSError, OSError) as exc:
            raise cli_error_from(exc, "while waiting for the reply") from None
        if not chunk:
            break
        received += len(chunk)
        out.write(chunk)
        out.flush()
