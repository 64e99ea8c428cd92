"""Conformance of ``TLSSocket`` over real TCP on 127.0.0.1, for every client x server pair."""

from __future__ import annotations

import hashlib
import os
import random
import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import pytest

import unitls
from unitls import TLSClientConfiguration, TLSServerConfiguration, TLSVersion
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]
Handler = Callable[[Any], None]

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
# Bounds every blocking call of the server threads, so a broken engine fails instead of hanging.
THREAD_TIMEOUT = 20.0


class Server:
    """A TLS server on 127.0.0.1 (port 0) running ``handler`` for each accepted connection."""

    def __init__(self, engine: Impl, config: TLSServerConfiguration, handler: Handler, n: int):
        self.listener = engine.server_context(config).connect((HOST, 0))
        self.listener.settimeout(THREAD_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.handler = handler
        self.n = n
        self.errors: list[BaseException] = []
        self.handled = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for _ in range(self.n):
                try:
                    conn, _addr = self.listener.accept()
                except unitls.TLSError as exc:
                    self.errors.append(exc)
                    continue
                try:
                    conn.settimeout(THREAD_TIMEOUT)
                    self.handler(conn)
                except BaseException as exc:
                    self.errors.append(exc)
                finally:
                    conn.close(force=True)
                self.handled += 1
        finally:
            self.listener.close()


@contextmanager
def serve(
    engine: Impl, config: TLSServerConfiguration, handler: Handler, n: int = 1
) -> Iterator[Server]:
    server = Server(engine, config, handler, n)
    server.thread.start()
    try:
        yield server
    finally:
        server.thread.join(THREAD_TIMEOUT * 2)
        assert not server.thread.is_alive(), "server thread did not finish"


def echo(conn: Any) -> None:
    while True:
        try:
            data = conn.recv(65536)
        except unitls.RaggedEOF:
            return
        if not data:
            return
        conn.sendall(data)


def recv_exactly(sock: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(min(n - len(out), 1 << 20))
        if not data:
            break
        out += data
    return bytes(out)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- basics ------------------------------------------------------------------------------------


def test_echo(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    server_cert: Issued,
) -> None:
    ctx = client_engine.client_context(client_config)
    with serve(server_engine, server_config, echo) as server:
        sock: Any = ctx.connect((HOST, server.port))
        checked: object = sock
        assert isinstance(checked, unitls.TLSSocket)
        with sock:
            assert sock.context is ctx
            assert sock.getpeername() == (HOST, server.port)
            assert sock.getsockname()[0] == HOST
            assert sock.negotiated_tls_version is TLSVersion.TLSv1_3
            assert isinstance(sock.cipher(), int)
            assert sock.negotiated_protocol() is None
            assert sock.getpeercert() == server_cert.cert_der
            assert isinstance(sock.fileno(), int) and sock.fileno() >= 0
            assert sock.send(b"hello") == 5
            assert recv_exactly(sock, 5) == b"hello"
            sock.sendall(b"world")
            target = bytearray(10)
            n = sock.recv_into(target)
            n += sock.recv_into(memoryview(target)[n:], 5 - n) if n < 5 else 0
            assert bytes(target[:n]) == b"world"
    assert not server.errors, server.errors


def test_shutdown_of_the_reading_side_sends_no_close_notify(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    """``shutdown(SHUT_RD)`` closes our reading side only: no close_notify (which would end our
    writing side too), so what is sent after it arrives, then the close's EOF."""

    def handler(conn: Any) -> None:
        assert recv_exactly(conn, 4) == b"ping"
        conn.shutdown(socket.SHUT_RD)
        conn.sendall(b"after SHUT_RD")
        conn.close()

    ctx = client_engine.client_context(client_config)
    with serve(server_engine, server_config, handler) as server:
        with ctx.connect((HOST, server.port)) as sock:
            sock.settimeout(THREAD_TIMEOUT)
            sock.sendall(b"ping")
            assert recv_exactly(sock, 13) == b"after SHUT_RD"
            assert sock.recv(1) == b""
    assert not server.errors, server.errors


def test_listener_is_a_tls_socket(
    server_engine: Impl, server_config: TLSServerConfiguration
) -> None:
    listener = server_engine.server_context(server_config).connect((HOST, 0))
    try:
        assert isinstance(listener, unitls.TLSSocket)
        host, port = listener.getsockname()
        assert host == HOST and port > 0
        assert listener.getpeercert() is None
        assert listener.cipher() is None
        assert listener.negotiated_tls_version is None
    finally:
        listener.close()


def test_alpn_over_sockets(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    seen: list[Any] = []

    def handler(conn: Any) -> None:
        seen.append(conn.negotiated_protocol())
        echo(conn)

    ccfg = TLSClientConfiguration(
        trust_store=ca.trust_store(), inner_protocols=[unitls.NextProtocol.H2, b"http/1.1"]
    )
    scfg = TLSServerConfiguration(
        certificate_chain=[server_cert.signing_chain()], inner_protocols=[b"h2"]
    )
    with serve(server_engine, scfg, handler) as server:
        with client_engine.client_context(ccfg).connect((HOST, server.port)) as sock:
            assert sock.negotiated_protocol() is unitls.NextProtocol.H2
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
    assert seen == [unitls.NextProtocol.H2]
    assert not server.errors, server.errors


def test_mutual_tls_over_sockets(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
) -> None:
    peers: list[bytes | None] = []

    def handler(conn: Any) -> None:
        peers.append(conn.getpeercert())
        echo(conn)

    ccfg = TLSClientConfiguration(
        trust_store=ca.trust_store(), certificate_chain=client_cert.signing_chain()
    )
    scfg = TLSServerConfiguration(
        certificate_chain=[server_cert.signing_chain()], trust_store=ca.trust_store()
    )
    with serve(server_engine, scfg, handler) as server:
        with client_engine.client_context(ccfg).connect((HOST, server.port)) as sock:
            sock.sendall(b"mtls")
            assert recv_exactly(sock, 4) == b"mtls"
    assert peers == [client_cert.cert_der]
    assert not server.errors, server.errors


def test_mutual_tls_missing_cert_over_sockets(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    scfg = TLSServerConfiguration(
        certificate_chain=[server_cert.signing_chain()], trust_store=ca.trust_store()
    )
    ctx = client_engine.client_context(TLSClientConfiguration(trust_store=ca.trust_store()))
    with serve(server_engine, scfg, echo) as server:
        with pytest.raises(unitls.TLSError):
            sock = ctx.connect((HOST, server.port))
            # TLS 1.3: the rejection arrives after the client's handshake completed.
            with sock:
                sock.settimeout(THREAD_TIMEOUT)
                sock.sendall(b"x")
                sock.recv(1)
                sock.sendall(b"y")
                sock.recv(1)
    assert server.handled == 0
    assert len(server.errors) == 1 and isinstance(server.errors[0], unitls.TLSError)


# -- bulk data ---------------------------------------------------------------------------------


def test_sendall_megabytes(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    size = 8 * 1024 * 1024 + 3
    data = random.Random(3).randbytes(size)

    def handler(conn: Any) -> None:
        got = recv_exactly(conn, size)
        conn.sendall(hashlib.sha256(got).digest() + len(got).to_bytes(8, "big"))
        conn.sendall(got[::-1])

    with serve(server_engine, server_config, handler) as server:
        with client_engine.client_context(client_config).connect((HOST, server.port)) as sock:
            sock.sendall(data)
            reply = recv_exactly(sock, 40)
            assert reply[32:] == size.to_bytes(8, "big")
            assert reply[:32] == hashlib.sha256(data).digest()
            assert recv_exactly(sock, size) == data[::-1]
    assert not server.errors, server.errors


# -- timeouts and non-blocking mode --------------------------------------------------------------


def test_timeout(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    release = threading.Event()

    def handler(conn: Any) -> None:
        release.wait(THREAD_TIMEOUT)
        conn.sendall(b"late")
        echo(conn)

    with serve(server_engine, server_config, handler) as server:
        with client_engine.client_context(client_config).connect((HOST, server.port)) as sock:
            sock.settimeout(0.2)
            assert sock.gettimeout() == 0.2
            with pytest.raises(unitls.TLSTimeoutError):
                sock.recv(10)
            with pytest.raises(TimeoutError):  # also a TimeoutError
                sock.recv(10)
            # The connection survives a timeout.
            release.set()
            sock.settimeout(THREAD_TIMEOUT)
            assert recv_exactly(sock, 4) == b"late"
            sock.sendall(b"still alive")
            assert recv_exactly(sock, 11) == b"still alive"
    assert not server.errors, server.errors


def test_non_blocking(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    release = threading.Event()
    payload = b"N" * 100_000

    def handler(conn: Any) -> None:
        release.wait(THREAD_TIMEOUT)
        conn.sendall(payload)
        echo(conn)

    with serve(server_engine, server_config, handler) as server:
        with client_engine.client_context(client_config).connect((HOST, server.port)) as sock:
            sock.setblocking(False)
            assert sock.gettimeout() == 0.0
            with pytest.raises(unitls.WantReadError):
                sock.recv(10)
            release.set()
            got = bytearray()
            with selectors.DefaultSelector() as sel:
                sel.register(sock, selectors.EVENT_READ)
                while len(got) < len(payload):
                    assert sel.select(THREAD_TIMEOUT), "no data within the timeout"
                    while True:
                        try:
                            data = sock.recv(65536)
                        except unitls.WantReadError:
                            break
                        assert data, "unexpected EOF"
                        got += data
            assert bytes(got) == payload
            # Sending in non-blocking mode: retry on WantWriteError, the data arrives intact.
            view = memoryview(b"abc" * 1000)
            while view:
                try:
                    view = view[sock.send(view) :]
                except unitls.WantWriteError:
                    with selectors.DefaultSelector() as sel:
                        sel.register(sock, selectors.EVENT_WRITE)
                        sel.select(THREAD_TIMEOUT)
            sock.settimeout(THREAD_TIMEOUT)
            assert recv_exactly(sock, 3000) == b"abc" * 1000
    assert not server.errors, server.errors


# -- connection failures -----------------------------------------------------------------------


def test_refused_connection(client_engine: Impl, client_config: TLSClientConfiguration) -> None:
    # A port nobody listens on: bound, never listening, so nothing else can take it meanwhile.
    with socket.socket() as placeholder:
        placeholder.bind((HOST, 0))
        port = placeholder.getsockname()[1]
        before = open_fds()
        with pytest.raises(unitls.TLSConnectionError) as info:
            client_engine.client_context(client_config).connect((HOST, port))
        assert isinstance(info.value, ConnectionError)
        assert open_fds() == before


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_connect_to_an_address_or_a_name(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    host: str,
) -> None:
    """connect() to an IPv4 or IPv6 address (connected without a resolver call) or a name
    (resolved): the same connection, verified against what was asked for."""
    try:
        listener = engine.server_context(server_config).connect(
            (host if host == "::1" else HOST, 0)
        )
    except unitls.TLSError:
        if host == "::1":
            pytest.skip("no IPv6 loopback here")
        raise
    listener.settimeout(THREAD_TIMEOUT)
    port = listener.getsockname()[1]
    accepted: list[Any] = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    t.start()
    try:
        with engine.client_context(client_config).connect(
            (host, port), timeout=THREAD_TIMEOUT
        ) as sock:
            t.join(THREAD_TIMEOUT)
            assert len(accepted) == 1
            accepted[0].sendall(b"hello")
            assert sock.recv(5) == b"hello"
    finally:
        for conn in accepted:
            conn.close(force=True)
        listener.close()


def test_peer_not_tls(client_engine: Impl, client_config: TLSClientConfiguration) -> None:
    # A plaintext server answering with HTTP: a protocol error, not a hang or a raw OSError.
    with socket.create_server((HOST, 0)) as plain:
        port = plain.getsockname()[1]

        def answer() -> None:
            conn, _ = plain.accept()
            with conn:
                conn.settimeout(THREAD_TIMEOUT)
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nnot TLS\r\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        with pytest.raises(unitls.TLSError) as info:
            client_engine.client_context(client_config).connect((HOST, port))
        t.join(THREAD_TIMEOUT)
    assert not isinstance(info.value, unitls.CertificateVerificationError)


def test_connect_timeout_bounds_the_handshake(
    client_engine: Impl, client_config: TLSClientConfiguration
) -> None:
    """A server that accepts TCP but never answers: connect(timeout=...) gives up with
    TLSTimeoutError (also a TimeoutError) instead of blocking forever."""
    connect = client_engine.client_context(client_config).connect
    with socket.create_server((HOST, 0)) as silent:  # the backlog completes the TCP handshake
        port = silent.getsockname()[1]
        try:
            connect((HOST, port), timeout=0.3)
        except TypeError:
            pytest.skip("this implementation's connect() takes no timeout (a unitls extension)")
        except unitls.TLSTimeoutError as exc:
            assert isinstance(exc, TimeoutError)
        else:
            pytest.fail("connect() returned although the server never answered")


def test_connect_timeout_stays_the_sockets_timeout(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    listener = engine.server_context(server_config).connect((HOST, 0))
    listener.settimeout(THREAD_TIMEOUT)
    accepted: list[Any] = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    t.start()
    try:
        with engine.client_context(client_config).connect(
            ("localhost", listener.getsockname()[1]), timeout=7.5
        ) as sock:
            assert sock.gettimeout() == 7.5
            t.join(THREAD_TIMEOUT)
    finally:
        for conn in accepted:
            conn.close(force=True)
        listener.close()


@pytest.mark.parametrize("problem", ["untrusted", "hostname"])
def test_verification_failure(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_config: TLSServerConfiguration,
    problem: str,
) -> None:
    if problem == "untrusted":
        ccfg = TLSClientConfiguration(trust_store=CA.create("other root").trust_store())
        scfg = server_config
    else:
        ccfg = TLSClientConfiguration(trust_store=ca.trust_store())
        other = ca.issue("other.test")
        scfg = TLSServerConfiguration(certificate_chain=[other.signing_chain()])
    before = open_fds()
    with serve(server_engine, scfg, echo) as server:
        with pytest.raises(unitls.CertificateVerificationError) as info:
            client_engine.client_context(ccfg).connect((HOST, server.port))
        assert info.value.reason
        assert info.value.reason in str(info.value)
    # The server saw the failed handshake as an error from accept(), and nothing leaked.
    assert server.handled == 0 and len(server.errors) == 1
    assert isinstance(server.errors[0], unitls.TLSError)
    assert open_fds() == before


# -- closing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_close(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    force: bool,
) -> None:
    seen: list[bytes] = []

    def handler(conn: Any) -> None:
        seen.append(recv_exactly(conn, 4))
        seen.append(conn.recv(10))  # b"": the client's close_notify
        conn.close()  # answers with close_notify, which a non-forced client close waits for

    with serve(server_engine, server_config, handler) as server:
        sock = client_engine.client_context(client_config).connect((HOST, server.port))
        sock.settimeout(THREAD_TIMEOUT)
        sock.sendall(b"data")
        sock.close(force=force)
        assert sock.fileno() == -1
        sock.close()  # closing twice is harmless
        with pytest.raises(unitls.TLSError):
            sock.send(b"after close")
        with pytest.raises(unitls.TLSError):
            sock.recv(1)
    assert seen == [b"data", b""]
    assert not server.errors, server.errors


def test_server_ragged_close(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    # The server's TCP connection goes away without close_notify: RaggedEOF, not b"".
    def handler(conn: Any) -> None:
        conn.sendall(b"bye")
        # Cut TCP under the TLS layer (no close_notify): shut the connection down through a
        # duplicate of its descriptor, which works the same for every engine.
        with socket.socket(fileno=os.dup(conn.fileno())) as raw:
            raw.shutdown(socket.SHUT_RDWR)

    with serve(server_engine, server_config, handler) as server:
        with client_engine.client_context(client_config).connect((HOST, server.port)) as sock:
            sock.settimeout(THREAD_TIMEOUT)
            assert recv_exactly(sock, 3) == b"bye"
            with pytest.raises(unitls.RaggedEOF):
                sock.recv(10)
    assert not server.errors, server.errors


# -- STARTTLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["context", "function"])
def test_starttls_upgrade(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    server_cert: Issued,
    via: str,
) -> None:
    sctx = server_engine.server_context(server_config)
    cctx = client_engine.client_context(client_config)
    errors: list[BaseException] = []
    with socket.create_server((HOST, 0)) as plain:
        port = plain.getsockname()[1]

        def server() -> None:
            try:
                conn, _ = plain.accept()
                conn.settimeout(THREAD_TIMEOUT)
                assert conn.recv(100) == b"STARTTLS\r\n"
                conn.sendall(b"220 go ahead\r\n")
                tls = sctx.upgrade(conn) if via == "context" else unitls.upgrade_socket(sctx, conn)
                with tls:
                    tls.settimeout(THREAD_TIMEOUT)
                    echo(tls)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=server, daemon=True)
        t.start()
        raw = socket.create_connection((HOST, port), timeout=THREAD_TIMEOUT)
        raw.sendall(b"STARTTLS\r\n")
        assert raw.recv(100) == b"220 go ahead\r\n"
        if via == "context":
            tls = cctx.upgrade(raw, server_hostname="127.0.0.1")
        else:
            tls = unitls.upgrade_socket(cctx, raw, "127.0.0.1")
        tls_any: object = tls
        assert isinstance(tls_any, unitls.TLSSocket)
        with tls:
            assert tls.getpeercert() == server_cert.cert_der
            assert tls.negotiated_tls_version is TLSVersion.TLSv1_3
            tls.sendall(b"secret")
            assert recv_exactly(tls, 6) == b"secret"
        t.join(THREAD_TIMEOUT)
    assert not errors, errors


def test_starttls_verification_failure(
    client_engine: Impl, server_engine: Impl, server_config: TLSServerConfiguration
) -> None:
    cctx = client_engine.client_context(
        TLSClientConfiguration(trust_store=CA.create("other").trust_store())
    )
    sctx = server_engine.server_context(server_config)
    with socket.create_server((HOST, 0)) as plain:
        port = plain.getsockname()[1]

        def server() -> None:
            conn, _ = plain.accept()
            conn.settimeout(THREAD_TIMEOUT)
            try:
                sctx.upgrade(conn).close(force=True)
            except unitls.TLSError:
                pass
            finally:
                conn.close()

        t = threading.Thread(target=server, daemon=True)
        t.start()
        raw = socket.create_connection((HOST, port), timeout=THREAD_TIMEOUT)
        with raw, pytest.raises(unitls.CertificateVerificationError):
            cctx.upgrade(raw, server_hostname="127.0.0.1")
        t.join(THREAD_TIMEOUT)


# -- resources ---------------------------------------------------------------------------------


def test_no_fd_leak(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    n_ok, n_bad = 200, 20
    ctx = client_engine.client_context(client_config)
    bad_ctx = client_engine.client_context(
        TLSClientConfiguration(trust_store=CA.create("stranger").trust_store())
    )

    def one_round(port: int) -> None:
        sock: Any
        with ctx.connect((HOST, port)) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"

    with serve(server_engine, server_config, echo, n=3) as server:
        for _ in range(3):  # warm up caches (contexts, sessions) before counting
            one_round(server.port)
    before = open_fds()
    with serve(server_engine, server_config, echo, n=n_ok + n_bad) as server:
        for i in range(n_ok):
            one_round(server.port)
            if i % 10 == 0:
                with pytest.raises(unitls.CertificateVerificationError):
                    bad_ctx.connect((HOST, server.port))
    assert server.handled == n_ok
    assert open_fds() <= before, f"open fds grew from {before} to {open_fds()}"


def test_client_without_sni_gets_the_chain_naming_the_address_it_reached(
    client_engine: Impl, server_engine: Impl, ca: CA
) -> None:
    """Clients connecting to an IP send no SNI: a server with several chains then serves the
    one whose IP SAN is the address the client reached, not just the first chain."""
    by_name = ca.issue("first.example")
    by_ip = ca.issue("second.example", HOST)
    config = TLSServerConfiguration(
        [by_name.signing_chain(), by_ip.signing_chain()], trust_store=None
    )
    listener = server_engine.server_context(config).connect((HOST, 0))
    listener.settimeout(THREAD_TIMEOUT)
    accepted: list[Any] = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    t.start()
    try:
        client = client_engine.client_context(TLSClientConfiguration(trust_store=ca.trust_store()))
        with client.connect((HOST, listener.getsockname()[1])) as sock:
            assert sock.getpeercert() == by_ip.cert_der
        t.join(THREAD_TIMEOUT)
    finally:
        for conn in accepted:
            conn.close(force=True)
        listener.close()
