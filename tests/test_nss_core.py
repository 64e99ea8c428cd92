"""Tests of the NSS engine's Rust core (``unitls._native.Nss*Config``), in memory.

NSS is paired with itself, with rustls (the other Rust engine) and with the stdlib ``ssl``
module (``SSLObject`` + ``MemoryBIO``) in both roles. Certificates are made here with
``cryptography``. NSS keeps process-wide state (initialisation, its certificate store, session
caches): tests whose verdict could depend on what the process did before run in a fresh
interpreter.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import ssl
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from test_rustls_core import (
    BOTH,
    TLS12,
    TLS13,
    Cert,
    RustlsPeer,
    SslPeer,
    handshake,
    issue,
    make_ca,
    ssl_client_ctx,
    ssl_server_ctx,
    transfer,
)
from test_rustls_core import client_config as rustls_client_config
from test_rustls_core import server_config as rustls_server_config

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

AVAILABLE, STATUS = _native.nss_status()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"NSS not usable here: {STATUS}")

Peer = RustlsPeer  # drives any unitls._native.Connection


@pytest.fixture(scope="module")
def ca() -> Cert:
    return make_ca("nss core test CA")


@pytest.fixture(scope="module")
def server_cert(ca: Cert) -> Cert:
    return issue(ca, "localhost", "*.example.com", "127.0.0.1", "::1")


@pytest.fixture(scope="module")
def other_cert(ca: Cert) -> Cert:
    return issue(ca, "other.test", "10.0.0.7")


@pytest.fixture(scope="module")
def client_cert(ca: Cert) -> Cert:
    return issue(ca, "client.test", client=True)


def nss_client(ca: Cert | None, **kw: Any) -> Any:
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
    return _native.NssClientConfig(**args)


def nss_server(cert: Cert, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        chains=[([cert.pem], cert.key_pem())],
        client_ca_certs=None,
        require_client_cert=False,
        cipher_suites=None,
        versions=BOTH,
        alpn=[],
    )
    args.update(kw)
    return _native.NssServerConfig(**args)


def nss_pair(
    ca: Cert, cert: Cert, name: str = "localhost", ckw: Any = None, skw: Any = None
) -> tuple[Peer, Peer]:
    c = Peer(nss_client(ca, **(ckw or {})).new_connection(name))
    s = Peer(nss_server(cert, **(skw or {})).new_connection())
    return c, s


def read_all(peer: Peer) -> bytes:
    out = bytearray()
    while True:
        try:
            data = peer.conn.read(1 << 20)
        except WantReadError:
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


def run_fresh(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a new interpreter (NSS's process-wide state starts empty there)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    tests = str(Path(__file__).resolve().parent)
    full_env["PYTHONPATH"] = tests + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# module


def test_status_and_suites() -> None:
    assert re.fullmatch(r"NSS 3\.\d+(\.\d+)* \(NSPR 4\.\d+(\.\d+)*\)", STATUS)
    suites = _native.nss_supported_cipher_suites()
    assert {0x1301, 0x1302, 0x1303, 0xC02B, 0xC02C, 0xC02F, 0xC030, 0xCCA8, 0xCCA9} <= set(suites)
    assert not {0x1304, 0x1305, 0xC0AC} & set(suites)


def test_missing_library_is_reported_with_what_to_install(tmp_path: Path) -> None:
    out = run_fresh(
        """
        from unitls import _native
        from unitls._errors import ConfigurationError
        ok, why = _native.nss_status()
        print(ok, why)
        try:
            _native.NssServerConfig(chains=[], client_ca_certs=None, require_client_cert=False,
                                    cipher_suites=None, versions=[0x0304], alpn=[])
        except ConfigurationError as exc:
            print("refused:", exc)
        """,
        env={"UNITLS_NSS_LIB_DIR": str(tmp_path)},
    )
    assert out.startswith("False libnspr4.so not found")
    assert "apt-get install libnspr4" in out
    assert "refused: the nss engine is not usable here: libnspr4.so not found" in out


# ---------------------------------------------------------------------------------------------
# NSS <-> NSS


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_handshake_and_info(ca: Cert, server_cert: Cert, version: int) -> None:
    c, s = nss_pair(
        ca,
        server_cert,
        ckw=dict(versions=[version], alpn=[b"h2", b"http/1.1"]),
        skw=dict(alpn=[b"http/1.1"]),
    )
    for side in (c.conn, s.conn):
        assert not side.handshake_complete()
        assert side.cipher_suite() is None
        assert side.protocol_version() is None
        assert side.peer_certificate() is None
        assert side.peer_chain() == []
        assert side.negotiated_group_id() is None
        assert side.alpn_protocol() is None
    handshake(c, s)
    for side in (c.conn, s.conn):
        assert side.handshake_complete()
        assert side.engine == "nss"
        assert side.protocol_version() == version
        assert side.alpn_protocol() == b"http/1.1"
        assert side.negotiated_group_id() == 0x001D  # x25519
        assert not side.session_resumed()
    assert (
        c.conn.cipher_suite() == s.conn.cipher_suite() == (0x1301 if version == TLS13 else 0xC02B)
    )
    assert c.conn.peer_certificate() == server_cert.der
    assert c.conn.peer_chain() == [server_cert.der]
    assert s.conn.peer_certificate() is None
    assert s.conn.server_name() == "localhost"
    assert c.conn.server_name() is None
    assert transfer(c, s, b"hello") == b"hello"
    assert transfer(s, c, b"world") == b"world"


def test_bulk_both_directions(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
    handshake(c, s)
    payload = os.urandom(3 << 20)
    assert transfer(c, s, payload) == payload
    assert transfer(s, c, payload) == payload


def test_one_byte_chunks(ca: Cert, server_cert: Cert) -> None:
    """Every flight and record fed one byte at a time; data written one byte at a time."""
    c, s = nss_pair(ca, server_cert, ckw=dict(alpn=[b"h2"]), skw=dict(alpn=[b"h2"]))
    done_c = done_s = False
    for _ in range(20):
        done_c = done_c or c.handshake()
        for b in c.take():
            s.give(bytes([b]))
        done_s = done_s or s.handshake()
        for b in s.take():
            c.give(bytes([b]))
        if done_c and done_s:
            break
    assert done_c and done_s
    for b in c.take():
        s.give(bytes([b]))
    payload = os.urandom(3000)
    for i in range(len(payload)):
        c.conn.write(payload[i : i + 1])
    got = bytearray()
    for b in c.take():
        s.give(bytes([b]))
        got += read_all(s)
    assert bytes(got) == payload


def test_incoming_limit_and_queue(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
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
    got = read_all(s)
    assert len(got) > 1 << 20
    assert s.conn.incoming_bytes_buffered() == 0


def test_read_into_pending_and_buffers(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
    handshake(c, s)
    assert c.conn.write(bytearray(b"ab")) == 2
    assert c.conn.write(memoryview(b"xcdefghijx")[1:9]) == 8
    assert c.conn.write(b"") == 0
    s.give(c.take())
    assert s.conn.pending() == 2  # the first record, decrypted ahead
    buf = bytearray(4)
    assert s.conn.read_into(buf, 4) == 4
    assert buf == b"abcd"
    mv = memoryview(bytearray(100))
    n = s.conn.read_into(mv[10:], -1)
    assert n == 6 and bytes(mv[10:16]) == b"efghij"
    assert s.conn.pending() == 0
    with pytest.raises(WantReadError):
        s.conn.read_into(bytearray(10), 10)
    with pytest.raises(BufferError):
        s.conn.read_into(b"readonly", 3)


def test_before_handshake_want_read(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
    with pytest.raises(WantReadError):
        c.conn.write(b"early")
    hello = c.take()
    assert hello[:1] == b"\x16"  # the ClientHello, ready at construction
    with pytest.raises(WantReadError):
        s.conn.read(10)
    s.give(hello[:20])  # part of the ClientHello: the server waits for the rest
    with pytest.raises(WantReadError):
        s.conn.do_handshake()
    assert s.conn.outgoing_bytes_buffered() == 0
    s.give(hello[20:])
    with pytest.raises(WantReadError):
        s.conn.do_handshake()
    assert s.conn.outgoing_bytes_buffered() > 0
    handshake(c, s)
    assert transfer(c, s, b"x") == b"x"


def test_process_outgoing_amt(ca: Cert, server_cert: Cert) -> None:
    c, _ = nss_pair(ca, server_cert)
    total = c.conn.outgoing_bytes_buffered()
    assert total > 10
    assert len(c.conn.process_outgoing(10)) == 10
    assert c.conn.outgoing_bytes_buffered() == total - 10
    assert len(c.conn.process_outgoing(-1)) == total - 10
    assert c.conn.process_outgoing(-1) == b""


def test_close_notify_and_shutdown(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
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
    # half close: the server still answers, then closes too
    s.write(b"bye")
    s.conn.shutdown()
    c.give(s.take())
    assert c.conn.read(100) == b"bye"
    assert c.conn.read(100) == b""
    assert c.conn.close_notify_received()


def test_close_notify_then_transport_eof_is_clean(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
    handshake(c, s)
    c.conn.shutdown()
    s.give(c.take())
    s.give(b"")
    assert s.conn.read(100) == b""
    assert s.conn.close_notify_received()


def test_ragged_eof(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
    handshake(c, s)
    c.write(b"data")
    s.give(c.take())
    s.give(b"")
    assert s.conn.read(100) == b"data"
    with pytest.raises(RaggedEOF):
        s.conn.read(100)
    assert not s.conn.close_notify_received()


def test_truncated_record_then_eof(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
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
    # the server has seen nothing, then EOF
    _, s0 = nss_pair(ca, server_cert)
    s0.give(b"")
    with pytest.raises(HandshakeClosedError):
        s0.conn.do_handshake()
    # the server answered, then the client went away
    c, s = nss_pair(ca, server_cert)
    s.give(c.take())
    with pytest.raises(WantReadError):
        s.conn.do_handshake()
    s.conn.process_outgoing(-1)
    s.give(b"")
    with pytest.raises(HandshakeClosedError):
        s.conn.do_handshake()
    with pytest.raises(HandshakeClosedError):
        s.conn.read(10)
    # a truncated server flight, then EOF, at the client
    c2, s2 = nss_pair(ca, server_cert)
    s2.give(c2.take())
    s2.handshake()
    flight = s2.take()
    c2.give(flight[: len(flight) // 2])
    c2.give(b"")
    with pytest.raises(HandshakeClosedError):
        c2.conn.do_handshake()


def test_garbage_is_protocol_error_and_sticky(server_cert: Cert) -> None:
    s = nss_server(server_cert).new_connection()
    s.process_incoming(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ProtocolError, match="speaking TLS"):
        s.do_handshake()
    alert = s.process_outgoing(-1)
    assert alert[:1] == b"\x15"  # an alert record for the peer
    for call in (s.do_handshake, lambda: s.read(10), lambda: s.write(b"x")):
        with pytest.raises(ProtocolError):
            call()


def test_corrupt_record_after_handshake(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert)
    handshake(c, s)
    c.write(b"secret")
    wire = bytearray(c.take())
    wire[-3] ^= 0xFF
    s.give(bytes(wire))
    with pytest.raises(ProtocolError):
        s.conn.read(100)
    alert = s.conn.process_outgoing(-1)
    assert alert
    c.give(alert)
    with pytest.raises(ProtocolError, match="bad_record_mac") as info:
        c.conn.read(100)
    assert info.value.alert == "bad_record_mac"


@pytest.mark.parametrize("side", ["client", "server"])
def test_random_garbage_never_crashes(ca: Cert, server_cert: Cert, side: str) -> None:
    rng = random.Random(1234)
    ccfg = nss_client(ca)
    scfg = nss_server(server_cert)
    prefixes = [
        b"",
        b"\x16\x03\x01",
        b"\x16\x03\x03\x00\x10",
        b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x03\x03",
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
        except (ProtocolError, HandshakeClosedError, CertificateVerificationError) as exc:
            assert str(exc)
        conn.process_outgoing(-1)


def test_a_server_flight_fed_to_a_server(ca: Cert, server_cert: Cert) -> None:
    c1, s1 = nss_pair(ca, server_cert)
    s1.give(c1.take())
    s1.handshake()
    _, s2 = nss_pair(ca, server_cert)
    s2.give(s1.take())  # a ServerHello where a ClientHello belongs
    with pytest.raises(ProtocolError):
        s2.conn.do_handshake()


# ---------------------------------------------------------------------------------------------
# suites, versions, configuration errors


@pytest.mark.parametrize(
    "suite,version",
    [(0x1301, TLS13), (0x1302, TLS13), (0x1303, TLS13), (0xC02B, TLS12), (0xCCA9, TLS12)],
)
def test_cipher_suite_selection(ca: Cert, server_cert: Cert, suite: int, version: int) -> None:
    c, s = nss_pair(ca, server_cert, ckw=dict(cipher_suites=[suite]))
    handshake(c, s)
    assert c.conn.cipher_suite() == suite == s.conn.cipher_suite()
    assert c.conn.protocol_version() == version


def test_cipher_order_is_the_servers(ca: Cert, server_cert: Cert) -> None:
    for order in ([0x1303, 0x1301], [0x1301, 0x1303]):
        c, s = nss_pair(ca, server_cert, skw=dict(cipher_suites=order))
        handshake(c, s)
        assert s.conn.cipher_suite() == order[0]


def test_unknown_suites_are_named() -> None:
    with pytest.raises(ConfigurationError, match=r"0x1304.*0x0A0A|0x0A0A.*0x1304") as info:
        nss_client(None, verify_certificates=False, cipher_suites=[0x1301, 0x1304, 0x0A0A])
    assert "CCM" in str(info.value)


def test_suites_cannot_serve_versions(ca: Cert) -> None:
    with pytest.raises(ConfigurationError, match="cannot serve"):
        nss_client(ca, cipher_suites=[0xC02B, 0xC02F], versions=[TLS13])
    # TLS 1.2 suites only with both versions allowed: TLS 1.2 is used
    c, s = nss_pair(ca, make_and_issue_for_tls12(ca), ckw=dict(cipher_suites=[0xC02B]))
    handshake(c, s)
    assert c.conn.protocol_version() == TLS12


def make_and_issue_for_tls12(ca: Cert) -> Cert:
    return issue(ca, "localhost")


@pytest.mark.parametrize("versions", [[], [0x0301], [TLS13, 0x0302]])
def test_bad_versions(ca: Cert, versions: list[int]) -> None:
    with pytest.raises(ConfigurationError):
        nss_client(ca, versions=versions)


def test_version_mismatch(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert, ckw=dict(versions=[TLS12]), skw=dict(versions=[TLS13]))
    with pytest.raises(ProtocolError, match="SSL_ERROR_UNSUPPORTED_VERSION"):
        handshake(c, s)
    c.give(s.take())
    with pytest.raises(ProtocolError) as info:
        c.conn.do_handshake()
    assert info.value.alert == "protocol_version"


def _key_pem(key: Any, fmt: str = "PKCS8", enc: str = "PEM") -> bytes:
    return bytes(
        key.private_bytes(
            getattr(serialization.Encoding, enc),
            getattr(serialization.PrivateFormat, fmt),
            serialization.NoEncryption(),
        )
    )


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_key_formats(ca: Cert, key_type: str) -> None:
    cert = issue(ca, "localhost", key_type=key_type)
    for fmt in ("PKCS8", "TraditionalOpenSSL"):
        for enc in ("PEM", "DER"):
            key = _key_pem(cert.key, fmt, enc)
            c = Peer(nss_client(ca).new_connection("localhost"))
            s = Peer(nss_server(cert, chains=[([cert.der], key)]).new_connection())
            handshake(c, s)
            assert transfer(c, s, b"k") == b"k"


def _self_signed(key: Any, name: str = "localhost") -> Cert:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    return Cert(cert, key)


def test_p521_server(ca: Cert) -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p521")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    leaf = Cert(cert, key)
    c, s = nss_pair(ca, leaf)
    handshake(c, s)
    assert c.conn.peer_certificate() == leaf.der


def test_unusable_keys_are_configuration_errors(ca: Cert, server_cert: Cert) -> None:
    ed = _self_signed(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigurationError, match=r"Ed25519 keys are not supported by NSS 3\.87"):
        nss_server(ed)
    with pytest.raises(ConfigurationError, match="Ed25519"):
        nss_client(ca, client_chain=[ed.pem], client_key=ed.key_pem())
    small = rsa.generate_private_key(65537, 1024)
    with pytest.raises(ConfigurationError, match="RSA-1024 is too small"):
        nss_server(server_cert, chains=[([server_cert.pem], _key_pem(small, "TraditionalOpenSSL"))])
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ConfigurationError, match="secp256k1"):
        nss_server(server_cert, chains=[([server_cert.pem], _key_pem(k1))])
    # a SEC1 key without its optional public key: NSS cannot import it, and says so
    sec1 = _key_pem(server_cert.key, "TraditionalOpenSSL", "DER")
    body = sec1[2 : sec1.index(b"\xa1\x44")]
    stripped = bytes([0x30, len(body)]) + body
    with pytest.raises(ConfigurationError, match="does not include its public key"):
        nss_server(server_cert, chains=[([server_cert.pem], stripped)])


def test_chain_errors(ca: Cert, server_cert: Cert, other_cert: Cert) -> None:
    with pytest.raises(ConfigurationError, match="does not match"):
        nss_server(server_cert, chains=[([server_cert.pem], other_cert.key_pem())])
    with pytest.raises(ConfigurationError, match="empty"):
        nss_server(server_cert, chains=[([], server_cert.key_pem())])
    with pytest.raises(ConfigurationError):
        nss_server(server_cert, chains=[])
    with pytest.raises(ConfigurationError, match="private key"):
        nss_server(server_cert, chains=[([server_cert.pem], b"garbage")])
    with pytest.raises(ConfigurationError, match="no private key"):
        nss_server(server_cert, chains=[([server_cert.pem], server_cert.pem)])
    with pytest.raises(ConfigurationError, match="encrypted keys"):
        enc = server_cert.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        nss_server(server_cert, chains=[([server_cert.pem], enc)])
    with pytest.raises(ConfigurationError, match=r"not a valid X\.509 certificate"):
        nss_server(server_cert, chains=[([b"\x30\x03\x02\x01\x00"], server_cert.key_pem())])
    with pytest.raises(ConfigurationError, match="does not match"):
        nss_client(ca, client_chain=[server_cert.pem], client_key=other_cert.key_pem())
    with pytest.raises(ConfigurationError, match="client_key"):
        nss_client(ca, client_chain=[server_cert.pem])
    with pytest.raises(ConfigurationError, match="client_ca_certs"):
        nss_server(server_cert, require_client_cert=True)
    with pytest.raises(ConfigurationError, match="no trust anchors"):
        nss_client(None)
    with pytest.raises(TypeError):
        nss_client(None, ca_certs=["a str is not bytes"])


@pytest.mark.parametrize("name", ["", "bad name", "a..b", "-" * 300, "nul\x00.test"])
def test_bad_server_name(ca: Cert, name: str) -> None:
    with pytest.raises(ConfigurationError):
        nss_client(ca).new_connection(name)


def test_bad_alpn(ca: Cert) -> None:
    with pytest.raises(ConfigurationError):
        nss_client(ca, alpn=[b""])
    with pytest.raises(ConfigurationError):
        nss_client(ca, alpn=[b"x" * 256])


# ---------------------------------------------------------------------------------------------
# certificate verification


def test_unknown_issuer(server_cert: Cert) -> None:
    stranger = make_ca("stranger")
    c, s = nss_pair(stranger, server_cert)
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert ei.value.reason.startswith("unknown issuer")
    assert "SEC_ERROR_UNKNOWN_ISSUER" in str(ei.value) or "SEC_ERROR_UNTRUSTED" in str(ei.value)
    with pytest.raises(CertificateVerificationError) as es:
        s.give(c.take())
        s.conn.do_handshake()
    assert es.value.reason == "peer rejected our certificate: unknown_ca"
    assert es.value.alert == "unknown_ca"


def test_hostname_checks(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert, name="wrong.test")
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert "not valid for name 'wrong.test'" in ei.value.reason
    assert "localhost" in ei.value.reason
    for name in ("a.example.com", "LOCALHOST", "127.0.0.1", "::1"):
        c, s = nss_pair(ca, server_cert, name=name)
        handshake(c, s)
    for name in ("a.b.example.com", "example.com", "127.0.0.2"):
        c, s = nss_pair(ca, server_cert, name=name)
        with pytest.raises(CertificateVerificationError, match="not valid for name"):
            handshake(c, s)


def test_partial_wildcards_are_refused(ca: Cert) -> None:
    """NSS's own check would accept f*.example.com for foo.example.com; unitls does not."""
    cert = issue(ca, "f*.example.com")
    c, s = nss_pair(ca, cert, name="foo.example.com")
    with pytest.raises(CertificateVerificationError, match="not valid for name"):
        handshake(c, s)


def test_cn_only_certificate_is_refused(ca: Cert) -> None:
    """NSS falls back to the subject CN without SANs; unitls refuses CN-only certificates."""
    cn_only = issue(ca)  # subject CN "client", no SAN at all
    c, s = nss_pair(ca, cn_only, name="client")
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert "not valid for name 'client'" in ei.value.reason


def test_ip_san_only_matches_ips(ca: Cert) -> None:
    cert = issue(ca, "192.0.2.5")
    c, s = nss_pair(ca, cert, name="192.0.2.5")
    handshake(c, s)
    c, s = nss_pair(ca, cert, name="localhost")
    with pytest.raises(CertificateVerificationError, match="not valid for name"):
        handshake(c, s)


def test_verify_hostname_false(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert, name="wrong.test", ckw=dict(verify_hostname=False))
    handshake(c, s)
    assert s.conn.server_name() == "wrong.test"  # SNI still sent
    stranger = make_ca("stranger")
    c, s = nss_pair(stranger, server_cert, name="wrong.test", ckw=dict(verify_hostname=False))
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        handshake(c, s)


def test_verify_certificates_false(server_cert: Cert) -> None:
    c = Peer(nss_client(None, verify_certificates=False).new_connection("whatever.test"))
    s = Peer(nss_server(server_cert).new_connection())
    handshake(c, s)
    assert c.conn.peer_certificate() == server_cert.der


def test_expired_and_not_yet_valid(ca: Cert) -> None:
    old = issue(ca, "localhost", expired=True)
    c, s = nss_pair(ca, old)
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert ei.value.reason == "certificate expired"
    with pytest.raises(CertificateVerificationError, match="certificate_expired"):
        s.give(c.take())
        s.conn.do_handshake()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    future = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "future")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=20))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    c, s = nss_pair(ca, Cert(future, key))
    with pytest.raises(CertificateVerificationError) as ei:
        handshake(c, s)
    assert ei.value.reason == "certificate not yet valid"


def test_a_self_signed_leaf_trusted_as_such(server_cert: Cert) -> None:
    """libpkix cannot take its trust anchor as the target; OpenSSL and rustls accept such a
    leaf (CPython's tests trust their self-signed keycert.pem this way), so NSS does too, with
    the same checks as rustls."""
    leaf = _self_signed(ec.generate_private_key(ec.SECP256R1()))
    c, s = nss_pair(leaf, leaf)
    handshake(c, s)
    c, s = nss_pair(leaf, leaf, name="other.test")
    with pytest.raises(CertificateVerificationError, match=r"not valid for name 'other\.test'"):
        handshake(c, s)
    # a leaf trusted as an anchor is still a leaf for the client: a server certificate alone
    # does not make the anchor of another chain
    c, s = nss_pair(leaf, server_cert)
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        handshake(c, s)


def test_verdicts_do_not_depend_on_what_the_process_saw() -> None:
    """A server sending only its leaf is refused even after the intermediate was loaded
    elsewhere in the process (NSS alone would complete the chain from its store)."""
    out = run_fresh(
        """
        from test_rustls_core import make_ca, issue, RustlsPeer as P, handshake
        from test_nss_core import nss_client, nss_server
        from unitls._errors import CertificateVerificationError
        root = make_ca("root")
        inter = make_ca("intermediate")
        # intermediate signed by root
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        import datetime
        now = datetime.datetime.now(datetime.UTC)
        ic = (x509.CertificateBuilder().subject_name(inter.cert.subject)
              .issuer_name(root.cert.subject).public_key(inter.key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=10))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(root.key, hashes.SHA256()))
        inter = type(inter)(ic, inter.key)
        leaf = issue(inter, "localhost")
        full = nss_server(leaf, chains=[([leaf.pem, inter.pem], leaf.key_pem())])
        c, s = P(nss_client(root).new_connection("localhost")), P(full.new_connection())
        handshake(c, s)
        print("full chain: ok")
        leaf_only = nss_server(leaf)
        c, s = P(nss_client(root).new_connection("localhost")), P(leaf_only.new_connection())
        try:
            handshake(c, s)
            print("leaf only: accepted")
        except CertificateVerificationError as e:
            print("leaf only: refused:", e.reason)
        """
    )
    assert "full chain: ok" in out
    assert "leaf only: refused: unknown issuer" in out


def test_name_constraint_blowup_is_refused_before_nss_sees_it(server_cert: Cert) -> None:
    """NSS's name-constraint check is quadratic and allocates as it goes (x509-limbo's nc-dos
    chains crashed the process): chains over 250000 comparisons are refused first."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "constrained root")])
    permitted: list[x509.GeneralName] = [x509.DNSName(f"p{i}.test") for i in range(300)]
    excluded: list[x509.GeneralName] = [x509.DNSName(f"x{i}.test") for i in range(300)]
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.NameConstraints(permitted, excluded), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    ca = Cert(root, root_key)
    names = ["p0.test", *(f"n{i}.p0.test" for i in range(500))]
    leaf = issue(ca, *names)
    c, s = nss_pair(ca, leaf, name="p0.test")
    with pytest.raises(CertificateVerificationError) as info:
        handshake(c, s)
    assert info.value.reason.startswith("too many names to check against name constraints")
    # the same root with a leaf of a few names verifies
    c, s = nss_pair(ca, issue(ca, "p1.test"), name="p1.test")
    handshake(c, s)


# ---------------------------------------------------------------------------------------------
# client certificates


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_client_auth(ca: Cert, server_cert: Cert, client_cert: Cert, version: int) -> None:
    c, s = nss_pair(
        ca,
        server_cert,
        ckw=dict(
            client_chain=[client_cert.pem], client_key=client_cert.key_pem(), versions=[version]
        ),
        skw=dict(client_ca_certs=[ca.pem], require_client_cert=True),
    )
    handshake(c, s)
    assert s.conn.peer_certificate() == client_cert.der
    assert s.conn.peer_chain() == [client_cert.der]
    assert transfer(c, s, b"hi") == b"hi"


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_client_auth_missing(ca: Cert, server_cert: Cert, version: int) -> None:
    c, s = nss_pair(
        ca,
        server_cert,
        ckw=dict(versions=[version]),
        skw=dict(client_ca_certs=[ca.pem], require_client_cert=True),
    )
    with pytest.raises(CertificateVerificationError) as es:
        handshake(c, s)
    assert "no certificate" in es.value.reason
    c.give(s.take())
    with pytest.raises(CertificateVerificationError) as ec_:
        c.conn.read(10)
    # TLS 1.3 has an alert for this; NSS's TLS 1.2 server says bad_certificate
    assert ec_.value.alert == ("certificate_required" if version == TLS13 else "bad_certificate")
    assert ec_.value.reason == f"peer rejected our certificate: {ec_.value.alert}"


def test_client_auth_optional(ca: Cert, server_cert: Cert, client_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert, skw=dict(client_ca_certs=[ca.pem]))
    handshake(c, s)
    assert s.conn.peer_certificate() is None
    c, s = nss_pair(
        ca,
        server_cert,
        ckw=dict(client_chain=[client_cert.pem], client_key=client_cert.key_pem()),
        skw=dict(client_ca_certs=[ca.pem]),
    )
    handshake(c, s)
    assert s.conn.peer_certificate() == client_cert.der


def test_client_cert_untrusted(ca: Cert, server_cert: Cert) -> None:
    stranger = make_ca("stranger")
    bad_client = issue(stranger, "client.test", client=True)
    c, s = nss_pair(
        ca,
        server_cert,
        ckw=dict(client_chain=[bad_client.pem], client_key=bad_client.key_pem()),
        skw=dict(client_ca_certs=[ca.pem], require_client_cert=True),
    )
    with pytest.raises(CertificateVerificationError, match="unknown issuer"):
        handshake(c, s)
    c.give(s.take())
    with pytest.raises(CertificateVerificationError) as info:
        c.conn.read(10)
    assert info.value.alert == "unknown_ca"


def test_server_cert_used_as_client_cert_is_refused(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(
        ca,
        server_cert,
        ckw=dict(client_chain=[server_cert.pem], client_key=server_cert.key_pem()),
        skw=dict(client_ca_certs=[ca.pem], require_client_cert=True),
    )
    with pytest.raises(CertificateVerificationError, match="extended key usage"):
        handshake(c, s)


@pytest.mark.parametrize("server", ["nss", "rustls"])
def test_client_chain_with_intermediate(server: str) -> None:
    """NSS builds the client chain it sends from the leaf and the certificates it holds: the
    configured intermediate must be among them."""
    from unitls._certgen import CA

    root = CA.create("client root")
    inter = root.intermediate("client intermediate")
    leaf = inter.issue("client.test", server=False, client=True)
    srv = root.issue("localhost")
    client = _native.NssClientConfig(
        ca_certs=[root.cert_pem],
        system_roots=False,
        client_chain=[leaf.cert_pem, *leaf.intermediates_pem],
        client_key=leaf.key_pem,
        cipher_suites=None,
        versions=BOTH,
        alpn=[],
    )
    server_args: dict[str, Any] = dict(
        chains=[([srv.cert_pem], srv.key_pem)],
        client_ca_certs=[root.cert_pem],
        require_client_cert=True,
        cipher_suites=None,
        versions=BOTH,
        alpn=[],
    )
    scfg = (
        _native.NssServerConfig(**server_args)
        if server == "nss"
        else _native.RustlsServerConfig(**server_args)
    )
    c, s = Peer(client.new_connection("localhost")), Peer(scfg.new_connection())
    handshake(c, s)
    assert s.conn.peer_chain()[:2] == [
        leaf.cert_der,
        x509.load_pem_x509_certificate(leaf.intermediates_pem[0]).public_bytes(
            serialization.Encoding.DER
        ),
    ]


# ---------------------------------------------------------------------------------------------
# SNI and ALPN


def test_sni_selects_chain(ca: Cert, server_cert: Cert, other_cert: Cert) -> None:
    scfg = nss_server(
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
        c = Peer(nss_client(ca, verify_hostname=False).new_connection(name))
        s = Peer(scfg.new_connection())
        handshake(c, s)
        assert c.conn.peer_certificate() == expected.der, name
    # Without SNI, the chain naming the address the client reached.
    for local, expected in (
        ("10.0.0.7", other_cert),
        ("127.0.0.1", server_cert),
        (None, server_cert),
    ):
        c = Peer(nss_client(ca, verify_hostname=False).new_connection("10.0.0.7"))
        s = Peer(scfg.new_connection(local))
        handshake(c, s)
        assert c.conn.peer_certificate() == expected.der, local


def test_alpn_preference_order(ca: Cert, server_cert: Cert) -> None:
    """NSS rotates the list it is given; the server's order must still win."""
    protos = [b"a", b"b", b"c"]
    for server_order in (protos, protos[::-1], [b"b", b"c", b"a"]):
        c, s = nss_pair(ca, server_cert, ckw=dict(alpn=protos), skw=dict(alpn=server_order))
        handshake(c, s)
        assert c.conn.alpn_protocol() == s.conn.alpn_protocol() == server_order[0]
    # the client offers them in its order (read straight from its ClientHello's ALPN extension)
    c = Peer(nss_client(None, verify_certificates=False, alpn=protos).new_connection("localhost"))
    assert b"\x00\x10\x00\x08\x00\x06\x01a\x01b\x01c" in c.take()


def test_alpn_without_overlap_completes_without_alpn(ca: Cert, server_cert: Cert) -> None:
    c, s = nss_pair(ca, server_cert, ckw=dict(alpn=[b"imap"]), skw=dict(alpn=[b"h2"]))
    handshake(c, s)
    assert c.conn.alpn_protocol() is None
    assert s.conn.alpn_protocol() is None
    c, s = nss_pair(ca, server_cert, skw=dict(alpn=[b"h2"]))  # client offers nothing
    handshake(c, s)
    assert s.conn.alpn_protocol() is None


# ---------------------------------------------------------------------------------------------
# resumption


def _connect(ccfg: Any, scfg: Any, name: str = "localhost") -> tuple[Peer, Peer]:
    c, s = Peer(ccfg.new_connection(name)), Peer(scfg.new_connection())
    handshake(c, s)
    s.write(b"x")  # after the ticket: the client reads both
    c.give(s.take())
    assert read_all(c) == b"x"
    return c, s


def test_resumption_tls13(ca: Cert, server_cert: Cert) -> None:
    ccfg, scfg = nss_client(ca), nss_server(server_cert)
    resumed = []
    for _ in range(3):
        c, s = _connect(ccfg, scfg)
        resumed.append((c.conn.session_resumed(), s.conn.session_resumed()))
        assert c.conn.peer_certificate() == server_cert.der
    assert resumed == [(False, False), (True, True), (True, True)]


def test_the_ticket_goes_out_with_the_first_application_data(ca: Cert, server_cert: Cert) -> None:
    """A ticket sent alone right after the handshake races a client that closes at once: unread,
    it makes the client's kernel reset the connection (CPython's test servers then stop)."""
    ccfg, scfg = nss_client(ca), nss_server(server_cert)
    c, s = Peer(ccfg.new_connection("localhost")), Peer(scfg.new_connection())
    handshake(c, s)
    assert s.conn.outgoing_bytes_buffered() == 0
    s.write(b"x")
    wire = s.take()
    records, at = 0, 0
    while at < len(wire):
        records += 1
        at += 5 + int.from_bytes(wire[at + 3 : at + 5], "big")
    assert records == 2  # the ticket's record, then the data's
    c.give(wire)
    assert read_all(c) == b"x"
    c2, s2 = _connect(ccfg, scfg)
    assert c2.conn.session_resumed() and s2.conn.session_resumed()


def test_resumption_off(ca: Cert, server_cert: Cert) -> None:
    for ckw, skw in ((dict(resumption=False), {}), ({}, dict(session_tickets=False))):
        ccfg, scfg = nss_client(ca, **ckw), nss_server(server_cert, **skw)
        for _ in range(2):
            c, s = _connect(ccfg, scfg)
            assert not c.conn.session_resumed() and not s.conn.session_resumed()


def test_tls12_servers_do_not_resume(ca: Cert, server_cert: Cert) -> None:
    """NSS's TLS 1.2 session cache and ticket key are process-wide: off for unitls' servers."""
    ccfg, scfg = nss_client(ca, versions=[TLS12]), nss_server(server_cert)
    for _ in range(2):
        _c, s = _connect(ccfg, scfg)
        assert not s.conn.session_resumed()


def test_sessions_stay_with_their_configurations(
    ca: Cert, server_cert: Cert, client_cert: Cert
) -> None:
    """A ticket of one server configuration is declined by another (a full handshake, not a
    failure), and client configurations never share sessions."""
    plain = nss_server(server_cert)
    strict = nss_server(server_cert, client_ca_certs=[ca.pem], require_client_cert=True)
    no_tickets = nss_server(server_cert, session_tickets=False)
    ccfg = nss_client(ca, client_chain=[client_cert.pem], client_key=client_cert.key_pem())
    c, s = _connect(ccfg, plain)
    c, s = _connect(ccfg, plain)
    assert c.conn.session_resumed()
    c, s = _connect(ccfg, strict)  # a ticket from `plain` is offered, and declined
    assert not s.conn.session_resumed()
    assert s.conn.peer_certificate() == client_cert.der
    c, s = _connect(ccfg, no_tickets)
    assert not s.conn.session_resumed()
    # the same configuration content in another object is another server: its own tickets, as
    # on every engine (a restarted server), so a full handshake
    twin = nss_server(server_cert)
    c, s = _connect(ccfg, plain)
    c, s = _connect(ccfg, twin)
    assert not s.conn.session_resumed()
    c, s = _connect(ccfg, twin)
    assert s.conn.session_resumed()
    # another client configuration has its own cache
    other = nss_client(ca, client_chain=[client_cert.pem], client_key=client_cert.key_pem())
    c, s = _connect(other, plain)
    assert not c.conn.session_resumed()
    # and the cache is per server name
    c, s = _connect(ccfg, plain, name="a.example.com")
    assert not c.conn.session_resumed()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_resumes_with_openssl(
    tmp_path: Path, ca: Cert, server_cert: Cert, version: ssl.TLSVersion
) -> None:
    sctx = ssl_server_ctx(tmp_path, server_cert, version=version)
    for resumption in (True, False):
        ccfg = nss_client(ca, resumption=resumption)
        reused = []
        for _ in range(2):
            c = Peer(ccfg.new_connection("localhost"))
            s = SslPeer(sctx, server_side=True)
            handshake(c, s)
            s.write(b"x")
            c.give(s.take())
            assert read_all(c) == b"x"
            reused.append((s.obj.session_reused, c.conn.session_resumed()))
            # a resumed TLS 1.2 session exchanges no key: no group to report
            tls12_resumed = c.conn.session_resumed() and version == ssl.TLSVersion.TLSv1_2
            assert c.conn.negotiated_group_id() == (None if tls12_resumed else 0x001D)
        assert reused == [(False, False), (resumption, resumption)]


# ---------------------------------------------------------------------------------------------
# against rustls and the stdlib ssl module (OpenSSL)


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_nss_client_rustls_server(
    ca: Cert, server_cert: Cert, client_cert: Cert, version: int
) -> None:
    c = Peer(
        nss_client(
            ca,
            client_chain=[client_cert.pem],
            client_key=client_cert.key_pem(),
            alpn=[b"h2", b"http/1.1"],
            versions=[version],
        ).new_connection("localhost")
    )
    s = RustlsPeer(
        rustls_server_config(
            server_cert, client_ca_certs=[ca.pem], require_client_cert=True, alpn=[b"http/1.1"]
        ).new_connection()
    )
    handshake(c, s)
    assert c.conn.protocol_version() == s.conn.protocol_version() == version
    assert c.conn.alpn_protocol() == b"http/1.1"
    assert s.conn.peer_certificate() == client_cert.der
    payload = os.urandom(300_000)
    assert transfer(c, s, payload) == payload
    assert transfer(s, c, payload) == payload
    c.conn.shutdown()
    s.give(c.take())
    assert s.conn.read(10) == b""
    assert s.conn.close_notify_received()


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_rustls_client_nss_server(
    ca: Cert, server_cert: Cert, client_cert: Cert, version: int
) -> None:
    c = RustlsPeer(
        rustls_client_config(
            ca,
            client_chain=[client_cert.pem],
            client_key=client_cert.key_pem(),
            alpn=[b"h2"],
            versions=[version],
        ).new_connection("localhost")
    )
    s = Peer(
        nss_server(
            server_cert, client_ca_certs=[ca.pem], require_client_cert=True, alpn=[b"h2"]
        ).new_connection()
    )
    handshake(c, s)
    assert s.conn.protocol_version() == version
    assert s.conn.server_name() == "localhost"
    assert s.conn.alpn_protocol() == b"h2"
    assert s.conn.peer_certificate() == client_cert.der
    payload = os.urandom(300_000)
    assert transfer(c, s, payload) == payload
    assert transfer(s, c, payload) == payload
    s.conn.shutdown()
    c.give(s.take())
    assert c.conn.read(10) == b""


def test_rustls_client_resumes_with_nss_server(ca: Cert, server_cert: Cert) -> None:
    ccfg, scfg = rustls_client_config(ca), nss_server(server_cert)
    resumed = []
    for _ in range(2):
        c, s = _connect(ccfg, scfg)
        resumed.append((c.conn.session_resumed(), s.conn.session_resumed()))
    assert resumed == [(False, False), (True, True)]
    # a ticket of this configuration offered to another one: declined (a HelloRetryRequest
    # with a cookie, then a full handshake), not a failure
    other = nss_server(server_cert, alpn=[b"h2"])
    c, s = _connect(ccfg, other)
    assert not c.conn.session_resumed() and not s.conn.session_resumed()


def test_openssl_client_ticket_declined_by_another_nss_configuration(
    tmp_path: Path, ca: Cert, server_cert: Cert
) -> None:
    cctx = ssl_client_ctx(tmp_path, ca)
    first, second = nss_server(server_cert), nss_server(server_cert, alpn=[b"h2"])
    c = SslPeer(cctx, server_side=False, hostname="localhost")
    s = Peer(first.new_connection())
    handshake(c, s)
    s.write(b"x")
    c.give(s.take())
    assert c.read_some() == b"x"
    session = c.obj.session
    assert session is not None and session.has_ticket
    for scfg, resumed in ((first, True), (second, False)):
        c = SslPeer(cctx, server_side=False, hostname="localhost")
        c.obj = cctx.wrap_bio(c.inc, c.out, server_hostname="localhost", session=session)
        s = Peer(scfg.new_connection())
        handshake(c, s)
        assert c.obj.session_reused is resumed
        assert s.conn.session_resumed() is resumed


def test_rustls_rejections_reach_nss(ca: Cert, server_cert: Cert) -> None:
    stranger = make_ca("stranger")
    c = RustlsPeer(rustls_client_config(stranger).new_connection("localhost"))
    s = Peer(nss_server(server_cert).new_connection())
    with pytest.raises(CertificateVerificationError):
        handshake(c, s)
    with pytest.raises(CertificateVerificationError) as info:
        s.give(c.take())
        s.conn.do_handshake()
    assert info.value.alert == "unknown_ca"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_nss_client_openssl_server(
    tmp_path: Path, ca: Cert, server_cert: Cert, client_cert: Cert, version: ssl.TLSVersion
) -> None:
    sctx = ssl_server_ctx(
        tmp_path, server_cert, client_ca=ca, alpn=["h2", "http/1.1"], version=version
    )
    c = Peer(
        nss_client(
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
    c.conn.shutdown()
    s.give(c.take())
    assert s.obj.read(10) == b""


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_openssl_client_nss_server(
    tmp_path: Path, ca: Cert, server_cert: Cert, client_cert: Cert, version: ssl.TLSVersion
) -> None:
    cctx = ssl_client_ctx(tmp_path, ca, client=client_cert, alpn=["h2"], version=version)
    c = SslPeer(cctx, server_side=False, hostname="localhost")
    s = Peer(
        nss_server(
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
    try:
        c.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    s.give(c.take())
    assert s.conn.read(10) == b""
    assert s.conn.close_notify_received()


def test_openssl_p256_only_server_gives_secp256r1(
    tmp_path: Path, ca: Cert, server_cert: Cert
) -> None:
    sctx = ssl_server_ctx(tmp_path, server_cert)
    sctx.set_ecdh_curve("prime256v1")
    c = Peer(nss_client(ca).new_connection("localhost"))
    s = SslPeer(sctx, server_side=True)
    handshake(c, s)  # a HelloRetryRequest: NSS offered an x25519 share only
    assert c.conn.negotiated_group_id() == 0x0017  # secp256r1


def test_openssl_server_rejects_nss_client_cert(
    tmp_path: Path, ca: Cert, server_cert: Cert
) -> None:
    stranger = make_ca("stranger")
    bad = issue(stranger, "client.test", client=True)
    sctx = ssl_server_ctx(tmp_path, server_cert, client_ca=ca, version=ssl.TLSVersion.TLSv1_2)
    c = Peer(
        nss_client(ca, client_chain=[bad.pem], client_key=bad.key_pem()).new_connection("localhost")
    )
    s = SslPeer(sctx, server_side=True)
    with pytest.raises(ssl.SSLError):
        handshake(c, s)
    with pytest.raises(CertificateVerificationError, match="peer rejected our certificate"):
        c.give(s.take())
        c.conn.do_handshake()


def test_openssl_client_rejects_nss_server(tmp_path: Path, server_cert: Cert) -> None:
    stranger = make_ca("stranger")
    c = SslPeer(ssl_client_ctx(tmp_path, stranger), server_side=False, hostname="localhost")
    s = Peer(nss_server(server_cert).new_connection())
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(c, s)
    with pytest.raises(CertificateVerificationError, match="peer rejected our certificate"):
        s.give(c.take())
        s.conn.do_handshake()


def test_ragged_eof_against_openssl(tmp_path: Path, ca: Cert, server_cert: Cert) -> None:
    c = Peer(nss_client(ca).new_connection("localhost"))
    s = SslPeer(ssl_server_ctx(tmp_path, server_cert), server_side=True)
    handshake(c, s)
    s.write(b"tail")
    c.give(s.take())
    c.give(b"")
    assert c.conn.read(100) == b"tail"
    with pytest.raises(RaggedEOF):
        c.conn.read(100)


# ---------------------------------------------------------------------------------------------
# threads and process-wide state


def test_threads(ca: Cert, server_cert: Cert, client_cert: Cert) -> None:
    ccfg = nss_client(ca, client_chain=[client_cert.pem], client_key=client_cert.key_pem())
    scfg = nss_server(server_cert, client_ca_certs=[ca.pem], require_client_cert=True)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                c = Peer(ccfg.new_connection("localhost"))
                s = Peer(scfg.new_connection())
                handshake(c, s)
                payload = os.urandom(100_000)
                assert transfer(c, s, payload) == payload
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_first_use_from_many_threads_at_once() -> None:
    """NSS is loaded and initialised once, whichever threads get there first."""
    out = run_fresh(
        """
        import threading
        from test_rustls_core import make_ca, issue, RustlsPeer as P, handshake
        from test_nss_core import nss_client, nss_server
        ca = make_ca("threads"); leaf = issue(ca, "localhost")
        barrier = threading.Barrier(8)
        results = []
        def work():
            barrier.wait()
            c = P(nss_client(ca).new_connection("localhost"))
            s = P(nss_server(leaf).new_connection())
            handshake(c, s)
            results.append(c.conn.protocol_version())
        ts = [threading.Thread(target=work) for _ in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(sorted(results))
        """
    )
    assert out.strip() == str([0x0304] * 8)


def test_a_system_policy_that_overrides_the_configuration_is_refused() -> None:
    """NSS clamps version ranges to its policy silently; the engine reads them back."""
    out = run_fresh(
        """
        import ctypes
        from unitls import _native
        from unitls._errors import ConfigurationError
        from test_rustls_core import make_ca
        from test_nss_core import nss_client
        _native.nss_status()  # NSS loaded; set a policy as a system policy file would
        util, nss = ctypes.CDLL("libnssutil3.so"), ctypes.CDLL("libnss3.so")
        assert util.NSS_SetAlgorithmPolicy(345, 0x10, 0) == 0  # APPLY_SSL_POLICY, USE_IN_SSL
        assert nss.NSS_OptionSet(0x008, 0x0304) == 0  # NSS_TLS_VERSION_MIN_POLICY: TLS 1.3
        ca = make_ca("policy")
        try:
            nss_client(ca)
        except ConfigurationError as exc:
            print("refused:", exc)
        nss_client(ca, versions=[0x0304])
        print("TLS 1.3 only: accepted")
        """
    )
    assert "refused: the system's NSS policy does not allow TLS 1.2 to TLS 1.3" in out
    assert "TLS 1.3 only: accepted" in out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_does_not_repeat_its_parents_randomness() -> None:
    """Debian's NSS 3.87 has no fork detection: without a reseed, parent and child produce the
    same ClientHello random (and the same ephemeral keys and ECDSA nonces)."""
    out = run_fresh(
        """
        import os
        from test_rustls_core import make_ca
        from test_nss_core import nss_client
        cfg = nss_client(make_ca("fork"))
        cfg.new_connection("localhost").process_outgoing(-1)  # NSS seeded and used
        r, w = os.pipe()
        pid = os.fork()
        randoms = {cfg.new_connection("localhost").process_outgoing(-1)[11:43] for _ in range(3)}
        if pid == 0:
            os.write(w, b"".join(sorted(randoms)))
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(r, 200)
        theirs = {child[i : i + 32] for i in range(0, len(child), 32)}
        print(len(theirs), len(randoms), len(theirs & randoms))
        """
    )
    assert out.split() == ["3", "3", "0"]


def test_system_roots_follow_ssl_cert_file(tmp_path: Path, ca: Cert, server_cert: Cert) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.pem)
    code = f"""
        from test_rustls_core import Cert, RustlsPeer as P, handshake
        from test_nss_core import nss_client, nss_server
        from unitls._errors import CertificateVerificationError
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization as ser
        cert = x509.load_pem_x509_certificate({server_cert.pem!r})
        key = ser.load_pem_private_key({server_cert.key_pem()!r}, None)
        leaf = Cert(cert, key)
        c = P(nss_client(None, system_roots=True).new_connection("localhost"))
        s = P(nss_server(leaf).new_connection())
        try:
            handshake(c, s)
            print("verified")
        except CertificateVerificationError as e:
            print("refused:", e.reason)
    """
    assert run_fresh(code, env={"SSL_CERT_FILE": str(bundle)}).strip() == "verified"
    other = tmp_path / "other.pem"
    other.write_bytes(make_ca("unrelated").pem)
    out = run_fresh(code, env={"SSL_CERT_FILE": str(other)})
    assert out.startswith("refused: unknown issuer")
