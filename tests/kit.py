"""The shared test kit: one buffer pump, one stdlib peer, one certificate factory, fault tools.

- ``BufferPump``: the "network" of in-memory tests (only PEP 748 calls, so any engine and any
  ``TLSBuffer``-shaped peer runs the same).
- ``StdlibPeer`` / ``stdlib_context``: the stdlib ``ssl`` module as the peer, in memory.
- Certificates: ``CA`` (``unitls._certgen``) for ordinary chains, ``custom_leaf`` for leaves
  with any field the badssl-style cases need.
- Faults: ``FaultyBuffer``/``fake_implementation`` (an engine that uses every freedom the PEP
  gives: refusing input, short writes, one-byte records, short reads and outputs),
  ``StdlibServer`` (a threaded ``ssl`` server), ``Relay`` (a TCP relay that can drip bytes),
  and ``SOCKET_FACTORIES`` (every way unitls puts TLS on a socket, so fault tests run on each:
  add an entry to run them on another socket implementation).
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import unitls
import unitls.compat
from unitls._certgen import CA, Issued

__all__ = [
    "CA",
    "SOCKET_FACTORIES",
    "BufferPump",
    "FaultyBuffer",
    "Issued",
    "Relay",
    "SocketFactory",
    "StdlibPeer",
    "StdlibServer",
    "custom_leaf",
    "fake_implementation",
    "recv_exactly",
    "stdlib_context",
]

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]
HOST = "127.0.0.1"

# -- the in-memory network -----------------------------------------------------------------------

Chunk = int | Callable[[], int] | None


class BufferPump:
    """The "network" of buffer tests: moves ciphertext between two ``TLSBuffer`` objects.

    Only PEP 748 calls are used, so every engine (and every client x server pair) runs the same.
    """

    max_rounds = 200

    @staticmethod
    def pair(
        client_engine: Impl,
        server_engine: Impl,
        client_config: unitls.TLSClientConfiguration,
        server_config: unitls.TLSServerConfiguration,
        server_hostname: str = "localhost",
    ) -> tuple[unitls.TLSBuffer, unitls.TLSBuffer]:
        """A fresh (client, server) pair of buffers, not yet handshaken."""
        client = client_engine.client_context(client_config).create_buffer(server_hostname)
        server = server_engine.server_context(server_config).create_buffer()
        return client, server

    @staticmethod
    def transfer(src: Any, dst: Any, chunk: Chunk = None) -> int:
        """Move all of ``src``'s pending ciphertext into ``dst`` (in ``chunk``-sized pieces)."""
        total = 0
        while True:
            size = chunk() if callable(chunk) else (chunk or 1 << 20)
            data = src.process_outgoing(size)
            if not data:
                return total
            assert len(data) <= size, "process_outgoing returned more than asked for"
            total += len(data)
            dst.process_incoming(data)

    def handshake(self, client: Any, server: Any, chunk: Chunk = None) -> None:
        """Drive both handshakes to completion; engine errors propagate."""
        done_c = done_s = False
        for _ in range(self.max_rounds):
            if not done_c:
                try:
                    client.do_handshake()
                    done_c = True
                except unitls.WantReadError:
                    pass
            moved = self.transfer(client, server, chunk)
            if not done_s:
                try:
                    server.do_handshake()
                    done_s = True
                except unitls.WantReadError:
                    pass
            moved += self.transfer(server, client, chunk)
            if done_c and done_s and not moved:
                return
        raise AssertionError(f"handshake stuck (client done: {done_c}, server done: {done_s})")

    @staticmethod
    def drain(buf: Any, amt: int = 65536) -> bytes:
        """All plaintext ``buf`` can give now (stops at WantReadError or a clean EOF)."""
        out = bytearray()
        while True:
            try:
                data = buf.read(amt)
            except unitls.WantReadError:
                return bytes(out)
            assert isinstance(data, bytes)
            if not data:
                return bytes(out)
            out += data

    def send(
        self, src: Any, dst: Any, data: bytes, write_size: int = 65536, chunk: Chunk = None
    ) -> bytes:
        """Write ``data`` on ``src`` and return what ``dst`` reads (the caller compares)."""
        view = memoryview(data)
        received = bytearray()
        for off in range(0, len(data), write_size):
            piece = view[off : off + write_size]
            taken = src.write(piece)
            assert taken == len(piece), f"write took {taken} of {len(piece)} bytes"
            self.transfer(src, dst, chunk)
            received += self.drain(dst)
        for _ in range(self.max_rounds):
            if len(received) >= len(data):
                break
            moved = self.transfer(src, dst, chunk) + self.transfer(dst, src, chunk)
            more = self.drain(dst)
            received += more
            if not moved and not more:
                break
        return bytes(received)

    def connected(
        self,
        client_engine: Impl,
        server_engine: Impl,
        client_config: unitls.TLSClientConfiguration,
        server_config: unitls.TLSServerConfiguration,
        server_hostname: str = "localhost",
    ) -> tuple[unitls.TLSBuffer, unitls.TLSBuffer]:
        """A handshaken (client, server) pair."""
        client, server = self.pair(
            client_engine, server_engine, client_config, server_config, server_hostname
        )
        self.handshake(client, server)
        return client, server


# -- the stdlib as the peer ---------------------------------------------------------------------


class StdlibPeer:
    """An ``ssl.SSLObject`` dressed as a TLSBuffer, so ``BufferPump`` can drive it.

    ``ssl`` errors become TLSErrors here so that failure tests can catch either side alike.
    """

    def __init__(self, ctx: ssl.SSLContext, server_side: bool, hostname: str | None = None):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname
        )

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ssl.SSLWantReadError:
            raise unitls.WantReadError("stdlib peer wants data") from None
        except ssl.SSLZeroReturnError:
            return b""
        except ssl.SSLError as exc:
            raise unitls.TLSError(f"stdlib peer: {exc}") from exc

    def do_handshake(self) -> None:
        self._call(self.obj.do_handshake)

    def read(self, amt: int) -> bytes:
        data = self._call(self.obj.read, amt)
        assert isinstance(data, bytes)
        return data

    def write(self, data: Any) -> int:
        n = self._call(self.obj.write, data)
        assert isinstance(n, int)
        return n

    def shutdown(self) -> None:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass

    def process_incoming(self, data: bytes) -> None:
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def process_outgoing(self, n: int) -> bytes:
        return self.outgoing.read(n)

    def getpeercert(self) -> bytes | None:
        return self.obj.getpeercert(binary_form=True)


def stdlib_context(
    server_side: bool,
    tmp: Path,
    ca: CA | None,
    cert: Issued | None,
    version: ssl.TLSVersion | unitls.TLSVersion | None = None,
    alpn: list[str] | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A stdlib context: servers present ``cert``; clients (and servers requiring client
    certificates) trust ``ca``; ``version`` (the ``ssl`` or the unitls enum) pins both bounds."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    if isinstance(version, unitls.TLSVersion):
        version = ssl.TLSVersion[version.name]
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        path = tmp / f"stdlib-{'server' if server_side else 'client'}-{id(cert):x}.pem"
        path.write_bytes(cert.chain_pem + cert.key_pem)
        ctx.load_cert_chain(path)
    if ca is not None and (not server_side or require_client_cert):
        ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


# -- certificates with any field ------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def custom_leaf(
    issuer: CA | None,
    *,
    cn: str = "localhost",
    dns: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = (),
    is_ca: bool = False,
    ekus: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> Issued:
    """A leaf certificate with full control of its fields; ``issuer=None`` means self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, hashes.SHA256())
    return Issued(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        key_der=key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        intermediates_pem=() if issuer is None else issuer._chain_above_leaf(),
    )


# -- an engine with every fault the PEP allows ----------------------------------------------------


class FaultyBuffer:
    """A real engine's buffer, plus the freedoms PEP 748 gives an engine, taken at random:

    - ``process_incoming`` refuses a chunk (``WantReadError``, nothing stored), also the
      transport's EOF, and keeps refusing until ``read``/``do_handshake`` has been called (the
      PEP's rule); the first chunk offered after that is taken, so a driver that follows the
      rule always makes progress;
    - ``write`` takes short, sometimes a single byte (a one-byte TLS record);
    - ``process_outgoing`` and ``read`` return less than asked for.

    A driver that drops, reorders or duplicates a byte breaks the TLS stream (MAC failure) or
    the checksums of the tests.
    """

    def __init__(self, inner: unitls.TLSBuffer, seed: int, context: Any) -> None:
        self._inner = inner
        self._rng = random.Random(seed)
        self._refused = False  # refusing until read()/do_handshake() is called
        self._owed = False  # a refusal was followed by a read: the next chunk is taken
        self._context = context

    def process_incoming(self, data_from_network: bytes) -> None:
        size = memoryview(data_from_network).nbytes  # a TypeError for non-buffers, as engines
        if self._refused or (not self._owed and self._rng.random() < 0.3):
            self._refused = True
            raise unitls.WantReadError("fake engine: the incoming buffer is full")
        self._owed = False
        self._inner.process_incoming(bytes(data_from_network) if size else b"")

    def _engine_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._refused:
            self._refused = False
            self._owed = True
        return fn(*args)

    def read(self, amt: int, buffer: Any = None) -> bytes | int:
        if amt > 1 and self._rng.random() < 0.2:
            amt = self._rng.randint(1, amt)
        result: bytes | int = self._engine_call(self._inner.read, amt, buffer)
        return result

    def do_handshake(self) -> None:
        self._engine_call(self._inner.do_handshake)

    def write(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        roll = self._rng.random()
        if view.nbytes > 1 and roll < 0.1:
            view = view[:1]  # a one-byte record
        elif view.nbytes > 1 and roll < 0.3:
            view = view[: self._rng.randint(1, view.nbytes)]
        return self._inner.write(view)

    def process_outgoing(self, amount_bytes_for_network: int) -> bytes:
        amount = amount_bytes_for_network
        if amount > 1 and self._rng.random() < 0.3:
            amount = self._rng.randint(1, amount)
        return self._inner.process_outgoing(amount)

    def incoming_bytes_buffered(self) -> int:
        return self._inner.incoming_bytes_buffered()

    def outgoing_bytes_buffered(self) -> int:
        return self._inner.outgoing_bytes_buffered()

    def shutdown(self) -> None:
        self._inner.shutdown()

    def cipher(self) -> Any:
        return self._inner.cipher()

    def negotiated_protocol(self) -> Any:
        return self._inner.negotiated_protocol()

    @property
    def negotiated_tls_version(self) -> Any:
        return self._inner.negotiated_tls_version

    def getpeercert(self) -> bytes | None:
        return self._inner.getpeercert()

    @property
    def context(self) -> Any:
        return self._context


_seeds = iter(range(1, 1 << 30))


def fake_implementation(inner: Impl) -> Impl:
    """A third-party-style engine over ``inner`` whose buffers are ``FaultyBuffer``s: its sockets
    are the generic driver's, as any engine's without sockets of its own would be."""
    from unitls._socket import connect_with_buffer, listen_with_buffers

    class FakeClientContext:
        def __init__(self, configuration: unitls.TLSClientConfiguration) -> None:
            self._inner = inner.client_context(configuration)

        @property
        def configuration(self) -> unitls.TLSClientConfiguration:
            config: unitls.TLSClientConfiguration = self._inner.configuration
            return config

        def create_buffer(self, server_hostname: str) -> FaultyBuffer:
            return FaultyBuffer(self._inner.create_buffer(server_hostname), next(_seeds), self)

        def connect(self, address: tuple[str | None, int], *, timeout: Any = None) -> Any:
            return connect_with_buffer(self, address, timeout)  # type: ignore[arg-type]

    class FakeServerContext:
        def __init__(self, configuration: unitls.TLSServerConfiguration) -> None:
            self._inner = inner.server_context(configuration)

        @property
        def configuration(self) -> unitls.TLSServerConfiguration:
            config: unitls.TLSServerConfiguration = self._inner.configuration
            return config

        def create_buffer(self) -> FaultyBuffer:
            return FaultyBuffer(self._inner.create_buffer(), next(_seeds), self)

        def connect(self, address: tuple[str | None, int], **kw: Any) -> Any:
            return listen_with_buffers(self, address, **kw)  # type: ignore[arg-type]

    return unitls.TLSImplementation(
        client_context=FakeClientContext,  # type: ignore[arg-type]
        server_context=FakeServerContext,  # type: ignore[arg-type]
        validate_config=inner.validate_config,
        name=f"fake-{inner.name}",
    )


# -- peers over TCP -------------------------------------------------------------------------------


def recv_exactly(sock: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(min(n - len(out), 1 << 20))
        if not data:
            break
        out += data
    return bytes(out)


class StdlibServer:
    """A stdlib ``ssl`` server in a thread: each accepted connection is handshaken and given to
    ``handler``. Exceptions of the handler are kept in ``errors`` (tests check them)."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        handler: Callable[[ssl.SSLSocket], None],
        connections: int = 1,
        timeout: float = 30.0,
    ) -> None:
        self.ctx = ctx
        self.handler = handler
        self.errors: list[BaseException] = []
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(timeout)
        self.port = self.listener.getsockname()[1]
        self.address = (HOST, self.port)
        self._timeout = timeout
        self._threads = [threading.Thread(target=self._run, daemon=True)]
        self._connections = connections
        self._threads[0].start()

    def _run(self) -> None:
        for _ in range(self._connections):
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(self._timeout)
        try:
            with self.ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as tls:
                self.handler(tls)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self, timeout: float = 30.0) -> None:
        for t in list(self._threads):
            t.join(timeout)

    def close(self) -> None:
        self.listener.close()
        self.join(5)

    def __enter__(self) -> StdlibServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo_handler(tls: ssl.SSLSocket) -> None:
    """Echo until the client's close_notify, then answer it."""
    while True:
        data = tls.recv(1 << 16)
        if not data:
            break
        tls.sendall(data)
    try:
        tls.unwrap()
    except (ssl.SSLError, OSError):
        pass


class Relay:
    """A TCP relay in front of ``target`` that can slow a direction down to one byte every
    ``interval`` seconds (after ``after`` bytes went through at full speed). After ``lifetime``
    seconds it closes both sides, so an implementation that waits forever fails the test with
    the error it then reports, not with a hang."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        drip_down: bool = False,
        drip_up: bool = False,
        after: int = 0,
        interval: float = 0.05,
        lifetime: float = 20.0,
    ) -> None:
        self.target = target
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(lifetime)
        self.address = (HOST, self.listener.getsockname()[1])
        self._drip = {"down": drip_down, "up": drip_up}
        self._after = after
        self._interval = interval
        self._end = time.monotonic() + lifetime
        self._socks: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(self.target)
        self._socks += [client, server]
        for src, dst, name in ((client, server, "up"), (server, client, "down")):
            threading.Thread(target=self._pump, args=(src, dst, name), daemon=True).start()

    def drip(self, direction: str) -> None:
        """From now on, pass one byte at a time in ``direction`` ("up": to the server)."""
        self._drip[direction] = True

    def _pump(self, src: socket.socket, dst: socket.socket, name: str) -> None:
        passed = 0
        try:
            while time.monotonic() < self._end:
                left = max(0.01, min(self._interval, self._end - time.monotonic()))
                src.settimeout(left)
                drip = self._drip[name] and passed >= self._after
                try:
                    data = src.recv(1 if drip else 65536)
                except TimeoutError:
                    continue  # look at the drip setting again
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
                passed += len(data)
                if drip:
                    time.sleep(self._interval)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the ways unitls puts TLS on a socket ----------------------------------------------------------


@dataclass(frozen=True)
class SocketFactory:
    """A client-side TLS socket implementation, with the exception classes it reports.

    ``connect(engine, client_config, address, timeout)`` returns a handshaken socket-like object
    (``recv``, ``send``, ``sendall``, ``settimeout``, ``setblocking``, ``fileno``, ``close``).
    """

    name: str
    connect: Callable[[Impl, unitls.TLSClientConfiguration, tuple[str, int], float | None], Any]
    want_read: tuple[type[BaseException], ...]
    want_write: tuple[type[BaseException], ...]
    timeout: tuple[type[BaseException], ...]
    ragged: tuple[type[BaseException], ...]
    reset: tuple[type[BaseException], ...]
    handshake_closed: tuple[type[BaseException], ...]


def _engine_socket(
    engine: Impl, config: unitls.TLSClientConfiguration, address: tuple[str, int], t: float | None
) -> Any:
    return engine.client_context(config).connect(address, timeout=t)


def _upgraded_socket(
    engine: Impl, config: unitls.TLSClientConfiguration, address: tuple[str, int], t: float | None
) -> Any:
    raw = socket.create_connection(address, timeout=t)
    try:
        return unitls.upgrade_socket(engine.client_context(config), raw, "localhost")
    except BaseException:
        raw.close()
        raise


def bridge_context(engine: Impl, config: unitls.TLSClientConfiguration) -> ssl.SSLContext:
    """``unitls.compat.SSLContext`` on ``engine``, trusting what ``config`` trusts."""
    ctx = unitls.compat.SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    store = config.trust_store
    assert store is not None and store.buffer is not None
    ctx.load_verify_locations(cadata=store.buffer.decode())
    return ctx


def _bridge_socket(
    engine: Impl, config: unitls.TLSClientConfiguration, address: tuple[str, int], t: float | None
) -> Any:
    raw = socket.create_connection(address, timeout=t)
    try:
        # Ragged EOFs visible, as on the unitls paths (the stdlib's default hides them).
        return bridge_context(engine, config).wrap_socket(
            raw, server_hostname="localhost", suppress_ragged_eofs=False
        )
    except BaseException:
        raw.close()
        raise


_UNITLS = {
    "want_read": (unitls.WantReadError,),
    "want_write": (unitls.WantWriteError,),
    "timeout": (unitls.TLSTimeoutError,),
    "ragged": (unitls.RaggedEOF,),
    "reset": (unitls.TLSConnectionError,),
    "handshake_closed": (unitls.HandshakeClosedError,),
}

#: Every client-side socket path: the engine's own socket (``ClientContext.connect``), the
#: generic driver on every engine (``upgrade_socket``) and the ``ssl`` bridge.
SOCKET_FACTORIES: dict[str, SocketFactory] = {
    "socket": SocketFactory("socket", _engine_socket, **_UNITLS),
    "upgrade": SocketFactory("upgrade", _upgraded_socket, **_UNITLS),
    "bridge": SocketFactory(
        "bridge",
        _bridge_socket,
        want_read=(ssl.SSLWantReadError,),
        want_write=(ssl.SSLWantWriteError,),
        timeout=(TimeoutError,),
        ragged=(ssl.SSLEOFError,),
        reset=(ConnectionResetError, BrokenPipeError),
        handshake_closed=(ssl.SSLEOFError, ConnectionResetError),
    ),
}


@contextmanager
def closing(sock: Any) -> Iterator[Any]:
    try:
        yield sock
    finally:
        try:
            sock.close()
        except (OSError, unitls.TLSError):
            pass


def is_reset(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)
