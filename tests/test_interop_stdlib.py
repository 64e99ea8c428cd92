"""Interoperability with the stdlib ``ssl`` module as the peer, in both roles.

In memory (``ssl.SSLObject`` + ``MemoryBIO`` against a ``TLSBuffer``) and over TCP (``ssl``
sockets against ``TLSSocket``), TLS 1.2 and 1.3, with and without client certificates, ALPN.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any, TypeAlias

import pytest

import unitls
from unitls import NextProtocol, TLSClientConfiguration, TLSServerConfiguration, TLSVersion
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
TIMEOUT = 20.0
VERSIONS = {
    TLSVersion.TLSv1_2: (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
    TLSVersion.TLSv1_3: (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
}


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
    ca: CA,
    cert: Issued | None,
    version: TLSVersion | None = None,
    alpn: list[str] | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = VERSIONS[version][0]
    if cert is not None:
        path = tmp / f"{'server' if server_side else 'client'}-chain.pem"
        path.write_bytes(cert.chain_pem + cert.key_pem)
        ctx.load_cert_chain(path)
    if not server_side or require_client_cert:
        ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def unitls_client_cfg(
    ca: CA, version: TLSVersion | None, client_cert: Issued | None, alpn: Any = None
) -> TLSClientConfiguration:
    kw: dict[str, Any] = {}
    if version is not None:
        kw = {"lowest_supported_version": version, "highest_supported_version": version}
    return TLSClientConfiguration(
        trust_store=ca.trust_store(),
        certificate_chain=client_cert.signing_chain() if client_cert else None,
        inner_protocols=alpn,
        **kw,
    )


def unitls_server_cfg(
    ca: CA, server_cert: Issued, require_client_cert: bool, alpn: Any = None
) -> TLSServerConfiguration:
    return TLSServerConfiguration(
        certificate_chain=[server_cert.signing_chain()],
        trust_store=ca.trust_store() if require_client_cert else None,
        inner_protocols=alpn,
    )


def check_exchange(pump: Any, a: Any, b: Any) -> None:
    payload = bytes(range(256)) * 300
    assert pump.send(a, b, payload) == payload
    assert pump.send(b, a, b"reply") == b"reply"


# -- in memory ---------------------------------------------------------------------------------

MATRIX = [
    pytest.param(v, m, id=f"{VERSIONS[v][1]}-{'mtls' if m else 'plain'}")
    for v in (TLSVersion.TLSv1_2, TLSVersion.TLSv1_3)
    for m in (False, True)
]


@pytest.mark.parametrize(("version", "mtls"), MATRIX)
def test_buffer_client_vs_stdlib_server(
    engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
    pump: Any,
    tmp_path: Path,
    version: TLSVersion,
    mtls: bool,
) -> None:
    sctx = stdlib_context(True, tmp_path, ca, server_cert, require_client_cert=mtls)
    server = StdlibPeer(sctx, server_side=True)
    cfg = unitls_client_cfg(ca, version, client_cert if mtls else None)
    client = engine.client_context(cfg).create_buffer("localhost")
    pump.handshake(client, server)
    assert client.negotiated_tls_version is version
    assert server.obj.version() == VERSIONS[version][1]
    assert client.getpeercert() == server_cert.cert_der
    assert server.getpeercert() == (client_cert.cert_der if mtls else None)
    assert client.cipher() is not None
    check_exchange(pump, client, server)


@pytest.mark.parametrize(("version", "mtls"), MATRIX)
def test_buffer_stdlib_client_vs_server(
    engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
    pump: Any,
    tmp_path: Path,
    version: TLSVersion,
    mtls: bool,
) -> None:
    cctx = stdlib_context(False, tmp_path, ca, client_cert if mtls else None, version)
    client = StdlibPeer(cctx, server_side=False, hostname="localhost")
    server = engine.server_context(unitls_server_cfg(ca, server_cert, mtls)).create_buffer()
    pump.handshake(client, server)
    assert server.negotiated_tls_version is version
    assert client.obj.version() == VERSIONS[version][1]
    assert client.getpeercert() == server_cert.cert_der
    assert server.getpeercert() == (client_cert.cert_der if mtls else None)
    check_exchange(pump, server, client)


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3])
def test_buffer_cipher_matches_stdlib(
    engine: Impl, ca: CA, server_cert: Issued, pump: Any, tmp_path: Path, version: TLSVersion
) -> None:
    server = StdlibPeer(stdlib_context(True, tmp_path, ca, server_cert), server_side=True)
    client = engine.client_context(unitls_client_cfg(ca, version, None)).create_buffer("localhost")
    pump.handshake(client, server)
    info = server.obj.cipher()
    assert info is not None
    names = {c["name"]: c["id"] & 0xFFFF for c in ssl.create_default_context().get_ciphers()}
    if info[0] in names:
        assert client.cipher() == names[info[0]]


def test_buffer_alpn_with_stdlib(
    engine: Impl, ca: CA, server_cert: Issued, pump: Any, tmp_path: Path
) -> None:
    # unitls client, stdlib server.
    sctx = stdlib_context(True, tmp_path, ca, server_cert, alpn=["http/1.1", "h2"])
    server = StdlibPeer(sctx, server_side=True)
    cfg = unitls_client_cfg(ca, None, None, alpn=[b"custom/1", NextProtocol.HTTP1])
    client = engine.client_context(cfg).create_buffer("localhost")
    pump.handshake(client, server)
    assert client.negotiated_protocol() is NextProtocol.HTTP1
    assert server.obj.selected_alpn_protocol() == "http/1.1"
    # stdlib client, unitls server.
    cctx = stdlib_context(False, tmp_path, ca, None, alpn=["zz/1", "h2"])
    client2 = StdlibPeer(cctx, server_side=False, hostname="localhost")
    scfg = unitls_server_cfg(ca, server_cert, False, alpn=[b"yy/2", NextProtocol.H2])
    server2 = engine.server_context(scfg).create_buffer()
    pump.handshake(client2, server2)
    assert server2.negotiated_protocol() is NextProtocol.H2
    assert client2.obj.selected_alpn_protocol() == "h2"


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3])
def test_buffer_missing_client_cert_with_stdlib(
    engine: Impl, ca: CA, server_cert: Issued, pump: Any, tmp_path: Path, version: TLSVersion
) -> None:
    def fails(client: Any, server: Any) -> None:
        with pytest.raises(unitls.TLSError):
            pump.handshake(client, server)
            pump.send(client, server, b"x")
            pump.send(server, client, b"y")
            pump.send(client, server, b"z")

    # unitls client without a certificate, stdlib server requiring one.
    sctx = stdlib_context(True, tmp_path, ca, server_cert, require_client_cert=True)
    client = engine.client_context(unitls_client_cfg(ca, version, None)).create_buffer("localhost")
    fails(client, StdlibPeer(sctx, server_side=True))
    # stdlib client without a certificate, unitls server requiring one.
    cctx = stdlib_context(False, tmp_path, ca, None, version)
    server = engine.server_context(unitls_server_cfg(ca, server_cert, True)).create_buffer()
    fails(StdlibPeer(cctx, server_side=False, hostname="localhost"), server)


def test_buffer_untrusted_stdlib_server(engine: Impl, ca: CA, pump: Any, tmp_path: Path) -> None:
    stranger = CA.create("stranger").issue("localhost")
    server = StdlibPeer(stdlib_context(True, tmp_path, ca, stranger), server_side=True)
    client = engine.client_context(unitls_client_cfg(ca, None, None)).create_buffer("localhost")
    with pytest.raises(unitls.CertificateVerificationError) as info:
        pump.handshake(client, server)
    assert info.value.reason


def test_buffer_close_with_stdlib(
    engine: Impl, ca: CA, server_cert: Issued, pump: Any, tmp_path: Path
) -> None:
    # The stdlib server's close_notify ends the stream cleanly...
    server = StdlibPeer(stdlib_context(True, tmp_path, ca, server_cert), server_side=True)
    client = engine.client_context(unitls_client_cfg(ca, None, None)).create_buffer("localhost")
    pump.handshake(client, server)
    server.write(b"bye")
    server.shutdown()
    pump.transfer(server, client)
    assert pump.drain(client) == b"bye"
    assert client.read(10) == b""
    # ... and unitls' close_notify reaches the stdlib as a clean close.
    client.shutdown()
    pump.transfer(client, server)
    assert server.read(10) == b""
    # A stdlib peer that just disappears is a ragged EOF.
    server = StdlibPeer(stdlib_context(True, tmp_path, ca, server_cert), server_side=True)
    client = engine.client_context(unitls_client_cfg(ca, None, None)).create_buffer("localhost")
    pump.handshake(client, server)
    client.process_incoming(b"")
    with pytest.raises(unitls.RaggedEOF):
        client.read(10)


# -- over TCP ----------------------------------------------------------------------------------


def _run_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def wrapper() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wrapper, daemon=True)
    t.start()
    return t, errors


def _recv_exactly(sock: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.mark.parametrize(("version", "mtls"), MATRIX)
def test_socket_client_vs_stdlib_server(
    engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
    tmp_path: Path,
    version: TLSVersion,
    mtls: bool,
) -> None:
    sctx = stdlib_context(True, tmp_path, ca, server_cert, require_client_cert=mtls)
    seen: dict[str, Any] = {}
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            with sctx.wrap_socket(conn, server_side=True) as tls:
                seen["version"] = tls.version()
                seen["peer"] = tls.getpeercert(binary_form=True)
                data = _recv_exactly(tls, len(PAYLOAD))
                tls.sendall(data[::-1])
                tls.unwrap()

        t, errors = _run_thread(serve)
        cfg = unitls_client_cfg(ca, version, client_cert if mtls else None)
        with engine.client_context(cfg).connect((HOST, port)) as sock:
            sock.settimeout(TIMEOUT)
            assert sock.negotiated_tls_version is version
            assert sock.getpeercert() == server_cert.cert_der
            sock.sendall(PAYLOAD)
            assert _recv_exactly(sock, len(PAYLOAD)) == PAYLOAD[::-1]
            assert sock.recv(10) == b""  # the stdlib's close_notify
        t.join(TIMEOUT)
    assert not errors, errors
    assert seen["version"] == VERSIONS[version][1]
    assert seen["peer"] == (client_cert.cert_der if mtls else None)


@pytest.mark.parametrize(("version", "mtls"), MATRIX)
def test_socket_stdlib_client_vs_server(
    engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
    tmp_path: Path,
    version: TLSVersion,
    mtls: bool,
) -> None:
    listener = engine.server_context(unitls_server_cfg(ca, server_cert, mtls)).connect((HOST, 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    seen: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                seen["version"] = conn.negotiated_tls_version
                seen["peer"] = conn.getpeercert()
                data = _recv_exactly(conn, len(PAYLOAD))
                conn.sendall(data[::-1])
        finally:
            listener.close()

    t, errors = _run_thread(serve)
    cctx = stdlib_context(False, tmp_path, ca, client_cert if mtls else None, version)
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as raw:
        with cctx.wrap_socket(raw, server_hostname=HOST) as tls:
            assert tls.version() == VERSIONS[version][1]
            assert tls.getpeercert(binary_form=True) == server_cert.cert_der
            tls.sendall(PAYLOAD)
            assert _recv_exactly(tls, len(PAYLOAD)) == PAYLOAD[::-1]
    t.join(TIMEOUT)
    assert not errors, errors
    assert seen["version"] is version
    assert seen["peer"] == (client_cert.cert_der if mtls else None)


def test_socket_alpn_with_stdlib(engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path) -> None:
    listener = engine.server_context(
        unitls_server_cfg(ca, server_cert, False, alpn=[NextProtocol.H2, NextProtocol.HTTP1])
    ).connect((HOST, 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    seen: list[Any] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                seen.append(conn.negotiated_protocol())
                conn.settimeout(TIMEOUT)
                conn.sendall(_recv_exactly(conn, 2))
        finally:
            listener.close()

    t, errors = _run_thread(serve)
    cctx = stdlib_context(False, tmp_path, ca, None, alpn=["http/1.1"])
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as raw:
        with cctx.wrap_socket(raw, server_hostname=HOST) as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
            tls.sendall(b"hi")
            assert _recv_exactly(tls, 2) == b"hi"
    t.join(TIMEOUT)
    assert not errors, errors
    assert seen == [NextProtocol.HTTP1]


def test_socket_stdlib_client_rejects_unitls_server(
    engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    # The stdlib client does not trust the server: the unitls server's accept() fails cleanly.
    listener = engine.server_context(unitls_server_cfg(ca, server_cert, False)).connect((HOST, 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    outcome: list[BaseException | str] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.close(force=True)
            outcome.append("accepted")
        except unitls.TLSError as exc:
            outcome.append(exc)
        finally:
            listener.close()

    t, errors = _run_thread(serve)
    other = CA.create("other root")
    cctx = stdlib_context(False, tmp_path, other, None)
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            cctx.wrap_socket(raw, server_hostname=HOST)
    t.join(TIMEOUT)
    assert not errors, errors
    assert len(outcome) == 1 and isinstance(outcome[0], unitls.TLSError), outcome


# -- a server with an RSA and an ECDSA chain for the same names ---------------------------------


def _set_sigalgs(ctx: ssl.SSLContext, sigalgs: str) -> None:
    """``SSL_CTX_set1_sigalgs_list`` (Python 3.11's ssl module has no call for it), through the
    ``SSL_CTX *`` CPython keeps after the object header, checked against ``ctx.options``."""
    import ctypes

    lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
    ctrl, get_options = lib.SSL_CTX_ctrl, lib.SSL_CTX_get_options
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    get_options.argtypes = [ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    assert ptr and get_options(ptr) == ctx.options
    assert ctrl(ptr, 98, 0, ctypes.create_string_buffer(sigalgs.encode())) == 1  # SET_SIGALGS_LIST


DUAL = [
    pytest.param(TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", None, "ec", id="1.2-ecdsa"),
    pytest.param(TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256", None, "rsa", id="1.2-rsa"),
    pytest.param(TLSVersion.TLSv1_3, None, "ECDSA+SHA256", "ec", id="1.3-ecdsa"),
    pytest.param(TLSVersion.TLSv1_3, None, "rsa_pss_rsae_sha256", "rsa", id="1.3-rsa"),
]


@pytest.mark.parametrize("rsa_first", [False, True], ids=["ecdsa-first", "rsa-first"])
@pytest.mark.parametrize(("version", "ciphers", "sigalgs", "expected"), DUAL)
def test_server_picks_the_key_type_the_client_can_use(
    engine: Impl,
    ca: CA,
    pump: Any,
    version: TLSVersion,
    ciphers: str | None,
    sigalgs: str | None,
    expected: str,
    rsa_first: bool,
) -> None:
    """Like OpenSSL with one certificate per key type: a client offering only ECDSA (or only
    RSA) signatures or suites gets the chain with that key, whatever the configured order."""
    leaves = {kind: ca.issue("localhost", "127.0.0.1", key_type=kind) for kind in ("ec", "rsa")}
    order = ["rsa", "ec"] if rsa_first else ["ec", "rsa"]
    config = TLSServerConfiguration(certificate_chain=[leaves[k].signing_chain() for k in order])
    server = engine.server_context(config).create_buffer()
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(cadata=ca.cert_pem.decode())
    cctx.minimum_version = cctx.maximum_version = VERSIONS[version][0]
    if ciphers:
        cctx.set_ciphers(ciphers)
    if sigalgs:
        _set_sigalgs(cctx, sigalgs)
    client = StdlibPeer(cctx, server_side=False, hostname="localhost")
    pump.handshake(client, server)
    assert client.getpeercert() == leaves[expected].cert_der
    check_exchange(pump, server, client)
