"""The ssl.SSLContext bridge itself: wrap_socket/wrap_bio, settings, errors, injection."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from compat_servers import (
    TIMEOUT,
    CertFiles,
    bridge_client,
    bridge_server,
    cert_files,
    plain_client,
    plain_server,
)

import unitls
import unitls.compat
from unitls._certgen import CA
from unitls.compat import SSLContext, UnsupportedSettingError
from unitls.insecure import SecurityWarning

__all__ = ["bridge_client", "bridge_server", "cert_files", "plain_client", "plain_server"]

Engine = unitls.TLSImplementation[Any, Any]


class EchoServer:
    """Accepts TLS connections with ``ctx`` in a thread and echoes upper-cased data."""

    def __init__(self, ctx: ssl.SSLContext, action: Callable[[ssl.SSLSocket], None] | None = None):
        self.ctx = ctx
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.action = action or self._echo
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _echo(conn: ssl.SSLSocket) -> None:
        while data := conn.recv(65536):
            conn.sendall(data.upper())

    def _run(self) -> None:
        try:
            raw, _ = self.listener.accept()
        except OSError as exc:
            self.errors.append(exc)
            return
        raw.settimeout(TIMEOUT)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                self.action(conn)
        except (OSError, ValueError) as exc:
            self.errors.append(exc)
        finally:
            raw.close()

    def close(self) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()


@pytest.fixture
def echo(plain_server: ssl.SSLContext) -> Iterator[EchoServer]:
    server = EchoServer(plain_server)
    yield server
    server.close()


def connect(ctx: ssl.SSLContext, port: int, hostname: str | None = "localhost") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname=hostname)


def test_is_a_real_sslcontext(engine: Engine) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.implementation is engine
    assert ctx.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert (
        SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine.name).implementation.name
        == engine.name
    )


def test_client_socket(bridge_client: SSLContext, echo: EchoServer, server_cert: Any) -> None:
    with connect(bridge_client, echo.port) as s:
        assert type(s) is ssl.SSLSocket
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        name, version, bits = s.cipher()
        assert version == s.version() and bits >= 128 and name
        cert = s.getpeercert()
        assert ("DNS", "localhost") in cert["subjectAltName"]
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
        assert cert["subject"] == ((("commonName", "localhost"),),)
        assert s.getpeercert(binary_form=True) == server_cert.cert_der
        s.sendall(b"hello")
        assert s.recv(100) == b"HELLO"
        with s.makefile("rwb") as f:
            f.write(b"line\n")
            f.flush()
            assert f.readline() == b"LINE\n"
    assert not echo.errors


def test_big_transfer_and_pending(bridge_client: SSLContext, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, many records
    with connect(bridge_client, echo.port) as s:
        s.sendall(payload)
        got = bytearray()
        saw_pending = False
        while len(got) < len(payload):
            chunk = s.recv(1000)
            assert chunk
            got += chunk
            pending = s.pending()
            if pending:
                # Decrypted bytes waiting: recv returns exactly them, without the network.
                saw_pending = True
                s.setblocking(False)
                try:
                    rest = s.recv(pending)
                finally:
                    s.setblocking(True)
                assert len(rest) == pending
                got += rest
        assert bytes(got) == payload.upper()
        # 1000-byte reads of 16 KiB records leave plaintext decrypted but unread.
        assert saw_pending
        view = bytearray(10)
        s.sendall(b"abc")
        n = s.recv_into(view)
        assert view[:n] == b"ABC"[:n]


def test_verification_failure(engine: Engine, echo: EchoServer) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.load_verify_locations(cadata=CA.create("some other CA").cert_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        connect(ctx, echo.port)
    assert info.value.verify_message
    assert "certificate verify failed" in str(info.value)


def test_hostname_mismatch(bridge_client: SSLContext, echo: EchoServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        connect(bridge_client, echo.port, hostname="wrong.example")
    assert info.value.verify_message


def test_check_hostname_requires_hostname(bridge_client: SSLContext) -> None:
    with socket.socket() as raw, pytest.raises(ValueError, match="server_hostname"):
        bridge_client.wrap_socket(raw)


def test_cert_none_warns_and_connects(engine: Engine, echo: EchoServer) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with connect(ctx, echo.port, hostname=None) as s:
            assert s.getpeercert() == {}
            assert s.getpeercert(binary_form=True)
            s.sendall(b"x")
            assert s.recv(10) == b"X"
    assert any(issubclass(w.category, SecurityWarning) for w in caught)


def test_no_hostname_check_still_verifies(engine: Engine, cert_files: CertFiles) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.check_hostname = False
    ctx.load_verify_locations(cert_files.ca_file)
    server = EchoServer(_plain_server(cert_files))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            with connect(ctx, server.port, hostname="wrong.example") as s:
                s.sendall(b"ok")
                assert s.recv(10) == b"OK"
    finally:
        server.close()
    other = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    other.check_hostname = False
    other.load_verify_locations(cadata=CA.create("x").cert_pem.decode())
    server = EchoServer(_plain_server(cert_files))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(other, server.port, hostname="localhost")
    finally:
        server.close()


def _plain_server(files: CertFiles) -> ssl.SSLContext:
    from compat_servers import plain_server_context

    return plain_server_context(files)


def test_bridge_server_with_stdlib_client(
    bridge_server: SSLContext, plain_client: ssl.SSLContext
) -> None:
    server = EchoServer(bridge_server)
    try:
        with connect(plain_client, server.port) as s:
            s.sendall(b"from stdlib")
            assert s.recv(100) == b"FROM STDLIB"
    finally:
        server.close()
    assert not server.errors


def test_bridge_to_bridge_mutual_tls(
    engine: Engine, cert_files: CertFiles, bridge_client: SSLContext, bridge_server: SSLContext
) -> None:
    bridge_server.verify_mode = ssl.CERT_REQUIRED
    bridge_server.load_verify_locations(cert_files.ca_file)
    bridge_client.load_cert_chain(cert_files.client_cert_file, cert_files.client_key_file)
    peer: list[Any] = []

    def action(conn: ssl.SSLSocket) -> None:
        peer.append(conn.getpeercert())
        EchoServer._echo(conn)

    server = EchoServer(bridge_server, action)
    try:
        with connect(bridge_client, server.port) as s:
            s.sendall(b"mtls")
            assert s.recv(100) == b"MTLS"
    finally:
        server.close()
    assert not server.errors
    assert peer and peer[0]["subject"] == ((("commonName", "client.example"),),)


def test_server_rejects_missing_client_cert(
    cert_files: CertFiles, bridge_server: SSLContext, plain_client: ssl.SSLContext
) -> None:
    bridge_server.verify_mode = ssl.CERT_REQUIRED
    bridge_server.load_verify_locations(cert_files.ca_file)
    server = EchoServer(bridge_server)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with connect(plain_client, server.port) as s:
                s.sendall(b"x")
                s.recv(10)  # TLS 1.3: the rejection arrives after the client's handshake
    finally:
        server.close()
    assert server.errors and isinstance(server.errors[0], ssl.SSLError)


def test_alpn(bridge_client: SSLContext, cert_files: CertFiles) -> None:
    srv = _plain_server(cert_files)
    srv.set_alpn_protocols(["h2", "http/1.1"])
    bridge_client.set_alpn_protocols(["http/1.1"])
    server = EchoServer(srv)
    try:
        with connect(bridge_client, server.port) as s:
            assert s.selected_alpn_protocol() == "http/1.1"
    finally:
        server.close()


def test_tls12_only(bridge_client: SSLContext, echo: EchoServer) -> None:
    bridge_client.maximum_version = ssl.TLSVersion.TLSv1_2
    bridge_client.set_ciphers("ECDHE+AESGCM")
    with connect(bridge_client, echo.port) as s:
        assert s.version() == "TLSv1.2"
        assert "GCM" in s.cipher()[0]


@pytest.mark.parametrize("blocking", [False, True], ids=["timeout", "blocking"])
def test_unwrap(bridge_client: SSLContext, plain_server: ssl.SSLContext, blocking: bool) -> None:
    """unwrap() returns the SSLSocket itself, as the stdlib does, in the blocking mode its
    timeout says (the OpenSSL engine keeps the descriptor non-blocking while OpenSSL uses it)."""

    def action(conn: ssl.SSLSocket) -> None:
        assert conn.recv(10) == b"bye"
        plain = conn.unwrap()
        plain.sendall(b"cleartext")

    server = EchoServer(plain_server, action)
    try:
        with connect(bridge_client, server.port) as s:
            if blocking:
                s.settimeout(None)
            s.sendall(b"bye")
            raw = s.unwrap()
            assert raw is s
            assert os.get_blocking(raw.fileno()) == blocking
            assert raw.recv(100) == b"cleartext"
    finally:
        server.close()
    assert not server.errors


def test_read_timeouts_are_the_sockets(bridge_client: SSLContext, echo: EchoServer) -> None:
    """A timeout set after the handshake bounds a read as a whole (the stdlib's exception and
    text); timeout 0 raises SSLWantReadError at once; the connection works afterwards."""
    with connect(bridge_client, echo.port) as s:
        s.settimeout(0.3)
        with pytest.raises(TimeoutError, match="read operation timed out"):
            s.recv(10)
        s.setblocking(False)
        with pytest.raises(ssl.SSLWantReadError):
            s.recv(10)
        s.settimeout(TIMEOUT)
        s.sendall(b"still here")
        assert s.recv(100) == b"STILL HERE"


def test_a_reader_blocked_after_settimeout_none_does_not_hold_a_writer(
    bridge_client: SSLContext, echo: EchoServer
) -> None:
    """settimeout(None) after the handshake makes the descriptor blocking again (CPython); a
    reader thread that then waits must not keep a writer thread out (the OpenSSL engine's
    bridge lets one thread at a time into OpenSSL: it must never wait there)."""
    with connect(bridge_client, echo.port) as s:
        s.settimeout(None)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(s.recv(100)), daemon=True)
        reader.start()
        reader.join(0.3)  # the reader is waiting
        writer = threading.Thread(target=s.sendall, args=(b"ping",), daemon=True)
        writer.start()
        writer.join(TIMEOUT)
        reader.join(TIMEOUT)
        assert not writer.is_alive(), "the writer waited for the reader"
        assert got == [b"PING"]


def test_close_by_another_thread_ends_a_blocked_read(
    bridge_client: SSLContext, echo: EchoServer
) -> None:
    """A thread blocked in recv() returns soon after another thread closes the socket (EOF or an
    OSError), where the stdlib's stays blocked until data comes: the OpenSSL engine's
    ``LockedTLS`` and the native cores of the others wait in slices and look at the socket
    between them."""
    with connect(bridge_client, echo.port) as s:
        s.settimeout(None)
        outcome: list[object] = []

        def read() -> None:
            try:
                outcome.append(s.recv(100))
            except (OSError, ValueError) as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(0.3)  # the reader is waiting
        s.close()
        reader.join(5)
        assert not reader.is_alive(), "recv() still blocked 5 s after close() in another thread"
        assert outcome == [b""] or isinstance(outcome[0], (OSError, ValueError)), outcome


def test_ragged_eof_is_suppressed(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    def action(conn: ssl.SSLSocket) -> None:
        conn.sendall(b"last words")
        # closing without unwrap(): no close_notify, like many HTTP/1.0 servers

    server = EchoServer(plain_server, action)
    try:
        with connect(bridge_client, server.port) as s:
            data = b""
            while chunk := s.recv(100):
                data += chunk
            assert data == b"last words"
    finally:
        server.close()


def test_ragged_eof_raises_when_not_suppressed(
    bridge_client: SSLContext, plain_server: ssl.SSLContext
) -> None:
    server = EchoServer(plain_server, lambda conn: conn.sendall(b"x"))
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        with bridge_client.wrap_socket(
            raw, server_hostname="localhost", suppress_ragged_eofs=False
        ) as s:
            assert s.recv(10) == b"x"
            with pytest.raises(ssl.SSLEOFError):
                s.recv(10)
    finally:
        server.close()


def test_timeout(bridge_client: SSLContext) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=0.2)
        with pytest.raises(TimeoutError):
            bridge_client.wrap_socket(raw, server_hostname="localhost")
        assert raw.fileno() == -1  # detached into the SSLSocket, which closed it
    finally:
        listener.close()


def test_handshake_closed(bridge_client: SSLContext) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        conn, _ = listener.accept()
        conn.close()
        with pytest.raises((ssl.SSLEOFError, ConnectionError)):
            bridge_client.wrap_socket(raw, server_hostname="localhost")
    finally:
        listener.close()


def test_not_tls_peer(bridge_client: SSLContext) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
        with pytest.raises(ssl.SSLError):
            bridge_client.wrap_socket(raw, server_hostname="localhost")
        conn.close()
    finally:
        listener.close()


def test_non_blocking(bridge_client: SSLContext, echo: EchoServer) -> None:
    import selectors

    raw = socket.create_connection(("127.0.0.1", echo.port), timeout=TIMEOUT)
    raw.setblocking(False)
    s = bridge_client.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    sel = selectors.DefaultSelector()
    try:
        sel.register(s, selectors.EVENT_READ)

        def retry(op: Callable[[], Any]) -> Any:
            for _ in range(1000):
                try:
                    return op()
                except ssl.SSLWantReadError:
                    sel.modify(s, selectors.EVENT_READ)
                except ssl.SSLWantWriteError:
                    sel.modify(s, selectors.EVENT_WRITE)
                assert sel.select(TIMEOUT)
            raise AssertionError("no progress")

        retry(s.do_handshake)
        assert s.version()
        assert retry(lambda: s.send(b"nb")) == 2
        assert retry(lambda: s.recv(10)) == b"NB"
    finally:
        sel.close()
        s.close()


def _upper_echo_client(
    ctx: ssl.SSLContext, address: Any, message: bytes, errors: list[BaseException]
) -> None:
    """A client (for a thread): sends ``message`` and expects it back upper-cased; what goes
    wrong lands in ``errors``, for the test to report."""
    try:
        raw = socket.create_connection(address, timeout=TIMEOUT)
        with ctx.wrap_socket(raw, server_hostname="localhost") as c:
            c.sendall(message)
            assert c.recv(100) == message.upper()
    except BaseException as exc:
        errors.append(exc)


def test_non_blocking_server_keeps_the_hello_that_arrives_as_it_gives_up(
    engine: Engine,
    bridge_server: SSLContext,
    plain_client: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-blocking server handshake that found nothing to read raises SSLWantReadError; the
    ClientHello arriving at that moment stays in the socket for the retry. Before, the bridge
    took SSLWantReadError for a failed handshake and read off and dropped what was waiting
    (meant for the records after a fatal alert): CPython's test_asyncore_server, whose server is
    non-blocking, hung about once in 500 runs."""
    import select

    from unitls.compat import _sslobj

    fired = []
    recv = _sslobj._RecordIO.recv

    def hello_comes_just_too_late(self: Any, size: int) -> bytes:
        if not fired:
            fired.append(True)
            # The client's hello is in the socket now, but this attempt looked before it was.
            assert select.select([self._sock()], [], [], TIMEOUT)[0]
            raise BlockingIOError
        return recv(self, size)

    monkeypatch.setattr(_sslobj._RecordIO, "recv", hello_comes_just_too_late)
    listener = socket.create_server(("127.0.0.1", 0))
    client_errors: list[BaseException] = []
    thread = threading.Thread(
        target=_upper_echo_client,
        args=(plain_client, listener.getsockname(), b"ping", client_errors),
        daemon=True,
    )
    thread.start()
    raw, _ = listener.accept()
    listener.close()
    raw.setblocking(False)
    s = bridge_server.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    try:
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            assert select.select([s], [], [], TIMEOUT)[0], "the ClientHello was dropped"
        else:
            # Possible only where nothing was delayed: _ssl.c may find the whole ClientHello
            # and the client's Finished in one call.
            assert not fired
        for _ in range(1000):
            try:
                s.do_handshake()
                break
            except ssl.SSLWantReadError:
                assert select.select([s], [], [], TIMEOUT)[0]
            except ssl.SSLWantWriteError:
                assert select.select([], [s], [], TIMEOUT)[1]
        s.setblocking(True)
        s.settimeout(TIMEOUT)
        assert s.recv(10) == b"ping"
        s.sendall(b"PING")  # what _upper_echo_client expects
    finally:
        s.close()
        thread.join(TIMEOUT)
    assert not client_errors
    # The OpenSSL engine's bridge server is _ssl.c's own socket: no Python transport to delay.
    assert fired or engine.name == "openssl"


def test_non_blocking_server_event_loop(
    bridge_server: SSLContext, plain_client: ssl.SSLContext
) -> None:
    """asyncore's pattern (CPython's test_asyncore_server): one selector loop accepts, wraps
    with ``do_handshake_on_connect=False``, tries the handshake at once and again at every
    readiness event, then echoes; stdlib clients arrive together and one after another. A byte
    a non-blocking call loses leaves a client waiting (its timeout fails the test)."""
    import selectors

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    stop = threading.Event()
    server_errors: list[BaseException] = []

    def step(conn: ssl.SSLSocket) -> None:
        try:
            if sel.get_key(conn).data == "handshake":
                conn.do_handshake()
                sel.modify(conn, selectors.EVENT_READ, "echo")
            while data := conn.recv(1024):
                conn.sendall(data.upper())
            sel.unregister(conn)
            conn.close()
        except ssl.SSLWantReadError:
            pass

    def serve() -> None:
        try:
            while not stop.is_set():
                for key, _ in sel.select(0.05):
                    if key.data is not None:
                        step(key.fileobj)  # type: ignore[arg-type]
                        continue
                    try:
                        raw, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    raw.setblocking(False)
                    conn = bridge_server.wrap_socket(
                        raw, server_side=True, do_handshake_on_connect=False
                    )
                    sel.register(conn, selectors.EVENT_READ, "handshake")
                    step(conn)
        except BaseException as exc:  # reported by the test
            server_errors.append(exc)

    client_errors: list[BaseException] = []

    def client(i: int) -> None:
        _upper_echo_client(plain_client, listener.getsockname(), b"hello %d" % i, client_errors)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        together = [threading.Thread(target=client, args=(i,)) for i in range(12)]
        for thread in together:
            thread.start()
        for i in range(12, 24):
            client(i)
        for thread in together:
            thread.join(2 * TIMEOUT)
    finally:
        stop.set()
        server.join(TIMEOUT)
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()
    assert not server_errors and not client_errors, (server_errors, client_errors)


def pump_bios(
    c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO, s_in: ssl.MemoryBIO, s_out: ssl.MemoryBIO
) -> None:
    """Move what each side of a MemoryBIO pair wrote to the other side."""
    s_in.write(c_out.read())
    c_in.write(s_out.read())


def handshake_objects(client: ssl.SSLObject, server: ssl.SSLObject, bios: Any) -> None:
    """Both ``SSLObject``s' handshakes over their BIOs ``(c_in, c_out, s_in, s_out)``."""
    done = {client: False, server: False}
    for _ in range(20):
        for obj in (client, server):
            if not done[obj]:
                try:
                    obj.do_handshake()
                    done[obj] = True
                except ssl.SSLWantReadError:
                    pass
        pump_bios(*bios)
        if all(done.values()):
            break
    assert all(done.values())


def test_memory_bio_pair(bridge_client: SSLContext, bridge_server: SSLContext) -> None:
    """Two bridge SSLObjects talking through MemoryBIOs, no sockets at all."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = bridge_client.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = bridge_server.wrap_bio(s_in, s_out, server_side=True)
    assert type(client) is ssl.SSLObject and server.server_side and not client.server_side
    assert client.server_hostname == "localhost"

    def pump() -> None:
        pump_bios(c_in, c_out, s_in, s_out)

    handshake_objects(client, server, (c_in, c_out, s_in, s_out))
    big = b"z" * 3_000_000  # far more than one engine buffer: write() must take it all
    assert client.write(big) == len(big)
    got = bytearray()
    for _ in range(1000):
        pump()
        try:
            got += server.read(1 << 20)
        except ssl.SSLWantReadError:
            pass
        if len(got) == len(big):
            break
    assert bytes(got) == big
    server.write(b"pong")
    pump()
    # Like OpenSSL's: pending() counts decrypted bytes left over from a record already read.
    assert client.read(2) == b"po"
    assert client.pending() == 2
    assert client.read(10) == b"ng"
    with pytest.raises(ssl.SSLWantReadError):
        client.unwrap()
    pump()
    server.unwrap()  # has the client's close_notify: completes and answers
    pump()
    assert client.unwrap() is None
    with pytest.raises(ssl.SSLZeroReturnError):  # as ssl.SSLObject does after close_notify
        server.read(10)


def test_set_ecdh_curve_is_honoured(
    engine: Engine,
    bridge_client: SSLContext,
    bridge_server: SSLContext,
    plain_client: ssl.SSLContext,
    plain_server: ssl.SSLContext,
) -> None:
    """The one group of set_ecdh_curve is the one negotiated, in both roles, as OpenSSL reports
    it on the stdlib peer (a bridge server gets the stdlib client's x25519 share and asks again)."""
    from unitls.openssl import _group_of

    bridge_client.set_ecdh_curve("secp384r1")
    bridge_server.set_ecdh_curve(b"secp384r1")  # the stdlib takes bytes too
    for client_ctx, server_ctx, stdlib_is_server in (
        (bridge_client, plain_server, True),
        (plain_client, bridge_server, False),
    ):
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        handshake_objects(client, server, (c_in, c_out, s_in, s_out))
        peer = server if stdlib_is_server else client
        assert _group_of(peer._sslobj) == "secp384r1"  # type: ignore[attr-defined]


def test_set_ecdh_curve_outside_the_engines_groups_is_refused(
    engine: Engine, bridge_client: SSLContext
) -> None:
    with pytest.raises(ValueError):  # as the stdlib: OpenSSL has no such curve
        bridge_client.set_ecdh_curve("no-such-curve")
    if engine.name == "openssl":
        bridge_client.set_ecdh_curve("sect283k1")  # OpenSSL's own contexts take any of its curves
        return
    with pytest.raises(UnsupportedSettingError, match="no such key exchange group"):
        bridge_client.set_ecdh_curve("sect283k1")


def test_settings_are_cached(bridge_client: SSLContext) -> None:
    first = bridge_client._unitls_context(False)
    assert bridge_client._unitls_context(False) is first
    bridge_client.set_alpn_protocols(["h2"])
    second = bridge_client._unitls_context(False)
    assert second is not first
    assert second.configuration.inner_protocols == (unitls.NextProtocol.H2,)
    bridge_client.verify_mode = ssl.CERT_REQUIRED  # unchanged value: still cached
    assert bridge_client._unitls_context(False) is second


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda c: setattr(c, "verify_mode", ssl.CERT_OPTIONAL), "CERT_OPTIONAL"),
        (lambda c: setattr(c, "minimum_version", ssl.TLSVersion.TLSv1), "minimum_version"),
        (lambda c: setattr(c, "maximum_version", ssl.TLSVersion.TLSv1_1), "maximum_version"),
        (lambda c: setattr(c, "verify_flags", ssl.VERIFY_CRL_CHECK_LEAF), "CRL"),
    ],
)
def test_unsupported_settings(
    bridge_client: SSLContext, mutate: Callable[[SSLContext], None], words: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mutate(bridge_client)
    raw, other = socket.socketpair()
    with other, pytest.raises(UnsupportedSettingError, match=words) as info:
        bridge_client.wrap_socket(raw, server_hostname="localhost")
    assert isinstance(info.value, ssl.SSLError) and isinstance(info.value, ValueError)
    assert raw.fileno() == -1  # handed to the SSLSocket, which closed it on the error
    with pytest.raises(UnsupportedSettingError, match=words):
        bridge_client.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")


def test_post_handshake_auth_on_server_refused(bridge_server: SSLContext) -> None:
    bridge_server.post_handshake_auth = True
    with pytest.raises(UnsupportedSettingError, match="post_handshake_auth"):
        bridge_server.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)


def test_old_protocol_refused(engine: Engine) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(UnsupportedSettingError, match="PROTOCOL_TLSv1"):
            SSLContext(ssl.PROTOCOL_TLSv1, implementation=engine)


def test_server_needs_cert(engine: Engine, plain_client: ssl.SSLContext) -> None:
    """Like the stdlib: wrapping without a certificate works, the handshake fails."""
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = ctx.wrap_bio(s_in, s_out, server_side=True)
    client = plain_client.wrap_bio(c_in, c_out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    s_in.write(c_out.read())
    with pytest.raises(ssl.SSLError, match="load_cert_chain"):
        server.do_handshake()


def test_set_ciphers_mapping(engine: Engine) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    assert unitls.CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 in ctx._unitls_ciphers  # type: ignore[operator]
    ctx.set_ciphers("AES128-SHA")  # CBC only: no TLS 1.2 suite left, TLS 1.3 only
    assert ctx._unitls_ciphers
    assert all(c in unitls.DEFAULT_TLS13_CIPHER_LIST for c in ctx._unitls_ciphers)


def test_key_kept_in_memory(bridge_server: SSLContext, cert_files: CertFiles) -> None:
    chain = bridge_server._unitls_chain
    assert chain is not None
    cert, key = chain.leaf
    assert key is not None and key.buffer is not None and key.path is None
    assert cert.buffer is not None


def test_inject_and_extract(engine: Engine, cert_files: CertFiles, echo: EchoServer) -> None:
    original = ssl.SSLContext
    original_stdlib = ssl._create_stdlib_context
    unitls.compat.inject_into_ssl(engine)
    try:
        assert ssl.SSLContext is not original
        ctx = ssl.create_default_context(cafile=str(cert_files.ca_file))
        assert isinstance(ctx, SSLContext) and ctx.implementation is engine
        # ssl.py's setters on the stdlib class must not recurse through the rebound name.
        plain = original(ssl.PROTOCOL_TLS_CLIENT)
        plain.verify_mode = ssl.CERT_REQUIRED
        plain.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        stdlib_ctx = ssl._create_stdlib_context()
        assert isinstance(stdlib_ctx, SSLContext)
        assert stdlib_ctx.verify_mode == ssl.CERT_REQUIRED and stdlib_ctx.check_hostname
        with connect(ctx, echo.port) as s:
            s.sendall(b"injected")
            assert s.recv(100) == b"INJECTED"
    finally:
        unitls.compat.extract_from_ssl()
    assert ssl.SSLContext is original
    assert ssl._create_stdlib_context is original_stdlib
    assert type(ssl.create_default_context()) is original
    assert not unitls.compat.is_injected()


def test_settings_the_engines_ignore_are_announced(
    engine: Engine, bridge_client: SSLContext
) -> None:
    from unitls.compat import IgnoredSettingWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredSettingWarning)
        bridge_client.keylog_filename = os.devnull  # every engine writes key logs
        bridge_client.set_ecdh_curve("prime256v1")  # every engine takes it (groups=...)
    assert bridge_client.keylog_filename == os.devnull
    with pytest.warns(IgnoredSettingWarning, match="load_dh_params"):
        bridge_client.load_dh_params(_DH_PARAMS)
    with pytest.warns(IgnoredSettingWarning, match="hostname_checks_common_name"):
        bridge_client.hostname_checks_common_name = True
    bridge_client.hostname_checks_common_name = False  # what the engines do anyway: silent


_DH_PARAMS = os.path.join(os.path.dirname(ssl.__file__), "test", "certdata", "ffdh3072.pem")


def test_openssl_bridge_clients_run_no_engine_callback_inside_ssl_read() -> None:
    """Bridge client contexts on the OpenSSL engine get no new-session callback: it would run
    Python inside SSL_read when tickets arrive, while a bridge SSLSocket may have another thread
    in SSL_write (websockets' sync client hung that way under load). The engine's own client
    contexts keep theirs."""
    import ctypes

    from unitls import _openssl_ffi, openssl

    if not _openssl_ffi.AVAILABLE:
        pytest.skip("OpenSSL is not reachable through ctypes here")
    get_cb = ctypes.CDLL(ssl._ssl.__file__).SSL_CTX_sess_get_new_cb  # type: ignore[attr-defined]
    get_cb.argtypes, get_cb.restype = [ctypes.c_void_p], ctypes.c_void_p

    bridge = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation="openssl")
    native = bridge._native_for(False)
    assert native is not None
    assert not get_cb(_openssl_ffi._ctx_pointer(native))
    config = unitls.TLSClientConfiguration()
    engine = openssl._shared_client_context(config, True, True)
    assert engine is not native
    assert get_cb(_openssl_ffi._ctx_pointer(engine))
