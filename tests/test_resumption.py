"""Session resumption, the same on every engine (see ``unitls._engine``'s docstring).

Real connections over loopback TCP: every engine pair, and the stdlib ``ssl`` module as the
peer in both roles (its client resumes with ``session=``). A second connection to the same
server resumes on both sides; one to another name or port does not; tickets from a restarted
server (new keys) fall back to a full handshake; ``session_tickets=False`` and
``resumption=False`` mean full handshakes. In memory: the cache key, exported sessions, single
use of TLS 1.3 tickets, OpenSSL's rotating ticket keys, the cache bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import pytest

import unitls
import unitls.extensions
from unitls import TLSClientConfiguration, TLSServerConfiguration, TLSVersion
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 20.0
VERSIONS = [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3]
STDLIB_VERSION = {
    TLSVersion.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    TLSVersion.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}
PING = b"ping" * 10


def resumes(server: str, version: TLSVersion | None) -> bool:
    """Whether a server of this engine resumes sessions of ``version``: NSS servers resume TLS
    1.3 only (NSS's TLS 1.2 session cache is process-wide; see ``unitls.nss``). Elsewhere the
    tests expect full handshakes, completed cleanly."""
    return not (server == "nss" and version is TLSVersion.TLSv1_2)


def runs(count: int, server: str, version: TLSVersion | None) -> list[bool]:
    """What ``count`` connections to one server report: the first full, then resumed."""
    return [False] + [resumes(server, version)] * (count - 1)


def client_cfg(ca: CA, version: TLSVersion | None = None) -> TLSClientConfiguration:
    kw: dict[str, Any] = {}
    if version is not None:
        kw = {"lowest_supported_version": version, "highest_supported_version": version}
    return TLSClientConfiguration(trust_store=ca.trust_store(), **kw)


def server_cfg(cert: Issued) -> TLSServerConfiguration:
    return TLSServerConfiguration(certificate_chain=[cert.signing_chain()])


def stdlib_server_context(cert: Issued, tmp: Path) -> ssl.SSLContext:
    """A stdlib server (tickets on: OpenSSL's defaults, its own key)."""
    path = tmp / "stdlib-server.pem"
    path.write_bytes(cert.chain_pem + cert.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(path)
    return ctx


# -- servers ------------------------------------------------------------------------------------


class Server:
    """An echo server in a thread, recording for each connection whether it resumed.

    ``accept(listener)`` returns ``(connection, resumed)``; connections are closed after one
    echo. ``stop()`` ends the thread and reports any unexpected server error.
    """

    def __init__(self, listener: Any, accept: Callable[[Any], tuple[Any, bool]]) -> None:
        self.listener = listener
        self.port: int = listener.getsockname()[1]
        self.resumed: list[bool] = []
        self.errors: list[BaseException] = []
        self._accept = accept
        self._stop = threading.Event()
        listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, resumed = self._accept(self.listener)
            except (TimeoutError, unitls.TLSTimeoutError, unitls.WantReadError):
                continue
            except BaseException as exc:  # a failed handshake: the test's client reports it
                if not self._stop.is_set():
                    self.errors.append(exc)
                continue
            try:
                conn.settimeout(TIMEOUT)
                got = b""
                while len(got) < len(PING):
                    data = conn.recv(len(PING) - len(got))
                    if not data:
                        break
                    got += data
                conn.sendall(got)
                self.resumed.append(resumed)
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.listener.close()
        assert not self.errors, f"server errors: {self.errors!r}"


def engine_server(context: Any, port: int = 0) -> Server:
    def accept(listener: Any) -> tuple[Any, bool]:
        conn, _ = listener.accept()
        return conn, conn.session_resumed

    return Server(context.connect(("127.0.0.1", port)), accept)


def stdlib_server(ctx: ssl.SSLContext, port: int = 0) -> Server:
    def accept(listener: socket.socket) -> tuple[Any, bool]:
        raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except BaseException:
            raw.close()
            raise
        return conn, bool(conn.session_reused)

    return Server(socket.create_server(("127.0.0.1", port)), accept)


# -- clients ------------------------------------------------------------------------------------


def exchange(conn: Any) -> None:
    conn.sendall(PING)
    got = b""
    while len(got) < len(PING):
        data = conn.recv(len(PING))
        assert data, "the server closed before echoing"
        got += data
    assert got == PING


def engine_client(context: Any) -> Callable[[str, int], bool]:
    """Connect, exchange data (TLS 1.3 tickets arrive with it), close; returns resumed."""

    def connect(host: str, port: int) -> bool:
        with context.connect((host, port), timeout=TIMEOUT) as conn:
            exchange(conn)
            return bool(conn.session_resumed)

    return connect


def stdlib_client(ca: CA, version: TLSVersion | None = None) -> Callable[[str, int], bool]:
    """The stdlib resuming as its users do: ``session=`` from the last connection to the same
    (host, port)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = STDLIB_VERSION[version]
    sessions: dict[tuple[str, int], ssl.SSLSession] = {}

    def connect(host: str, port: int) -> bool:
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
        with ctx.wrap_socket(raw, server_hostname=host, session=sessions.get((host, port))) as conn:
            exchange(conn)
            if conn.session is not None:
                sessions[(host, port)] = conn.session
            return bool(conn.session_reused)

    return connect


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


# -- a second connection resumes ---------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_second_connection_resumes_every_engine_pair(
    client_engine: Impl, server_engine: Impl, version: TLSVersion, ca: CA, server_cert: Issued
) -> None:
    """Five connections: only the first is a full handshake. More connections than the first
    one's tickets: every resumed handshake must bring a new ticket (TLS 1.3 tickets are used
    once each)."""
    connect = engine_client(client_engine.client_context(client_cfg(ca, version)))
    with running(engine_server(server_engine.server_context(server_cfg(server_cert)))) as srv:
        seen = [connect("localhost", srv.port) for _ in range(5)]
    assert seen == srv.resumed == runs(5, server_engine.name, version)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_engine_client_resumes_with_stdlib_server(
    engine: Impl, version: TLSVersion, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    connect = engine_client(engine.client_context(client_cfg(ca, version)))
    with running(stdlib_server(stdlib_server_context(server_cert, tmp_path))) as srv:
        seen = [connect("localhost", srv.port) for _ in range(5)]
    assert seen == [False, True, True, True, True]
    assert srv.resumed == [False, True, True, True, True]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_stdlib_client_resumes_with_engine_server(
    engine: Impl, version: TLSVersion, ca: CA, server_cert: Issued
) -> None:
    connect = stdlib_client(ca, version)
    with running(engine_server(engine.server_context(server_cfg(server_cert)))) as srv:
        seen = [connect("localhost", srv.port) for _ in range(5)]
    assert seen == srv.resumed == runs(5, engine.name, version)


def test_starttls_upgrade_resumes(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    """``upgrade(sock, name)`` takes the port from the connected socket."""
    client = client_engine.client_context(client_cfg(ca))

    def connect(host: str, port: int) -> bool:
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
        with client.upgrade(raw, host) as conn:
            exchange(conn)
            return bool(conn.session_resumed)

    with running(engine_server(server_engine.server_context(server_cfg(server_cert)))) as srv:
        seen = [connect("localhost", srv.port) for _ in range(3)]
    assert seen == [False, True, True]


# -- what must not resume ----------------------------------------------------------------------


def test_another_name_does_not_resume(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    """The certificate names localhost and 127.0.0.1: the same server under another name gets
    a full handshake (the session was verified for the first name only)."""
    connect = engine_client(client_engine.client_context(client_cfg(ca)))
    with running(engine_server(server_engine.server_context(server_cfg(server_cert)))) as srv:
        seen = [
            connect("localhost", srv.port),
            connect("127.0.0.1", srv.port),
            connect("localhost", srv.port),
            connect("127.0.0.1", srv.port),
        ]
    assert seen == [False, False, True, True]


def test_another_port_does_not_resume(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    """One server context (one set of ticket keys) on two ports: the cache is keyed by port,
    so the second port gets a full handshake although its server would accept the ticket."""
    connect = engine_client(client_engine.client_context(client_cfg(ca)))
    server = server_engine.server_context(server_cfg(server_cert))
    with running(engine_server(server)) as a, running(engine_server(server)) as b:
        seen = [
            connect("localhost", a.port),
            connect("localhost", b.port),
            connect("localhost", a.port),
            connect("localhost", b.port),
        ]
    assert seen == [False, False, True, True]


Side: TypeAlias = str  # an engine name or "stdlib"


def _sides() -> list[str]:
    return [*unitls.implementations(), "stdlib"]


def _make_server(side: Side, server_cert: Issued, tmp: Path, port: int = 0) -> Server:
    if side == "stdlib":
        return stdlib_server(stdlib_server_context(server_cert, tmp), port)
    return engine_server(
        unitls.get_implementation(side).server_context(server_cfg(server_cert)), port
    )


def _make_client(
    side: Side, ca: CA, version: TLSVersion | None = None
) -> Callable[[str, int], bool]:
    if side == "stdlib":
        return stdlib_client(ca, version)
    return engine_client(unitls.get_implementation(side).client_context(client_cfg(ca, version)))


def _pairs() -> list[tuple[Side, Side]]:
    """Every (client, server) pair with at least one unitls engine in it."""
    return [(c, s) for c in _sides() for s in _sides() if "stdlib" not in (c, s) or c != s]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize(("client_side", "server_side"), _pairs())
def test_restarted_server_falls_back_to_a_full_handshake(
    client_side: Side,
    server_side: Side,
    version: TLSVersion,
    ca: CA,
    server_cert: Issued,
    tmp_path: Path,
) -> None:
    """A server restarted on the same port has new ticket keys: the client's ticket is refused
    and the handshake completes as a full one; the next connection resumes again."""
    connect = _make_client(client_side, ca, version)
    with running(_make_server(server_side, server_cert, tmp_path)) as first:
        port = first.port
        before = [connect("localhost", port), connect("localhost", port)]
    with running(_make_server(server_side, server_cert, tmp_path, port)) as second:
        after = [connect("localhost", port), connect("localhost", port)]
    assert before == after == second.resumed == runs(2, server_side, version)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize("client_side", _sides())
def test_session_tickets_off_means_full_handshakes(
    client_side: Side, server_engine: Impl, version: TLSVersion, ca: CA, server_cert: Issued
) -> None:
    """No tickets and no session cache on the server: not even a TLS 1.2 session id resumes
    (the stdlib client offers its session every time)."""
    connect = _make_client(client_side, ca, version)
    server = server_engine.server_context(server_cfg(server_cert), session_tickets=False)
    with running(engine_server(server)) as srv:
        seen = [connect("localhost", srv.port) for _ in range(3)]
    assert seen == [False, False, False]
    assert srv.resumed == [False, False, False]


@pytest.mark.parametrize("server_side", _sides())
def test_resumption_off_means_full_handshakes(
    client_engine: Impl, server_side: Side, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    context = client_engine.client_context(client_cfg(ca), resumption=False)
    connect = engine_client(context)
    with running(_make_server(server_side, server_cert, tmp_path)) as srv:
        seen = [connect("localhost", srv.port) for _ in range(3)]
    assert seen == [False, False, False]


# -- in memory: the cache key, exported sessions, single use -----------------------------------


def _handshake(pump: Any, client: Any, server: Any) -> None:
    """Handshake, then one record each way so that TLS 1.3 tickets reach the client."""
    pump.handshake(client, server)
    assert pump.send(server, client, b"hello") == b"hello"
    assert pump.send(client, server, b"hi") == b"hi"


def test_buffers_key_the_cache_by_port(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, pump: Any
) -> None:
    client = client_engine.client_context(client_cfg(ca))
    server = server_engine.server_context(server_cfg(server_cert))

    def resumed(**kw: Any) -> bool:
        c, s = client.create_buffer("localhost", **kw), server.create_buffer()
        _handshake(pump, c, s)
        assert c.session_resumed == s.session_resumed
        return bool(c.session_resumed)

    assert isinstance(client, unitls.extensions.SupportsSessionCache)
    assert [resumed(port=1), resumed(port=2), resumed(), resumed(port=1)] == [
        False,
        False,
        False,
        True,
    ]
    assert [resumed(port=2), resumed()] == [True, True]  # port-less buffers share by name
    client.clear_session_cache()
    assert [resumed(port=1), resumed(port=1)] == [False, True]
    with pytest.raises(ValueError, match="port"):
        client.create_buffer("localhost", port=70000)


def test_session_resumed_is_false_before_the_handshake(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    c = client_engine.client_context(client_cfg(ca)).create_buffer("localhost")
    s = server_engine.server_context(server_cfg(server_cert)).create_buffer()
    assert c.session_resumed is False
    assert s.session_resumed is False


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_exported_session_resumes_exactly_that_session(
    client_engine: Impl,
    server_engine: Impl,
    version: TLSVersion,
    ca: CA,
    server_cert: Issued,
    pump: Any,
) -> None:
    """``buffer.session`` offered to ``create_buffer(session=...)``: resumes even with the cache
    off; a TLS 1.3 ticket serves once, a TLS 1.2 session until replaced."""
    client = client_engine.client_context(client_cfg(ca, version), resumption=False)
    server = server_engine.server_context(server_cfg(server_cert))
    c, s = client.create_buffer("localhost", port=443), server.create_buffer()
    assert isinstance(c, unitls.extensions.SupportsSessionExport)
    assert c.session is not None and not c.session.resumable
    _handshake(pump, c, s)
    session = c.session
    assert session.resumable or not resumes(server_engine.name, version)
    assert session.server_name == "localhost" and session.port == 443
    offers = []
    for _ in range(6):
        c, s = client.create_buffer("localhost", port=443, session=session), server.create_buffer()
        _handshake(pump, c, s)
        offers.append(bool(c.session_resumed and s.session_resumed))
    if version is TLSVersion.TLSv1_3:
        # Each of the first connection's tickets once (servers send 1 to 4), then none left.
        used = offers.count(True)
        assert 1 <= used <= 4 and offers == [True] * used + [False] * (6 - used)
        assert not session.resumable
    elif resumes(server_engine.name, version):
        assert offers == [True] * 6
        # A resumed connection's session is the one it resumed, so it resumes in turn (NSS
        # hands over no new TLS 1.2 session then: the engine keeps the resumed one).
        assert c.session.resumable
        again = client.create_buffer("localhost", port=443, session=c.session)
        s = server.create_buffer()
        _handshake(pump, again, s)
        assert again.session_resumed
    else:
        assert offers == [False] * 6
    # The cache is off: without the session nothing resumes.
    c, s = client.create_buffer("localhost", port=443), server.create_buffer()
    _handshake(pump, c, s)
    assert not c.session_resumed
    # Another name or another context: refused, not silently ignored.
    with pytest.raises(ValueError, match="server name"):
        client.create_buffer("127.0.0.1", session=c.session)
    other = client_engine.client_context(client_cfg(ca, version))
    with pytest.raises(ValueError, match="another client context"):
        other.create_buffer("localhost", session=c.session)
    with pytest.raises(TypeError, match="session"):
        client.create_buffer("localhost", session=object())


def test_server_buffers_export_no_session(server_engine: Impl, server_cert: Issued) -> None:
    buffer = server_engine.server_context(server_cfg(server_cert)).create_buffer()
    assert getattr(buffer, "session", None) is None


def test_cache_is_bounded(client_engine: Impl, ca: CA, server_cert: Issued, pump: Any) -> None:
    """The cache remembers the most recently used servers only (128 keys)."""
    from unitls._sessions import MAX_SERVERS

    client = client_engine.client_context(client_cfg(ca))
    server = unitls.get_implementation(client_engine.name).server_context(server_cfg(server_cert))

    def resumed(port: int) -> bool:
        c, s = client.create_buffer("localhost", port=port), server.create_buffer()
        _handshake(pump, c, s)
        return bool(c.session_resumed)

    for port in range(MAX_SERVERS + 1):
        assert not resumed(port)
    assert not resumed(0)  # evicted: the least recently used
    assert resumed(MAX_SERVERS)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_openssl_ticket_keys_rotate(
    version: TLSVersion, ca: CA, server_cert: Issued, pump: Any
) -> None:
    """OpenSSL servers: after one rotation a ticket under the previous key still resumes (and is
    renewed); after two it falls back to a full handshake."""
    from unitls import _openssl_ffi

    if not _openssl_ffi.AVAILABLE:
        pytest.skip("no ctypes access to OpenSSL here")
    openssl = unitls.get_implementation("openssl")
    client = openssl.client_context(client_cfg(ca, version), resumption=False)
    server = openssl.server_context(server_cfg(server_cert))
    keys = server.stdlib_context()._unitls_ticket_keys

    def connect(session: Any = None) -> Any:
        c, s = client.create_buffer("localhost", session=session), server.create_buffer()
        _handshake(pump, c, s)
        assert c.session_resumed == s.session_resumed
        return c

    first = connect().session
    keys.rotate()
    again = connect(first)
    assert again.session_resumed
    keys.rotate()
    keys.rotate()
    late = connect(first)
    assert not late.session_resumed


def test_openssl_engine_reaches_openssl_through_ctypes() -> None:
    """On CPython with OpenSSL 3 the pointer checks pass: resumption and rotating ticket keys
    are on (a silent fallback would make OpenSSL clients never resume)."""
    import sys

    from unitls import _openssl_ffi

    if sys.implementation.name != "cpython" or ssl.OPENSSL_VERSION_INFO < (3, 0):
        pytest.skip("needs CPython with OpenSSL 3")
    assert _openssl_ffi.AVAILABLE


# -- the bridge and asyncio --------------------------------------------------------------------


def test_bridge_server_reports_session_reused(
    engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    """``ssl.SSLSocket.session_reused`` through the bridge (a stdlib client resuming)."""
    import unitls.compat

    path = tmp_path / "bridge-server.pem"
    path.write_bytes(server_cert.chain_pem + server_cert.key_pem)
    ctx = unitls.compat.SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine.name)
    ctx.load_cert_chain(path)

    def accept(listener: socket.socket) -> tuple[Any, bool]:
        raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        conn = ctx.wrap_socket(raw, server_side=True)
        assert isinstance(conn, ssl.SSLSocket)
        return conn, bool(conn.session_reused)

    connect = stdlib_client(ca)
    with running(Server(socket.create_server(("127.0.0.1", 0)), accept)) as srv:
        seen = [connect("localhost", srv.port) for _ in range(2)]
    assert seen == [False, True]
    assert srv.resumed == [False, True]


def test_asyncio_extra_info_session_resumed(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    import unitls.asyncio

    client = client_engine.client_context(client_cfg(ca))

    async def main(port: int) -> list[bool]:
        seen = []
        for _ in range(2):
            reader, writer = await unitls.asyncio.open_connection("localhost", port, context=client)
            writer.write(PING)
            assert await reader.readexactly(len(PING)) == PING
            seen.append(writer.get_extra_info("session_resumed"))
            writer.close()
            with contextlib.suppress(unitls.TLSError, OSError):
                await writer.wait_closed()
        return seen

    with running(engine_server(server_engine.server_context(server_cfg(server_cert)))) as srv:
        assert asyncio.run(main(srv.port)) == [False, True]
    assert srv.resumed == [False, True]
