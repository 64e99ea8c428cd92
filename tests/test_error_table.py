"""One table: the same event gives the same result (exception class or value) on every engine.

Finding 10 of issue 9: close_notify during the handshake was ``ProtocolError`` on OpenSSL and
``HandshakeClosedError`` on rustls; a write to a peer that reset was ``RaggedEOF`` on one and
``TLSConnectionError`` on the other; OpenSSL named a cipher suite before the handshake had
finished. Every row below is checked on every engine (any engine added later too), in memory
(``BUFFER_EVENTS``) and over sockets for every socket path (``SOCKET_EVENTS``). A row names the
exact class expected, not a base class.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from kit import (
    CA,
    SOCKET_FACTORIES,
    BufferPump,
    Issued,
    SocketFactory,
    StdlibServer,
    closing,
    recv_exactly,
    stdlib_context,
)

import unitls
from unitls import TLSClientConfiguration, TLSServerConfiguration, TLSVersion

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(60)

TLS12 = TLSVersion.TLSv1_2
TLS13 = TLSVersion.TLSv1_3
CLOSE_NOTIFY_RECORD = b"\x15\x03\x03\x00\x02\x01\x00"  # a plaintext warning alert, close_notify
NOT_TLS = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


class Env:
    """What a row needs: certificates, configurations and the pump."""

    def __init__(self, ca: CA, server_cert: Issued, client_cert: Issued) -> None:
        self.ca = ca
        self.server_cert = server_cert
        self.client_cert = client_cert
        self.pump = BufferPump()

    def client(self, engine: Impl, version: TLSVersion | None = None, **kw: Any) -> Any:
        if version is not None:
            kw.update(lowest_supported_version=version, highest_supported_version=version)
        kw.setdefault("trust_store", self.ca.trust_store())
        return engine.client_context(TLSClientConfiguration(**kw)).create_buffer("localhost")

    def server(self, engine: Impl, version: TLSVersion | None = None, **kw: Any) -> Any:
        if version is not None:
            kw.update(lowest_supported_version=version, highest_supported_version=version)
        kw.setdefault("certificate_chain", [self.server_cert.signing_chain()])
        return engine.server_context(TLSServerConfiguration(**kw)).create_buffer()

    def connected(self, engine: Impl, version: TLSVersion | None = None) -> tuple[Any, Any]:
        client, server = self.client(engine, version), self.server(engine, version)
        self.pump.handshake(client, server)
        return client, server


def _step(buf: Any) -> None:
    try:
        buf.do_handshake()
    except unitls.WantReadError:
        pass


def _client_after_server_flight(env: Env, engine: Impl, version: TLSVersion) -> Any:
    """A client of ``engine`` that has sent its hello and received the server's first flight
    (a stdlib-backed OpenSSL server would do the same; the engine's own server is used)."""
    client, server = env.client(engine, version), env.server(engine, version)
    _step(client)
    env.pump.transfer(client, server)
    _step(server)
    env.pump.transfer(server, client)
    return client


# -- buffer events: (name, action, expected) ------------------------------------------------------
# ``action(env, engine)`` returns a value or raises; ``expected`` is an exception class or value.


def close_notify_to_server_during_handshake(env: Env, engine: Impl) -> Any:
    server = env.server(engine)
    server.process_incoming(CLOSE_NOTIFY_RECORD)
    _step(server)
    server.process_incoming(b"")
    server.do_handshake()


def close_notify_to_client_during_handshake(env: Env, engine: Impl) -> Any:
    client = _client_after_server_flight(env, engine, TLS12)
    _step(client)
    client.process_incoming(CLOSE_NOTIFY_RECORD)
    _step(client)
    client.process_incoming(b"")
    client.do_handshake()


def eof_during_handshake(env: Env, engine: Impl) -> Any:
    client = env.client(engine)
    _step(client)
    client.process_incoming(b"")
    client.do_handshake()


def eof_without_close_notify(env: Env, engine: Impl) -> Any:
    client, _ = env.connected(engine)
    client.process_incoming(b"")
    return client.read(10)


def read_after_close_notify(env: Env, engine: Impl) -> Any:
    client, server = env.connected(engine)
    server.shutdown()
    env.pump.transfer(server, client)
    return client.read(10)


def read_after_close_notify_and_eof(env: Env, engine: Impl) -> Any:
    client, server = env.connected(engine)
    server.shutdown()
    env.pump.transfer(server, client)
    client.process_incoming(b"")
    return (client.read(10), client.read(10))


def peer_not_tls(env: Env, engine: Impl) -> Any:
    client = env.client(engine)
    _step(client)
    client.process_incoming(NOT_TLS)
    client.do_handshake()


def untrusted_server(env: Env, engine: Impl) -> Any:
    client = env.client(engine, trust_store=CA.create("another root").trust_store())
    env.pump.handshake(client, env.server(engine))


def missing_client_certificate(env: Env, engine: Impl) -> Any:
    client = env.client(engine)
    server = env.server(engine, trust_store=env.ca.trust_store())
    env.pump.handshake(client, server)
    env.pump.send(client, server, b"x")  # TLS 1.3: the server decides after the client's flight


def version_mismatch(env: Env, engine: Impl) -> Any:
    env.pump.handshake(env.client(engine, TLS13), env.server(engine, TLS12))


def no_shared_cipher(env: Env, engine: Impl) -> Any:
    suites = unitls.CipherSuite
    client = env.client(engine, TLS12, ciphers=[suites.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256])
    server = env.server(engine, TLS12, ciphers=[suites.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384])
    env.pump.handshake(client, server)


def info_before_handshake_finished(env: Env, engine: Impl) -> Any:
    # A TLS 1.2 client that has the server's hello (suite, ALPN, certificate known to the
    # engine) but not its Finished: the PEP says None for all of it.
    client = _client_after_server_flight(env, engine, TLS12)
    _step(client)
    return (
        client.cipher(),
        client.negotiated_protocol(),
        client.negotiated_tls_version,
        client.getpeercert(),
    )


def server_info_before_handshake_finished(env: Env, engine: Impl) -> Any:
    client, server = env.client(engine, TLS13), env.server(engine, TLS13)
    _step(client)
    env.pump.transfer(client, server)
    _step(server)  # TLS 1.3: waits for the client's Finished
    return (server.cipher(), server.negotiated_protocol(), server.negotiated_tls_version)


def read_before_handshake(env: Env, engine: Impl) -> Any:
    return env.client(engine).read(10)


def write_before_handshake(env: Env, engine: Impl) -> Any:
    return env.client(engine).write(b"x")


def write_after_shutdown(env: Env, engine: Impl) -> Any:
    client, _ = env.connected(engine)
    client.shutdown()
    return client.write(b"x")


def data_after_eof(env: Env, engine: Impl) -> Any:
    client = env.client(engine)
    client.process_incoming(b"")
    client.process_incoming(b"\x16\x03\x03\x00\x01\x00")


def process_incoming_none(env: Env, engine: Impl) -> Any:
    env.client(engine).process_incoming(None)


def process_incoming_str(env: Env, engine: Impl) -> Any:
    env.client(engine).process_incoming("")


def process_incoming_int(env: Env, engine: Impl) -> Any:
    env.client(engine).process_incoming(0)


def read_zero_bytes(env: Env, engine: Impl) -> Any:
    client, _ = env.connected(engine)
    return client.read(0)


def handshake_again(env: Env, engine: Impl) -> Any:
    client, _ = env.connected(engine)
    return client.do_handshake()


BUFFER_EVENTS: list[tuple[str, Callable[[Env, Impl], Any], Any]] = [
    ("close_notify to a server during the handshake", close_notify_to_server_during_handshake,
     unitls.HandshakeClosedError),
    ("close_notify to a client during the handshake", close_notify_to_client_during_handshake,
     unitls.HandshakeClosedError),
    ("EOF during the handshake", eof_during_handshake, unitls.HandshakeClosedError),
    ("EOF without close_notify", eof_without_close_notify, unitls.RaggedEOF),
    ("read after the peer's close_notify", read_after_close_notify, b""),
    ("read after close_notify, then EOF", read_after_close_notify_and_eof, (b"", b"")),
    ("the peer is not TLS", peer_not_tls, unitls.ProtocolError),
    ("untrusted server certificate", untrusted_server, unitls.CertificateVerificationError),
    ("missing client certificate", missing_client_certificate,
     unitls.CertificateVerificationError),
    ("no common version", version_mismatch, unitls.ProtocolError),
    ("no common cipher suite", no_shared_cipher, unitls.ProtocolError),
    ("client info before the handshake finished", info_before_handshake_finished,
     (None, None, None, None)),
    ("server info before the handshake finished", server_info_before_handshake_finished,
     (None, None, None)),
    ("read before the handshake", read_before_handshake, unitls.WantReadError),
    ("write before the handshake", write_before_handshake, unitls.WantReadError),
    ("write after our close_notify", write_after_shutdown, unitls.TLSError),
    ("data after the transport's EOF", data_after_eof, unitls.TLSError),
    ("process_incoming(None)", process_incoming_none, TypeError),
    ("process_incoming('')", process_incoming_str, TypeError),
    ("process_incoming(0)", process_incoming_int, TypeError),
    ("read(0)", read_zero_bytes, b""),
    ("do_handshake() once done", handshake_again, None),
]  # fmt: skip


@pytest.fixture(scope="module")
def env(ca: CA, server_cert: Issued, client_cert: Issued) -> Env:
    return Env(ca, server_cert, client_cert)


def _outcome(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except BaseException as exc:
        return exc


def _check(outcome: Any, expected: Any) -> None:
    if isinstance(expected, type) and issubclass(expected, BaseException):
        assert type(outcome) is expected, f"expected {expected.__name__}, got {outcome!r}"
    else:
        assert outcome == expected, f"expected {expected!r}, got {outcome!r}"


@pytest.mark.parametrize(
    ("action", "expected"),
    [pytest.param(action, expected, id=name) for name, action, expected in BUFFER_EVENTS],
)
def test_finding_10_same_event_same_class_buffers(
    env: Env, engine: Impl, action: Callable[[Env, Impl], Any], expected: Any
) -> None:
    _check(_outcome(lambda: action(env, engine)), expected)


# -- socket events ---------------------------------------------------------------------------------
# Each row: a server-side behaviour (a raw TCP peer or a stdlib TLS server) and the exact class
# the client gets on the unitls socket paths. The ``ssl`` bridge must raise what the stdlib's own
# ``ssl.SSLSocket`` raises for the same event: that is measured on the spot (a plain stdlib
# client against the same peer) rather than written down, since it depends on OpenSSL's version.


def _rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class RawPeer:
    """A plain TCP server running ``behaviour(conn)`` for each of ``n`` connections."""

    def __init__(self, behaviour: Callable[[socket.socket], None], n: int = 1) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(20)
        self.address = self.listener.getsockname()
        self.behaviour = behaviour
        self.thread = threading.Thread(target=self._run, args=(n,), daemon=True)
        self.thread.start()

    def _run(self, n: int) -> None:
        for _ in range(n):
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(20)
            try:
                self.behaviour(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(20)


def _reset_after_hello(conn: socket.socket) -> None:
    conn.recv(65536)
    _rst(conn)


def _close_after_hello(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass


def _not_tls(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(NOT_TLS)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass


HANDSHAKE_EVENTS = {
    "reset during the handshake": (_reset_after_hello, unitls.HandshakeClosedError),
    "EOF during the handshake": (_close_after_hello, unitls.HandshakeClosedError),
    "the peer is not TLS": (_not_tls, unitls.ProtocolError),
}


@pytest.fixture(params=sorted(SOCKET_FACTORIES))
def factory(request: pytest.FixtureRequest) -> SocketFactory:
    return SOCKET_FACTORIES[request.param]


def _stdlib_client(ca: CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    return ctx


def _check_socket_outcome(
    factory: SocketFactory, outcome: Any, expected: type[BaseException], reference: Any
) -> None:
    if factory.name == "bridge":
        assert isinstance(reference, BaseException), f"the stdlib succeeded: {reference!r}"
        assert isinstance(outcome, type(reference)), f"bridge: {outcome!r}, stdlib: {reference!r}"
    else:
        assert type(outcome) is expected, f"expected {expected.__name__}, got {outcome!r}"


@pytest.mark.parametrize("case", sorted(HANDSHAKE_EVENTS))
def test_finding_10_same_event_same_class_sockets_handshake(
    engine: Impl, factory: SocketFactory, client_config: TLSClientConfiguration, ca: CA, case: str
) -> None:
    behaviour, expected = HANDSHAKE_EVENTS[case]
    peer = RawPeer(behaviour, n=2 if factory.name == "bridge" else 1)
    try:
        outcome = _outcome(lambda: factory.connect(engine, client_config, peer.address, 20))
        reference = None
        if factory.name == "bridge":
            raw = socket.create_connection(peer.address, timeout=20)
            with raw:
                reference = _outcome(
                    lambda: _stdlib_client(ca).wrap_socket(raw, server_hostname="localhost")
                )
    finally:
        peer.close()
    if not isinstance(outcome, BaseException):
        outcome.close()
    _check_socket_outcome(factory, outcome, expected, reference)


def _send_then_reset(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"hello")
    tls.recv(1)  # the client's go-ahead
    _rst(tls)


def _send_then_close_without_close_notify(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"hello")
    tls.recv(1)
    socket.socket.shutdown(tls, socket.SHUT_RDWR)  # the TCP stream ends, TLS never said goodbye


def _write_until_error(sock: Any) -> None:
    # The first writes after a reset may still be taken by the kernel: keep writing.
    for _ in range(200):
        sock.sendall(b"x" * 65536)


AFTER_HANDSHAKE_EVENTS = {
    # A reset while reading ends the stream without close_notify: a ragged EOF...
    "read after the peer reset": (_send_then_reset, "read", unitls.RaggedEOF),
    # ...but writing to a peer that reset fails: the connection is gone.
    "write after the peer reset": (_send_then_reset, "write", unitls.TLSConnectionError),
    "read after a ragged close": (_send_then_close_without_close_notify, "read", unitls.RaggedEOF),
}


def _after_handshake(sock: Any, server: StdlibServer, how: str) -> Any:
    assert recv_exactly(sock, 5) == b"hello"
    sock.sendall(b"!")
    server.join()
    if how == "write":
        return _outcome(lambda: _write_until_error(sock))
    return _outcome(lambda: sock.recv(100))


@pytest.mark.parametrize("case", sorted(AFTER_HANDSHAKE_EVENTS))
def test_finding_10_same_event_same_class_sockets_after_handshake(
    engine: Impl,
    factory: SocketFactory,
    client_config: TLSClientConfiguration,
    ca: CA,
    server_cert: Issued,
    tmp_path: Path,
    case: str,
) -> None:
    behaviour, how, expected = AFTER_HANDSHAKE_EVENTS[case]
    ctx = stdlib_context(True, tmp_path, ca, server_cert)
    with StdlibServer(ctx, behaviour) as server:
        with closing(factory.connect(engine, client_config, server.address, 20)) as sock:
            outcome = _after_handshake(sock, server, how)
    reference = None
    if factory.name == "bridge":
        with StdlibServer(ctx, behaviour) as server:
            raw = socket.create_connection(server.address, timeout=20)
            client = _stdlib_client(ca).wrap_socket(
                raw, server_hostname="localhost", suppress_ragged_eofs=False
            )
            with closing(client):
                reference = _after_handshake(client, server, how)
    _check_socket_outcome(factory, outcome, expected, reference)
