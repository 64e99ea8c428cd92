"""Tests of the Rust core (``unitls._native``) on its own, in memory.

rustls is paired with itself and with the stdlib ``ssl`` module (``SSLObject`` + ``MemoryBIO``)
as peer, through the test kit's pump, stdlib peer and certificate authority (``kit.py``).
"""

from __future__ import annotations

import datetime
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
from cryptography.hazmat.primitives import serialization
from kit import CA, BufferPump, Issued, StdlibPeer, stdlib_context

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

PUMP = BufferPump()

# ---------------------------------------------------------------------------------------------
# certificates (the kit's CA; conftest's ``ca`` and ``client_cert``)


@pytest.fixture(scope="module")
def core_cert(ca: CA) -> Issued:
    """A server certificate with a wildcard name besides localhost and the loopback IPs."""
    return ca.issue("localhost", "*.example.com", "127.0.0.1", "::1")


@pytest.fixture(scope="module")
def other_cert(ca: CA) -> Issued:
    return ca.issue("other.test")


def traditional(issued: Issued, encoding: str = "pem") -> bytes:
    """The key in the pre-PKCS#8 format: SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"."""
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM if encoding == "pem" else serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def expired(ca: CA, *names: str) -> Issued:
    now = datetime.datetime.now(datetime.UTC)
    return ca.issue(
        *names, not_before=now - datetime.timedelta(days=10), not_after=now - datetime.timedelta(5)
    )


# ---------------------------------------------------------------------------------------------
# configuration helpers


def client_config(ca: CA | Cert | None, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        ca_certs=[ca.cert_pem] if ca is not None else None,
        system_roots=False,
        client_chain=None,
        client_key=None,
        cipher_suites=None,
        versions=BOTH,
        alpn=[],
    )
    args.update(kw)
    return _native.RustlsClientConfig(**args)


def server_config(cert: Issued | Cert, **kw: Any) -> Any:
    issued = cert.issued() if isinstance(cert, Cert) else cert
    args: dict[str, Any] = dict(
        chains=[([issued.cert_pem], issued.key_pem)],
        client_ca_certs=None,
        require_client_cert=False,
        cipher_suites=None,
        versions=BOTH,
        alpn=[],
    )
    args.update(kw)
    return _native.RustlsServerConfig(**args)


# ---------------------------------------------------------------------------------------------
# peers: raw extension connections and the kit's stdlib peer, moved by the kit's pump


def step(conn: Any) -> bool:
    """One do_handshake; True once complete."""
    try:
        conn.do_handshake()
    except WantReadError:
        return False
    return True


def rustls_pair(
    ca: CA, cert: Issued, name: str = "localhost", ckw: Any = None, skw: Any = None
) -> tuple[Any, Any]:
    c = client_config(ca, **(ckw or {})).new_connection(name)
    s = server_config(cert, **(skw or {})).new_connection()
    return c, s


def ssl_server_ctx(tmp_path: Path, cert: Issued | Cert, **kw: Any) -> ssl.SSLContext:
    return stdlib_context(
        True,
        tmp_path,
        kw.get("client_ca"),
        cert.issued() if isinstance(cert, Cert) else cert,
        kw.get("version"),
        kw.get("alpn"),
        require_client_cert="client_ca" in kw,
    )


def ssl_client_ctx(tmp_path: Path, ca: CA | Cert, **kw: Any) -> ssl.SSLContext:
    client = kw.get("client")
    if isinstance(client, Cert):
        client = client.issued()
    return stdlib_context(False, tmp_path, ca, client, kw.get("version"), kw.get("alpn"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The earlier helper API of the Rust core tests, as adapters over the kit (test_nss_core uses
# it; new tests use the kit's CA, BufferPump and StdlibPeer directly).


@dataclass
class Cert:
    """A certificate with its private key, as ``cryptography`` objects."""

    cert: x509.Certificate
    key: Any

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    cert_pem = pem

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self, fmt: str = "pkcs8") -> bytes:
        return self._key(serialization.Encoding.PEM, fmt)

    def key_der(self, fmt: str = "pkcs8") -> bytes:
        return self._key(serialization.Encoding.DER, fmt)

    def _key(self, encoding: Any, fmt: str) -> bytes:
        form = {
            "pkcs8": serialization.PrivateFormat.PKCS8,
            "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
        }[fmt]
        data: bytes = self.key.private_bytes(encoding, form, serialization.NoEncryption())
        return data

    def issued(self) -> Issued:
        return Issued(self.pem, self.key_pem(), self.der, self.key_der())


def make_ca(cn: str = "core test CA") -> Cert:
    ca = CA.create(cn)
    return Cert(ca.cert, ca.key)


def issue(
    ca: Cert, *names: str, key_type: Any = "ec", client: bool = False, expired: bool = False
) -> Cert:
    now = datetime.datetime.now(datetime.UTC)
    dates: dict[str, Any] = {}
    if expired:
        dates = dict(not_before=now - datetime.timedelta(10), not_after=now - datetime.timedelta(5))
    issued = CA(ca.cert, ca.key).issue(
        *names, key_type=key_type, server=not client, client=client, **dates
    )
    return Cert(
        x509.load_pem_x509_certificate(issued.cert_pem),
        serialization.load_pem_private_key(issued.key_pem, password=None),
    )


class RustlsPeer:
    """A ``_native.Connection`` with the earlier peer methods."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def handshake(self) -> bool:
        return step(self.conn)

    def take(self) -> bytes:
        return bytes(self.conn.process_outgoing(-1))

    def give(self, data: bytes) -> None:
        self.conn.process_incoming(data)

    def write(self, data: bytes) -> None:
        assert self.conn.write(data) == len(data)

    def read_some(self) -> bytes:
        return PUMP.drain(self.conn, 1 << 20)


class SslPeer(RustlsPeer):
    """The kit's ``StdlibPeer`` with the earlier peer methods (``obj``: its ``SSLObject``)."""

    def __init__(self, ctx: ssl.SSLContext, server_side: bool, hostname: str | None = None):
        super().__init__(StdlibPeer(ctx, server_side, hostname))
        self.inc, self.out = self.conn.incoming, self.conn.outgoing

    @property
    def obj(self) -> Any:
        return self.conn.obj

    @obj.setter
    def obj(self, value: Any) -> None:  # a test may rewrap the BIOs (session resumption)
        self.conn.obj = value

    def handshake(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def write(self, data: bytes) -> None:
        self.obj.write(data)


def handshake(client: RustlsPeer, server: RustlsPeer) -> None:
    """Run the handshake in memory; exceptions of either side propagate (``ssl``'s as such)."""
    try:
        PUMP.handshake(client.conn, server.conn)
    except TLSError as exc:
        if isinstance(exc.__cause__, ssl.SSLError) and type(exc) is TLSError:
            raise exc.__cause__ from None  # the stdlib peer's own error
        raise


def transfer(src: RustlsPeer, dst: RustlsPeer, payload: bytes) -> bytes:
    """Send ``payload`` from ``src`` to ``dst`` in 7000-byte pieces; what ``dst`` read."""
    return PUMP.send(src.conn, dst.conn, payload, chunk=7000)


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
def test_rustls_pair_handshake_and_info(ca: CA, core_cert: Issued, version: int) -> None:
    c, s = rustls_pair(
        ca,
        core_cert,
        ckw=dict(versions=[version], alpn=[b"h2", b"http/1.1"]),
        skw=dict(alpn=[b"http/1.1"]),
    )
    assert not c.handshake_complete()
    assert c.cipher_suite() is None
    assert c.protocol_version() is None
    assert c.peer_certificate() is None
    assert c.peer_chain() == []
    PUMP.handshake(c, s)
    for side in (c, s):
        assert side.handshake_complete()
        assert side.protocol_version() == version
        assert side.alpn_protocol() == b"http/1.1"
        assert side.cipher_suite() in _native.supported_cipher_suites()
    assert c.cipher_suite() == s.cipher_suite()
    assert c.peer_certificate() == core_cert.cert_der
    assert c.peer_chain() == [core_cert.cert_der]
    assert s.peer_certificate() is None
    assert s.server_name() == "localhost"
    assert c.server_name() is None
    assert PUMP.send(c, s, b"hello") == b"hello"
    assert PUMP.send(s, c, b"world") == b"world"


def test_bulk_both_directions_and_backpressure(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    payload = os.urandom(3 << 20)
    assert PUMP.send(c, s, payload) == payload
    assert PUMP.send(s, c, payload) == payload
    # Without reading, rustls stops taking ciphertext: the binding queues it.
    c.write(os.urandom(200_000))
    wire = c.process_outgoing(-1)
    s.process_incoming(wire)
    assert 0 < s.incoming_bytes_buffered() < len(wire)
    got = bytearray()
    while True:
        try:
            chunk = s.read(65536)
        except WantReadError:
            break
        assert chunk
        got += chunk
    assert len(got) == 200_000
    assert s.incoming_bytes_buffered() == 0


def test_incoming_limit(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    c.write(os.urandom(3 << 20))
    wire = c.process_outgoing(-1)
    step = 256 * 1024
    raised = False
    for i in range(0, len(wire), step):
        before = s.incoming_bytes_buffered()
        try:
            s.process_incoming(wire[i : i + step])
        except WantReadError:
            assert before > 1 << 20
            assert s.incoming_bytes_buffered() == before  # stored nothing
            raised = True
            break
    assert raised


def test_read_into(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    c.write(b"abcdefghij")
    s.process_incoming(c.process_outgoing(-1))
    buf = bytearray(4)
    assert s.read_into(buf, 4) == 4
    assert buf == b"abcd"
    mv = memoryview(bytearray(100))
    n = s.read_into(mv[10:], -1)
    assert n == 6 and bytes(mv[10:16]) == b"efghij"
    with pytest.raises(WantReadError):
        s.read_into(bytearray(10), 10)
    with pytest.raises(BufferError):
        s.read_into(b"readonly", 3)


def test_write_accepts_buffers(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    assert c.write(bytearray(b"ab")) == 2
    assert c.write(memoryview(b"xcdx")[1:3]) == 2
    assert c.write(b"") == 0
    s.process_incoming(c.process_outgoing(-1))
    assert s.read(100) == b"abcd"


def test_before_handshake_want_read(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    with pytest.raises(WantReadError):
        c.write(b"early")
    hello = c.process_outgoing(-1)
    assert hello[:1] == b"\x16"  # a handshake record: the ClientHello
    with pytest.raises(WantReadError):
        s.read(10)
    s.process_incoming(hello)
    with pytest.raises(WantReadError):
        s.do_handshake()
    assert s.outgoing_bytes_buffered() > 0
    PUMP.handshake(c, s)
    assert PUMP.send(c, s, b"x") == b"x"


def test_process_outgoing_amt(ca: CA, core_cert: Issued) -> None:
    c, _ = rustls_pair(ca, core_cert)
    total = c.outgoing_bytes_buffered()
    assert total > 10
    first = c.process_outgoing(10)
    assert len(first) == 10
    assert c.outgoing_bytes_buffered() == total - 10
    rest = c.process_outgoing(-1)
    assert len(rest) == total - 10
    assert c.process_outgoing(-1) == b""


def test_close_notify_and_shutdown(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    c.write(b"last words")
    c.shutdown()
    c.shutdown()  # idempotent
    with pytest.raises(TLSError, match="shut down"):
        c.write(b"more")
    s.process_incoming(c.process_outgoing(-1))
    assert s.read(100) == b"last words"
    assert s.read(100) == b""
    assert s.close_notify_received()
    assert s.read(100) == b""
    # the server may still answer (half close), then close too
    s.write(b"bye")
    s.shutdown()
    c.process_incoming(s.process_outgoing(-1))
    assert c.read(100) == b"bye"
    assert c.read(100) == b""
    assert c.close_notify_received()


def test_ragged_eof(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    c.write(b"data")
    s.process_incoming(c.process_outgoing(-1))
    s.process_incoming(b"")
    assert s.read(100) == b"data"
    with pytest.raises(RaggedEOF):
        s.read(100)
    assert not s.close_notify_received()


def test_truncated_record_then_eof(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    c.write(b"x" * 1000)
    wire = c.process_outgoing(-1)
    s.process_incoming(wire[:-10])
    with pytest.raises(WantReadError):
        s.read(100)
    s.process_incoming(b"")
    with pytest.raises(RaggedEOF):
        s.read(100)


def test_eof_during_handshake(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    s.process_incoming(c.process_outgoing(-1))
    s.process_outgoing(-1)
    with pytest.raises(WantReadError):
        s.do_handshake()
    s.process_incoming(b"")
    with pytest.raises(HandshakeClosedError):
        s.do_handshake()
    with pytest.raises(HandshakeClosedError):
        s.read(10)
    # truncated server flight, then EOF, at the client
    c2, s2 = rustls_pair(ca, core_cert)
    s2.process_incoming(c2.process_outgoing(-1))
    step(s2)
    flight = s2.process_outgoing(-1)
    c2.process_incoming(flight[: len(flight) // 2])
    c2.process_incoming(b"")
    with pytest.raises(HandshakeClosedError):
        c2.do_handshake()


def test_garbage_is_protocol_error_and_sticky(ca: CA, core_cert: Issued) -> None:
    s = server_config(core_cert).new_connection()
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


def test_corrupt_record_after_handshake(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert)
    PUMP.handshake(c, s)
    c.write(b"secret")
    wire = bytearray(c.process_outgoing(-1))
    wire[-3] ^= 0xFF
    with pytest.raises(ProtocolError):
        s.process_incoming(bytes(wire))
    alert = s.process_outgoing(-1)  # (tickets and) the encrypted bad_record_mac alert
    assert alert
    with pytest.raises(ProtocolError, match="bad_record_mac"):
        c.process_incoming(alert)


@pytest.mark.parametrize("side", ["client", "server"])
def test_random_garbage_never_panics(ca: CA, core_cert: Issued, side: str) -> None:
    rng = random.Random(1234)
    ccfg = client_config(ca)
    scfg = server_config(core_cert)
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


def test_wrong_peer_bytes_from_handshake(ca: CA, core_cert: Issued) -> None:
    # a ClientHello fed to a client
    c1, _ = rustls_pair(ca, core_cert)
    c2, _ = rustls_pair(ca, core_cert)
    with pytest.raises(ProtocolError):
        c1.process_incoming(c2.process_outgoing(-1))
        c1.do_handshake()


# ---------------------------------------------------------------------------------------------
# cipher suites and versions


@pytest.mark.parametrize(
    "suite,version", [(0x1301, TLS13), (0x1303, TLS13), (0xC02B, TLS12), (0xCCA9, TLS12)]
)
def test_cipher_suite_selection(ca: CA, core_cert: Issued, suite: int, version: int) -> None:
    c, s = rustls_pair(ca, core_cert, ckw=dict(cipher_suites=[suite, 0x1304]))
    PUMP.handshake(c, s)
    assert c.cipher_suite() == suite == s.cipher_suite()
    assert c.protocol_version() == version


def test_ccm_only_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CCM") as ei:
        client_config(None, verify_certificates=False, cipher_suites=[0x1304, 0x1305, 0xC0AC])
    assert "0x1304" in str(ei.value)


def test_suites_cannot_serve_versions(ca: CA) -> None:
    with pytest.raises(ConfigurationError, match=r"TLS 1\.3"):
        client_config(ca, cipher_suites=[0xC02B, 0xC02F], versions=[TLS13])


@pytest.mark.parametrize("versions", [[], [0x0301], [TLS13, 0x0302]])
def test_bad_versions(ca: CA, versions: list[int]) -> None:
    with pytest.raises(ConfigurationError):
        client_config(ca, versions=versions)


def test_version_mismatch_fails(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert, ckw=dict(versions=[TLS12]), skw=dict(versions=[TLS13]))
    with pytest.raises(ProtocolError):
        PUMP.handshake(c, s)


# ---------------------------------------------------------------------------------------------
# configuration errors


def test_intermediate_chain(ca: CA) -> None:
    inter = ca.intermediate("core test intermediate", path_length=0)
    leaf = inter.issue("localhost")
    # leaf and intermediate in one PEM item, and as separate DER items
    for certs in ([leaf.cert_pem + inter.cert_pem], [leaf.cert_der, inter.cert_der]):
        scfg = server_config(leaf, chains=[(certs, leaf.key_pem)])
        c = client_config(ca).new_connection("localhost")
        s = scfg.new_connection()
        PUMP.handshake(c, s)
        assert c.peer_chain() == [leaf.cert_der, inter.cert_der]
    # without the intermediate the chain cannot be built
    scfg = server_config(leaf, chains=[([leaf.cert_pem], leaf.key_pem)])
    c = client_config(ca).new_connection("localhost")
    s = scfg.new_connection()
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        PUMP.handshake(c, s)


def test_ca_cert_formats(ca: CA, core_cert: Issued) -> None:
    other = CA.create("another")
    # a PEM blob with several certs, and a DER cert
    for ca_certs in ([other.cert_pem + ca.cert_pem], [ca.cert_der], [other.cert_der, ca.cert_pem]):
        c = client_config(None, ca_certs=ca_certs).new_connection("localhost")
        s = server_config(core_cert).new_connection()
        PUMP.handshake(c, s)
        assert c.peer_certificate() == core_cert.cert_der
        assert c.protocol_version() == s.protocol_version() == TLS13


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


def test_key_formats(ca: CA) -> None:
    ec_cert = ca.issue("localhost")
    rsa_cert = ca.issue("localhost", key_type="rsa")
    for cert in (ec_cert, rsa_cert):
        for key in (
            cert.key_pem,
            traditional(cert),  # SEC1 "EC PRIVATE KEY" / PKCS#1 "RSA PRIVATE KEY"
            cert.key_der,
            traditional(cert, "der"),
        ):
            cfg = server_config(cert, chains=[([cert.cert_der], key)])
            c = client_config(ca).new_connection("localhost")
            s = cfg.new_connection()
            PUMP.handshake(c, s)
            assert c.peer_certificate() == cert.cert_der
            assert c.protocol_version() == s.protocol_version() == TLS13
            assert PUMP.send(s, c, b"signed with this key") == b"signed with this key"


def test_chain_errors(ca: CA, core_cert: Issued, other_cert: Issued) -> None:
    with pytest.raises(ConfigurationError, match="does not match"):
        server_config(core_cert, chains=[([core_cert.cert_pem], other_cert.key_pem)])
    with pytest.raises(ConfigurationError, match="empty"):
        server_config(core_cert, chains=[([], core_cert.key_pem)])
    with pytest.raises(ConfigurationError):
        server_config(core_cert, chains=[])
    with pytest.raises(ConfigurationError, match="private key"):
        server_config(core_cert, chains=[([core_cert.cert_pem], b"garbage")])
    with pytest.raises(ConfigurationError, match="no private key"):
        server_config(core_cert, chains=[([core_cert.cert_pem], core_cert.cert_pem)])
    with pytest.raises(ConfigurationError, match="leaf"):
        server_config(core_cert, chains=[([b"\x30\x00"], core_cert.key_pem)])
    with pytest.raises(ConfigurationError, match="does not match"):
        client_config(ca, client_chain=[core_cert.cert_pem], client_key=other_cert.key_pem)
    with pytest.raises(ConfigurationError, match="client_key"):
        client_config(ca, client_chain=[core_cert.cert_pem])
    with pytest.raises(ConfigurationError, match="client_ca_certs"):
        server_config(core_cert, require_client_cert=True)
    with pytest.raises(TypeError):
        client_config(None, ca_certs=["a str is not bytes"])


@pytest.mark.parametrize("name", ["", "bad name", "a..b", "-" * 300])
def test_bad_server_name(ca: CA, name: str) -> None:
    with pytest.raises(ConfigurationError):
        client_config(ca).new_connection(name)


def test_bad_alpn(ca: CA) -> None:
    with pytest.raises(ConfigurationError):
        client_config(ca, alpn=[b""])


# ---------------------------------------------------------------------------------------------
# certificate verification


def test_unknown_issuer(core_cert: Issued) -> None:
    stranger = CA.create("stranger")
    c, s = rustls_pair(stranger, core_cert)
    with pytest.raises(CertificateVerificationError) as ei:
        PUMP.handshake(c, s)
    assert "unknown issuer" in ei.value.reason
    # the alert reaches the server, which reports the rejection
    with pytest.raises(CertificateVerificationError) as es:
        s.process_incoming(c.process_outgoing(-1))
    assert es.value.reason.startswith("peer rejected our certificate: ")
    assert "unknown_ca" in es.value.reason


def test_hostname_mismatch(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert, name="wrong.test")
    with pytest.raises(CertificateVerificationError) as ei:
        PUMP.handshake(c, s)
    assert "not valid for name 'wrong.test'" in ei.value.reason
    assert "localhost" in ei.value.reason
    # wildcard and IP SANs match
    for name in ("a.example.com", "127.0.0.1", "::1"):
        c, s = rustls_pair(ca, core_cert, name=name)
        PUMP.handshake(c, s)
    c, s = rustls_pair(ca, core_cert, name="a.b.example.com")
    with pytest.raises(CertificateVerificationError):
        PUMP.handshake(c, s)


def test_verify_hostname_false(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(ca, core_cert, name="wrong.test", ckw=dict(verify_hostname=False))
    PUMP.handshake(c, s)
    assert s.server_name() == "wrong.test"  # SNI still sent
    stranger = CA.create("stranger")
    c, s = rustls_pair(stranger, core_cert, name="wrong.test", ckw=dict(verify_hostname=False))
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        PUMP.handshake(c, s)


def test_verify_certificates_false(core_cert: Issued) -> None:
    c = client_config(None, verify_certificates=False).new_connection("whatever.test")
    s = server_config(core_cert).new_connection()
    PUMP.handshake(c, s)
    assert c.peer_certificate() == core_cert.cert_der


def test_expired(ca: CA) -> None:
    old = expired(ca, "localhost")
    c, s = rustls_pair(ca, old)
    with pytest.raises(CertificateVerificationError) as ei:
        PUMP.handshake(c, s)
    assert ei.value.reason == "certificate expired"
    with pytest.raises(CertificateVerificationError, match="certificate_expired"):
        s.process_incoming(c.process_outgoing(-1))


# ---------------------------------------------------------------------------------------------
# client certificates


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_client_auth(ca: CA, core_cert: Issued, client_cert: Issued, version: int) -> None:
    c, s = rustls_pair(
        ca,
        core_cert,
        ckw=dict(
            client_chain=[client_cert.cert_pem], client_key=client_cert.key_pem, versions=[version]
        ),
        skw=dict(client_ca_certs=[ca.cert_pem], require_client_cert=True),
    )
    PUMP.handshake(c, s)
    assert s.peer_certificate() == client_cert.cert_der
    assert PUMP.send(c, s, b"hi") == b"hi"


def test_client_auth_missing(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(
        ca, core_cert, skw=dict(client_ca_certs=[ca.cert_pem], require_client_cert=True)
    )
    with pytest.raises(CertificateVerificationError) as es:
        PUMP.handshake(c, s)
    assert "no certificate" in es.value.reason
    with pytest.raises(CertificateVerificationError, match="certificate_required"):
        c.process_incoming(s.process_outgoing(-1))
        c.do_handshake()


def test_client_auth_optional(ca: CA, core_cert: Issued) -> None:
    c, s = rustls_pair(
        ca, core_cert, skw=dict(client_ca_certs=[ca.cert_pem], require_client_cert=False)
    )
    PUMP.handshake(c, s)
    assert s.peer_certificate() is None


def test_client_cert_untrusted(ca: CA, core_cert: Issued) -> None:
    stranger = CA.create("stranger")
    bad_client = stranger.issue("client.test", server=False, client=True)
    c, s = rustls_pair(
        ca,
        core_cert,
        ckw=dict(client_chain=[bad_client.cert_pem], client_key=bad_client.key_pem),
        skw=dict(client_ca_certs=[ca.cert_pem], require_client_cert=True),
    )
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        PUMP.handshake(c, s)


# ---------------------------------------------------------------------------------------------
# SNI


def test_sni_selects_chain(ca: CA, core_cert: Issued, other_cert: Issued) -> None:
    scfg = server_config(
        core_cert,
        chains=[
            ([core_cert.cert_pem], core_cert.key_pem),
            ([other_cert.cert_pem], other_cert.key_pem),
        ],
    )
    cases = {
        "other.test": other_cert,
        "localhost": core_cert,
        "x.example.com": core_cert,
        "unknown.test": core_cert,  # unknown name -> default (first) chain
        "127.0.0.1": core_cert,  # no SNI for IPs -> default
    }
    for name, expected in cases.items():
        c = client_config(ca, verify_hostname=False).new_connection(name)
        s = scfg.new_connection()
        PUMP.handshake(c, s)
        assert c.peer_certificate() == expected.cert_der, name


# ---------------------------------------------------------------------------------------------
# resumption


def test_session_tickets_off_and_resumption_off(ca: CA, core_cert: Issued) -> None:
    ccfg = client_config(ca, resumption=False)
    scfg = server_config(core_cert, session_tickets=False)
    for _ in range(2):
        c = ccfg.new_connection("localhost")
        s = scfg.new_connection()
        PUMP.handshake(c, s)
        assert PUMP.send(c, s, b"ping") == b"ping"
        # a full handshake every time: the server sends its certificate each time
        assert c.peer_certificate() == core_cert.cert_der


@pytest.mark.parametrize("resumption", [True, False])
def test_resumption_against_openssl(
    tmp_path: Path, ca: CA, core_cert: Issued, resumption: bool
) -> None:
    sctx = ssl_server_ctx(tmp_path, core_cert)
    ccfg = client_config(ca, resumption=resumption)
    reused = []
    for _ in range(2):
        c = ccfg.new_connection("localhost")
        s = StdlibPeer(sctx, server_side=True)
        PUMP.handshake(c, s)
        # let the client take the NewSessionTicket messages (if not already delivered)
        tickets = s.process_outgoing(-1)
        if tickets:
            c.process_incoming(tickets)
            PUMP.drain(c)
        s.write(b"x")
        c.process_incoming(s.process_outgoing(-1))
        assert PUMP.drain(c) == b"x"
        reused.append(s.obj.session_reused)
    assert reused == [False, resumption]


# ---------------------------------------------------------------------------------------------
# against the stdlib ssl module (OpenSSL)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_rustls_client_openssl_server(
    tmp_path: Path, ca: CA, core_cert: Issued, client_cert: Issued, version: ssl.TLSVersion
) -> None:
    sctx = ssl_server_ctx(
        tmp_path, core_cert, client_ca=ca, alpn=["h2", "http/1.1"], version=version
    )
    c = client_config(
        ca, client_chain=[client_cert.cert_pem], client_key=client_cert.key_pem, alpn=[b"http/1.1"]
    ).new_connection("localhost")
    s = StdlibPeer(sctx, server_side=True)
    PUMP.handshake(c, s)
    assert c.protocol_version() == (TLS13 if version == ssl.TLSVersion.TLSv1_3 else TLS12)
    assert c.alpn_protocol() == b"http/1.1"
    assert s.obj.selected_alpn_protocol() == "http/1.1"
    assert s.obj.getpeercert(binary_form=True) == client_cert.cert_der
    payload = os.urandom(300_000)
    assert PUMP.send(c, s, payload) == payload
    assert PUMP.send(s, c, payload) == payload
    # clean shutdown seen by OpenSSL (SSLObject.read returns b"" on close_notify)
    c.shutdown()
    s.process_incoming(c.process_outgoing(-1))
    assert s.obj.read(10) == b""


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_openssl_client_rustls_server(
    tmp_path: Path, ca: CA, core_cert: Issued, client_cert: Issued, version: ssl.TLSVersion
) -> None:
    cctx = ssl_client_ctx(tmp_path, ca, client=client_cert, alpn=["h2"], version=version)
    c = StdlibPeer(cctx, server_side=False, hostname="localhost")
    s = server_config(
        core_cert, client_ca_certs=[ca.cert_pem], require_client_cert=True, alpn=[b"h2"]
    ).new_connection()
    PUMP.handshake(c, s)
    assert s.server_name() == "localhost"
    assert s.alpn_protocol() == b"h2"
    assert s.peer_certificate() == client_cert.cert_der
    assert c.obj.version() == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
    payload = os.urandom(200_000)
    assert PUMP.send(c, s, payload) == payload
    assert PUMP.send(s, c, payload) == payload
    # OpenSSL's close_notify
    try:
        c.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    s.process_incoming(c.process_outgoing(-1))
    assert s.read(10) == b""
    assert s.close_notify_received()


def test_openssl_server_rejects_unknown_client_cert(
    tmp_path: Path, ca: CA, core_cert: Issued
) -> None:
    stranger = CA.create("stranger")
    bad_client = stranger.issue("client.test", server=False, client=True)
    sctx = ssl_server_ctx(tmp_path, core_cert, client_ca=ca, version=ssl.TLSVersion.TLSv1_2)
    c = client_config(
        ca, client_chain=[bad_client.cert_pem], client_key=bad_client.key_pem
    ).new_connection("localhost")
    s = StdlibPeer(sctx, server_side=True)
    with pytest.raises(TLSError) as info:
        PUMP.handshake(c, s)
    assert isinstance(info.value.__cause__, ssl.SSLError)
    with pytest.raises(CertificateVerificationError, match="peer rejected our certificate"):
        c.process_incoming(s.process_outgoing(-1))
        c.do_handshake()


def test_openssl_client_rejects_rustls_server(tmp_path: Path, core_cert: Issued) -> None:
    stranger = CA.create("stranger")
    cctx = ssl_client_ctx(tmp_path, stranger)
    c = StdlibPeer(cctx, server_side=False, hostname="localhost")
    s = server_config(core_cert).new_connection()
    with pytest.raises(TLSError) as info:
        PUMP.handshake(c, s)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(CertificateVerificationError, match="peer rejected our certificate"):
        s.process_incoming(c.process_outgoing(-1))
        s.do_handshake()


def test_ragged_eof_against_openssl(tmp_path: Path, ca: CA, core_cert: Issued) -> None:
    sctx = ssl_server_ctx(tmp_path, core_cert)
    c = client_config(ca).new_connection("localhost")
    s = StdlibPeer(sctx, server_side=True)
    PUMP.handshake(c, s)
    s.write(b"tail")
    c.process_incoming(s.process_outgoing(-1))
    c.process_incoming(b"")
    assert c.read(100) == b"tail"
    with pytest.raises(RaggedEOF):
        c.read(100)


# ---------------------------------------------------------------------------------------------
# threads: the GIL is released, and connections move between threads


def test_threads(ca: CA, core_cert: Issued) -> None:
    ccfg, scfg = client_config(ca), server_config(core_cert)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                c = ccfg.new_connection("localhost")
                s = scfg.new_connection()
                PUMP.handshake(c, s)
                payload = os.urandom(100_000)
                assert PUMP.send(c, s, payload) == payload
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


def test_system_roots(ca: CA, core_cert: Issued) -> None:
    try:
        cfg = client_config(None, system_roots=True)
    except ConfigurationError as e:  # a machine without a system store
        assert "system" in str(e)
    else:
        c = cfg.new_connection("localhost")
        s = server_config(core_cert).new_connection()
        with pytest.raises(CertificateVerificationError, match="unknown issuer"):
            PUMP.handshake(c, s)
    # system roots plus our own CA
    c = client_config(ca, system_roots=True).new_connection("localhost")
    s = server_config(core_cert).new_connection()
    PUMP.handshake(c, s)


def test_input_types(ca: CA) -> None:
    conn = client_config(ca).new_connection("localhost")
    with pytest.raises(TypeError):
        conn.process_incoming("text")
    with pytest.raises(TypeError):
        conn.write("text")
    with pytest.raises(ValueError):
        conn.read(-1)
    with pytest.raises(BufferError):
        conn.process_incoming(memoryview(b"abcdef")[::2])
