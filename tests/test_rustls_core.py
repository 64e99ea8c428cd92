"""Tests of the Rust core (``unitls._native``) on its own, in memory.

rustls is paired with itself and with the stdlib ``ssl`` module (``SSLObject`` + ``MemoryBIO``)
as peer. Certificates are made here with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from unitls import _native
from unitls._errors import (
    CertificateVerificationError,
    ConfigurationError,
    HandshakeClosedError,
    ProtocolError,
    RaggedEOF,
    TLSError,
    WantReadError,
)

TLS12 = 0x0303
TLS13 = 0x0304
BOTH = [TLS12, TLS13]

# ---------------------------------------------------------------------------------------------
# certificates


@dataclass
class Cert:
    cert: x509.Certificate
    key: Any

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self, fmt: str = "pkcs8") -> bytes:
        f = {
            "pkcs8": serialization.PrivateFormat.PKCS8,
            "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
        }[fmt]
        return self.key.private_bytes(serialization.Encoding.PEM, f, serialization.NoEncryption())

    def key_der(self, fmt: str = "pkcs8") -> bytes:
        f = {
            "pkcs8": serialization.PrivateFormat.PKCS8,
            "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
        }[fmt]
        return self.key.private_bytes(serialization.Encoding.DER, f, serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "core test CA") -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Cert(cert, key)


def issue(
    ca: Cert,
    *names: str,
    key_type: str = "ec",
    client: bool = False,
    expired: bool = False,
) -> Cert:
    if key_type == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        nb, na = now - datetime.timedelta(days=10), now - datetime.timedelta(days=5)
    else:
        nb, na = now - datetime.timedelta(days=1), now + datetime.timedelta(days=10)
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0] if names else "client"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Cert(b.sign(ca.key, hashes.SHA256()), key)


@pytest.fixture(scope="module")
def ca() -> Cert:
    return make_ca()


@pytest.fixture(scope="module")
def server_cert(ca: Cert) -> Cert:
    return issue(ca, "localhost", "*.example.com", "127.0.0.1", "::1")


@pytest.fixture(scope="module")
def other_cert(ca: Cert) -> Cert:
    return issue(ca, "other.test")


@pytest.fixture(scope="module")
def client_cert(ca: Cert) -> Cert:
    return issue(ca, "client.test", client=True)


# ---------------------------------------------------------------------------------------------
# configuration helpers


def client_config(ca: Cert | None, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        ca_certs=[ca.pem] if ca is not None else None,
        system_roots=False,
        client_chain=None,
        client_key=None,
        cipher_suites=None,
        versions=BOTH,
        alpn=[],
    )
    args.update(kw)
    return _native.RustlsClientConfig(**args)


def server_config(cert: Cert, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        chains=[([cert.pem], cert.key_pem())],
        client_ca_certs=None,
        require_client_cert=False,
        cipher_suites=None,
        versions=BOTH,
        alpn=[],
    )
    args.update(kw)
    return _native.RustlsServerConfig(**args)


# ---------------------------------------------------------------------------------------------
# peers and the in-memory pump


class RustlsPeer:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def handshake(self) -> bool:
        try:
            self.conn.do_handshake()
        except WantReadError:
            return False
        return True

    def take(self) -> bytes:
        return bytes(self.conn.process_outgoing(-1))

    def give(self, data: bytes) -> None:
        self.conn.process_incoming(data)

    def write(self, data: bytes) -> None:
        assert self.conn.write(data) == len(data)

    def read_some(self) -> bytes:
        try:
            return bytes(self.conn.read(1 << 20))
        except WantReadError:
            return b""


class SslPeer:
    def __init__(self, ctx: ssl.SSLContext, server_side: bool, hostname: str | None = None):
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.inc, self.out, server_side=server_side, server_hostname=hostname
        )

    def handshake(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def take(self) -> bytes:
        return self.out.read()

    def give(self, data: bytes) -> None:
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()

    def write(self, data: bytes) -> None:
        self.obj.write(data)

    def read_some(self) -> bytes:
        try:
            return self.obj.read(1 << 20)
        except ssl.SSLWantReadError:
            return b""


def handshake(client: Any, server: Any, max_rounds: int = 20) -> None:
    """Run the handshake in memory; exceptions of either side propagate."""
    c_done = s_done = False
    for _ in range(max_rounds):
        c_done = client.handshake()
        data = client.take()
        if data:
            server.give(data)
        s_done = server.handshake()
        data = server.take()
        if data:
            client.give(data)
        if c_done and s_done:
            # flush the last flight (TLS 1.3 client Finished, tickets)
            data = client.take()
            if data:
                server.give(data)
            return
    raise AssertionError("handshake did not finish")


def transfer(src: Any, dst: Any, payload: bytes) -> bytes:
    """Send payload from src to dst, reading as it goes; return what dst read."""
    src.write(payload)
    got = bytearray()
    wire = src.take()
    step = 7000
    for i in range(0, len(wire), step):
        dst.give(wire[i : i + step])
        got += dst.read_some()
    while len(got) < len(payload):
        more = dst.read_some()
        if not more:
            break
        got += more
    return bytes(got)


def rustls_pair(ca: Cert, cert: Cert, name: str = "localhost", ckw: Any = None, skw: Any = None):
    c = RustlsPeer(client_config(ca, **(ckw or {})).new_connection(name))
    s = RustlsPeer(server_config(cert, **(skw or {})).new_connection())
    return c, s


def ssl_server_ctx(tmp_path: Path, cert: Cert, **kw: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cf, kf = tmp_path / "cert.pem", tmp_path / "key.pem"
    cf.write_bytes(cert.pem)
    kf.write_bytes(cert.key_pem())
    ctx.load_cert_chain(cf, kf)
    if "client_ca" in kw:
        ctx.load_verify_locations(cadata=kw["client_ca"].pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
    if "alpn" in kw:
        ctx.set_alpn_protocols(kw["alpn"])
    if "version" in kw:
        ctx.minimum_version = ctx.maximum_version = kw["version"]
    return ctx


def ssl_client_ctx(tmp_path: Path, ca: Cert, **kw: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.pem.decode())
    if "client" in kw:
        cf, kf = tmp_path / "ccert.pem", tmp_path / "ckey.pem"
        cf.write_bytes(kw["client"].pem)
        kf.write_bytes(kw["client"].key_pem())
        ctx.load_cert_chain(cf, kf)
    if "alpn" in kw:
        ctx.set_alpn_protocols(kw["alpn"])
    if "version" in kw:
        ctx.minimum_version = ctx.maximum_version = kw["version"]
    return ctx


# ---------------------------------------------------------------------------------------------
# module


def test_module_attributes() -> None:
    lock = Path(__file__).resolve().parent.parent / "rust" / "Cargo.lock"
    if lock.exists():
        m = re.search(r'name = "rustls"\nversion = "([^"]+)"', lock.read_text())
        assert m and m.group(1) == _native.RUSTLS_VERSION
    assert re.fullmatch(r"0\.23\.\d+", _native.RUSTLS_VERSION)
    suites = _native.supported_cipher_suites()
    assert {0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F} <= set(suites)
    assert not {0x1304, 0x1305} & set(suites)


# ---------------------------------------------------------------------------------------------
# rustls <-> rustls


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_rustls_pair_handshake_and_info(ca: Cert, server_cert: Cert, version: int) -> None:
    c, s = rustls_pair(
        ca,
        server_cert,
        ckw=dict(versions=[version], alpn=[b"h2", b"http/1.1"]),
        skw=dict(alpn=[b"http/1.1"]),
    )
    assert not c.conn.handshake_complete()
    assert c.conn.cipher_suite() is None
    assert c.conn.protocol_version() is None
    assert c.conn.peer_certificate() is None
    assert c.conn.peer_chain() == []
    handshake(c, s)
    for side in (c.conn, s.conn):
        assert side.handshake_complete()
        assert side.protocol_version() == version
        assert side.alpn_protocol() == b"http/1.1"
        assert side.cipher_suite() in _native.supported_cipher_suites()
    assert c.conn.cipher_suite() == s.conn.cipher_suite()
    assert c.conn.peer_certificate() == server_cert.der
    assert c.conn.peer_chain() == [server_cert.der]
    assert s.conn.peer_certificate() is None
    assert s.conn.server_name() == "localhost"
    assert c.conn.server_name() is None
    assert transfer(c, s, b"hello") == b"hello"
    assert transfer(s, c, b"world") == b"world"


def test_bulk_both_directions_and_backpressure(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    payload = os.urandom(3 << 20)
    assert transfer(c, s, payload) == payload
    assert transfer(s, c, payload) == payload
    # Without reading, rustls stops taking ciphertext: the binding queues it.
    c.write(os.urandom(200_000))
    wire = c.take()
    s.give(wire)
    assert 0 < s.conn.incoming_bytes_buffered() < len(wire)
    got = bytearray()
    while True:
        try:
            chunk = s.conn.read(65536)
        except WantReadError:
            break
        assert chunk
        got += chunk
    assert len(got) == 200_000
    assert s.conn.incoming_bytes_buffered() == 0


def test_incoming_limit(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    c.write(os.urandom(3 << 20))
    wire = c.take()
    step = 256 * 1024
    raised = False
    for i in range(0, len(wire), step):
        before = s.conn.incoming_bytes_buffered()
        try:
            s.give(wire[i : i + step])
        except WantReadError:
            assert before > 1 << 20
            assert s.conn.incoming_bytes_buffered() == before  # stored nothing
            raised = True
            break
    assert raised


def test_read_into(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    c.write(b"abcdefghij")
    s.give(c.take())
    buf = bytearray(4)
    assert s.conn.read_into(buf, 4) == 4
    assert buf == b"abcd"
    mv = memoryview(bytearray(100))
    n = s.conn.read_into(mv[10:], -1)
    assert n == 6 and bytes(mv[10:16]) == b"efghij"
    with pytest.raises(WantReadError):
        s.conn.read_into(bytearray(10), 10)
    with pytest.raises(BufferError):
        s.conn.read_into(b"readonly", 3)


def test_write_accepts_buffers(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    assert c.conn.write(bytearray(b"ab")) == 2
    assert c.conn.write(memoryview(b"xcdx")[1:3]) == 2
    assert c.conn.write(b"") == 0
    s.give(c.take())
    assert s.conn.read(100) == b"abcd"


def test_before_handshake_want_read(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    with pytest.raises(WantReadError):
        c.conn.write(b"early")
    hello = c.take()
    assert hello[:1] == b"\x16"  # a handshake record: the ClientHello
    with pytest.raises(WantReadError):
        s.conn.read(10)
    s.give(hello)
    with pytest.raises(WantReadError):
        s.conn.do_handshake()
    assert s.conn.outgoing_bytes_buffered() > 0
    handshake(c, s)
    assert transfer(c, s, b"x") == b"x"


def test_process_outgoing_amt(ca: Cert, server_cert: Cert) -> None:
    c, _ = rustls_pair(ca, server_cert)
    total = c.conn.outgoing_bytes_buffered()
    assert total > 10
    first = c.conn.process_outgoing(10)
    assert len(first) == 10
    assert c.conn.outgoing_bytes_buffered() == total - 10
    rest = c.conn.process_outgoing(-1)
    assert len(rest) == total - 10
    assert c.conn.process_outgoing(-1) == b""


def test_close_notify_and_shutdown(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    c.write(b"last words")
    c.conn.shutdown()
    c.conn.shutdown()  # idempotent
    with pytest.raises(TLSError, match="shut down"):
        c.conn.write(b"more")
    s.give(c.take())
    assert s.conn.read(100) == b"last words"
    assert s.conn.read(100) == b""
    assert s.conn.close_notify_received()
    assert s.conn.read(100) == b""
    # the server may still answer (half close), then close too
    s.write(b"bye")
    s.conn.shutdown()
    c.give(s.take())
    assert c.conn.read(100) == b"bye"
    assert c.conn.read(100) == b""
    assert c.conn.close_notify_received()


def test_ragged_eof(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    c.write(b"data")
    s.give(c.take())
    s.give(b"")
    assert s.conn.read(100) == b"data"
    with pytest.raises(RaggedEOF):
        s.conn.read(100)
    assert not s.conn.close_notify_received()


def test_truncated_record_then_eof(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    c.write(b"x" * 1000)
    wire = c.take()
    s.give(wire[:-10])
    with pytest.raises(WantReadError):
        s.conn.read(100)
    s.give(b"")
    with pytest.raises(RaggedEOF):
        s.conn.read(100)


def test_eof_during_handshake(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    s.give(c.take())
    s.conn.process_outgoing(-1)
    with pytest.raises(WantReadError):
        s.conn.do_handshake()
    s.give(b"")
    with pytest.raises(HandshakeClosedError):
        s.conn.do_handshake()
    with pytest.raises(HandshakeClosedError):
        s.conn.read(10)
    # truncated server flight, then EOF, at the client
    c2, s2 = rustls_pair(ca, server_cert)
    s2.give(c2.take())
    s2.handshake()
    flight = s2.take()
    c2.give(flight[: len(flight) // 2])
    c2.give(b"")
    with pytest.raises(HandshakeClosedError):
        c2.conn.do_handshake()


def test_garbage_is_protocol_error_and_sticky(ca: Cert, server_cert: Cert) -> None:
    s = server_config(server_cert).new_connection()
    with pytest.raises(ProtocolError, match="speaking TLS"):
        s.process_incoming(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    alert = s.process_outgoing(-1)
    assert alert[:1] == b"\x15"  # an alert record for the peer
    with pytest.raises(ProtocolError):
        s.process_incoming(b"\x16\x03\x01")
    with pytest.raises(ProtocolError):
        s.do_handshake()
    with pytest.raises(ProtocolError):
        s.read(10)
    with pytest.raises(ProtocolError):
        s.write(b"x")


def test_corrupt_record_after_handshake(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert)
    handshake(c, s)
    c.write(b"secret")
    wire = bytearray(c.take())
    wire[-3] ^= 0xFF
    with pytest.raises(ProtocolError):
        s.give(bytes(wire))
    alert = s.conn.process_outgoing(-1)  # (tickets and) the encrypted bad_record_mac alert
    assert alert
    with pytest.raises(ProtocolError, match="bad_record_mac"):
        c.give(alert)


@pytest.mark.parametrize("side", ["client", "server"])
def test_random_garbage_never_panics(ca: Cert, server_cert: Cert, side: str) -> None:
    rng = random.Random(1234)
    ccfg = client_config(ca)
    scfg = server_config(server_cert)
    prefixes = [
        b"",
        b"\x16\x03\x01",
        b"\x16\x03\x03\x00\x10",
        b"\x17\x03\x03",
        b"\x15\x03\x03\x00\x02",
    ]
    for i in range(300):
        conn = ccfg.new_connection("localhost") if side == "client" else scfg.new_connection()
        conn.process_outgoing(-1)
        data = rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 600))
        try:
            for j in range(0, len(data), 1 + i % 50):
                conn.process_incoming(data[j : j + 1 + i % 50])
            conn.process_incoming(b"")
            conn.do_handshake()
        except (ProtocolError, HandshakeClosedError, WantReadError, CertificateVerificationError):
            pass
        conn.process_outgoing(-1)


def test_wrong_peer_bytes_from_handshake(ca: Cert, server_cert: Cert) -> None:
    # a ClientHello fed to a client
    c1, _ = rustls_pair(ca, server_cert)
    c2, _ = rustls_pair(ca, server_cert)
    with pytest.raises(ProtocolError):
        c1.give(c2.take())
        c1.conn.do_handshake()


# ---------------------------------------------------------------------------------------------
# cipher suites and versions


@pytest.mark.parametrize(
    "suite,version", [(0x1301, TLS13), (0x1303, TLS13), (0xC02B, TLS12), (0xCCA9, TLS12)]
)
def test_cipher_suite_selection(ca: Cert, server_cert: Cert, suite: int, version: int) -> None:
    c, s = rustls_pair(ca, server_cert, ckw=dict(cipher_suites=[suite, 0x1304]))
    handshake(c, s)
    assert c.conn.cipher_suite() == suite == s.conn.cipher_suite()
    assert c.conn.protocol_version() == version


def test_ccm_only_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CCM") as ei:
        client_config(None, verify_certificates=False, cipher_suites=[0x1304, 0x1305, 0xC0AC])
    assert "0x1304" in str(ei.value)


def test_suites_cannot_serve_versions(ca: Cert) -> None:
    with pytest.raises(ConfigurationError, match=r"TLS 1\.3"):
        client_config(ca, cipher_suites=[0xC02B, 0xC02F], versions=[TLS13])


@pytest.mark.parametrize("versions", [[], [0x0301], [TLS13, 0x0302]])
def test_bad_versions(ca: Cert, versions: list[int]) -> None:
    with pytest.raises(ConfigurationError):
        client_config(ca, versions=versions)


def test_version_mismatch_fails(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert, ckw=dict(versions=[TLS12]), skw=dict(versions=[TLS13]))
    with pytest.raises(ProtocolError):
        handshake(c, s)


# ---------------------------------------------------------------------------------------------
# configuration errors


def make_intermediate(root: Cert) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("core test intermediate"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=20))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    return Cert(cert, key)


def test_intermediate_chain(ca: Cert) -> None:
    inter = make_intermediate(ca)
    leaf = issue(inter, "localhost")
    # leaf and intermediate in one PEM item, and as separate DER items
    for certs in ([leaf.pem + inter.pem], [leaf.der, inter.der]):
        scfg = server_config(leaf, chains=[(certs, leaf.key_pem())])
        c = RustlsPeer(client_config(ca).new_connection("localhost"))
        s = RustlsPeer(scfg.new_connection())
        handshake(c, s)
        assert c.conn.peer_chain() == [leaf.der, inter.der]
    # without the intermediate the chain cannot be built
    scfg = server_config(leaf, chains=[([leaf.pem], leaf.key_pem())])
    c = RustlsPeer(client_config(ca).new_connection("localhost"))
    s = RustlsPeer(scfg.new_connection())
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        handshake(c, s)


def test_ca_cert_formats(ca: Cert, server_cert: Cert) -> None:
    other = make_ca("another")
    # a PEM blob with several certs, and a DER cert
    for ca_certs in ([other.pem + ca.pem], [ca.der], [other.der, ca.pem]):
        c = RustlsPeer(client_config(None, ca_certs=ca_certs).new_connection("localhost"))
        s = RustlsPeer(server_config(server_cert).new_connection())
        handshake(c, s)


@pytest.mark.parametrize(
    "blob",
    [
        b"-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\x30\x03\x02\x01\x01",
        b"",
    ],
)
def test_bad_ca_certs(blob: bytes) -> None:
    with pytest.raises(ConfigurationError):
        client_config(None, ca_certs=[blob])


def test_no_trust_anchors() -> None:
    with pytest.raises(ConfigurationError, match="trust anchors"):
        client_config(None)


def test_key_formats(ca: Cert) -> None:
    ec_cert = issue(ca, "localhost")
    rsa_cert = issue(ca, "localhost", key_type="rsa")
    for cert in (ec_cert, rsa_cert):
        for key in (
            cert.key_pem("pkcs8"),
            cert.key_pem("traditional"),  # SEC1 "EC PRIVATE KEY" / PKCS#1 "RSA PRIVATE KEY"
            cert.key_der("pkcs8"),
            cert.key_der("traditional"),
        ):
            cfg = server_config(cert, chains=[([cert.der], key)])
            c = RustlsPeer(client_config(ca).new_connection("localhost"))
            s = RustlsPeer(cfg.new_connection())
            handshake(c, s)


def test_chain_errors(ca: Cert, server_cert: Cert, other_cert: Cert) -> None:
    with pytest.raises(ConfigurationError, match="does not match"):
        server_config(server_cert, chains=[([server_cert.pem], other_cert.key_pem())])
    with pytest.raises(ConfigurationError, match="empty"):
        server_config(server_cert, chains=[([], server_cert.key_pem())])
    with pytest.raises(ConfigurationError):
        server_config(server_cert, chains=[])
    with pytest.raises(ConfigurationError, match="private key"):
        server_config(server_cert, chains=[([server_cert.pem], b"garbage")])
    with pytest.raises(ConfigurationError, match="no private key"):
        server_config(server_cert, chains=[([server_cert.pem], server_cert.pem)])
    with pytest.raises(ConfigurationError, match="leaf"):
        server_config(server_cert, chains=[([b"\x30\x00"], server_cert.key_pem())])
    with pytest.raises(ConfigurationError, match="does not match"):
        client_config(ca, client_chain=[server_cert.pem], client_key=other_cert.key_pem())
    with pytest.raises(ConfigurationError, match="client_key"):
        client_config(ca, client_chain=[server_cert.pem])
    with pytest.raises(ConfigurationError, match="client_ca_certs"):
        server_config(server_cert, require_client_cert=True)
    with pytest.raises(TypeError):
        client_config(None, ca_certs=["a str is not bytes"])


@pytest.mark.parametrize("name", ["", "bad name", "a..b", "-" * 300])
def test_bad_server_name(ca: Cert, name: str) -> None:
    with pytest.raises(ConfigurationError):
        client_config(ca).new_connection(name)


def test_bad_alpn(ca: Cert) -> None:
    with pytest.raises(ConfigurationError):
        client_config(ca, alpn=[b""])


# ---------------------------------------------------------------------------------------------
# certificate verification


def test_unknown_issuer(server_cert: Cert) -> None:
    stranger = make_ca("stranger")
    c, s = rustls_pair(stranger, server_cert)
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert "unknown issuer" in ei.value.reason
    # the alert reaches the server, which reports the rejection
    with pytest.raises(CertificateVerificationError) as es:
        s.give(c.take())
    assert es.value.reason.startswith("peer rejected our certificate: ")
    assert "unknown_ca" in es.value.reason


def test_hostname_mismatch(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert, name="wrong.test")
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert "not valid for name 'wrong.test'" in ei.value.reason
    assert "localhost" in ei.value.reason
    # wildcard and IP SANs match
    for name in ("a.example.com", "127.0.0.1", "::1"):
        c, s = rustls_pair(ca, server_cert, name=name)
        handshake(c, s)
    c, s = rustls_pair(ca, server_cert, name="a.b.example.com")
    with pytest.raises(CertificateVerificationError):
        handshake(c, s)


def test_verify_hostname_false(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(ca, server_cert, name="wrong.test", ckw=dict(verify_hostname=False))
    handshake(c, s)
    assert s.conn.server_name() == "wrong.test"  # SNI still sent
    stranger = make_ca("stranger")
    c, s = rustls_pair(stranger, server_cert, name="wrong.test", ckw=dict(verify_hostname=False))
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        handshake(c, s)


def test_verify_certificates_false(server_cert: Cert) -> None:
    c = RustlsPeer(client_config(None, verify_certificates=False).new_connection("whatever.test"))
    s = RustlsPeer(server_config(server_cert).new_connection())
    handshake(c, s)
    assert c.conn.peer_certificate() == server_cert.der


def test_expired(ca: Cert) -> None:
    old = issue(ca, "localhost", expired=True)
    c, s = rustls_pair(ca, old)
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert ei.value.reason == "certificate expired"
    with pytest.raises(CertificateVerificationError, match="certificate_expired"):
        s.give(c.take())


# ---------------------------------------------------------------------------------------------
# client certificates


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_client_auth(ca: Cert, server_cert: Cert, client_cert: Cert, version: int) -> None:
    c, s = rustls_pair(
        ca,
        server_cert,
        ckw=dict(
            client_chain=[client_cert.pem], client_key=client_cert.key_pem(), versions=[version]
        ),
        skw=dict(client_ca_certs=[ca.pem], require_client_cert=True),
    )
    handshake(c, s)
    assert s.conn.peer_certificate() == client_cert.der
    assert transfer(c, s, b"hi") == b"hi"


def test_client_auth_missing(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(
        ca, server_cert, skw=dict(client_ca_certs=[ca.pem], require_client_cert=True)
    )
    with pytest.raises(CertificateVerificationError) as es:
        handshake(c, s)
    assert "no certificate" in es.value.reason
    with pytest.raises(CertificateVerificationError, match="certificate_required"):
        c.give(s.take())
        c.conn.do_handshake()


def test_client_auth_optional(ca: Cert, server_cert: Cert) -> None:
    c, s = rustls_pair(
        ca, server_cert, skw=dict(client_ca_certs=[ca.pem], require_client_cert=False)
    )
    handshake(c, s)
    assert s.conn.peer_certificate() is None


def test_client_cert_untrusted(ca: Cert, server_cert: Cert) -> None:
    stranger = make_ca("stranger")
    bad_client = issue(stranger, "client.test", client=True)
    c, s = rustls_pair(
        ca,
        server_cert,
        ckw=dict(client_chain=[bad_client.pem], client_key=bad_client.key_pem()),
        skw=dict(client_ca_certs=[ca.pem], require_client_cert=True),
    )
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        handshake(c, s)


# ---------------------------------------------------------------------------------------------
# SNI


def test_sni_selects_chain(ca: Cert, server_cert: Cert, other_cert: Cert) -> None:
    scfg = server_config(
        server_cert,
        chains=[
            ([server_cert.pem], server_cert.key_pem()),
            ([other_cert.pem], other_cert.key_pem()),
        ],
    )
    cases = {
        "other.test": other_cert,
        "localhost": server_cert,
        "x.example.com": server_cert,
        "unknown.test": server_cert,  # unknown name -> default (first) chain
        "127.0.0.1": server_cert,  # no SNI for IPs -> default
    }
    for name, expected in cases.items():
        c = RustlsPeer(client_config(ca, verify_hostname=False).new_connection(name))
        s = RustlsPeer(scfg.new_connection())
        handshake(c, s)
        assert c.conn.peer_certificate() == expected.der, name


# ---------------------------------------------------------------------------------------------
# resumption


def test_session_tickets_off_and_resumption_off(ca: Cert, server_cert: Cert) -> None:
    ccfg = client_config(ca, resumption=False)
    scfg = server_config(server_cert, session_tickets=False)
    for _ in range(2):
        c = RustlsPeer(ccfg.new_connection("localhost"))
        s = RustlsPeer(scfg.new_connection())
        handshake(c, s)
        assert transfer(c, s, b"ping") == b"ping"
        # a full handshake every time: the server sends its certificate each time
        assert c.conn.peer_certificate() == server_cert.der


@pytest.mark.parametrize("resumption", [True, False])
def test_resumption_against_openssl(
    tmp_path: Path, ca: Cert, server_cert: Cert, resumption: bool
) -> None:
    sctx = ssl_server_ctx(tmp_path, server_cert)
    ccfg = client_config(ca, resumption=resumption)
    reused = []
    for _ in range(2):
        c = RustlsPeer(ccfg.new_connection("localhost"))
        s = SslPeer(sctx, server_side=True)
        handshake(c, s)
        # let the client take the NewSessionTicket messages (if not already delivered)
        tickets = s.take()
        if tickets:
            c.give(tickets)
            c.read_some()
        s.write(b"x")
        c.give(s.take())
        assert c.read_some() == b"x"
        reused.append(s.obj.session_reused)
    assert reused == [False, resumption]


# ---------------------------------------------------------------------------------------------
# against the stdlib ssl module (OpenSSL)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_rustls_client_openssl_server(
    tmp_path: Path, ca: Cert, server_cert: Cert, client_cert: Cert, version: ssl.TLSVersion
) -> None:
    sctx = ssl_server_ctx(
        tmp_path, server_cert, client_ca=ca, alpn=["h2", "http/1.1"], version=version
    )
    c = RustlsPeer(
        client_config(
            ca, client_chain=[client_cert.pem], client_key=client_cert.key_pem(), alpn=[b"http/1.1"]
        ).new_connection("localhost")
    )
    s = SslPeer(sctx, server_side=True)
    handshake(c, s)
    assert c.conn.protocol_version() == (TLS13 if version == ssl.TLSVersion.TLSv1_3 else TLS12)
    assert c.conn.alpn_protocol() == b"http/1.1"
    assert s.obj.selected_alpn_protocol() == "http/1.1"
    assert s.obj.getpeercert(binary_form=True) == client_cert.der
    payload = os.urandom(300_000)
    assert transfer(c, s, payload) == payload
    assert transfer(s, c, payload) == payload
    # clean shutdown seen by OpenSSL (SSLObject.read returns b"" on close_notify)
    c.conn.shutdown()
    s.give(c.take())
    assert s.obj.read(10) == b""


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_openssl_client_rustls_server(
    tmp_path: Path, ca: Cert, server_cert: Cert, client_cert: Cert, version: ssl.TLSVersion
) -> None:
    cctx = ssl_client_ctx(tmp_path, ca, client=client_cert, alpn=["h2"], version=version)
    c = SslPeer(cctx, server_side=False, hostname="localhost")
    s = RustlsPeer(
        server_config(
            server_cert, client_ca_certs=[ca.pem], require_client_cert=True, alpn=[b"h2"]
        ).new_connection()
    )
    handshake(c, s)
    assert s.conn.server_name() == "localhost"
    assert s.conn.alpn_protocol() == b"h2"
    assert s.conn.peer_certificate() == client_cert.der
    assert c.obj.version() == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
    payload = os.urandom(200_000)
    assert transfer(c, s, payload) == payload
    assert transfer(s, c, payload) == payload
    # OpenSSL's close_notify
    try:
        c.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    s.give(c.take())
    assert s.conn.read(10) == b""
    assert s.conn.close_notify_received()


def test_openssl_server_rejects_unknown_client_cert(
    tmp_path: Path, ca: Cert, server_cert: Cert
) -> None:
    stranger = make_ca("stranger")
    bad_client = issue(stranger, "client.test", client=True)
    sctx = ssl_server_ctx(tmp_path, server_cert, client_ca=ca, version=ssl.TLSVersion.TLSv1_2)
    c = RustlsPeer(
        client_config(
            ca, client_chain=[bad_client.pem], client_key=bad_client.key_pem()
        ).new_connection("localhost")
    )
    s = SslPeer(sctx, server_side=True)
    with pytest.raises(ssl.SSLError):
        handshake(c, s)
    with pytest.raises(CertificateVerificationError, match="peer rejected our certificate"):
        c.give(s.take())
        c.conn.do_handshake()


def test_openssl_client_rejects_rustls_server(tmp_path: Path, server_cert: Cert) -> None:
    stranger = make_ca("stranger")
    cctx = ssl_client_ctx(tmp_path, stranger)
    c = SslPeer(cctx, server_side=False, hostname="localhost")
    s = RustlsPeer(server_config(server_cert).new_connection())
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(c, s)
    with pytest.raises(CertificateVerificationError, match="peer rejected our certificate"):
        s.give(c.take())
        s.conn.do_handshake()


def test_ragged_eof_against_openssl(tmp_path: Path, ca: Cert, server_cert: Cert) -> None:
    sctx = ssl_server_ctx(tmp_path, server_cert)
    c = RustlsPeer(client_config(ca).new_connection("localhost"))
    s = SslPeer(sctx, server_side=True)
    handshake(c, s)
    s.write(b"tail")
    c.give(s.take())
    c.give(b"")
    assert c.conn.read(100) == b"tail"
    with pytest.raises(RaggedEOF):
        c.conn.read(100)


# ---------------------------------------------------------------------------------------------
# threads: the GIL is released, and connections move between threads


def test_threads(ca: Cert, server_cert: Cert) -> None:
    ccfg, scfg = client_config(ca), server_config(server_cert)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                c = RustlsPeer(ccfg.new_connection("localhost"))
                s = RustlsPeer(scfg.new_connection())
                handshake(c, s)
                payload = os.urandom(100_000)
                assert transfer(c, s, payload) == payload
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ---------------------------------------------------------------------------------------------
# system trust store and input types


def test_system_roots(ca: Cert, server_cert: Cert) -> None:
    try:
        cfg = client_config(None, system_roots=True)
    except ConfigurationError as e:  # a machine without a system store
        assert "system" in str(e)
    else:
        c = RustlsPeer(cfg.new_connection("localhost"))
        s = RustlsPeer(server_config(server_cert).new_connection())
        with pytest.raises(CertificateVerificationError, match="unknown issuer"):
            handshake(c, s)
    # system roots plus our own CA
    c = RustlsPeer(client_config(ca, system_roots=True).new_connection("localhost"))
    s = RustlsPeer(server_config(server_cert).new_connection())
    handshake(c, s)


def test_input_types(ca: Cert) -> None:
    conn = client_config(ca).new_connection("localhost")
    with pytest.raises(TypeError):
        conn.process_incoming("text")
    with pytest.raises(TypeError):
        conn.write("text")
    with pytest.raises(ValueError):
        conn.read(-1)
    with pytest.raises(BufferError):
        conn.process_incoming(memoryview(b"abcdef")[::2])
