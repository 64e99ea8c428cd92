"""Core benchmarks: each engine against the stdlib ``ssl`` module, measured in the same run.

Seven measurements, each run for both sides in alternating short rounds (stdlib, engine, engine,
stdlib, ...) so machine noise hits both alike; the median round of each side is kept and the
result is reported as a ratio (engine / stdlib):

1. ``bulk-socket``: bulk throughput over loopback TCP, 16 KiB sends, client and server threads.
2. ``bulk-memory``: bulk throughput in memory, both ends in one thread, 16 KiB writes
   (stdlib side: ``SSLObject`` + ``MemoryBIO``).
3. ``handshake-memory``: full TLS 1.3 handshakes per second in memory, ECDSA P-256, no
   resumption (stdlib server ``num_tickets = 0``; engines that allow it get tickets/resumption off).
4. ``roundtrip-socket``: 100-byte request/response round trips per second over loopback.
5. ``connections-socket``: TLS connections per second over loopback TCP: a new TCP connection
   and a full TLS 1.3 handshake each (no resumption on either side), one byte from the client,
   then close; a client thread and a server thread.
6. ``handshake-memory-default-groups``: as 3., with the engine's default key exchange groups;
   only for engines whose default negotiates another group than the stdlib's x25519 (rustls:
   X25519MLKEM768, which OpenSSL 3.0 lacks). No target: it prices the post-quantum hybrid.
7. ``handshake-resumed-memory``: resumed TLS 1.3 handshakes per second in memory, both sides
   resuming: the engine's client from its session cache (a new single-use ticket each time)
   against its server issuing tickets; the stdlib client with ``session=`` against a stdlib
   server with its default tickets. The stdlib side reads ``SSLObject.session`` once, from the
   first connection, and offers it every time (OpenSSL servers accept a TLS 1.3 ticket again):
   its fastest correct use, since reading ``.session`` re-serializes the session (a client
   taking the newest session from every connection measured ~30% slower). After each
   handshake the server sends one byte and the client reads it (processing new tickets, which
   NSS servers send with their first data), on both sides.

Key exchange like for like: every other row asks the engine for ``groups=LIKE_STDLIB_GROUPS``
(x25519 first, as the stdlib's OpenSSL offers), so both sides make an X25519 exchange; rows of
handshakes report the engine's negotiated ``group``. Engines without the ``groups`` option run
with their defaults.

Both sides use TLS 1.3 and the same certificate. Python 3.11's ``ssl`` cannot choose TLS 1.3
suites, so the engine is asked for TLS_AES_256_GCM_SHA384 (what OpenSSL prefers by default)
when it accepts that, and the suite each side negotiated is reported with every row.

Rows are dicts with keys ``name, engine, value, unit, baseline, ratio`` (plus ``suite``,
``target`` and ``seconds``), the format ``benchmarks/bench_*.py`` modules share.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from statistics import median
from typing import Any

from ._certgen import CA, Issued
from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._enums import CipherSuite, TLSVersion
from ._errors import ConfigurationError, WantReadError

__all__ = ["BENCHMARKS", "LIKE_STDLIB_GROUPS", "TARGETS", "run_core"]

Row = dict[str, Any]
Progress = Callable[[str], None]

CHUNK = 16 * 1024
MESSAGE = 100
# Alternating slices per side: many short ones track a shared machine's load swings better
# than two long ones (the median slice of each side is kept).
SLICE = 0.1
MAX_ROUNDS = 20
_IO_TIMEOUT = 30.0

BENCHMARKS = (
    "bulk-socket",
    "bulk-memory",
    "handshake-memory",
    "handshake-memory-default-groups",
    "roundtrip-socket",
    "connections-socket",
    "handshake-resumed-memory",
)
UNITS = {
    "bulk-socket": "MiB/s",
    "bulk-memory": "MiB/s",
    "handshake-memory": "handshakes/s",
    "handshake-memory-default-groups": "handshakes/s",
    "roundtrip-socket": "round trips/s",
    "connections-socket": "connections/s",
    "handshake-resumed-memory": "handshakes/s",
}
#: The lowest acceptable ratio (engine / stdlib) per engine and row name (issue 10's targets),
#: for these rows and those of ``benchmarks/bench_compat.py`` and ``bench_asyncio.py``.
TARGETS: dict[str, dict[str, float]] = {
    "openssl": {
        "bulk-socket": 1.0,
        "bulk-memory": 1.0,
        "handshake-memory": 1.0,
        "roundtrip-socket": 0.95,
        "connections-socket": 1.0,
        "http.client GET (keep-alive)": 1.0,
        "http.client bulk download": 1.0,
        "asyncio bulk throughput": 1.0,
        "asyncio handshakes": 1.0,
    },
    "rustls": {
        "bulk-socket": 1.3,
        "bulk-memory": 1.5,
        "handshake-memory": 2.4,
        "roundtrip-socket": 1.1,
        "connections-socket": 1.8,
        "http.client GET (keep-alive)": 1.1,
        "http.client bulk download": 1.2,
        "asyncio bulk throughput": 1.4,
        "asyncio handshakes": 2.0,
    },
    # The issue's targets for NSS (issue 11): in-memory handshakes and bulk, sockets.
    "nss": {"bulk-socket": 0.9, "bulk-memory": 0.9, "handshake-memory": 0.9},
}


#: The key exchange groups the engines are asked for (``groups``): the stdlib's OpenSSL 3.0
#: client sends an x25519 key share and its servers pick x25519; an engine preferring another
#: group by default (rustls: X25519MLKEM768) would otherwise be timed doing different work.
LIKE_STDLIB_GROUPS = ("x25519", "secp256r1", "secp384r1")
# Rows whose handshakes make a key exchange (they report the engine's negotiated group).
_KEY_EXCHANGE_ROWS = frozenset(
    {"handshake-memory", "connections-socket", "handshake-resumed-memory"}
)


# -- the two sides ------------------------------------------------------------------------------


class _Stdlib:
    """The baseline: ``ssl.SSLSocket`` and ``ssl.SSLObject`` used directly."""

    name = "stdlib"

    def __init__(self, leaf: Issued, ca: CA, tmpdir: str) -> None:
        cert = os.path.join(tmpdir, "cert.pem")
        key = os.path.join(tmpdir, "key.pem")
        with open(cert, "wb") as f:
            f.write(leaf.chain_pem)
        with open(key, "wb") as f:
            f.write(leaf.key_pem)
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.load_cert_chain(cert, key)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_3
        self.server.num_tickets = 0
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client.load_verify_locations(cadata=ca.cert_pem.decode())
        self.client.minimum_version = ssl.TLSVersion.TLSv1_3
        # Resumption: a server issuing tickets (OpenSSL's defaults) and the session to offer.
        self.ticket_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ticket_server.load_cert_chain(cert, key)
        self.ticket_server.minimum_version = ssl.TLSVersion.TLSv1_3
        self.session: ssl.SSLSession | None = None
        self.suite = "?"
        self.default_groups = self  # the stdlib has one key exchange

    # sockets
    def listen(self) -> tuple[Any, int]:
        sock = socket.create_server(("127.0.0.1", 0))
        sock.settimeout(_IO_TIMEOUT)
        return sock, sock.getsockname()[1]

    def accept(self, listener: Any) -> Any:
        raw, _ = listener.accept()
        raw.settimeout(_IO_TIMEOUT)
        return self.server.wrap_socket(raw, server_side=True)

    def connect(self, port: int) -> Any:
        raw = socket.create_connection(("127.0.0.1", port), timeout=_IO_TIMEOUT)
        conn = self.client.wrap_socket(raw, server_hostname="127.0.0.1")
        cipher = conn.cipher()
        self.suite = cipher[0] if cipher else "?"
        return conn

    # memory
    def buffer_pair(self) -> tuple[Any, Any, Callable[[], None], Callable[[], None]]:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        c = self.client.wrap_bio(c_in, c_out, server_hostname="localhost")
        s = self.server.wrap_bio(s_in, s_out, server_side=True)

        def c2s() -> None:
            if c_out.pending:
                s_in.write(c_out.read())

        def s2c() -> None:
            if s_out.pending:
                c_in.write(s_out.read())

        return c, s, c2s, s2c

    def handshake(self, c: Any, s: Any, c2s: Callable[[], None], s2c: Callable[[], None]) -> None:
        c_done = s_done = False
        while not (c_done and s_done):
            if not c_done:
                try:
                    c.do_handshake()
                    c_done = True
                except ssl.SSLWantReadError:
                    pass
            c2s()
            if not s_done:
                try:
                    s.do_handshake()
                    s_done = True
                except ssl.SSLWantReadError:
                    pass
            s2c()
        c2s()

    def resumed_handshake(self) -> bool:
        """One handshake offering the first connection's session. Returns resumed."""
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        c = self.client.wrap_bio(c_in, c_out, server_hostname="localhost", session=self.session)
        s = self.ticket_server.wrap_bio(s_in, s_out, server_side=True)

        def c2s() -> None:
            if c_out.pending:
                s_in.write(c_out.read())

        def s2c() -> None:
            if s_out.pending:
                c_in.write(s_out.read())

        self.handshake(c, s, c2s, s2c)
        s.write(b"x")  # a server may send its tickets with its first data (NSS does)
        s2c()
        c.read(1)  # processes the tickets, then the byte
        if self.session is None:
            self.session = c.session
        return bool(c.session_reused)


class _Engine:
    """A PEP 748 engine, used only through the PEP API."""

    def __init__(
        self,
        impl: Any,
        leaf: Issued,
        ca: CA,
        groups: tuple[str, ...] | None = LIKE_STDLIB_GROUPS,
    ) -> None:
        self.impl = impl
        self.name = impl.name
        self._material = (leaf, ca)
        chain = [leaf.signing_chain()]
        v13 = TLSVersion.TLSv1_3
        suites = [CipherSuite.TLS_AES_256_GCM_SHA384]
        server = TLSServerConfiguration(chain, ciphers=suites, lowest_supported_version=v13)
        client = TLSClientConfiguration(
            trust_store=ca.trust_store(), ciphers=suites, lowest_supported_version=v13
        )
        try:
            impl.validate_config(server)
            impl.validate_config(client)
        except ConfigurationError:
            # The engine cannot pick TLS 1.3 suites: take its defaults, report what they gave.
            server = TLSServerConfiguration(chain, lowest_supported_version=v13)
            client = TLSClientConfiguration(
                trust_store=ca.trust_store(), lowest_supported_version=v13
            )
        kx = {"groups": groups} if groups is not None else {}
        self.server = _with_options(impl.server_context, server, session_tickets=False, **kx)
        self.client = _with_options(impl.client_context, client, resumption=False, **kx)
        # Resumption: the engine's defaults (tickets on, a session cache on).
        self.ticket_server = _with_options(impl.server_context, server, **kx)
        self.resuming_client = _with_options(impl.client_context, client, **kx)
        self.suite = "?"
        self._defaults: _Engine | None = None if groups is not None else self
        # Checked once: a runtime Protocol check per connection would be timed as the engine's.
        from .extensions import SupportsConnectTimeout

        self.connect_timeout = isinstance(self.client, SupportsConnectTimeout)

    def listen(self) -> tuple[Any, int]:
        listener = self.server.connect(("127.0.0.1", 0))
        listener.settimeout(_IO_TIMEOUT)
        return listener, listener.getsockname()[1]

    def accept(self, listener: Any) -> Any:
        conn, _ = listener.accept()
        conn.settimeout(_IO_TIMEOUT)
        return conn

    def connect(self, port: int) -> Any:
        if self.connect_timeout:
            conn = self.client.connect(("127.0.0.1", port), timeout=_IO_TIMEOUT)
        else:
            conn = self.client.connect(("127.0.0.1", port))
        conn.settimeout(_IO_TIMEOUT)
        self.suite = _suite_name(conn.cipher())
        return conn

    def buffer_pair(self) -> tuple[Any, Any, Callable[[], None], Callable[[], None]]:
        c = self.client.create_buffer("localhost")
        s = self.server.create_buffer()
        return (c, s, *_pumps(c, s))

    def handshake(self, c: Any, s: Any, c2s: Callable[[], None], s2c: Callable[[], None]) -> None:
        # The same loop shape as the stdlib side's.
        c_done = s_done = False
        while not (c_done and s_done):
            if not c_done:
                try:
                    c.do_handshake()
                    c_done = True
                except WantReadError:
                    pass
            c2s()
            if not s_done:
                try:
                    s.do_handshake()
                    s_done = True
                except WantReadError:
                    pass
            s2c()
        c2s()

    @property
    def default_groups(self) -> _Engine:
        """This engine with its default key exchange groups (made on first use)."""
        if self._defaults is None:
            leaf, ca = self._material
            self._defaults = _Engine(self.impl, leaf, ca, groups=None)
        return self._defaults

    def group(self) -> str | None:
        """The key exchange group one in-memory handshake negotiates (None: not reported, or
        the handshake failed: the rows then report that failure themselves)."""
        try:
            c, s, c2s, s2c = self.buffer_pair()
            self.handshake(c, s, c2s, s2c)
        except Exception:
            return None
        return getattr(c, "negotiated_group", None)

    def resumed_handshake(self) -> bool:
        """One handshake from the context's session cache. Returns resumed."""
        c = self.resuming_client.create_buffer("localhost")
        s = self.ticket_server.create_buffer()
        c2s, s2c = _pumps(c, s)
        self.handshake(c, s, c2s, s2c)
        s.write(b"x")  # a server may send its tickets with its first data (NSS does)
        s2c()
        c.read(1)  # processes the tickets, then the byte
        return bool(getattr(c, "session_resumed", False))


_Side = _Stdlib | _Engine


def _with_options(factory: Any, config: Any, **options: Any) -> Any:
    """A context with engine-specific options (no tickets/resumption, ``groups``) when the
    engine has them: without ``groups`` if it lacks that one, without any if it lacks more."""
    try:
        return factory(config, **options)
    except TypeError:
        pass
    if "groups" in options:
        options = {k: v for k, v in options.items() if k != "groups"}
        try:
            return factory(config, **options)
        except TypeError:
            pass
    return factory(config)


def _pumps(c: Any, s: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """Move what one buffer has to send into the other: (client to server, server to client)."""

    def c2s() -> None:
        n = c.outgoing_bytes_buffered()
        if n:
            s.process_incoming(c.process_outgoing(n))

    def s2c() -> None:
        n = s.outgoing_bytes_buffered()
        if n:
            c.process_incoming(s.process_outgoing(n))

    return c2s, s2c


def _suite_name(suite: object) -> str:
    if suite is None:
        return "?"
    try:
        return CipherSuite(int(suite)).name  # type: ignore[call-overload]
    except (ValueError, TypeError):
        return str(suite)


# -- the measurements ---------------------------------------------------------------------------


def _recv_into(conn: Any) -> Callable[[memoryview], int]:
    fn = getattr(conn, "recv_into", None)
    if fn is not None:
        return fn  # type: ignore[no-any-return]

    def via_recv(view: memoryview) -> int:
        data = conn.recv(len(view))
        view[: len(data)] = data
        return len(data)

    return via_recv


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _close_now(conn: Any) -> None:
    """Send close_notify and close without waiting for the peer's, on both sides alike (the
    engines' ``close(force=True)``; ``SSLSocket.unwrap()`` on a non-blocking socket)."""
    with contextlib.suppress(Exception):
        if isinstance(conn, ssl.SSLSocket):
            conn.settimeout(0)
            with contextlib.suppress(ssl.SSLError, OSError):
                conn.unwrap()
            conn.close()
        else:
            conn.close(force=True)


def bulk_socket(side: _Side, seconds: float) -> float:
    """MiB/s received by a server thread while a client sends 16 KiB chunks."""
    listener, port = side.listen()
    received = [0]
    last = [0.0]
    errors: list[BaseException] = []

    def server() -> None:
        try:
            conn = side.accept(listener)
            recv_into = _recv_into(conn)
            view = memoryview(bytearray(256 * 1024))
            total = 0
            while True:
                n = recv_into(view)
                if not n:
                    break
                total += n
                last[0] = time.perf_counter()
            received[0] = total
            _close(conn)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    try:
        conn = side.connect(port)
        chunk = bytes(CHUNK)
        sendall = conn.sendall
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for _ in range(8):
                sendall(chunk)
        _close(conn)
        thread.join(_IO_TIMEOUT)
    finally:
        _close(listener)
    if errors:
        raise errors[0]
    elapsed = max(last[0] - start, 1e-9)
    return received[0] / elapsed / (1024 * 1024)


def memory_stream(side: _Side) -> tuple[Any, Callable[[int], None]]:
    """A client -> server pair of in-memory connections, handshaken, and ``move(count)``, which
    writes ``count`` 16 KiB chunks and reads each on the other end (also counted, not timed, by
    ``benchmarks/instructions.py``). Returns (the client buffer, ``move``)."""
    c, s, c2s, s2c = side.buffer_pair()
    side.handshake(c, s, c2s, s2c)
    s2c()
    chunk = bytes(CHUNK)
    view = memoryview(bytearray(CHUNK))
    write, read = c.write, s.read

    def move(count: int) -> None:
        for _ in range(count):
            write(chunk)
            c2s()
            # Read exactly what was written: no reliance on WantRead exceptions on either side.
            want = CHUNK
            while want:
                want -= read(want, view)

    return c, move


def bulk_memory(side: _Side, seconds: float) -> float:
    """MiB/s through a client -> server pair of in-memory connections in one thread."""
    c, move = memory_stream(side)
    total = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        move(16)
        total += 16 * CHUNK
    elapsed = time.perf_counter() - start
    if isinstance(side, _Engine):
        side.suite = _suite_name(c.cipher())
    else:
        cipher = c.cipher()
        side.suite = cipher[0] if cipher else "?"
    return total / elapsed / (1024 * 1024)


def handshake_memory(side: _Side, seconds: float) -> float:
    """Full handshakes per second, both ends in memory in one thread."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        c, s, c2s, s2c = side.buffer_pair()
        side.handshake(c, s, c2s, s2c)
        count += 1
    return count / (time.perf_counter() - start)


def handshake_memory_default_groups(side: _Side, seconds: float) -> float:
    """``handshake_memory`` with the side's default key exchange groups."""
    return handshake_memory(side.default_groups, seconds)


def resumed_handshake_memory(side: _Side, seconds: float) -> float:
    """Resumed handshakes per second, both ends in memory in one thread (one full handshake
    first, untimed, to get a session)."""
    side.resumed_handshake()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        if not side.resumed_handshake():
            raise RuntimeError(f"{side.name}: a handshake that should resume did not")
        count += 1
    return count / (time.perf_counter() - start)


def roundtrip_socket(side: _Side, seconds: float) -> float:
    """100-byte request/response round trips per second over loopback."""
    listener, port = side.listen()
    errors: list[BaseException] = []

    def server() -> None:
        try:
            conn = side.accept(listener)
            recv_into = _recv_into(conn)
            buf = bytearray(MESSAGE)
            view = memoryview(buf)
            while True:
                got = 0
                while got < MESSAGE:
                    n = recv_into(view[got:])
                    if not n:
                        _close(conn)
                        return
                    got += n
                conn.sendall(buf)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    try:
        conn = side.connect(port)
        recv_into = _recv_into(conn)
        msg = bytes(MESSAGE)
        view = memoryview(bytearray(MESSAGE))

        def round_trips(n: int) -> None:
            for _ in range(n):
                conn.sendall(msg)
                got = 0
                while got < MESSAGE:
                    k = recv_into(view[got:])
                    if not k:
                        raise ConnectionError("the echo server closed the connection")
                    got += k

        # Warm up untimed: the first request after the handshake can wait ~40 ms for a delayed
        # ACK (Nagle), which would dominate short runs.
        round_trips(4)
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            round_trips(16)
            count += 16
        elapsed = time.perf_counter() - start
        _close(conn)
        thread.join(_IO_TIMEOUT)
    finally:
        _close(listener)
    if errors:
        raise errors[0]
    return count / elapsed


def connections_socket(side: _Side, seconds: float) -> float:
    """TLS connections per second over loopback: TCP connect, full handshake, one byte, close."""
    listener, port = side.listen()
    errors: list[BaseException] = []
    stop = threading.Event()

    def server() -> None:
        try:
            while not stop.is_set():
                conn = side.accept(listener)
                try:
                    conn.recv(1)
                finally:
                    _close_now(conn)
        except BaseException as exc:
            if not stop.is_set():
                errors.append(exc)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    count = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline and not errors:
            conn = side.connect(port)
            conn.sendall(b"x")
            _close_now(conn)
            count += 1
        elapsed = time.perf_counter() - start
        stop.set()
        with contextlib.suppress(OSError):
            # A plain TCP connection wakes the server's accept(); its handshake fails.
            socket.create_connection(("127.0.0.1", port), timeout=_IO_TIMEOUT).close()
        thread.join(_IO_TIMEOUT)
    finally:
        _close(listener)
    if errors:
        raise errors[0]
    return count / elapsed


_FUNCS: dict[str, Callable[[_Side, float], float]] = {
    "bulk-socket": bulk_socket,
    "bulk-memory": bulk_memory,
    "handshake-memory": handshake_memory,
    "handshake-memory-default-groups": handshake_memory_default_groups,
    "roundtrip-socket": roundtrip_socket,
    "connections-socket": connections_socket,
    "handshake-resumed-memory": resumed_handshake_memory,
}


def side_by_side(
    name: str,
    engine: str,
    unit: str,
    baseline: Callable[[float], float],
    measured: Callable[[float], float],
    seconds: float,
    digits: int = 2,
) -> Row:
    """One row of the extra benchmarks (``benchmarks/bench_*.py``): ``measured(s)`` (unitls)
    against ``baseline(s)`` (the stdlib), each called with its share of ``seconds`` in 3 to 9
    alternating rounds (baseline, unitls, unitls, baseline, ...: short rounds track a shared
    machine's load swings); the median of each side and their ratio."""
    rounds = max(3, min(9, round(seconds / 0.25)))
    got: list[float] = []
    std: list[float] = []
    for rnd in range(rounds):
        order = [(baseline, std), (measured, got)]
        for measure, into in order if rnd % 2 == 0 else order[::-1]:
            into.append(measure(seconds / rounds))
    value, base = median(got), median(std)
    return {
        "name": name,
        "engine": engine,
        "value": round(value, digits),
        "unit": unit,
        "baseline": round(base, digits),
        "ratio": round(value / base, 3) if base else None,
    }


def _median(values: list[float] | None) -> float | None:
    return median(values) if values else None


@contextlib.contextmanager
def _material() -> Iterator[tuple[Issued, CA, str]]:
    ca = CA.create("unitls bench CA")
    leaf = ca.issue("localhost", "127.0.0.1")
    # The stdlib side needs files for load_cert_chain; the engines get buffers.
    with tempfile.TemporaryDirectory(prefix="unitls-bench-") as tmpdir:
        yield leaf, ca, tmpdir


def run_core(
    seconds: float = 1.0,
    engines: list[str] | None = None,
    benchmarks: tuple[str, ...] = BENCHMARKS,
    progress: Progress | None = None,
) -> list[Row]:
    """Run the core benchmarks for each engine (default: every usable one); returns rows.

    ``seconds`` is the measuring time per side and benchmark, split over the alternating rounds.
    """
    import unitls

    names = engines if engines is not None else unitls.implementations()
    rows: list[Row] = []
    rounds = max(2, min(MAX_ROUNDS, round(seconds / SLICE)))
    steps = len(names) * len(benchmarks) * rounds * 2
    step = 0
    with _material() as (leaf, ca, tmpdir):
        stdlib = _Stdlib(leaf, ca, tmpdir)
        for name in names:
            engine = _Engine(unitls.get_implementation(name), leaf, ca)
            groups = {"": engine.group()}
            for bench in benchmarks:
                if bench == "handshake-memory-default-groups":
                    groups[bench] = engine.default_groups.group()
                    if groups[bench] == groups[""]:
                        step += 2 * rounds  # the same row as handshake-memory
                        continue
                seen: dict[str, list[float]] = {}
                first_step = step
                try:
                    for rnd in range(rounds):
                        order: list[_Side] = [stdlib, engine] if rnd % 2 == 0 else [engine, stdlib]
                        for side in order:
                            step += 1
                            if progress:
                                progress(f"[{step}/{steps}] {name}: {bench} ({side.name})")
                            value = _FUNCS[bench](side, seconds / rounds)
                            seen.setdefault(side.name, []).append(value)
                except Exception as exc:
                    # One broken measurement must not cost the whole run: report it in its row.
                    step = first_step + 2 * rounds
                    if progress:
                        progress(f"{name}: {bench} failed: {type(exc).__name__}: {exc}")
                    rows.append(
                        {
                            "name": bench,
                            "engine": name,
                            "value": None,
                            "unit": UNITS[bench],
                            "baseline": _median(seen.get(stdlib.name)),
                            "ratio": None,
                            "error": f"{type(exc).__name__}: {exc}",
                            "target": TARGETS.get(name, {}).get(bench),
                            "seconds": seconds,
                        }
                    )
                    continue
                value, baseline = median(seen[engine.name]), median(seen[stdlib.name])
                suite = (
                    engine.suite
                    if engine.suite == stdlib.suite
                    else (f"{engine.suite} (stdlib: {stdlib.suite})")
                )
                rows.append(
                    {
                        "name": bench,
                        "engine": name,
                        "value": round(value, 2),
                        "unit": UNITS[bench],
                        "baseline": round(baseline, 2),
                        "ratio": round(value / baseline, 3) if baseline else None,
                        "suite": suite,
                        "target": TARGETS.get(name, {}).get(bench),
                        "seconds": seconds,
                    }
                )
                if bench in _KEY_EXCHANGE_ROWS or bench in groups:
                    rows[-1]["group"] = groups.get(bench, groups[""])
    return rows
