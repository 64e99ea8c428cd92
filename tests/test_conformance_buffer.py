"""Conformance of ``TLSBuffer`` (in-memory TLS) for every engine and every client x server pair.

Written against the PEP 748 types only: the two peers talk through ``BufferPump`` (conftest).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, TypeAlias

import pytest

import unitls
from unitls import (
    Certificate,
    CipherSuite,
    NextProtocol,
    PrivateKey,
    SigningChain,
    TLSClientConfiguration,
    TLSServerConfiguration,
    TLSVersion,
    TrustStore,
    extensions,
)
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(120)

TLS12 = TLSVersion.TLSv1_2
TLS13 = TLSVersion.TLSv1_3


def only(version: TLSVersion) -> dict[str, TLSVersion]:
    return {"lowest_supported_version": version, "highest_supported_version": version}


def client_cfg(ca: CA, **kwargs: Any) -> TLSClientConfiguration:
    return TLSClientConfiguration(trust_store=ca.trust_store(), **kwargs)


def server_cfg(cert: Issued, **kwargs: Any) -> TLSServerConfiguration:
    return TLSServerConfiguration(certificate_chain=[cert.signing_chain()], **kwargs)


def expect_failure(pump: Any, client: unitls.TLSBuffer, server: unitls.TLSBuffer) -> Exception:
    """Handshake, then exchange a byte each way: something must raise a TLSError subclass.

    With TLS 1.3 a client learns of a rejected certificate only when it next reads.
    """
    with pytest.raises(unitls.TLSError) as info:
        pump.handshake(client, server)
        pump.send(client, server, b"ping")
        server.write(b"pong")
        pump.transfer(server, client)
        pump.drain(client)
        pump.transfer(client, server)
        pump.drain(server)
        pytest.fail("the connection was expected to fail but both sides carried data")
    return info.value


# -- basics ------------------------------------------------------------------------------------


def test_handshake_and_data(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    server_cert: Issued,
    pump: Any,
) -> None:
    cctx = client_engine.client_context(client_config)
    sctx = server_engine.server_context(server_config)
    assert isinstance(cctx, unitls.ClientContext)
    assert isinstance(sctx, unitls.ServerContext)
    assert cctx.configuration == client_config
    assert sctx.configuration == server_config
    client, server = cctx.create_buffer("localhost"), sctx.create_buffer()
    assert isinstance(client, unitls.TLSBuffer) and isinstance(server, unitls.TLSBuffer)
    assert client.context is cctx and server.context is sctx
    for buf in (client, server):
        assert buf.cipher() is None
        assert buf.negotiated_protocol() is None
        assert buf.negotiated_tls_version is None
        assert buf.getpeercert() is None
    pump.handshake(client, server)
    for buf in (client, server):
        assert isinstance(buf.cipher(), int)  # CipherSuite is an IntEnum; unknown ids are ints
        assert buf.negotiated_tls_version is TLS13
        assert buf.negotiated_protocol() is None
    assert client.cipher() == server.cipher()
    assert client.getpeercert() == server_cert.cert_der
    assert server.getpeercert() is None
    assert pump.send(client, server, b"hello server") == b"hello server"
    assert pump.send(server, client, b"hello client") == b"hello client"
    assert client.outgoing_bytes_buffered() == 0
    assert server.incoming_bytes_buffered() == 0


def test_context_makes_many_buffers(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    cctx = engine.client_context(client_config)
    sctx = engine.server_context(server_config)
    for i in range(5):
        client, server = cctx.create_buffer("localhost"), sctx.create_buffer()
        pump.handshake(client, server)
        msg = f"connection {i}".encode()
        assert pump.send(client, server, msg) == msg


def test_outgoing_buffer_accounting(engine: Impl, client_config: TLSClientConfiguration) -> None:
    client = engine.client_context(client_config).create_buffer("localhost")
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    pending = client.outgoing_bytes_buffered()
    assert pending > 0
    first = client.process_outgoing(5)
    assert len(first) == 5 and first[0] == 0x16  # a handshake record
    assert client.outgoing_bytes_buffered() == pending - 5
    rest = client.process_outgoing(1 << 20)
    assert len(rest) == pending - 5
    assert client.outgoing_bytes_buffered() == 0
    assert client.process_outgoing(100) == b""


def test_large_data_both_ways(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.connected(client_engine, server_engine, client_config, server_config)
    rng = random.Random(748)
    data = rng.randbytes(4 * 1024 * 1024 + 17)
    assert pump.send(client, server, data, write_size=1 << 20) == data
    assert pump.send(server, client, data, write_size=100_003) == data


def test_many_records_fed_at_once(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    """Dozens of records in one process_incoming call (what a 256 KiB socket read or an asyncio
    transport hands over) are taken, or refused with WantReadError, never a protocol error."""
    client, server = pump.connected(client_engine, server_engine, client_config, server_config)
    data = random.Random(12).randbytes(600_000)
    server.write(data)
    flight = server.process_outgoing(server.outgoing_bytes_buffered())
    got = bytearray()
    for _ in range(100):
        try:
            client.process_incoming(flight)
            flight = b""
        except unitls.WantReadError:
            pass  # refused (the PEP's "read first"): drain, then offer it again
        got += pump.drain(client)
        if not flight:
            break
    assert not flight
    assert bytes(got) == data


def test_read_into_buffer(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.connected(engine, engine, client_config, server_config)
    client.write(b"0123456789")
    pump.transfer(client, server)
    target = bytearray(32)
    n = server.read(4, target)
    assert n == 4 and isinstance(n, int)
    assert target[:4] == b"0123"
    n = server.read(100, memoryview(target)[4:])
    assert n == 6
    assert bytes(target[:10]) == b"0123456789"
    with pytest.raises(unitls.WantReadError):
        server.read(10)


# -- ALPN --------------------------------------------------------------------------------------

ALPN_CASES = [
    # (client offers, server accepts, expected on both sides)
    ([NextProtocol.H2, NextProtocol.HTTP1], [NextProtocol.HTTP1], NextProtocol.HTTP1),
    ([NextProtocol.HTTP1, NextProtocol.H2], [NextProtocol.H2, NextProtocol.HTTP1], "either"),
    ([b"custom/1"], [b"other/2", b"custom/1"], b"custom/1"),
    ([NextProtocol.H2], [b"h2"], NextProtocol.H2),
    ([b"http/1.1"], [NextProtocol.HTTP1], NextProtocol.HTTP1),
    ([], [NextProtocol.H2], None),
    ([NextProtocol.H2], [], None),
]


@pytest.mark.parametrize(("offered", "accepted", "expected"), ALPN_CASES)
def test_alpn(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    pump: Any,
    offered: list[Any],
    accepted: list[Any],
    expected: Any,
) -> None:
    client, server = pump.connected(
        client_engine,
        server_engine,
        client_cfg(ca, inner_protocols=offered),
        server_cfg(server_cert, inner_protocols=accepted),
    )
    if expected == "either":
        # Both offer H2 and HTTP1 in different orders: either is a valid server choice.
        chosen = server.negotiated_protocol()
        assert chosen in (NextProtocol.H2, NextProtocol.HTTP1)
        assert client.negotiated_protocol() == chosen
        return
    assert client.negotiated_protocol() == expected
    assert server.negotiated_protocol() == expected
    # Known names come back as enum members, unknown ones as bytes.
    assert type(client.negotiated_protocol()) is type(expected)


def test_alpn_no_overlap(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, pump: Any
) -> None:
    # RFC 7301 lets the server refuse (no_application_protocol) or carry on without ALPN.
    client, server = pump.pair(
        client_engine,
        server_engine,
        client_cfg(ca, inner_protocols=[b"spdy/3"]),
        server_cfg(server_cert, inner_protocols=[NextProtocol.H2]),
    )
    try:
        pump.handshake(client, server)
    except unitls.TLSError:
        return
    assert client.negotiated_protocol() is None
    assert server.negotiated_protocol() is None


# -- versions and cipher suites ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_kw", "server_kw", "expected"),
    [
        (only(TLS12), {}, TLS12),
        ({}, only(TLS12), TLS12),
        (only(TLS13), only(TLS13), TLS13),
        ({"highest_supported_version": TLSVersion.MAXIMUM_SUPPORTED}, {}, TLS13),
        ({"lowest_supported_version": TLSVersion.MINIMUM_SUPPORTED}, only(TLS12), TLS12),
        (only(TLS12), only(TLS13), None),
        (only(TLS13), only(TLS12), None),
    ],
    ids=["c12", "s12", "both13", "cmax", "cmin-s12", "c12-s13", "c13-s12"],
)
def test_versions(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    pump: Any,
    client_kw: dict[str, Any],
    server_kw: dict[str, Any],
    expected: TLSVersion | None,
) -> None:
    client, server = pump.pair(
        client_engine,
        server_engine,
        client_cfg(ca, **client_kw),
        server_cfg(server_cert, **server_kw),
    )
    if expected is None:
        with pytest.raises(unitls.TLSError):
            pump.handshake(client, server)
        return
    pump.handshake(client, server)
    assert client.negotiated_tls_version is expected
    assert server.negotiated_tls_version is expected
    assert pump.send(client, server, b"v") == b"v"


TLS12_SUITES = [
    CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    0xC02B,  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 as a raw id
]


@pytest.mark.parametrize("suite", TLS12_SUITES, ids=lambda s: f"{int(s):#06x}")
@pytest.mark.parametrize("side", ["client", "server"])
def test_tls12_cipher_restriction(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    pump: Any,
    suite: int,
    side: str,
) -> None:
    restricted = {"ciphers": [suite], **only(TLS12)}
    client, server = pump.connected(
        client_engine,
        server_engine,
        client_cfg(ca, **(restricted if side == "client" else {})),
        server_cfg(server_cert, **(restricted if side == "server" else {})),
    )
    assert client.negotiated_tls_version is TLS12
    assert client.cipher() == suite
    assert server.cipher() == suite
    assert isinstance(client.cipher(), CipherSuite)  # a known id comes back as the enum


def test_tls12_cipher_no_overlap(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, pump: Any
) -> None:
    client, server = pump.pair(
        client_engine,
        server_engine,
        client_cfg(
            ca, ciphers=[CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], **only(TLS12)
        ),
        server_cfg(server_cert, ciphers=[CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]),
    )
    with pytest.raises(unitls.TLSError):
        pump.handshake(client, server)


def _context_or_refusal(factory: Any, config: Any) -> Any:
    """The context, or None when the engine refuses the configuration (ConfigurationError)."""
    try:
        return factory(config)
    except unitls.ConfigurationError as exc:
        assert str(exc), "a ConfigurationError must say what is not supported"
        return None


@pytest.mark.parametrize(
    "suites",
    [
        [CipherSuite.TLS_CHACHA20_POLY1305_SHA256],
        [CipherSuite.TLS_AES_256_GCM_SHA384],
        [0x1301],
        [CipherSuite.TLS_AES_128_GCM_SHA256, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
    ],
    ids=["chacha", "aes256", "raw-aes128", "aes128+tls12"],
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_tls13_cipher_restriction(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    pump: Any,
    suites: list[int],
    side: str,
) -> None:
    # Honoured or refused at context construction; never silently ignored.
    restricted = {"ciphers": suites}
    ccfg = client_cfg(ca, **(restricted if side == "client" else {}))
    scfg = server_cfg(server_cert, **(restricted if side == "server" else {}))
    cctx = _context_or_refusal(client_engine.client_context, ccfg)
    sctx = _context_or_refusal(server_engine.server_context, scfg)
    if cctx is None or sctx is None:
        return
    client, server = cctx.create_buffer("localhost"), sctx.create_buffer()
    pump.handshake(client, server)
    assert client.negotiated_tls_version is TLS13
    assert client.cipher() in suites
    assert server.cipher() == client.cipher()


def test_tls13_cipher_no_overlap(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, pump: Any
) -> None:
    cctx = _context_or_refusal(
        client_engine.client_context,
        client_cfg(ca, ciphers=[CipherSuite.TLS_AES_128_GCM_SHA256], **only(TLS13)),
    )
    sctx = _context_or_refusal(
        server_engine.server_context,
        server_cfg(server_cert, ciphers=[CipherSuite.TLS_CHACHA20_POLY1305_SHA256]),
    )
    if cctx is None or sctx is None:
        return
    with pytest.raises(unitls.TLSError):
        pump.handshake(cctx.create_buffer("localhost"), sctx.create_buffer())


def test_unknown_cipher_id(engine: Impl, ca: CA, server_cert: Issued) -> None:
    # A suite the engine does not know: refused, never dropped silently down to nothing.
    for factory, cfg in [
        (engine.client_context, client_cfg(ca, ciphers=[0x0A0A])),
        (engine.server_context, server_cfg(server_cert, ciphers=[0x0A0A])),
    ]:
        with pytest.raises(unitls.ConfigurationError, match=r"(?i)0x0a0a|0xa0a|2570"):
            factory(cfg)


# -- mutual TLS --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_mutual_tls(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
    pump: Any,
    version: TLSVersion,
) -> None:
    client, server = pump.connected(
        client_engine,
        server_engine,
        client_cfg(ca, certificate_chain=client_cert.signing_chain(), **only(version)),
        server_cfg(server_cert, trust_store=ca.trust_store()),
    )
    assert server.getpeercert() == client_cert.cert_der
    assert client.getpeercert() == server_cert.cert_der
    assert pump.send(client, server, b"mtls") == b"mtls"
    assert pump.send(server, client, b"ok") == b"ok"


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_mutual_tls_missing_client_cert(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    pump: Any,
    version: TLSVersion,
) -> None:
    client, server = pump.pair(
        client_engine,
        server_engine,
        client_cfg(ca, **only(version)),
        server_cfg(server_cert, trust_store=ca.trust_store()),
    )
    expect_failure(pump, client, server)
    assert server.getpeercert() is None


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_mutual_tls_untrusted_client_cert(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    pump: Any,
    version: TLSVersion,
) -> None:
    stranger = CA.create("stranger CA").issue("client.example", server=False, client=True)
    client, server = pump.pair(
        client_engine,
        server_engine,
        client_cfg(ca, certificate_chain=stranger.signing_chain(), **only(version)),
        server_cfg(server_cert, trust_store=ca.trust_store()),
    )
    expect_failure(pump, client, server)


def test_server_without_trust_store_ignores_client_cert(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.connected(
        client_engine,
        server_engine,
        client_cfg(ca, certificate_chain=client_cert.signing_chain()),
        server_config,
    )
    assert server.getpeercert() is None
    assert pump.send(client, server, b"x") == b"x"


# -- SNI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sni_certs(ca: CA) -> list[Issued]:
    return [
        ca.issue("first.test", "127.0.0.1"),  # the default chain
        ca.issue("*.example.test"),
        ca.issue("other.test", "www.other.test", "10.9.8.7"),
    ]


@pytest.fixture(scope="module")
def sni_server_config(sni_certs: list[Issued]) -> TLSServerConfiguration:
    return TLSServerConfiguration(certificate_chain=[c.signing_chain() for c in sni_certs])


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("first.test", 0),
        ("foo.example.test", 1),
        ("BAR.Example.TEST", 1),
        ("other.test", 2),
        ("www.other.test", 2),
        ("127.0.0.1", 0),  # an IP address is never sent as SNI: the default chain
    ],
)
def test_sni_selects_chain(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    sni_certs: list[Issued],
    sni_server_config: TLSServerConfiguration,
    pump: Any,
    name: str,
    index: int,
) -> None:
    client, server = pump.connected(
        client_engine, server_engine, client_cfg(ca), sni_server_config, server_hostname=name
    )
    assert client.getpeercert() == sni_certs[index].cert_der
    assert pump.send(client, server, name.encode()) == name.encode()


@pytest.mark.parametrize(
    ("name", "client_sees", "server_sees"),
    [
        ("foo.example.test", "foo.example.test", "foo.example.test"),
        ("BAR.Example.TEST", "BAR.Example.TEST", "bar.example.test"),
        ("first.test.", "first.test", "first.test"),  # fully qualified: SNI has no dot
        ("127.0.0.1", "127.0.0.1", None),  # an IP address is never sent as SNI
    ],
)
def test_server_name(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    sni_server_config: TLSServerConfiguration,
    pump: Any,
    name: str,
    client_sees: str,
    server_sees: str | None,
) -> None:
    """A fully qualified name (trailing dot) verifies on every engine. Where buffers have
    ``unitls.extensions.SupportsServerName``, the server reports the SNI it got (lowercase,
    without a trailing dot) and the client the name it verified and sent."""
    client, server = pump.connected(
        client_engine, server_engine, client_cfg(ca), sni_server_config, server_hostname=name
    )
    if isinstance(client, extensions.SupportsServerName):
        assert client.server_name == client_sees
    if isinstance(server, extensions.SupportsServerName):
        assert server.server_name == server_sees


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["nomatch.test", "example.test", "a.b.example.test", "10.9.8.7"])
def test_sni_unknown_name_gets_default(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    sni_certs: list[Issued],
    sni_server_config: TLSServerConfiguration,
    pump: Any,
    name: str,
) -> None:
    # The server falls back to the first chain, which does not name this host: the client
    # must reject it as a verification failure (hostname mismatch).
    client, server = pump.pair(
        client_engine, server_engine, client_cfg(ca), sni_server_config, server_hostname=name
    )
    with pytest.raises(unitls.CertificateVerificationError) as info:
        pump.handshake(client, server)
    assert info.value.reason
    # With the hostname check off, the certificate received shows which chain was chosen.
    from unitls.insecure import InsecureConfiguration, get_insecure_implementation

    try:
        insecure = get_insecure_implementation(client_engine.name)
        cctx = insecure.client_context(
            client_cfg(ca), InsecureConfiguration(disable_hostname_check=True)
        )
    except unitls.ConfigurationError as exc:
        pytest.fail(f"engine {client_engine.name} has no insecure variant: {exc}")
    client = cctx.create_buffer(name)
    server = server_engine.server_context(sni_server_config).create_buffer()
    pump.handshake(client, server)
    assert client.getpeercert() == sni_certs[0].cert_der


def test_hostname_mismatch(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.pair(
        client_engine, server_engine, client_config, server_config, server_hostname="wrong.test"
    )
    with pytest.raises(unitls.CertificateVerificationError) as info:
        pump.handshake(client, server)
    assert info.value.reason
    # The failed client says the same again, whatever is called next.
    for call in (client.do_handshake, lambda: client.read(10), lambda: client.write(b"x")):
        with pytest.raises(unitls.CertificateVerificationError) as again:
            call()
        assert (str(again.value), again.value.reason, again.value.alert) == (
            str(info.value),
            info.value.reason,
            info.value.alert,
        )


# -- process_incoming_into (unitls.extensions.SupportsIncomingInto) -----------------------------


def _into_pair(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> tuple[Any, Any]:
    if not isinstance(
        server_engine.server_context(server_config).create_buffer(),
        extensions.SupportsIncomingInto,
    ):
        pytest.skip(f"{server_engine.name} buffers have no process_incoming_into")
    client, server = pump.connected(client_engine, server_engine, client_config, server_config)
    return client, server


def _ciphertext_of(src: Any, payload: bytes) -> bytes:
    src.write(payload)
    return bytes(src.process_outgoing(1 << 30))


def _read_rest(buf: Any, view: memoryview) -> bytes:
    out = bytearray()
    while True:
        try:
            n = buf.read(len(view), view)
        except unitls.WantReadError:
            return bytes(out)
        if not n:
            return bytes(out)
        out += view[:n]


def test_process_incoming_into_reads_a_large_chunk(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = _into_pair(client_engine, server_engine, client_config, server_config, pump)
    payload = random.randbytes(1024 * 1024)
    view = memoryview(bytearray(256 * 1024))
    n = server.process_incoming_into(_ciphertext_of(client, payload), view)
    assert n == len(view)  # a full buffer: the chunk's first 256 KiB of plaintext
    # The rest waits in the engine for the next reads.
    assert bytes(view) + _read_rest(server, view) == payload


def test_process_incoming_into_small_buffers_and_partial_records(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = _into_pair(engine, engine, client_config, server_config, pump)
    payload = random.randbytes(100_000)
    ciphertext = _ciphertext_of(client, payload)
    got = bytearray()
    one = memoryview(bytearray(1))
    # A byte at a time out, uneven pieces in: every piece's plaintext in order, none lost.
    for start in range(0, len(ciphertext), 7001):
        n = server.process_incoming_into(ciphertext[start : start + 7001], one)
        got += one[:n]
        got += _read_rest(server, memoryview(bytearray(997)))
    assert bytes(got) == payload
    # Half a record: nothing yet, and read says so.
    part = _ciphertext_of(client, b"x" * 100)
    assert server.process_incoming_into(part[:10], bytearray(64)) == 0
    with pytest.raises(unitls.WantReadError):
        server.read(64)
    into = bytearray(64)
    assert server.process_incoming_into(part[10:], into) == 64
    assert bytes(into) + server.read(64) == b"x" * 100


def test_process_incoming_into_ends_as_read_says(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    view = memoryview(bytearray(1024))
    # The peer's close_notify behind data: the data, then b"" from read.
    client, server = _into_pair(engine, engine, client_config, server_config, pump)
    client.write(b"bye")
    client.shutdown()
    assert server.process_incoming_into(client.process_outgoing(1 << 20), view) == 3
    assert bytes(view[:3]) == b"bye"
    assert server.read(10) == b""
    # The transport's EOF without close_notify: 0; more data is the caller's bug; RaggedEOF.
    client, server = _into_pair(engine, engine, client_config, server_config, pump)
    assert server.process_incoming_into(b"", view) == 0
    with pytest.raises(unitls.TLSError, match="EOF"):
        server.process_incoming_into(b"\x17\x03\x03\x00\x01x", view)
    with pytest.raises(unitls.RaggedEOF):
        server.read(10)


def test_process_incoming_into_damaged_record_behind_good_ones(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    """Plaintext of the good records first (rustls gives what it moved out before it met the
    damage; the others all of it), then the failure, from the next read and every one after."""
    client, server = _into_pair(engine, engine, client_config, server_config, pump)
    good = _ciphertext_of(client, b"a" * 40_000)
    bad = bytearray(_ciphertext_of(client, b"b" * 100))
    bad[-1] ^= 0xFF
    big = memoryview(bytearray(64 * 1024))
    n = server.process_incoming_into(good + bytes(bad), big)
    assert 0 < n <= 40_000 and bytes(big[:n]) == b"a" * n
    with pytest.raises(unitls.TLSError) as first:
        server.read(10)
    assert not isinstance(first.value, unitls.WantReadError)
    with pytest.raises(unitls.TLSError) as again:
        server.read(10)
    assert type(again.value) is type(first.value) and str(again.value) == str(first.value)


def test_process_incoming_into_buffer_sharing_memory_with_the_ciphertext(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    """Plaintext read over the ciphertext it came from (one bytearray for both, or views that
    overlap) is right on every engine: the Rust engines, which decrypt while they read the
    ciphertext, copy it first when the memory is shared (they once raised ValueError here,
    where OpenSSL took it)."""
    client, server = _into_pair(engine, engine, client_config, server_config, pump)
    payload = random.randbytes(50_000)
    # The same object for both: plaintext (shorter than its records) written from its start.
    both = bytearray(_ciphertext_of(client, payload))
    n = server.process_incoming_into(both, both)
    assert 0 < n <= len(payload)
    assert bytes(both[:n]) + _read_rest(server, memoryview(bytearray(4096))) == payload
    # Overlapping views of one buffer, the plaintext landing inside the ciphertext's records.
    message = _ciphertext_of(client, b"x" * 100)
    whole = memoryview(bytearray(message) + bytearray(100))
    assert server.process_incoming_into(whole[: len(message)], whole[50:]) == 100
    assert bytes(whole[50:150]) == b"x" * 100
    # Side by side in one buffer, as before.
    message = _ciphertext_of(client, b"y" * 100)
    whole = memoryview(bytearray(message) + bytearray(100))
    assert server.process_incoming_into(whole[: len(message)], whole[len(message) :]) == 100
    assert bytes(whole[len(message) :]) == b"y" * 100


def test_process_incoming_into_during_the_handshake_feeds_it(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    server = engine.server_context(server_config).create_buffer()
    if not isinstance(server, extensions.SupportsIncomingInto):
        pytest.skip(f"{engine.name} buffers have no process_incoming_into")
    client = engine.client_context(client_config).create_buffer("localhost")
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    # The ClientHello: taken (nothing to read yet), the handshake goes on from it.
    assert server.process_incoming_into(client.process_outgoing(1 << 20), bytearray(100)) == 0
    with pytest.raises(unitls.WantReadError):
        server.do_handshake()
    assert server.outgoing_bytes_buffered() > 0  # the server's flight
    pump.handshake(client, server)
    assert server.negotiated_tls_version is not None


def test_a_failed_connection_repeats_its_failure(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    """A damaged record fails the reader; every later read raises that failure again (OpenSSL
    itself reports the next reads as an EOF, or as the end of the stream once the alert it
    sent back reached the peer: neither may look like a clean close)."""
    client, server = pump.connected(client_engine, server_engine, client_config, server_config)
    bad = bytearray(_ciphertext_of(client, b"b" * 100))
    bad[-1] ^= 0xFF
    failures = []
    for attempt in range(3):
        with pytest.raises(unitls.TLSError) as info:
            if not attempt:
                server.process_incoming(bytes(bad))  # (rustls fails as it takes the record)
            server.read(10)
        failures.append(info.value)
    with pytest.raises(unitls.TLSError) as writing:
        server.write(b"x")
    failures.append(writing.value)
    assert not isinstance(failures[0], unitls.WantReadError)
    assert {(type(f), str(f)) for f in failures} == {(type(failures[0]), str(failures[0]))}
    # The peer got the alert: its reads fail too, and keep failing.
    with pytest.raises(unitls.TLSError) as peer:
        pump.transfer(server, client)
        client.read(10)
    assert not isinstance(peer.value, unitls.WantReadError)
    with pytest.raises(unitls.TLSError) as peer_again:
        client.read(10)
    assert type(peer_again.value) is type(peer.value)
    with pytest.raises(unitls.TLSError) as peer_writing:
        client.write(b"x")
    assert type(peer_writing.value) is type(peer.value)


# -- closing -----------------------------------------------------------------------------------


def test_close_notify(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.connected(client_engine, server_engine, client_config, server_config)
    client.write(b"last words")
    client.shutdown()
    pump.transfer(client, server)
    assert pump.drain(server) == b"last words"
    assert server.read(10) == b""
    server.process_incoming(b"")
    assert server.read(10) == b""
    # The other direction still works until the server closes too (TLS 1.3 half-close).
    server.shutdown()
    pump.transfer(server, client)
    assert client.read(10) == b""


def test_ragged_eof(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.connected(client_engine, server_engine, client_config, server_config)
    client.write(b"truncated?")
    pump.transfer(client, server)
    server.process_incoming(b"")
    assert server.read(100) == b"truncated?"
    with pytest.raises(unitls.RaggedEOF):
        server.read(100)
    with pytest.raises(unitls.RaggedEOF):
        server.read(100)
    # And on the client side.
    client.process_incoming(b"")
    with pytest.raises(unitls.RaggedEOF):
        client.read(100)


def test_data_after_eof_is_refused(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    """After ``process_incoming(b"")`` (the transport's EOF) more data is a caller's bug: a
    ``TLSError`` that is not a ``WantReadError`` (the engine cannot take it, ever), while
    another EOF is harmless. (Regression guard for the checks moved into the Rust engines.)"""
    client, server = pump.connected(client_engine, server_engine, client_config, server_config)
    client.write(b"hello")
    pump.transfer(client, server)
    server.process_incoming(b"")
    server.process_incoming(b"")
    with pytest.raises(unitls.TLSError) as info:
        server.process_incoming(b"\x17\x03\x03\x00\x01x")
    assert not isinstance(info.value, unitls.WantReadError)
    assert "EOF" in str(info.value)
    assert server.read(100) == b"hello"


def test_eof_during_handshake(
    engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    # A client whose server vanished after the ClientHello.
    client = engine.client_context(client_config).create_buffer("localhost")
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    client.process_outgoing(1 << 20)
    client.process_incoming(b"")
    with pytest.raises(unitls.HandshakeClosedError):
        client.do_handshake()
    # A server whose client vanished before sending anything.
    server = engine.server_context(server_config).create_buffer()
    server.process_incoming(b"")
    with pytest.raises(unitls.HandshakeClosedError):
        server.do_handshake()
    # A server whose client vanished after the ClientHello.
    client = engine.client_context(client_config).create_buffer("localhost")
    server = engine.server_context(server_config).create_buffer()
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    pump.transfer(client, server)
    with pytest.raises(unitls.WantReadError):
        server.do_handshake()
    server.process_incoming(b"")
    with pytest.raises(unitls.HandshakeClosedError):
        server.do_handshake()


def test_eof_mid_server_flight(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.pair(client_engine, server_engine, client_config, server_config)
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    pump.transfer(client, server)
    with pytest.raises(unitls.WantReadError):
        server.do_handshake()
    flight = server.process_outgoing(1 << 20)
    client.process_incoming(flight[: len(flight) // 2])
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    client.process_incoming(b"")
    with pytest.raises(unitls.HandshakeClosedError):
        client.do_handshake()


# -- key material from buffers, files and ids ---------------------------------------------------


def _material(tmp: Path, issued: Issued, ca: CA, form: str) -> tuple[SigningChain, TrustStore]:
    if form == "der-buffers":
        chain = SigningChain(
            (Certificate.from_buffer(issued.cert_der), PrivateKey.from_buffer(issued.key_der))
        )
        return chain, TrustStore.from_buffer(ca.cert_der)
    if form == "pem-buffers":
        chain = SigningChain(
            (Certificate.from_buffer(issued.cert_pem), PrivateKey.from_buffer(issued.key_pem))
        )
        return chain, TrustStore.from_buffer(ca.cert_pem)
    ext = "pem" if form == "pem-files" else "der"
    cert_path, key_path, ca_path = tmp / f"cert.{ext}", tmp / f"key.{ext}", tmp / "ca.pem"
    cert_path.write_bytes(issued.cert_pem if ext == "pem" else issued.cert_der)
    key_path.write_bytes(issued.key_pem if ext == "pem" else issued.key_der)
    ca_path.write_bytes(ca.cert_pem)
    chain = SigningChain((Certificate.from_file(cert_path), PrivateKey.from_file(key_path)))
    return chain, TrustStore.from_file(ca_path)


@pytest.mark.parametrize("form", ["der-buffers", "pem-buffers", "pem-files", "der-files"])
def test_key_material_forms(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_cert: Issued,
    pump: Any,
    tmp_path: Path,
    form: str,
) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "c").mkdir()
    schain, store = _material(tmp_path / "s", server_cert, ca, form)
    cchain, _ = _material(tmp_path / "c", client_cert, ca, form)
    client, server = pump.connected(
        client_engine,
        server_engine,
        TLSClientConfiguration(certificate_chain=cchain, trust_store=store),
        TLSServerConfiguration(certificate_chain=[schain], trust_store=store),
    )
    assert client.getpeercert() == server_cert.cert_der
    assert server.getpeercert() == client_cert.cert_der
    assert client.negotiated_tls_version is server.negotiated_tls_version is TLSVersion.TLSv1_3
    assert pump.send(client, server, b"both keys signed") == b"both keys signed"


def test_pem_bundle_trust_store(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, pump: Any
) -> None:
    other = CA.create("another root")
    bundle = other.cert_pem + ca.cert_pem
    client, _ = pump.connected(
        client_engine,
        server_engine,
        TLSClientConfiguration(trust_store=TrustStore.from_buffer(bundle)),
        server_cfg(server_cert),
    )
    assert client.getpeercert() == server_cert.cert_der


def test_intermediate_chain_sent(
    client_engine: Impl, server_engine: Impl, ca: CA, intermediate_ca: CA, pump: Any
) -> None:
    leaf = intermediate_ca.issue("localhost")
    client, _ = pump.connected(client_engine, server_engine, client_cfg(ca), server_cfg(leaf))
    assert client.getpeercert() == leaf.cert_der
    # unitls engines also expose the whole chain the peer sent (an extension to the PEP).
    chain_of = getattr(client, "getpeercertchain", None)
    if chain_of is not None:
        assert chain_of() == [leaf.cert_der, intermediate_ca.cert_der]


def test_peer_chain_is_empty_before_the_handshake(engine: Impl, ca: CA) -> None:
    client = engine.client_context(client_cfg(ca)).create_buffer("localhost")
    chain_of = getattr(client, "getpeercertchain", None)
    if chain_of is not None:
        assert chain_of() == []


def test_from_id_refused(engine: Impl, ca: CA, server_cert: Issued) -> None:
    some_id = b"pkcs11:object=unitls-test"
    by_id = SigningChain((Certificate.from_id(some_id), PrivateKey.from_id(some_id)))
    key_by_id = SigningChain((server_cert.certificate, PrivateKey.from_id(some_id)))
    cases: list[tuple[Any, Any]] = [
        (engine.client_context, TLSClientConfiguration(trust_store=TrustStore.from_id(some_id))),
        (engine.client_context, client_cfg(ca, certificate_chain=by_id)),
        (engine.server_context, TLSServerConfiguration(certificate_chain=[by_id])),
        (engine.server_context, TLSServerConfiguration(certificate_chain=[key_by_id])),
        (
            engine.server_context,
            server_cfg(server_cert, trust_store=TrustStore.from_id(some_id)),
        ),
    ]
    for factory, cfg in cases:
        with pytest.raises(unitls.ConfigurationError, match="id"):
            factory(cfg)


def test_bad_key_material_refused(
    engine: Impl, ca: CA, server_cert: Issued, client_cert: Issued, tmp_path: Path
) -> None:
    garbage = Certificate.from_buffer(b"this is not a certificate")
    mismatched = SigningChain((server_cert.certificate, client_cert.private_key))
    bad: list[tuple[Any, Any]] = [
        (engine.server_context, TLSServerConfiguration(certificate_chain=[mismatched])),
        (
            engine.server_context,
            TLSServerConfiguration(
                certificate_chain=[SigningChain((garbage, server_cert.private_key))]
            ),
        ),
        (
            engine.server_context,
            TLSServerConfiguration(
                certificate_chain=[
                    SigningChain((server_cert.certificate, PrivateKey.from_buffer(b"nope")))
                ]
            ),
        ),
        (
            engine.server_context,
            TLSServerConfiguration(
                certificate_chain=[
                    SigningChain(
                        (Certificate.from_file(tmp_path / "missing.pem"), server_cert.private_key)
                    )
                ]
            ),
        ),
        (engine.client_context, TLSClientConfiguration(trust_store=TrustStore.from_buffer(b"zz"))),
        (
            engine.client_context,
            TLSClientConfiguration(trust_store=TrustStore.from_file(tmp_path / "missing.pem")),
        ),
        (engine.client_context, client_cfg(ca, certificate_chain=mismatched)),
    ]
    for factory, cfg in bad:
        with pytest.raises(unitls.ConfigurationError) as info:
            factory(cfg)
        assert str(info.value)


def test_system_trust_store_follows_ssl_cert_file(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_config: TLSServerConfiguration,
    pump: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TrustStore.system() honours SSL_CERT_FILE, read again when it changes (no stale cache)."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    system = TLSClientConfiguration(trust_store=TrustStore.system())
    client, _ = pump.connected(client_engine, server_engine, system, server_config)
    assert client.negotiated_tls_version is not None

    other = tmp_path / "other.pem"
    other.write_bytes(CA.create("an unrelated root").cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    with pytest.raises(unitls.CertificateVerificationError):
        pump.connected(client_engine, server_engine, system, server_config)


def test_create_buffer_for_a_local_address(engine: Impl, ca: CA, pump: Any) -> None:
    """unitls engines' server buffers can be told which address the client reached."""
    by_name = ca.issue("first.example")
    by_ip = ca.issue("second.example", "192.0.2.7")
    server_ctx = engine.server_context(
        TLSServerConfiguration([by_name.signing_chain(), by_ip.signing_chain()])
    )
    for_address = getattr(server_ctx, "create_buffer_for", None)
    if for_address is None:
        pytest.skip("create_buffer_for is a unitls extension")
    client_ctx = engine.client_context(client_cfg(ca))
    for local, name, expected in [
        ("192.0.2.7", "192.0.2.7", by_ip),  # no SNI for an IP: the address decides
        ("192.0.2.99", "first.example", by_name),  # an address no chain names: the default
        ("192.0.2.7", "first.example", by_name),  # SNI wins over the address
        (None, "first.example", by_name),
    ]:
        client = client_ctx.create_buffer(name)
        pump.handshake(client, for_address(local))
        assert client.getpeercert() == expected.cert_der, (local, name)
