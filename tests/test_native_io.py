"""The native socket path (``unitls._nativesock`` over ``rust/src/sockio.rs``) and, for the same
faults, the generic Python driver (``unitls.upgrade_socket``): both must behave alike.

Every socket under test is a client of a Rust engine (rustls, and NSS where it is installed)
made by a "socket factory" (``native``: the context's own ``upgrade``, ``driver``:
``unitls.upgrade_socket``) on a connected TCP socket; the
peer is the stdlib ``ssl`` module or a raw socket that injects the fault. The bridge's native
``_sslobj`` is tested at the end. No timing assertions: deadlines are checked by making an
operation impossible to finish in time, never by measuring it.
"""

from __future__ import annotations

import array
import ctypes
import hashlib
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import unitls
from unitls._certgen import CA, Issued
from unitls._nativesock import NativeSocket, native_socket

TIMEOUT = 20.0
Factory = Callable[[socket.socket], Any]


@pytest.fixture(scope="module")
def rustls() -> unitls.TLSImplementation[Any, Any]:
    return unitls.get_implementation("rustls")


@pytest.fixture(scope="module")
def stdlib_server_ctx(server_cert: Issued, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("native-io")
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(server_cert.chain_pem)
    key.write_bytes(server_cert.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.num_tickets = 0
    return ctx


@pytest.fixture(scope="module", params=["rustls", "nss"])
def rust_engine(request: pytest.FixtureRequest) -> unitls.TLSImplementation[Any, Any]:
    """The engines whose connections run on the extension's native socket path."""
    if request.param not in unitls.implementations():
        pytest.skip(f"the {request.param} engine is not usable here")
    return unitls.get_implementation(request.param)


@pytest.fixture(params=["native", "driver"])
def factory(
    request: pytest.FixtureRequest,
    rust_engine: unitls.TLSImplementation[Any, Any],
    client_config: unitls.TLSClientConfiguration,
) -> Factory:
    """A function making an un-handshaken client TLSSocket over a connected socket."""
    context = rust_engine.client_context(client_config)

    if request.param == "native":
        # What context.upgrade() builds, before its handshake (tests set timeouts first).
        def make_native(sock: socket.socket) -> Any:
            return native_socket(context, sock, context.create_buffer("localhost"))

        return make_native

    def make_driver(sock: socket.socket) -> Any:
        return unitls.upgrade_socket(context, sock, "localhost", do_handshake=False)

    return make_driver


@contextmanager
def peer(handler: Callable[[socket.socket], None]) -> Iterator[tuple[socket.socket, list[Any]]]:
    """A raw TCP peer on 127.0.0.1 running ``handler`` on its end in a thread; yields our
    connected socket (timeout TIMEOUT) and the list of the thread's errors."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    errors: list[Any] = []

    def run() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            with conn:
                handler(conn)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    sock = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
    try:
        yield sock, errors
    finally:
        sock.close()
        thread.join(TIMEOUT)
        listener.close()
        assert not thread.is_alive(), "peer thread did not finish"


def stdlib_peer(ctx: ssl.SSLContext, body: Callable[[ssl.SSLSocket], None]) -> Any:
    def handler(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            body(tls)

    return peer(handler)


def recv_all(tls: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = tls.recv(n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the native socket is what the Rust engines' contexts hand out --------------------------------


def test_rust_engine_sockets_are_native(
    rust_engine: unitls.TLSImplementation[Any, Any],
    client_config: unitls.TLSClientConfiguration,
    server_config: unitls.TLSServerConfiguration,
) -> None:
    listener = rust_engine.server_context(server_config).connect(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    accepted: list[Any] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.sendall(conn.recv(10))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = rust_engine.client_context(client_config)
    with client_context.connect(listener.getsockname(), timeout=TIMEOUT) as c:
        assert isinstance(c, NativeSocket)
        c.sendall(b"ping")
        assert c.recv(10) == b"ping"
        assert c.negotiated_tls_version == unitls.TLSVersion.TLSv1_3
    thread.join(TIMEOUT)
    listener.close()
    assert isinstance(accepted[0], NativeSocket)


# -- descriptors ---------------------------------------------------------------------------------


def test_fd_is_owned_by_the_python_socket(factory: Factory, stdlib_server_ctx: Any) -> None:
    before = open_fds()

    def body(tls: ssl.SSLSocket) -> None:
        tls.sendall(tls.recv(5))

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        tls.sendall(b"hello")
        assert recv_all(tls, 5) == b"hello"
        fd = sock.fileno()
        tls.close()
        assert sock.fileno() == -1  # close() closed the owner, once
        tls.close()  # idempotent: never closes a descriptor twice
        with pytest.raises(unitls.TLSError):
            tls.recv(1)
        # The number may be reused by someone else now; the socket must not touch it.
        other = socket.socket()
        try:
            if other.fileno() == fd:
                with pytest.raises(unitls.TLSError):
                    tls.sendall(b"x")
        finally:
            other.close()
    assert not errors
    assert open_fds() <= before


def test_native_core_never_closes_the_descriptor(
    rustls: unitls.TLSImplementation[Any, Any],
    client_config: unitls.TLSClientConfiguration,
) -> None:
    a, b = socket.socketpair()
    try:
        context = rustls.client_context(client_config)
        tls = context.create_buffer("localhost")
        from unitls._native import SocketCore

        core = SocketCore(tls.native_connection(), a)
        core.settimeout(0)
        with pytest.raises(unitls.WantReadError):
            core.do_handshake()  # the ClientHello went out; the answer is not there
        assert b.recv(5)[:1] == b"\x16"  # a TLS handshake record reached the peer
        del core
        assert a.fileno() != -1
        a.close()
    finally:
        a.close()
        b.close()


# -- recv_into ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda n: bytearray(n),
        lambda n: memoryview(bytearray(n + 7))[7:],
        lambda n: array.array("I", bytes(n)),
        lambda n: (ctypes.c_char * n)(),
        lambda n: memoryview(bytearray(n)).cast("B", (n // 4, 4)),
    ],
    ids=["bytearray", "memoryview-slice", "array-I", "ctypes", "2d-memoryview"],
)
def test_recv_into_arbitrary_buffers(
    factory: Factory, stdlib_server_ctx: Any, make: Callable[[int], Any]
) -> None:
    payload = os.urandom(64 * 1024)

    def body(tls: ssl.SSLSocket) -> None:
        tls.sendall(payload)
        tls.recv(1)

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        got = bytearray()
        target = make(1024)
        view = memoryview(target).cast("B")  # any C-contiguous buffer, as for socket.recv_into
        while len(got) < len(payload):
            n = tls.recv_into(target, 1000)
            assert 0 < n <= 1000
            got += bytes(view[:n])
        assert bytes(got) == payload
        tls.sendall(b"x")
        tls.close(force=True)
    assert not errors


def test_recv_into_rejects_read_only_and_negative(factory: Factory, stdlib_server_ctx: Any) -> None:
    def body(tls: ssl.SSLSocket) -> None:
        tls.recv(1)

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        with pytest.raises((TypeError, BufferError)):
            tls.recv_into(b"read-only")
        with pytest.raises(ValueError):
            tls.recv_into(bytearray(10), -1)
        assert tls.recv_into(bytearray(0)) == 0
        tls.sendall(b"x")
        tls.close(force=True)
    assert not errors


# -- non-blocking select loops -------------------------------------------------------------------


def test_non_blocking_select_loop_sha256(factory: Factory, stdlib_server_ctx: Any) -> None:
    """Both directions at once, 4 MiB each, non-blocking with select(): nothing lost or
    reordered (sha256), WantReadError/WantWriteError the only signals."""
    size = 4 << 20
    theirs = os.urandom(size)
    digest: list[str] = []

    def body(tls: ssl.SSLSocket) -> None:
        tls.setblocking(False)
        h = hashlib.sha256()
        got = sent = 0
        view = memoryview(theirs)
        while got < size or sent < size:
            try:
                if sent < size:
                    sent += tls.send(view[sent : sent + 65536])
            except ssl.SSLWantWriteError:
                pass
            except ssl.SSLWantReadError:
                pass
            try:
                while got < size:
                    data = tls.recv(65536)
                    if not data:
                        raise ConnectionError("EOF")
                    h.update(data)
                    got += len(data)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            select.select([tls], [tls] if sent < size else [], [], 1.0)
        digest.append(h.hexdigest())
        tls.setblocking(True)
        tls.settimeout(TIMEOUT)
        tls.recv(1)

    ours = os.urandom(size)
    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(0)
        while True:
            try:
                tls.do_handshake()
                break
            except unitls.WantReadError:
                select.select([tls], [], [], 1.0)
            except unitls.WantWriteError:
                select.select([], [tls], [], 1.0)
        h = hashlib.sha256()
        got = sent = 0
        view = memoryview(ours)
        buf = bytearray(65536)
        rounds = 0
        while got < size or sent < size:
            rounds += 1
            assert rounds < 1_000_000
            if sent < size:
                try:
                    sent += tls.send(view[sent : sent + 100_000])
                except unitls.WantWriteError:
                    pass
                except unitls.WantReadError:
                    pass
            try:
                while got < size:
                    n = tls.recv_into(buf)
                    assert n, "unexpected EOF"
                    h.update(buf[:n])
                    got += n
            except (unitls.WantReadError, unitls.WantWriteError):
                pass
            select.select([tls], [tls] if sent < size else [], [], 1.0)
        # Everything we sent has been taken; flush what the socket has not taken yet.
        tls.settimeout(TIMEOUT)
        tls.sendall(b"")
        assert h.hexdigest() == hashlib.sha256(theirs).hexdigest()
        tls.sendall(b"x")
        tls.close(force=True)
    assert not errors, errors
    assert digest == [hashlib.sha256(ours).hexdigest()]


# -- two threads on one socket -----------------------------------------------------------------


def test_reader_and_writer_threads_share_a_socket(factory: Factory, stdlib_server_ctx: Any) -> None:
    size = 8 << 20
    data = os.urandom(size)

    def body(tls: ssl.SSLSocket) -> None:
        # Echo everything, then close_notify.
        while True:
            chunk = tls.recv(1 << 16)
            if not chunk:
                break
            tls.sendall(chunk)
        tls.unwrap()

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        echoed = hashlib.sha256()
        count = [0]
        failures: list[BaseException] = []

        def reader() -> None:
            try:
                buf = bytearray(1 << 16)
                while True:
                    n = tls.recv_into(buf)
                    if not n:
                        return
                    echoed.update(buf[:n])
                    count[0] += n
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        view = memoryview(data)
        for i in range(0, size, 100_000):
            tls.sendall(view[i : i + 100_000])  # reads go on while this thread sends
        tls.shutdown(socket.SHUT_WR)  # close_notify; reads stay TLS-protected
        thread.join(TIMEOUT * 2)
        assert not thread.is_alive()
        assert not failures, failures
        assert count[0] == size
        assert echoed.hexdigest() == hashlib.sha256(data).hexdigest()
        tls.close(force=True)
    assert not errors, errors


# -- deadlines -----------------------------------------------------------------------------------


def test_recv_deadline_with_a_dripping_peer(factory: Factory, stdlib_server_ctx: Any) -> None:
    """A peer sending one byte at a time cannot stretch a recv() past its timeout."""

    def handler(conn: socket.socket) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = stdlib_server_ctx.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    conn.sendall(outgoing.read())
                incoming.write(conn.recv(65536))
        if outgoing.pending:
            conn.sendall(outgoing.read())
        obj.write(b"z" * 200)
        record = outgoing.read()
        try:
            for i in range(len(record)):  # ~2.5 s in all, one byte every 10 ms
                conn.sendall(record[i : i + 1])
                time.sleep(0.01)
        except OSError:
            pass  # the client gave up (as it should) and closed

    with peer(handler) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        tls.settimeout(0.5)
        with pytest.raises(unitls.TLSTimeoutError):
            tls.recv(1024)
        tls.close(force=True)
    assert not errors


def test_handshake_deadline_with_a_silent_peer(factory: Factory) -> None:
    def handler(conn: socket.socket) -> None:
        conn.recv(65536)  # the ClientHello, never answered
        conn.recv(1)

    with peer(handler) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(0.3)
        with pytest.raises(unitls.TLSTimeoutError):
            tls.do_handshake()
        tls.close(force=True)
    assert not errors


# -- EOF, resets, half-close ----------------------------------------------------------------------


def test_close_notify_is_a_clean_eof(factory: Factory, stdlib_server_ctx: Any) -> None:
    def body(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"bye")
        tls.unwrap()

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        assert recv_all(tls, 3) == b"bye"
        assert tls.recv(10) == b""
        assert tls.recv(10) == b""
        tls.close()
    assert not errors


def test_eof_without_close_notify_is_ragged(factory: Factory, stdlib_server_ctx: Any) -> None:
    def handler(conn: socket.socket) -> None:
        tls = stdlib_server_ctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"bye")
        socket.socket(fileno=tls.detach()).close()  # the TCP connection ends, no close_notify

    with peer(handler) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        assert recv_all(tls, 3) == b"bye"
        with pytest.raises(unitls.RaggedEOF):
            tls.recv(10)
        tls.close(force=True)
    assert not errors


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_reset_mid_handshake(factory: Factory) -> None:
    def handler(conn: socket.socket) -> None:
        conn.recv(65536)
        _reset(conn)

    with peer(handler) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        with pytest.raises(unitls.HandshakeClosedError):
            tls.do_handshake()
        tls.close(force=True)
    assert not errors


def test_reset_mid_transfer(factory: Factory, stdlib_server_ctx: Any) -> None:
    def handler(conn: socket.socket) -> None:
        tls = stdlib_server_ctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"a" * 1000)
        tls.recv(1)  # our "go": the data above was read
        _reset(socket.socket(fileno=tls.detach()))

    with peer(handler) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        assert recv_all(tls, 1000) == b"a" * 1000
        tls.sendall(b"g")
        with pytest.raises((unitls.RaggedEOF, unitls.TLSConnectionError)):
            tls.recv(10)
        tls.close(force=True)
    assert not errors


def test_half_close_keeps_reads_protected(factory: Factory, stdlib_server_ctx: Any) -> None:
    def body(tls: ssl.SSLSocket) -> None:
        got = b""
        while True:
            try:
                data = tls.recv(100)
            except ssl.SSLZeroReturnError:
                break
            if not data:
                break
            got += data
        tls.sendall(b"after your close_notify: " + got)
        tls.unwrap()

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = factory(sock)
        tls.settimeout(TIMEOUT)
        tls.do_handshake()
        tls.sendall(b"question")
        tls.shutdown(socket.SHUT_WR)
        with pytest.raises(unitls.TLSError):
            tls.sendall(b"more")  # nothing can be written after close_notify
        assert recv_all(tls, 33) == b"after your close_notify: question"
        assert tls.recv(10) == b""
        tls.close()
    assert not errors


# -- the ssl bridge on rustls --------------------------------------------------------------------


@pytest.fixture
def bridge_client(ca: CA) -> ssl.SSLContext:
    from unitls.compat import SSLContext

    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation="rustls")
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    return ctx


def test_bridge_sslobj_is_native(bridge_client: ssl.SSLContext, stdlib_server_ctx: Any) -> None:
    from unitls.compat._nativeio import NativeSocketTLS

    def body(tls: ssl.SSLSocket) -> None:
        tls.sendall(tls.recv(5))

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = bridge_client.wrap_socket(sock, server_hostname="localhost")
        assert isinstance(tls._sslobj, NativeSocketTLS)  # type: ignore[attr-defined]
        tls.sendall(b"hello")
        buf = bytearray(10)
        assert tls.recv_into(buf) == 5 and buf[:5] == b"hello"
        assert tls.version() == "TLSv1.3"
        assert tls.cipher() is not None
        assert tls.getpeercert()["subjectAltName"]
        tls.close()
    assert not errors


def _bridge_server_ctx(engine: str, issued: Issued, folder: Any, name: str) -> ssl.SSLContext:
    from unitls.compat import SSLContext

    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    cert.write_bytes(issued.chain_pem)
    key.write_bytes(issued.key_pem)
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    ctx.load_cert_chain(cert, key)
    return ctx


@pytest.mark.parametrize("start", ["handshake", "nonblocking", "read"])
def test_bridge_server_sslobj_goes_native_after_the_client_hello(
    rust_engine: Any, ca: CA, tmp_path: Any, start: str
) -> None:
    """A bridge server reads the ClientHello in Python (sni_callback may switch the context),
    then its _sslobj is the extension's: however the handshake is started."""
    from unitls.compat._nativeio import NativeSocketTLS

    first = _bridge_server_ctx(rust_engine.name, ca.issue("localhost"), tmp_path, "first")
    other = _bridge_server_ctx(rust_engine.name, ca.issue("other.example"), tmp_path, "other")
    names: list[str | None] = []

    def choose(sslsock: Any, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)
        if name == "other.example":
            sslsock.context = other

    first.sni_callback = choose
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client.minimum_version = ssl.TLSVersion.TLSv1_2

    def handler(conn: socket.socket) -> None:
        tls = client.wrap_socket(conn, server_hostname="other.example")
        tls.sendall(b"ping")
        assert recv_all(tls, 4) == b"PING"
        tls.close()

    with peer(handler) as (sock, errors):
        tls = first.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        if start == "handshake":
            tls.do_handshake()
        elif start == "nonblocking":
            tls.setblocking(False)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    select.select([tls], [], [], TIMEOUT)
            tls.setblocking(True)
            tls.settimeout(TIMEOUT)
        data = recv_all(tls, 4)  # start == "read": the handshake runs inside read()
        assert isinstance(tls._sslobj, NativeSocketTLS)  # type: ignore[attr-defined]
        tls.sendall(data.upper())
        assert names == ["other.example"]
        assert tls.context is other
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.shared_ciphers()  # learnt from the ClientHello Python read
        assert tls.recv(1) == b""
        tls.close()
    assert not errors
    # The client verified "other.example": the certificate of the context sni_callback chose.


def _reader_and_writer_exchange(server: ssl.SSLContext, ca: CA) -> Any:
    """A reader and a writer thread start the handshake of a bridge server socket together;
    returns the socket's ``_sslobj`` at the end."""
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())

    def handler(conn: socket.socket) -> None:
        tls = client.wrap_socket(conn, server_hostname="localhost")
        tls.sendall(b"ping")
        assert recv_all(tls, 5) == b"hello"
        tls.close()

    with peer(handler) as (sock, errors):
        tls = server.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(recv_all(tls, 4)))
        reader.start()
        tls.sendall(b"hello")
        reader.join(TIMEOUT)
        assert got == [b"ping"]
        sslobj = tls._sslobj  # type: ignore[attr-defined]
        tls.close()
    assert not errors
    return sslobj


def test_bridge_server_reader_and_writer_start_the_handshake_together(
    rust_engine: Any, ca: CA, tmp_path: Any
) -> None:
    """A reader and a writer thread on a bridge server socket not yet handshaken: one reads the
    ClientHello and switches to the native _sslobj, the other (waiting in the Python driver)
    follows it; no byte is lost either way."""
    from unitls.compat._nativeio import NativeSocketTLS

    server = _bridge_server_ctx(rust_engine.name, ca.issue("localhost"), tmp_path, "srv")
    for _ in range(5):
        assert isinstance(_reader_and_writer_exchange(server, ca), NativeSocketTLS)


def test_bridge_server_threads_that_switch_together_share_one_native_sslobj(
    rust_engine: Any, ca: CA, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread that read the ClientHello is slow to build the native _sslobj while the
    other thread, waiting in the Python driver, gets the switch too: both must end up on one
    object (two would be two native cores on one socket, each taking the other's records)."""
    from unitls.compat import _nativeio

    made: list[object] = []
    real_init = _nativeio.NativeSocketTLS.__init__

    def slow_init(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        time.sleep(0.2)  # the follower arrives meanwhile
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(_nativeio.NativeSocketTLS, "__init__", slow_init)
    server = _bridge_server_ctx(rust_engine.name, ca.issue("localhost"), tmp_path, "srv")
    assert made == [_reader_and_writer_exchange(server, ca)]


def test_bridge_threads_that_start_together_share_one_driver(
    rust_engine: Any, ca: CA, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first read and the first write of a bridge socket arrive together and both find no
    driver yet: one driver (one engine buffer) is made for both, or each thread would read
    records off the socket into its own and the handshake would fail or hang."""
    from unitls.compat import _sslobj

    made: list[object] = []

    class SlowHelloBuffer(_sslobj.HelloBuffer):
        def __init__(self, tls: Any) -> None:
            made.append(self)
            time.sleep(0.2)  # the other thread arrives meanwhile
            super().__init__(tls)

    monkeypatch.setattr(_sslobj, "HelloBuffer", SlowHelloBuffer)
    server = _bridge_server_ctx(rust_engine.name, ca.issue("localhost"), tmp_path, "srv")
    _reader_and_writer_exchange(server, ca)
    assert len(made) == 1


def test_bridge_select_sees_close_notify_behind_data(
    bridge_client: ssl.SSLContext, stdlib_server_ctx: Any
) -> None:
    """Data and close_notify sent back to back: a caller that select()s before each recv (the
    websockets sync client does) gets the data, then is woken again for the EOF."""

    def body(tls: ssl.SSLSocket) -> None:
        tls.recv(1)
        tls.sendall(b"last words")
        try:
            tls.unwrap()
        except OSError:
            pass

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = bridge_client.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"x")
        time.sleep(0.2)  # both records are in our socket before we read
        got = b""
        while True:
            readable, _, _ = select.select([tls], [], [], 5.0)
            assert readable, "select() never fired: data hidden in the engine"
            data = tls.recv(65536)
            if not data:
                break
            got += data
        assert got == b"last words"
        tls.close()
    assert not errors


def test_bridge_unwrap_leaves_what_follows_close_notify(
    bridge_client: ssl.SSLContext, stdlib_server_ctx: Any
) -> None:
    def body(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"tls part")
        raw = tls.unwrap()
        raw.sendall(b"cleartext after TLS")
        raw.recv(1)

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = bridge_client.wrap_socket(sock, server_hostname="localhost")
        assert recv_all(tls, 8) == b"tls part"
        raw = tls.unwrap()
        assert recv_all(raw, 19) == b"cleartext after TLS"
        raw.sendall(b"k")
        raw.close()
    assert not errors


def test_bridge_errors_are_ssl_errors(bridge_client: ssl.SSLContext) -> None:
    def handler(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with peer(handler) as (sock, errors):
        with pytest.raises(ssl.SSLError):
            bridge_client.wrap_socket(sock, server_hostname="localhost")
    assert not errors


def test_bridge_non_blocking_write_retry(
    bridge_client: ssl.SSLContext, stdlib_server_ctx: Any
) -> None:
    """SSLWantWriteError, then the retry with the same data returns its full length (OpenSSL's
    rule); the peer gets every byte exactly once."""
    size = 16 << 20
    data = os.urandom(size)
    received = hashlib.sha256()
    go = threading.Event()

    def body(tls: ssl.SSLSocket) -> None:
        go.wait(TIMEOUT)
        got = 0
        while got < size:
            chunk = tls.recv(1 << 16)
            if not chunk:
                break
            received.update(chunk)
            got += len(chunk)
        tls.sendall(b"k")

    with stdlib_peer(stdlib_server_ctx, body) as (sock, errors):
        tls = bridge_client.wrap_socket(sock, server_hostname="localhost")
        tls.setblocking(False)
        view = memoryview(data)
        sent = 0
        blocked = 0
        while sent < size:
            chunk = view[sent : sent + (1 << 20)]
            try:
                n = tls.send(chunk)
            except ssl.SSLWantWriteError:
                blocked += 1
                go.set()
                select.select([], [tls], [], 1.0)
                continue
            assert n == len(chunk)
            sent += n
        go.set()
        tls.settimeout(TIMEOUT)
        assert tls.recv(1) == b"k"
        tls.close()
    assert not errors
    assert blocked, "the socket never filled up: the test did not test the retry"
    assert received.hexdigest() == hashlib.sha256(data).hexdigest()


def test_bridge_reset_after_the_handshake_is_an_eof(
    bridge_client: ssl.SSLContext, stdlib_server_ctx: Any
) -> None:
    """As with OpenSSL: a reset during the handshake is ConnectionResetError (see
    test_compat_stdlib), after it an EOF in violation of protocol, reading or writing, up to
    Python 3.12; from 3.13 ``_ssl`` reports the socket's error (ConnectionResetError or
    BrokenPipeError) there too."""
    gone: type[OSError] = ConnectionError if sys.version_info >= (3, 13) else ssl.SSLEOFError

    def handler(conn: socket.socket) -> None:
        tls = stdlib_server_ctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"hello")
        tls.recv(1)
        _reset(socket.socket(fileno=tls.detach()))

    with peer(handler) as (sock, errors):
        tls = bridge_client.wrap_socket(
            sock, server_hostname="localhost", suppress_ragged_eofs=False
        )
        assert recv_all(tls, 5) == b"hello"
        tls.sendall(b"!")
        with pytest.raises(gone):
            tls.recv(10)
        with pytest.raises(gone):
            for _ in range(1000):  # the first writes may still reach the kernel
                tls.sendall(b"x" * 65536)
        tls.close()
    assert not errors


def test_openssl_buffer_reports_its_group(
    client_config: unitls.TLSClientConfiguration, server_config: unitls.TLSServerConfiguration
) -> None:
    """The OpenSSL buffer runs the C object itself (no ssl.SSLObject): information that needs
    the C object (the key exchange group) must still be found."""
    openssl = unitls.get_implementation("openssl")
    client = openssl.client_context(client_config).create_buffer("localhost")
    server = openssl.server_context(server_config).create_buffer()
    for _ in range(10):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except unitls.WantReadError:
                pass
            n = a.outgoing_bytes_buffered()
            if n:
                b.process_incoming(a.process_outgoing(n))
    assert client.negotiated_tls_version is not None
    assert client.negotiated_group == server.negotiated_group
    assert client.negotiated_group is not None


def test_close_waits_for_other_threads_calls_before_the_descriptor_goes(
    factory: Factory, stdlib_server_ctx: Any
) -> None:
    """close() from another thread while a recv() is blocked: the recv ends with TLSError, and
    a socket that gets the closed descriptor's number right after close() returns keeps its
    data (a call still inside with the old number would read it)."""
    release = threading.Event()
    with stdlib_peer(stdlib_server_ctx, lambda tls: release.wait(TIMEOUT)) as (sock, errors):
        tls = factory(sock)
        tls.do_handshake()
        tls.settimeout(None)
        number = tls.fileno()
        outcome: list[BaseException | bytes] = []

        def reader() -> None:
            try:
                outcome.append(tls.recv(100))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        time.sleep(0.2)
        tls.close(force=True)
        a, b = socket.socketpair()  # the lowest free numbers: the closed one among them
        try:
            reused = a if a.fileno() == number else b
            other = b if reused is a else a
            other.sendall(b"not yours")
            thread.join(5)
            assert not thread.is_alive(), "recv() still blocked after close()"
            assert len(outcome) == 1 and isinstance(outcome[0], unitls.TLSError), outcome
            reused.settimeout(5)
            assert reused.recv(100) == b"not yours"
        finally:
            a.close()
            b.close()
            release.set()
    assert not errors


def test_a_signal_handler_can_close_the_socket_its_thread_is_reading(
    factory: Factory, stdlib_server_ctx: Any
) -> None:
    """A handler (here SIGALRM's) that closes the socket the interrupted recv() is blocked on:
    the recv ends with "the TLS socket is closed" (not an error about the descriptor, and
    close() does not wait for the very call it interrupted)."""
    import signal

    release = threading.Event()
    with stdlib_peer(stdlib_server_ctx, lambda tls: release.wait(TIMEOUT)) as (sock, errors):
        tls = factory(sock)
        tls.do_handshake()
        tls.settimeout(TIMEOUT)
        previous = signal.signal(signal.SIGALRM, lambda signum, frame: tls.close(force=True))
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(unitls.TLSError, match="closed"):
                tls.recv(100)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            release.set()
    assert not errors


# -- spinning before sleeping (rust/src/sockio.rs, "Waiting spins briefly...") -----------------


def _python_with_spin(budget_us: int | str, code: str, *args: str) -> str:
    """Run ``code`` in a new interpreter with ``UNITLS_SPIN_US=budget_us`` (read once per
    process); its stdout, after checking that it exited cleanly."""
    env = dict(os.environ, UNITLS_SPIN_US=str(budget_us))
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_spin_wait_backs_off_after_spins_that_find_nothing() -> None:
    """A spin that finds nothing makes the next 1, 2, 4, ... waits sleep at once; one that finds
    data resets that. ``readable`` never consumes what it finds."""
    from unitls._native import SpinWait

    a, b = socket.socketpair()
    with a, b:
        spin = SpinWait()
        fd = a.fileno()
        assert spin.skipping == 0
        assert not spin.readable(fd)  # nothing comes: the whole budget is spun, in vain
        assert spin.skipping == 1
        b.sendall(b"x")
        assert not spin.readable(fd)  # backing off: no look at the socket at all
        assert spin.skipping == 0
        assert spin.readable(fd)  # there at once: no spin, so nothing learnt
        assert spin.readable(fd)  # still there: nothing was consumed
        assert a.recv(10) == b"x"
        assert not spin.readable(fd)  # in vain again: the backoff doubles
        assert spin.skipping == 2
        for _ in range(2):
            assert not spin.readable(fd)
        assert not spin.readable(fd)
        assert spin.skipping == 4
        for _ in range(4):
            assert not spin.readable(fd)
        assert spin.readable(-1) is False  # a closed socket's fileno()


def test_spinning_can_be_turned_off() -> None:
    """``UNITLS_SPIN_US=0``: waits sleep at once (``readable`` says False without looking, even
    with data there); with a budget, the same call finds the data."""
    code = (
        "import socket\n"
        "from unitls._native import SpinWait\n"
        "a, b = socket.socketpair()\n"
        "b.sendall(b'x')\n"
        "spin = SpinWait()\n"
        "print(spin.readable(a.fileno()), spin.skipping)\n"
    )
    assert _python_with_spin(0, code).split() == ["False", "0"]
    assert _python_with_spin(30, code).split() == ["True", "0"]


def test_spin_wait_scale_multiplies_the_budget() -> None:
    """``SpinWait(scale)`` spins ``scale`` times the budget (the OpenSSL engine's is 3): with a
    5 ms budget and nothing arriving, a spin lasts at least 5 ms, and at least 15 ms with
    ``scale=3`` (a spin never ends early in vain; only the lower bounds are checked).
    Out-of-range scales are refused."""
    code = (
        "import socket, time\n"
        "from unitls._native import SpinWait\n"
        "a, b = socket.socketpair()\n"
        "for scale in (1, 3):\n"
        "    start = time.monotonic()\n"
        "    assert not SpinWait(scale).readable(a.fileno())\n"
        "    print(time.monotonic() - start)\n"
    )
    one, three = map(float, _python_with_spin(5_000, code).split())
    assert one >= 0.005 and three >= 0.015, (one, three)
    from unitls._native import SpinWait

    for scale in (0, 17):
        with pytest.raises(ValueError, match="scale must be from 1 to 16"):
            SpinWait(scale)


@pytest.mark.parametrize("value", ["abc", "-1", "10001", "1e3"])
def test_a_spin_setting_that_cannot_be_used_is_reported(value: str) -> None:
    """Not silently ignored: importing the extension warns and says what applies instead."""
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import unitls._native\n"
        "print([str(w.message) for w in caught if w.category is RuntimeWarning])\n"
    )
    out = _python_with_spin(value, code)
    assert f'UNITLS_SPIN_US="{value}" is not a whole number of microseconds' in out
    assert "uses the default, 30 µs" in out


def test_data_that_arrives_while_it_spins_ends_the_spin() -> None:
    """With a 10 ms budget (the most ``UNITLS_SPIN_US`` allows), data sent by another thread
    while the spin runs ends it with True; so does the peer's EOF."""
    code = (
        "import socket, threading, time\n"
        "from unitls._native import SpinWait\n"
        "a, b = socket.socketpair()\n"
        "spin = SpinWait()\n"
        "assert not spin.readable(a.fileno()) and spin.skipping == 1\n"
        "spin.readable(a.fileno())\n"
        "caught = 0\n"
        "for _ in range(20):\n"
        "    t = threading.Thread(target=lambda: (time.sleep(0.001), b.sendall(b'y')))\n"
        "    t.start()\n"
        "    caught += spin.readable(a.fileno())\n"
        "    t.join()\n"
        "    assert a.recv(10) == b'y'\n"
        "    while spin.skipping:\n"
        "        spin.readable(a.fileno())\n"
        "b.close()\n"
        "a.setblocking(False)\n"
        "print(caught, spin.readable(a.fileno()), spin.skipping)\n"
    )
    out = _python_with_spin(10_000, code)
    caught, eof_readable, skipping = out.split()
    # A sender that has not run within 10 ms (a loaded machine) makes a spin miss; most catch.
    assert int(caught) >= 10, out
    assert (eof_readable, skipping) == ("True", "0")  # the peer's EOF is readable too


def test_a_signal_that_arrives_while_the_main_thread_spins_is_handled() -> None:
    """A signal delivered during a spin interrupts no system call: the main thread must still
    run its handler (here: raise) instead of sleeping until data comes. A 10 ms spin budget and
    a signal 2 ms into a blocking recv() on a connection whose peer never sends make the signal
    land inside the spin; the subprocess hangs (and times out) without the fix. The signalling
    thread is started before and released just before the recv(): a timer started there could
    fire while the main thread still waited for the timer's thread to start (CI, 3.13)."""
    code = (
        "import signal, socket, ssl, sys, threading, time\n"
        "import unitls\n"
        "from unitls._certgen import CA\n"
        "ca = CA.create('spin'); leaf = ca.issue('localhost', '127.0.0.1')\n"
        "import tempfile, os\n"
        "d = tempfile.mkdtemp(); c = os.path.join(d, 'c.pem'); k = os.path.join(d, 'k.pem')\n"
        "open(c, 'wb').write(leaf.chain_pem); open(k, 'wb').write(leaf.key_pem)\n"
        "sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(c, k)\n"
        "lst = socket.create_server(('127.0.0.1', 0)); port = lst.getsockname()[1]\n"
        "held = []\n"
        "def serve():\n"
        "    raw, _ = lst.accept(); held.append(sctx.wrap_socket(raw, server_side=True))\n"
        "threading.Thread(target=serve, daemon=True).start()\n"
        "impl = unitls.get_implementation(sys.argv[1])\n"
        "cfg = unitls.TLSClientConfiguration(trust_store=ca.trust_store())\n"
        "sock = impl.client_context(cfg).connect(('127.0.0.1', port))\n"
        "class Interrupted(Exception): pass\n"
        "def handler(signum, frame): raise Interrupted\n"
        "signal.signal(signal.SIGUSR1, handler)\n"
        "main = threading.get_ident(); go = threading.Event()\n"
        "def kill():\n"
        "    go.wait(); time.sleep(0.002); signal.pthread_kill(main, signal.SIGUSR1)\n"
        "threading.Thread(target=kill, daemon=True).start()\n"
        "try:\n"
        "    go.set()\n"
        "    sock.recv(100)\n"
        "except Interrupted:\n"
        "    print('interrupted')\n"
    )
    # OpenSSL's reads spin too (``SpinWait``), then sleep in 50 ms slices that return to Python.
    for engine in ("rustls", "nss", "openssl"):
        if engine in unitls.implementations():
            assert _python_with_spin(10_000, code, engine).split() == ["interrupted"], engine
