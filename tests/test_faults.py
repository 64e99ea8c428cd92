"""The fault suite: every TLS driver under faults, on every engine, and on a fake engine.

Drivers: the engines' own sockets, the generic driver on every engine (``upgrade_socket``), the
``ssl`` bridge (``SOCKET_FACTORIES`` in ``kit``: point these tests at another socket implementation
by adding a factory there), its memory-BIO objects, and ``unitls.asyncio``. Engines: each real
one (the ``engine`` fixture) and a fake one over it that takes every freedom PEP 748 gives
(``kit.FaultyBuffer``: refused input, short writes, one-byte records, short reads). Peers are
real: the stdlib ``ssl`` module, TCP relays that drip bytes, servers that reset or half-close.

Each finding of issue 9 has a test named ``test_finding_N_...`` (finding 10 is in
``test_error_table.py``; findings 9 and 12 are tests of the Rust extension).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from kit import (
    CA,
    HOST,
    SOCKET_FACTORIES,
    BufferPump,
    Issued,
    Relay,
    SocketFactory,
    StdlibPeer,
    StdlibServer,
    bridge_context,
    closing,
    echo_handler,
    fake_implementation,
    recv_exactly,
    stdlib_context,
)

import unitls
import unitls.asyncio as uasyncio
from unitls import TLSClientConfiguration, TLSServerConfiguration

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(90)

MIB = 1 << 20


@pytest.fixture(params=["real", "fake"])
def subject(request: pytest.FixtureRequest, engine: Impl) -> Impl:
    """The engine under test, or the fake engine over it."""
    return engine if request.param == "real" else fake_implementation(engine)


def is_fake(impl: Impl) -> bool:
    return impl.name.startswith("fake-")


@pytest.fixture(params=sorted(SOCKET_FACTORIES))
def factory(request: pytest.FixtureRequest) -> SocketFactory:
    return SOCKET_FACTORIES[request.param]


@pytest.fixture
def server_ctx(tmp_path: Path, ca: CA, server_cert: Issued) -> ssl.SSLContext:
    """A stdlib server context presenting ``server_cert``."""
    return stdlib_context(True, tmp_path, ca, server_cert)


def _quietly(fn: Any) -> None:
    try:
        fn()
    except (OSError, unitls.TLSError):
        pass


# -- finding 1: shutdown(SHUT_WR) -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["socket", "upgrade"])
def test_finding_1_shutdown_wr_sends_close_notify_and_reading_stays_tls(
    subject: Impl, path: str, client_config: TLSClientConfiguration, server_ctx: ssl.SSLContext
) -> None:
    """``shutdown(SHUT_WR)`` sends close_notify (the stdlib peer reads a clean end, not a ragged
    EOF), and what follows on the connection is still read through TLS: the peer's data, its
    close_notify, and never the cleartext that comes after it."""
    seen: dict[str, Any] = {}

    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"early")
        seen["our close_notify"] = tls.recv(100)  # a ragged EOF would raise here
        tls.sendall(b"after")
        raw = tls.unwrap()  # its close_notify; the rest of the stream is cleartext
        raw.sendall(b"CLEARTEXT AFTER CLOSE_NOTIFY")
        while raw.recv(100):
            pass

    factory = SOCKET_FACTORIES[path]
    with StdlibServer(server_ctx, handler) as server:
        with closing(factory.connect(subject, client_config, server.address, 20)) as sock:
            assert recv_exactly(sock, 5) == b"early"
            sock.shutdown(socket.SHUT_WR)
            rest = bytearray()
            while chunk := sock.recv(100):
                rest += chunk
            assert rest == b"after"
            assert sock.recv(100) == b""  # still TLS: the cleartext is never returned
        server.join()
    assert not server.errors, server.errors
    assert seen["our close_notify"] == b""


# -- finding 2: non-blocking sockets ------------------------------------------------------------


def test_finding_2_nonblocking_recv_keeps_decrypted_plaintext(
    subject: Impl,
    factory: SocketFactory,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    """A non-blocking ``recv`` returns the plaintext it decrypted while earlier ciphertext is still
    stuck in a full socket (it used to raise WantWriteError and drop the data)."""
    go = threading.Event()

    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"p" * 100)
        go.wait(30)  # not reading: the client's socket fills up
        _quietly(lambda: recv_exactly(tls, 1 << 40))

    with StdlibServer(server_ctx, handler) as server:
        sock = factory.connect(subject, client_config, server.address, 20)
        try:
            # The first read decrypts the whole record: 90 bytes stay in the engine.
            got = bytearray(recv_exactly(sock, 10))
            sock.setblocking(False)
            refused = 0
            while refused < 3:  # until the socket is full and ciphertext waits to be sent
                try:
                    sock.send(b"y" * 65536)
                    refused = 0
                except factory.want_write:
                    refused += 1
                    select.select([], [sock], [], 0.05)
            while len(got) < 100:
                if not sock.pending():  # plaintext the engine holds: select() cannot see it
                    select.select([sock], [], [], 10)
                try:
                    chunk = sock.recv(1000)
                except factory.want_read + factory.want_write:
                    continue
                assert chunk, "EOF before the peer's data"
                got += chunk
            assert got == b"p" * 100
        finally:
            go.set()
            _quietly(lambda: sock.setblocking(True))
            _quietly(sock.close)


def _select_echo(sock: Any, factory: SocketFactory, size: int) -> None:
    """Send ``size`` random bytes to an echo peer and read them back, non-blocking, driven by
    select(); both directions hashed."""
    payload = os.urandom(size)
    view = memoryview(payload)
    sent = received = 0
    digest = hashlib.sha256()
    sock.setblocking(False)
    while received < size:
        readable, writable, _ = select.select([sock], [sock] if sent < size else [], [], 10)
        assert readable or writable or sock.pending(), "no progress for 10 s"
        if writable:
            try:
                sent += sock.send(view[sent : sent + 65536])
            except factory.want_write + factory.want_read:
                pass
        while True:
            try:
                data = sock.recv(65536)
            except factory.want_read + factory.want_write:
                break
            assert data, "EOF before the echo was complete"
            digest.update(data)
            received += len(data)
            if not sock.pending():
                break
    assert received == size
    assert digest.digest() == hashlib.sha256(payload).digest(), "the echo differs"


def test_finding_2_nonblocking_select_echo_keeps_every_byte(
    subject: Impl,
    factory: SocketFactory,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    """A non-blocking select() loop echoes megabytes through every socket path, byte for byte
    (sha256), including over the fake engine's refusals and one-byte records."""
    size = 2 * MIB if is_fake(subject) else 8 * MIB
    with StdlibServer(server_ctx, echo_handler) as server:
        sock = factory.connect(subject, client_config, server.address, 20)
        try:
            _select_echo(sock, factory, size)
        finally:
            _quietly(lambda: sock.setblocking(True))
            _quietly(sock.close)


# -- finding 3: timeouts are deadlines ------------------------------------------------------------
# The relay passes one byte every 50 ms: a handshake flight or a 16 KiB record takes minutes, so
# only a deadline for the whole operation ends it within the test's time limit. The relay ends
# after 60 s, beyond that limit: an implementation without deadlines fails by timing out.
# Deadlines are the driver's business, not the engine's: the real engines suffice here.


def test_finding_3_connect_is_bounded_by_its_timeout(
    engine: Impl,
    factory: SocketFactory,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    with (
        StdlibServer(server_ctx, echo_handler) as server,
        Relay(server.address, drip_down=True, lifetime=60) as relay,
    ):
        with pytest.raises(factory.timeout):
            factory.connect(engine, client_config, relay.address, 0.5).close()


@pytest.mark.timeout(30)
def test_finding_3_recv_is_bounded_by_its_timeout(
    engine: Impl,
    factory: SocketFactory,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    def handler(tls: ssl.SSLSocket) -> None:
        tls.recv(1)
        tls.sendall(os.urandom(16384))  # one full record, dripped to the client
        _quietly(lambda: tls.recv(1))

    with (
        StdlibServer(server_ctx, handler) as server,
        Relay(server.address, lifetime=60) as relay,
        closing(factory.connect(engine, client_config, relay.address, 20)) as sock,
    ):
        relay.drip("down")
        sock.sendall(b"!")
        sock.settimeout(0.5)
        with pytest.raises(factory.timeout):
            recv_exactly(sock, 16384)


@pytest.mark.timeout(30)
def test_finding_3_a_short_timeout_is_not_overshot(
    engine: Impl,
    factory: SocketFactory,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    """A recv() that finds nothing ends when its timeout does. (Regression: the OpenSSL
    engine's socket let OpenSSL wait the timeout, then started the deadline, so a 0.05 s
    timeout ended after 0.1 s.) The shortest of three tries is compared: a wait is never
    shorter than asked, so the overshoot showed in every try."""

    def handler(tls: ssl.SSLSocket) -> None:
        _quietly(lambda: tls.recv(1))

    with (
        StdlibServer(server_ctx, handler) as server,
        closing(factory.connect(engine, client_config, server.address, 20)) as sock,
    ):
        sock.settimeout(0.05)
        took = []
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(factory.timeout):
                sock.recv(1)
            took.append(time.monotonic() - start)
    assert 0.05 <= min(took) < 0.09, took


@pytest.mark.timeout(30)
def test_finding_3_sendall_is_bounded_by_its_timeout(
    engine: Impl,
    factory: SocketFactory,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    with (
        StdlibServer(server_ctx, echo_handler) as server,
        Relay(server.address, lifetime=60) as relay,
        closing(factory.connect(engine, client_config, relay.address, 20)) as sock,
    ):
        relay.drip("up")
        sock.settimeout(0.5)
        with pytest.raises(factory.timeout):
            sock.sendall(b"x" * (16 * MIB))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["socket", "upgrade"])
def test_finding_3_close_is_bounded_by_its_timeout(
    engine: Impl,
    path: str,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    """close() waits for the peer's close_notify within the socket's timeout, however slowly
    the peer keeps sending other records."""

    def handler(tls: ssl.SSLSocket) -> None:
        tls.recv(1)
        _quietly(lambda: [tls.sendall(b"z" * 1000) for _ in range(10000)])

    factory = SOCKET_FACTORIES[path]
    with (
        StdlibServer(server_ctx, handler) as server,
        Relay(server.address, lifetime=60) as relay,
    ):
        sock = factory.connect(engine, client_config, relay.address, 20)
        relay.drip("down")
        sock.sendall(b"!")
        sock.settimeout(0.5)
        sock.close()
        assert sock.fileno() == -1


# -- findings 4 and 5: one reader thread and one writer thread --------------------------------------


def _full_duplex(sock: Any, size: int) -> None:
    """sendall() in one thread while another recv()s the echo: the websockets sync client's
    pattern. Both directions hashed."""
    payload = os.urandom(size)
    digest = hashlib.sha256()
    received = [0]
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while received[0] < size:
                data = sock.recv(1 << 16)
                if not data:
                    break
                digest.update(data)
                received[0] += len(data)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    sock.sendall(payload)
    t.join(60)
    assert not t.is_alive(), f"reader stuck at {received[0]} of {size} bytes"
    assert not errors, errors
    assert received[0] == size
    assert digest.digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("path", ["socket", "upgrade"])
def test_finding_4_two_threads_on_one_socket(
    subject: Impl, path: str, client_config: TLSClientConfiguration, server_ctx: ssl.SSLContext
) -> None:
    size = 4 * MIB if is_fake(subject) else 24 * MIB
    factory = SOCKET_FACTORIES[path]
    with StdlibServer(server_ctx, echo_handler) as server:
        with closing(factory.connect(subject, client_config, server.address, None)) as sock:
            _full_duplex(sock, size)


@pytest.mark.parametrize("path", ["socket", "upgrade"])
@pytest.mark.parametrize("blocked_in", ["recv", "sendall"])
def test_close_from_another_thread_ends_a_blocked_call(
    subject: Impl,
    path: str,
    blocked_in: str,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    """A thread blocked in ``recv`` (no timeout, the peer sends nothing) or ``sendall`` (the peer
    reads nothing) on a socket that another thread closes: its call ends at once with a
    ``TLSError``, on every engine alike, not when the peer next sends (or never)."""
    release = threading.Event()

    def idle_peer(tls: ssl.SSLSocket) -> None:
        release.wait(30)

    factory = SOCKET_FACTORIES[path]
    with StdlibServer(server_ctx, idle_peer) as server:
        sock = factory.connect(subject, client_config, server.address, None)
        outcome: list[BaseException | None] = []

        def blocked() -> None:
            try:
                if blocked_in == "recv":
                    sock.recv(100)
                else:
                    sock.sendall(b"x" * (64 * MIB))
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=blocked, daemon=True)
        thread.start()
        time.sleep(0.3)  # inside recv(), or sendall() with the socket's buffers full
        assert thread.is_alive()
        sock.close(force=True)
        thread.join(5)
        stuck = thread.is_alive()
        release.set()
        thread.join(30)
    assert not stuck, f"{blocked_in}() still blocked 5 s after close() in another thread"
    assert len(outcome) == 1 and isinstance(outcome[0], unitls.TLSError), outcome
    assert "closed" in str(outcome[0])


def test_finding_5_two_threads_through_the_bridge(
    subject: Impl, client_config: TLSClientConfiguration, server_ctx: ssl.SSLContext
) -> None:
    """The bridge's read() never waits for a send in progress (it deadlocked at 0 of 64 MiB).

    The server sends TLS 1.3 session tickets, which the reader thread handles while the writer
    writes: on the OpenSSL engine, whose bridge sockets are the stdlib's C objects, that
    corrupted the connection or crashed the process (OpenSSL's connection objects are not
    thread-safe; 5 of 150 runs failed, two by a segmentation fault) until ``LockedTLS``."""
    size = 4 * MIB if is_fake(subject) else 24 * MIB
    factory = SOCKET_FACTORIES["bridge"]
    with StdlibServer(server_ctx, echo_handler) as server:
        with closing(factory.connect(subject, client_config, server.address, None)) as sock:
            _full_duplex(sock, size)


@pytest.mark.parametrize("path", ["socket", "bridge"])
def test_finding_5_tickets_read_while_another_thread_writes(
    subject: Impl, path: str, client_config: TLSClientConfiguration, server_ctx: ssl.SSLContext
) -> None:
    """The race behind the previous test's OpenSSL failures, made frequent: many connections,
    each given 16 TLS 1.3 tickets that the reader thread handles while the writer thread is
    already writing. Each connection's echo must come back intact. (The bridge on the OpenSSL
    engine failed 7 of 20 runs of this test on 3.11, three by a segmentation fault, before its
    sockets got ``LockedTLS``.)"""
    server_ctx.num_tickets = 16
    connections = 12
    factory = SOCKET_FACTORIES[path]
    with StdlibServer(server_ctx, echo_handler, connections=connections) as server:
        for _ in range(connections):
            with closing(factory.connect(subject, client_config, server.address, None)) as sock:
                _full_duplex(sock, MIB)


def test_finding_5_the_openssl_bridge_lock_without_the_extension(
    monkeypatch: pytest.MonkeyPatch,
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    """The same race on the OpenSSL engine's bridge with ``LockedTLS``'s Python fallback (used
    when the extension is not there: ``PyLockState``, every read and write through ``_call``)."""
    import unitls.compat._native as bridge_native

    monkeypatch.setattr(bridge_native, "LockedCall", None)
    server_ctx.num_tickets = 16
    connections = 6
    engine = unitls.get_implementation("openssl")
    with StdlibServer(server_ctx, echo_handler, connections=connections) as server:
        for _ in range(connections):
            sock = SOCKET_FACTORIES["bridge"].connect(engine, client_config, server.address, None)
            with closing(sock):
                assert isinstance(sock._sslobj._lock, bridge_native.PyLockState)
                _full_duplex(sock, MIB)


# -- finding 6: one client does not hold a server -------------------------------------------------


def _stdlib_client_ctx(ca: CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    return ctx


def _client_hello() -> bytes:
    obj = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(
        ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost"
    )
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _drip(address: tuple[str, int], data: bytes, stop: threading.Event) -> None:
    with socket.create_connection(address) as sock:
        for i in range(len(data)):
            if stop.wait(0.05):
                return
            sock.sendall(data[i : i + 1])
        stop.wait(30)


def test_finding_6_accept_is_not_held_by_an_idle_or_dripping_client(
    subject: Impl, server_config: TLSServerConfiguration, ca: CA
) -> None:
    """An idle client and one dripping its hello do not delay the others: accept() returns the
    client whose handshake completes first, then reports each slow one's handshake_timeout,
    and keeps serving."""
    listener = subject.server_context(server_config).connect((HOST, 0), handshake_timeout=1.0)
    listener.settimeout(20)
    address = listener.getsockname()
    stop = threading.Event()
    idle = socket.create_connection(address)
    dripper = threading.Thread(target=_drip, args=(address, _client_hello(), stop), daemon=True)
    dripper.start()
    good_ports: list[int] = []

    def good_client() -> None:
        with socket.create_connection(address, timeout=20) as raw:
            good_ports.append(raw.getsockname()[1])
            with _stdlib_client_ctx(ca).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"hi")
                assert recv_exactly(tls, 2) == b"hi"

    try:
        time.sleep(0.2)  # the idle and dripping clients are queued first (ordering only)
        for _ in range(2):
            t = threading.Thread(target=good_client, daemon=True)
            t.start()
            conn, addr = listener.accept()
            with conn:
                assert addr[1] in good_ports
                conn.sendall(recv_exactly(conn, 2))
            t.join(20)
        timeouts = []
        for _ in range(2):
            with pytest.raises(unitls.TLSTimeoutError) as info:
                listener.accept()
            timeouts.append(info.value)
        assert all("handshake_timeout" in str(exc) for exc in timeouts)
        # Still serving after reporting them.
        t = threading.Thread(target=good_client, daemon=True)
        t.start()
        conn, _ = listener.accept()
        with conn:
            conn.sendall(recv_exactly(conn, 2))
        t.join(20)
    finally:
        stop.set()
        idle.close()
        listener.close()


def test_an_accept_deadline_shorter_than_a_handshake_keeps_the_client(
    subject: Impl, server_config: TLSServerConfiguration, ca: CA
) -> None:
    """An idle listener gives a new client's handshake one short blocking try before it joins
    the handshakes under way; accept()'s own deadline bounds that try. A client whose hello
    comes after the deadline: TLSTimeoutError, and the next accept() completes its handshake
    (it was neither dropped nor leaked)."""
    listener = subject.server_context(server_config).connect((HOST, 0))
    address = listener.getsockname()
    hello_sent = threading.Event()
    answer: list[bytes] = []

    def late_client() -> None:
        with socket.create_connection(address, timeout=20) as raw:
            time.sleep(0.3)  # accept() has timed out by now (ordering only)
            hello_sent.set()
            with _stdlib_client_ctx(ca).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"hi")
                answer.append(recv_exactly(tls, 2))

    t = threading.Thread(target=late_client, daemon=True)
    try:
        listener.settimeout(0.05)
        t.start()
        with pytest.raises(unitls.TLSTimeoutError):
            listener.accept()
        assert not hello_sent.is_set(), "the client's hello came before the deadline"
        listener.settimeout(20)
        conn, _ = listener.accept()
        with conn:
            conn.sendall(recv_exactly(conn, 2))
        t.join(20)
        assert answer == [b"hi"]
    finally:
        listener.close()


def test_an_interrupted_first_handshake_closes_its_connection() -> None:
    """A KeyboardInterrupt (or any non-TLS exception) raised inside the idle listener's first
    handshake try leaves through accept() and closes that client's connection, which is in no
    list of the listener yet. The listener logic alone: the wrapped object stands in for an
    engine's socket."""
    from unitls._socket import BufferListener, open_listener

    closed: list[bool] = []

    class Interrupted:
        def __init__(self, sock: socket.socket) -> None:
            self._sock = sock

        def settimeout(self, value: float | None) -> None:
            self._sock.settimeout(value)

        def do_handshake(self) -> None:
            raise KeyboardInterrupt

        def close(self, force: bool = False) -> None:
            closed.append(force)
            self._sock.close()

    listener = BufferListener(open_listener((HOST, 0)), None, Interrupted)  # type: ignore[arg-type]
    listener.settimeout(20)
    try:
        with socket.create_connection(listener.getsockname(), timeout=20):
            with pytest.raises(KeyboardInterrupt):
                listener.accept()
        assert closed == [True]
    finally:
        listener.close()


@pytest.mark.parametrize("clients", [0, 3])
def test_closing_a_listener_wakes_another_threads_accept(
    subject: Impl, server_config: TLSServerConfiguration, clients: int
) -> None:
    """close() from another thread while accept() waits for a first client or holds half-done
    handshakes: accept() raises a TLSError that says so, promptly. (Regression: close()
    emptied the dicts accept() was iterating, and a poll() on the closed listener slept on.)"""
    listener = subject.server_context(server_config).connect((HOST, 0))
    listener.settimeout(120)
    address = listener.getsockname()
    idle = [socket.create_connection(address) for _ in range(clients)]
    outcome: list[BaseException | None] = []

    def accept() -> None:
        try:
            listener.accept()
        except BaseException as exc:  # the test inspects what accept() raised
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # accept() is now polling the idle clients' handshakes (ordering only)
        listener.close()
        thread.join(20)
        assert not thread.is_alive(), "accept() slept on after close()"
        assert len(outcome) == 1
        assert isinstance(outcome[0], unitls.TLSError), repr(outcome[0])
        assert "closed" in str(outcome[0]), repr(outcome[0])
    finally:
        for sock in idle:
            sock.close()


def test_nonblocking_listener_hands_out_connections_before_their_handshake(
    subject: Impl, server_config: TLSServerConfiguration, ca: CA
) -> None:
    """A non-blocking listener returns connections at once (as the ssl module does for
    non-blocking sockets); their first operations drive the handshake, non-blocking too."""
    listener = subject.server_context(server_config).connect((HOST, 0))
    listener.setblocking(False)
    with pytest.raises(unitls.WantReadError):
        listener.accept()
    done = threading.Event()

    def client() -> None:
        with socket.create_connection(listener.getsockname(), timeout=20) as raw:
            with _stdlib_client_ctx(ca).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"ping")
                assert recv_exactly(tls, 4) == b"pong"
        done.set()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        select.select([listener], [], [], 20)
        conn, _ = listener.accept()
        with conn:
            assert conn.gettimeout() == 0
            got = b""
            while len(got) < 4:
                if not conn.pending():  # plaintext the engine holds: select() cannot see it
                    select.select([conn], [], [], 20)
                try:
                    got += conn.recv(4 - len(got))
                except (unitls.WantReadError, unitls.WantWriteError):
                    continue
            assert got == b"ping"
            conn.setblocking(True)
            conn.sendall(b"pong")
            assert done.wait(20)
    finally:
        t.join(20)
        listener.close()


def test_finding_6_unitls_serve_is_not_held_by_one_client(engine: Impl, tmp_path: Path) -> None:
    """``unitls serve`` answers a client while another one sits idle in its handshake and a
    third holds a connection without sending its request."""
    ca_file = tmp_path / "ca.pem"
    command = ["serve", "--port", "0", "--engine", engine.name, "--write-ca", str(ca_file)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "unitls", *command, "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r":(\d+)/", first)
        assert match, f"unexpected first line: {first!r}"
        port = int(match.group(1))
        ctx = ssl.create_default_context(cafile=str(ca_file))
        idle = socket.create_connection((HOST, port))
        silent = ctx.wrap_socket(socket.create_connection((HOST, port)), server_hostname=HOST)
        with socket.create_connection((HOST, port), timeout=20) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                page = bytearray()
                while chunk := tls.recv(65536):
                    page += chunk
        assert page.startswith(b"HTTP/1.0 200 OK"), page[:100]
        idle.close()
        silent.close()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


# -- finding 7: input the engine refuses ----------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 0, "", "x", object()], ids=repr)
def test_finding_7_process_incoming_takes_only_bytes_like(
    engine: Impl, client_config: TLSClientConfiguration, bad: Any
) -> None:
    buf = engine.client_context(client_config).create_buffer("localhost")
    with pytest.raises(TypeError):
        buf.process_incoming(bad)
    buf.process_incoming(b"")  # only an empty bytes-like object is the EOF
    with pytest.raises(unitls.HandshakeClosedError):
        buf.do_handshake()


@pytest.mark.parametrize("empty", [bytearray(), memoryview(b"")], ids=["bytearray", "memoryview"])
def test_finding_7_any_empty_bytes_like_is_eof(
    engine: Impl, client_config: TLSClientConfiguration, empty: Any
) -> None:
    buf = engine.client_context(client_config).create_buffer("localhost")
    buf.process_incoming(empty)
    with pytest.raises(unitls.HandshakeClosedError):
        buf.do_handshake()


@pytest.mark.parametrize("path", sorted(SOCKET_FACTORIES))
def test_finding_7_refused_ciphertext_is_kept_by_the_socket_drivers(
    engine: Impl, path: str, client_config: TLSClientConfiguration, server_ctx: ssl.SSLContext
) -> None:
    """The fake engine refuses incoming ciphertext at random: every chunk must still reach it,
    in order (the socket driver used to drop it)."""
    fake = fake_implementation(engine)
    factory = SOCKET_FACTORIES[path]
    with StdlibServer(server_ctx, echo_handler) as server:
        with closing(factory.connect(fake, client_config, server.address, 20)) as sock:
            _full_duplex(sock, 2 * MIB)


def test_finding_7_refused_ciphertext_is_kept_by_the_bridge_bio(
    engine: Impl, client_config: TLSClientConfiguration, server_ctx: ssl.SSLContext
) -> None:
    """``ssl.SSLObject`` from the bridge on the fake engine, pumped against the stdlib."""
    fake = fake_implementation(engine)
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = bridge_context(fake, client_config).wrap_bio(
        client_in, client_out, server_hostname="localhost"
    )
    server = StdlibPeer(server_ctx, server_side=True)

    def pump() -> None:
        while data := client_out.read():
            server.process_incoming(data)
        while data := server.process_outgoing(1 << 20):
            client_in.write(data)

    for _ in range(100):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        _quietly(server.do_handshake)
        pump()
    else:
        pytest.fail("handshake stuck")
    payload = os.urandom(2 * MIB)
    got = bytearray()
    for off in range(0, len(payload), 65536):
        assert client.write(payload[off : off + 65536]) == len(payload[off : off + 65536])
        pump()
        got += BufferPump.drain(server)
    for _ in range(100):
        pump()
        got += BufferPump.drain(server)
        if len(got) >= len(payload):
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    back = bytearray()
    server.write(b"pong" * 10000)
    for _ in range(100):
        pump()
        try:
            while chunk := client.read(65536):
                back += chunk
        except ssl.SSLWantReadError:
            pass
        if len(back) >= 40000:
            break
    assert back == b"pong" * 10000


def test_finding_7_refused_ciphertext_is_kept_by_asyncio(
    subject: Impl, client_config: TLSClientConfiguration, server_ctx: ssl.SSLContext
) -> None:
    """unitls.asyncio over the fake engine (and the real one) against an asyncio ssl server."""
    size = 4 * MIB

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, HOST, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        ctx = subject.client_context(client_config)
        async with server:
            reader, writer = await uasyncio.open_connection(
                HOST, port, context=ctx, server_hostname="localhost"
            )
            payload = os.urandom(size)

            async def send() -> None:
                for off in range(0, size, 65536):
                    writer.write(payload[off : off + 65536])
                    await writer.drain()

            sender = asyncio.ensure_future(send())
            got = await reader.readexactly(size)
            await sender
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            writer.close()
            await writer.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 60))


def _nodelay(fd: int) -> int:
    """TCP_NODELAY of the TCP socket behind ``fd`` (read through a duplicate descriptor)."""
    with socket.socket(fileno=os.dup(fd)) as raw:
        return raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_client_sockets_turn_nagle_off_until_the_first_write(
    engine: unitls.TLSImplementation[Any, Any],
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
) -> None:
    """Regression: with Nagle's algorithm on, a request written right after the handshake waited
    for the server's delayed ACK of the client's Finished (40 ms: the OpenSSL engine made 21
    connections/s in ``unitls bench`` instead of ~450, and the first round trip of every new
    rustls/NSS connection took 41 ms, as with the stdlib). With Nagle off for good, bulk
    streams of 16 KiB records lost 10-20% on loopback. So a client socket from ``connect()``
    has TCP_NODELAY until its first write, then not."""

    with StdlibServer(server_ctx, echo_handler, connections=2) as server:
        with engine.client_context(client_config).connect(server.address, timeout=20) as sock:
            assert _nodelay(sock.fileno()), "Nagle is off for the first write"
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
            assert not _nodelay(sock.fileno()), "Nagle is back on after the first write"
            sock.sendall(b"y")
            assert recv_exactly(sock, 1) == b"y"
        with engine.client_context(client_config).connect(server.address, timeout=20) as sock:
            assert _nodelay(sock.fileno())
            assert sock.send(b"z") == 1  # send() counts as the first write too
            assert recv_exactly(sock, 1) == b"z"
            assert not _nodelay(sock.fileno())


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_close_notify_is_not_held_by_nagle(
    engine: unitls.TLSImplementation[Any, Any],
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
    blocking: bool,
) -> None:
    """Regression: close() sent close_notify with Nagle's algorithm on, so the alert and the
    tail of the last record waited for the peer's delayed ACK (40 ms on Linux): each bulk
    transfer's graceful close took ~44 ms longer than the stdlib's (whose close() sends a FIN,
    which pushes what Nagle holds), and short transfers lost up to 40% of their throughput.
    Before waiting for the peer's close_notify, close() now sets TCP_NODELAY, which pushes
    anything held. (``close(force=True)`` and ``shutdown()`` send a FIN right after the alert,
    which pushes it: they leave Nagle alone, sparing short connections a packet.)"""

    with StdlibServer(server_ctx, echo_handler) as server:
        sock = engine.client_context(client_config).connect(server.address, timeout=20)
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        keep = os.dup(sock.fileno())  # the same TCP socket, open after close()
        try:
            assert not _nodelay(keep)  # Nagle is on after the first write
            if blocking:
                sock.close()
            else:
                # Non-blocking: the first close() sends close_notify and raises WantReadError
                # until the peer's arrives (the caller retries): Nagle is off from the start.
                sock.setblocking(False)
                try:
                    sock.close()
                except unitls.WantReadError:
                    pass
            assert _nodelay(keep), "close() waited for close_notify with Nagle's algorithm on"
        finally:
            os.close(keep)
            sock.close(force=True)


def test_forced_close_does_not_wait_for_the_peers_close_notify(
    engine: unitls.TLSImplementation[Any, Any],
    client_config: TLSClientConfiguration,
    server_ctx: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the OpenSSL engine's ``close(force=True)`` let OpenSSL wait for the peer's
    close_notify for up to one slice of its single mode (a round trip per forced close cost
    ~20% of the connections/s row). With the slice made 30 s, a peer that never answers shows
    it: the close must return while the peer still holds the connection open."""
    import unitls.openssl

    monkeypatch.setattr(unitls.openssl, "_SLICE", 30.0)
    release = threading.Event()

    def hold(conn: ssl.SSLSocket) -> None:
        conn.recv(1)
        release.wait(30)  # no close_notify, no FIN until the test is over

    with StdlibServer(server_ctx, hold) as server:
        sock = engine.client_context(client_config).connect(server.address, timeout=None)
        sock.sendall(b"x")
        closer = threading.Thread(target=sock.close, kwargs={"force": True}, daemon=True)
        closer.start()
        closer.join(10)
        finished = not closer.is_alive()
        release.set()
        closer.join(40)
        assert finished, "close(force=True) waited for the peer's close_notify"


# -- finding 8: the OpenSSL engine and injection ------------------------------------------------


def test_finding_8_openssl_engine_keeps_the_stdlib_classes_when_imported_after_injection() -> None:
    script = """
import ssl, unitls, unitls.compat
unitls.compat.inject_into_ssl("rustls")
assert ssl.SSLContext is not unitls.compat.ORIGINAL_SSLCONTEXT
import unitls.openssl as o
from unitls._certgen import CA
ca = CA.create()
cfg = unitls.TLSClientConfiguration(trust_store=ca.trust_store())
ctx = o.IMPLEMENTATION.client_context(cfg)
native = ctx.stdlib_context()
assert type(native) is unitls.compat.ORIGINAL_SSLCONTEXT, type(native)
buf = ctx.create_buffer("localhost")
obj = getattr(buf._obj, "_sslobj", buf._obj)
assert type(obj).__module__ == "_ssl", type(obj)
print("ok")
"""
    if "rustls" not in unitls.implementations():
        pytest.skip("needs the rustls engine to inject")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# -- finding 11: a failed handshake's alert reaches the client -----------------------------------

# A ClientHello whose body is cut short: every engine answers with a decode_error alert.
_BAD_HELLO = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"


def test_finding_11_the_alert_of_a_failed_handshake_is_not_destroyed(
    engine: Impl, server_config: TLSServerConfiguration
) -> None:
    """After a failed handshake the server half-closes and drains before closing: the client
    reads the alert and then a clean end of stream, not a reset (closing with the client's
    unread bytes used to send a reset that could destroy the alert)."""
    listener = engine.server_context(server_config).connect((HOST, 0))
    listener.settimeout(20)
    outcome: list[BaseException] = []

    def serve() -> None:
        try:
            listener.accept()[0].close()
        except unitls.TLSError as exc:
            outcome.append(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=20) as raw:
            raw.sendall(_BAD_HELLO + b"\x00" * 20000)  # bytes the server will never read
            t.join(20)
            received = bytearray()
            while chunk := raw.recv(65536):  # a reset raises ConnectionResetError here
                received += chunk
        assert received[:1] == b"\x15", f"no alert record: {bytes(received[:20])!r}"
        assert len(outcome) == 1 and isinstance(outcome[0], unitls.ProtocolError), outcome
    finally:
        listener.close()


# -- half-close by the peer --------------------------------------------------------------------------


def test_peer_half_close_leaves_our_side_open(
    subject: Impl,
    factory: SocketFactory,
    engine: Impl,
    ca: CA,
    server_cert: Issued,
) -> None:
    """TLS 1.3 half-close: after the peer's close_notify (read as the end of the stream) we can
    still send, and the peer reads it."""
    config = TLSServerConfiguration(
        certificate_chain=[server_cert.signing_chain()],
        lowest_supported_version=unitls.TLSVersion.TLSv1_3,
    )
    listener = engine.server_context(config).connect((HOST, 0))
    listener.settimeout(20)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"bye")
            conn.shutdown(socket.SHUT_WR)
            got.append(recv_exactly(conn, 5))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client_config = TLSClientConfiguration(trust_store=ca.trust_store())
    try:
        with closing(factory.connect(subject, client_config, listener.getsockname(), 20)) as sock:
            data = bytearray()
            while chunk := sock.recv(100):
                data += chunk
            assert data == b"bye"
            sock.sendall(b"hello")
            t.join(20)
    finally:
        listener.close()
    assert got == [b"hello"]
