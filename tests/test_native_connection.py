"""The Rust extension's generic ``Connection``: thread safety, panic boundary, buffer types.

These promises hold for every Rust engine (they live in ``rust/src/conn.rs``, written once); the
rustls engine is the one built here, reached through its public ``TLSBuffer``.
"""

from __future__ import annotations

import array
import ctypes
import ssl
import threading
from typing import Any

import pytest

import unitls
from unitls._certgen import CA

pytestmark = pytest.mark.skipif(
    "rustls" not in unitls.implementations(), reason="rustls engine not built"
)


@pytest.fixture(scope="module")
def rustls() -> unitls.TLSImplementation[Any, Any]:
    return unitls.get_implementation("rustls")


@pytest.fixture(scope="module")
def pki() -> tuple[CA, Any]:
    ca = CA.create("native connection tests")
    return ca, ca.issue("localhost", "127.0.0.1")


def _configs(
    pki: tuple[CA, Any], client_alpn: Any = (), server_alpn: Any = ()
) -> tuple[unitls.TLSClientConfiguration, unitls.TLSServerConfiguration]:
    ca, leaf = pki
    return (
        unitls.TLSClientConfiguration(trust_store=ca.trust_store(), inner_protocols=client_alpn),
        unitls.TLSServerConfiguration(
            certificate_chain=[leaf.signing_chain()], inner_protocols=server_alpn
        ),
    )


def _pair(rustls: Any, pki: tuple[CA, Any], **kw: Any) -> tuple[unitls.TLSBuffer, unitls.TLSBuffer]:
    client_config, server_config = _configs(pki, **kw)
    client = rustls.client_context(client_config).create_buffer("localhost")
    server = rustls.server_context(server_config).create_buffer()
    return client, server


def _move(src: unitls.TLSBuffer, dst: unitls.TLSBuffer) -> None:
    data = src.process_outgoing(-1)
    if data:  # b"" would tell dst the transport ended
        dst.process_incoming(data)


def _handshake(client: unitls.TLSBuffer, server: unitls.TLSBuffer) -> None:
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except unitls.WantReadError:
                pass
        _move(client, server)
        _move(server, client)
        if client.negotiated_tls_version and server.negotiated_tls_version:
            return
    raise AssertionError("handshake did not complete")


def test_a_panic_in_the_engine_is_a_tls_error_and_fails_the_connection(
    rustls: Any, pki: Any
) -> None:
    client, server = _pair(rustls, pki)
    _handshake(client, server)
    conn = client._conn  # type: ignore[attr-defined]
    with pytest.raises(unitls.TLSError, match="internal error in the rustls engine") as info:
        conn._panic_for_test()
    assert type(info.value) is unitls.TLSError
    # The connection is failed for good: every later call says so, none crashes.
    with pytest.raises(unitls.TLSError, match="internal error in the rustls engine"):
        client.write(b"after the panic")
    with pytest.raises(unitls.TLSError, match="internal error in the rustls engine"):
        client.read(10)
    # The other connection is untouched.
    server.write(b"still fine")
    assert server.outgoing_bytes_buffered() > 0


def test_two_threads_on_one_connection(rustls: Any, pki: Any) -> None:
    """One thread writes while another reads and moves ciphertext: no 'Already borrowed'."""
    client, server = _pair(rustls, pki)
    _handshake(client, server)
    errors: list[BaseException] = []
    stop = threading.Event()
    rounds = 2000

    def writer() -> None:
        try:
            for _ in range(rounds):
                client.write(b"x" * 1000)
        except BaseException as exc:  # the test reports it
            errors.append(exc)
        finally:
            stop.set()

    def mover() -> None:
        try:
            while not stop.is_set() or client.outgoing_bytes_buffered():
                data = client.process_outgoing(65536)
                if data:
                    server.process_incoming(data)
                    while True:
                        try:
                            if not server.read(65536):
                                break
                        except unitls.WantReadError:
                            break
                try:
                    client.read(100)
                except unitls.WantReadError:
                    pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=mover)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_any_contiguous_buffer_is_taken_as_bytes(rustls: Any, pki: Any) -> None:
    client, server = _pair(rustls, pki)
    _handshake(client, server)
    payload = array.array("I", range(256))  # 1024 bytes, item size 4
    assert client.write(payload) == payload.itemsize * len(payload)
    assert client.write(array.array("b", [1, -2, 3])) == 3
    assert client.write((ctypes.c_char * 4).from_buffer_copy(b"ctyp")) == 4
    wire = client.process_outgoing(-1)
    server.process_incoming(array.array("b", wire))
    into = array.array("I", bytes(1024))
    n = server.read(1024, into)
    assert n == 1024 and into == payload
    raw = (ctypes.c_char * 64)()
    n = server.read(64, raw)
    assert raw.raw[:n] == b"\x01\xfe\x03ctyp"


def test_process_incoming_refuses_what_is_not_a_buffer(rustls: Any, pki: Any) -> None:
    client, _server = _pair(rustls, pki)
    for bad in (None, 0, "text"):
        with pytest.raises(TypeError):
            client.process_incoming(bad)  # type: ignore[arg-type]


def test_alpn_without_common_protocol_completes_without_alpn(rustls: Any, pki: Any) -> None:
    """As with OpenSSL: a server whose protocols the client does not offer still serves it."""
    client, server = _pair(rustls, pki, client_alpn=[b"imap"], server_alpn=[unitls.NextProtocol.H2])
    _handshake(client, server)
    assert client.negotiated_protocol() is None
    assert server.negotiated_protocol() is None
    client, server = _pair(
        rustls,
        pki,
        client_alpn=[b"imap", unitls.NextProtocol.H2],
        server_alpn=[unitls.NextProtocol.HTTP1, unitls.NextProtocol.H2],
    )
    _handshake(client, server)
    assert client.negotiated_protocol() == unitls.NextProtocol.H2


def test_alpn_mismatch_with_a_stdlib_client(rustls: Any, pki: Any) -> None:
    ca, _leaf = pki
    _client_config, server_config = _configs(pki, server_alpn=[unitls.NextProtocol.H2])
    server = rustls.server_context(server_config).create_buffer()
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    ctx.set_alpn_protocols(["http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    for _ in range(10):
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        server.process_incoming(out.read())
        try:
            server.do_handshake()
        except unitls.WantReadError:
            pass
        inc.write(server.process_outgoing(-1))
    assert obj.version() is not None
    assert obj.selected_alpn_protocol() is None


def test_session_resumption_and_group_are_reported(rustls: Any, pki: Any) -> None:
    client_config, server_config = _configs(pki)
    client_ctx = rustls.client_context(client_config)
    server_ctx = rustls.server_context(server_config)
    resumed = []
    for _ in range(2):
        client, server = client_ctx.create_buffer("localhost"), server_ctx.create_buffer()
        assert client._conn.negotiated_group_id() is None  # type: ignore[attr-defined]
        _handshake(client, server)
        # TLS 1.3 tickets arrive after the handshake: let the client read them.
        _move(server, client)
        try:
            client.read(1)
        except unitls.WantReadError:
            pass
        resumed.append(
            (client._conn.session_resumed(), server._conn.session_resumed())  # type: ignore[attr-defined]
        )
        assert client._conn.negotiated_group_id() == server._conn.negotiated_group_id()  # type: ignore[attr-defined]
        assert client.negotiated_group in ("x25519", "X25519MLKEM768")
    assert resumed == [(False, False), (True, True)]


def _pem(key: Any, fmt: str = "PKCS8") -> bytes:
    from cryptography.hazmat.primitives import serialization as s

    return bytes(key.private_bytes(s.Encoding.PEM, getattr(s.PrivateFormat, fmt), s.NoEncryption()))


def _unusable_keys() -> list[tuple[str, bytes, str]]:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa

    return [
        ("rsa-1024", _pem(rsa.generate_private_key(65537, 1024)), "RSA-1024 is too small"),
        (
            "rsa-1024-pkcs1",
            _pem(rsa.generate_private_key(65537, 1024), "TraditionalOpenSSL"),
            "RSA-1024 is too small",
        ),
        ("secp256k1", _pem(ec.generate_private_key(ec.SECP256K1())), "ECDSA on secp256k1"),
        (
            "brainpool",
            _pem(ec.generate_private_key(ec.BrainpoolP256R1()), "TraditionalOpenSSL"),
            "brainpool curve",
        ),
        ("dsa", _pem(dsa.generate_private_key(2048)), "DSA keys cannot sign"),
        ("ed448", _pem(ed448.Ed448PrivateKey.generate()), "Ed448 is not supported"),
    ]


@pytest.mark.parametrize("case", range(6), ids=[c[0] for c in _unusable_keys()])
def test_rustls_says_why_a_key_is_unusable(rustls: Any, pki: Any, case: int) -> None:
    _name, key_pem, expected = _unusable_keys()[case]
    _ca, leaf = pki
    chain = unitls.SigningChain(
        (unitls.Certificate.from_buffer(leaf.cert_pem), unitls.PrivateKey.from_buffer(key_pem))
    )
    with pytest.raises(unitls.ConfigurationError, match=expected):
        rustls.server_context(unitls.TLSServerConfiguration(certificate_chain=[chain]))


def test_rustls_truncated_pem_and_bad_intermediate(rustls: Any, pki: Any) -> None:
    _ca, leaf = pki
    cert = unitls.Certificate.from_buffer(leaf.cert_pem)
    truncated = unitls.SigningChain((cert, unitls.PrivateKey.from_buffer(leaf.key_pem[:-30])))
    with pytest.raises(unitls.ConfigurationError, match="no END line"):
        rustls.server_context(unitls.TLSServerConfiguration(certificate_chain=[truncated]))
    not_a_cert = unitls.SigningChain(
        (cert, unitls.PrivateKey.from_buffer(leaf.key_pem)),
        [unitls.Certificate.from_buffer(b"\x30\x03\x02\x01\x00")],
    )
    with pytest.raises(unitls.ConfigurationError, match="chain certificate #1 is not a valid"):
        rustls.server_context(unitls.TLSServerConfiguration(certificate_chain=[not_a_cert]))
