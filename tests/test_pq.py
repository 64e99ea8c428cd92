"""Post-quantum key exchange (X25519MLKEM768) and ``negotiated_group``, on real connections.

- Every engine pair, in memory, over TCP and through asyncio: both sides report the same group,
  None before the handshake; the hybrid only where both ends implement it (rustls), a classical
  group otherwise, and never through a HelloRetryRequest.
- The stdlib ``ssl`` module (OpenSSL 3.0, no ML-KEM) in both roles against the rustls engine.
- The ``groups`` option on every engine and pair: the chosen group is negotiated (with a
  HelloRetryRequest where the client's share is not accepted), no common group fails, bad
  values are refused with what to do; classical groups only turn the hybrid off.
- The hybrid's wire format and secret checked against an independent implementation: ML-KEM-768
  and X25519 from ``cryptography`` (its own OpenSSL) play the other end of a TLS 1.3 handshake
  written out here, and the handshake keys derived from the combined secret must decrypt what
  rustls sends (and be accepted by rustls); the same secret in the wrong order must not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import unitls
import unitls.asyncio as uasyncio
from unitls import TLSClientConfiguration, TLSServerConfiguration, TLSVersion
from unitls._certgen import CA, Issued
from unitls.extensions import SupportsSessionInfo
from unitls.openssl import _group_of

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
TIMEOUT = 20.0
HYBRID = "X25519MLKEM768"
X25519MLKEM768 = 0x11EC
X25519 = 0x001D
# Engines that implement X25519MLKEM768 (a new engine that does joins this set).
PQ_ENGINES = {"rustls"}
CLASSICAL = {"x25519", "secp256r1", "secp384r1", "secp521r1", "x448"}
# ServerHello.random of a HelloRetryRequest (RFC 8446, 4.1.3).
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def expected_group(
    client: Impl, server: Impl, version: TLSVersion = TLSVersion.TLSv1_3
) -> set[str]:
    if version is TLSVersion.TLSv1_3 and client.name in PQ_ENGINES and server.name in PQ_ENGINES:
        return {HYBRID}
    return CLASSICAL


# -- TLS 1.3 by hand: records, hellos, the handshake key schedule (RFC 8446) -------------------


def records(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(content type, 5-byte header, body) of each TLS record in ``data``."""
    out = []
    while data:
        assert len(data) >= 5, "truncated record header"
        ctype, _, length = struct.unpack("!BHH", data[:5])
        assert len(data) >= 5 + length, "truncated record"
        out.append((ctype, data[:5], data[5 : 5 + length]))
        data = data[5 + length :]
    return out


def first_handshake_message(data: bytes) -> bytes:
    """The first handshake message (header included) of a flight starting in plaintext."""
    ctype, _, body = records(data)[0]
    assert ctype == 22, f"expected a handshake record, got content type {ctype}"
    length = int.from_bytes(body[1:4], "big")
    return body[: 4 + length]


def extensions(raw: bytes) -> dict[int, bytes]:
    out = {}
    while raw:
        ext, length = struct.unpack("!HH", raw[:4])
        out[ext] = raw[4 : 4 + length]
        raw = raw[4 + length :]
    return out


def parse_client_hello(msg: bytes) -> tuple[bytes, dict[int, bytes]]:
    """(legacy_session_id, {group: key share}) of a ClientHello message."""
    assert msg[0] == 1, "not a ClientHello"
    body = msg[4:]
    pos = 2 + 32
    sid = body[pos + 1 : pos + 1 + body[pos]]
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher suites
    pos += 1 + body[pos]  # compression methods
    exts = extensions(body[pos + 2 : pos + 2 + int.from_bytes(body[pos : pos + 2], "big")])
    shares, raw = {}, exts[51][2:]
    while raw:
        group, length = struct.unpack("!HH", raw[:4])
        shares[group] = raw[4 : 4 + length]
        raw = raw[4 + length :]
    return sid, shares


def parse_server_hello(msg: bytes) -> tuple[bytes, int, bytes]:
    """(random, key share group, key share) of a ServerHello message."""
    assert msg[0] == 2, "not a ServerHello"
    body = msg[4:]
    random = body[2:34]
    pos = 34 + 1 + body[34]  # session id
    pos += 2 + 1  # cipher suite, compression method
    exts = extensions(body[pos + 2 : pos + 2 + int.from_bytes(body[pos : pos + 2], "big")])
    group, length = struct.unpack("!HH", exts[51][:4])
    return random, group, exts[51][4 : 4 + length]


def server_hello_random(flight: bytes) -> bytes:
    msg = first_handshake_message(flight)
    assert msg[0] == 2, "the server's first message is not a ServerHello"
    return msg[6:38]


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def vector(body: bytes, size: int) -> bytes:
    return len(body).to_bytes(size, "big") + body


def ext(ext_type: int, body: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(body)) + body


def record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(body)) + body


def client_hello(shares: dict[int, bytes]) -> bytes:
    """A TLS 1.3-only ClientHello (TLS_AES_128_GCM_SHA256) offering exactly ``shares``."""
    groups = b"".join(struct.pack("!H", g) for g in shares)
    entries = b"".join(struct.pack("!H", g) + vector(k, 2) for g, k in shares.items())
    # ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, ed25519
    sigalgs = bytes.fromhex("040308040807")
    exts = (
        ext(43, vector(b"\x03\x04", 1))
        + ext(10, vector(groups, 2))
        + ext(51, vector(entries, 2))
        + ext(13, vector(sigalgs, 2))
    )
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + vector(b"\x13\x01", 2) + b"\x01\x00"
    return handshake(1, body + vector(exts, 2))


def server_hello(session_id: bytes, group: int, share: bytes) -> bytes:
    exts = ext(43, b"\x03\x04") + ext(51, struct.pack("!H", group) + vector(share, 2))
    body = b"\x03\x03" + os.urandom(32) + vector(session_id, 1) + b"\x13\x01\x00"
    return handshake(2, body + vector(exts, 2))


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    info = length.to_bytes(2, "big") + vector(b"tls13 " + label, 1) + vector(context, 1)
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]


def handshake_keys(shared_secret: bytes, hello_messages: bytes) -> dict[str, tuple[bytes, bytes]]:
    """(key, iv) of each side's handshake traffic for TLS_AES_128_GCM_SHA256, no PSK."""
    early = hmac.digest(b"\0" * 32, b"\0" * 32, "sha256")
    derived = hkdf_expand_label(early, b"derived", hashlib.sha256().digest(), 32)
    hs_secret = hmac.digest(derived, shared_secret, "sha256")
    transcript = hashlib.sha256(hello_messages).digest()
    keys = {}
    for side in ("c", "s"):
        traffic = hkdf_expand_label(hs_secret, side.encode() + b" hs traffic", transcript, 32)
        keys[side] = (
            hkdf_expand_label(traffic, b"key", b"", 16),
            hkdf_expand_label(traffic, b"iv", b"", 12),
        )
    return keys


def seal(key_iv: tuple[bytes, bytes], seq: int, content: bytes, ctype: int) -> bytes:
    key, iv = key_iv
    inner = content + bytes([ctype])
    header = struct.pack("!BHH", 23, 0x0303, len(inner) + 16)
    nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big"), strict=True))
    return header + AESGCM(key).encrypt(nonce, inner, header)


def open_record(key_iv: tuple[bytes, bytes], seq: int, header: bytes, body: bytes) -> bytes:
    key, iv = key_iv
    nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big"), strict=True))
    inner = AESGCM(key).decrypt(nonce, body, header)
    return inner.rstrip(b"\0")


def mlkem_x25519_keys() -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    return mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()


def run_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``target`` in a thread; its exception, if any, lands in the returned list."""
    errors: list[BaseException] = []

    def wrapper() -> None:
        try:
            target()
        except BaseException as exc:  # the test asserts on it
            errors.append(exc)

    t = threading.Thread(target=wrapper, daemon=True)
    t.start()
    return t, errors


# -- every engine pair --------------------------------------------------------------------------


def test_buffers_every_pair(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
    pump: Any,
) -> None:
    client, server = pump.pair(client_engine, server_engine, client_config, server_config)
    assert isinstance(client, SupportsSessionInfo) and isinstance(server, SupportsSessionInfo)
    assert client.negotiated_group is None
    assert server.negotiated_group is None
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    assert client.negotiated_group is None  # mid-handshake
    pump.handshake(client, server)
    assert client.negotiated_group == server.negotiated_group
    assert client.negotiated_group in expected_group(client_engine, server_engine)
    assert pump.send(client, server, b"ping") == b"ping"


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3])
def test_buffers_no_hello_retry(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_config: TLSServerConfiguration,
    pump: Any,
    version: TLSVersion,
) -> None:
    """The server answers the first ClientHello with a real ServerHello (no HelloRetryRequest)
    and the pair agrees on the group; TLS 1.2 has no hybrid."""
    config = TLSClientConfiguration(
        trust_store=ca.trust_store(),
        lowest_supported_version=version,
        highest_supported_version=version,
    )
    client, server = pump.pair(client_engine, server_engine, config, server_config)
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    server.process_incoming(client.process_outgoing(1 << 20))
    with pytest.raises(unitls.WantReadError):
        server.do_handshake()
    flight = server.process_outgoing(1 << 20)
    assert server_hello_random(flight) != HRR_RANDOM
    client.process_incoming(flight)
    pump.handshake(client, server)
    assert client.negotiated_tls_version is version
    assert client.negotiated_group == server.negotiated_group
    assert client.negotiated_group in expected_group(client_engine, server_engine, version)


def test_sockets_every_pair(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    listener = server_engine.server_context(server_config).connect((HOST, 0))
    listener.settimeout(TIMEOUT)
    assert listener.negotiated_group is None
    port = listener.getsockname()[1]
    seen: dict[str, Any] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            assert isinstance(conn, SupportsSessionInfo)
            seen["group"] = conn.negotiated_group
            conn.settimeout(TIMEOUT)
            conn.sendall(conn.recv(100))

    t, errors = run_thread(serve)
    try:
        with client_engine.client_context(client_config).connect(
            (HOST, port), timeout=TIMEOUT
        ) as sock:
            assert isinstance(sock, SupportsSessionInfo)
            sock.sendall(b"hello")
            assert sock.recv(100) == b"hello"
            group = sock.negotiated_group
    finally:
        t.join(TIMEOUT)
        listener.close()
    assert not errors, errors
    assert group == seen["group"]
    assert group in expected_group(client_engine, server_engine)


def test_asyncio_extra_info(
    client_engine: Impl,
    server_engine: Impl,
    client_config: TLSClientConfiguration,
    server_config: TLSServerConfiguration,
) -> None:
    sctx = server_engine.server_context(server_config)
    cctx = client_engine.client_context(client_config)
    seen: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["server"] = writer.get_extra_info("negotiated_group")
        writer.write(await reader.read(100))
        writer.close()
        await writer.wait_closed()

    async def main() -> str | None:
        server = await uasyncio.start_server(handler, HOST, 0, context=sctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await uasyncio.open_connection(
                HOST, port, context=cctx, server_hostname="localhost"
            )
            writer.write(b"x")
            assert await reader.read(100) == b"x"
            group: str | None = writer.get_extra_info("negotiated_group")
            writer.close()
            await writer.wait_closed()
            return group

    group = asyncio.run(asyncio.wait_for(main(), 30))
    assert group == seen["server"]
    assert group in expected_group(client_engine, server_engine)


# -- the stdlib ssl module (OpenSSL 3.0, no ML-KEM) as the peer, in both roles ----------------


def stdlib_group(sslobj: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """What OpenSSL says the stdlib's connection negotiated (the engine's own ctypes reader)."""
    return _group_of(sslobj._sslobj)  # type: ignore[union-attr]


def test_stdlib_server_in_memory(engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path) -> None:
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp_path / "chain.pem").write_bytes(server_cert.chain_pem + server_cert.key_pem)
    sctx.load_cert_chain(tmp_path / "chain.pem")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    peer = sctx.wrap_bio(incoming, outgoing, server_side=True)
    client = engine.client_context(TLSClientConfiguration(trust_store=ca.trust_store()))
    buf = client.create_buffer("localhost")
    with pytest.raises(unitls.WantReadError):
        buf.do_handshake()
    hello = buf.process_outgoing(1 << 20)
    if engine.name in PQ_ENGINES:
        _, shares = parse_client_hello(first_handshake_message(hello))
        assert list(shares) == [X25519MLKEM768, X25519]
    incoming.write(hello)
    with pytest.raises(ssl.SSLWantReadError):
        peer.do_handshake()
    flight = outgoing.read()
    assert server_hello_random(flight) != HRR_RANDOM
    buf.process_incoming(flight)
    buf.do_handshake()
    incoming.write(buf.process_outgoing(1 << 20))
    peer.do_handshake()
    assert buf.negotiated_group == "x25519"
    assert stdlib_group(peer) == "x25519"


def test_stdlib_client_in_memory(
    engine: Impl, ca: CA, server_config: TLSServerConfiguration
) -> None:
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(cadata=ca.cert_pem.decode())
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    peer = cctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    buf = engine.server_context(server_config).create_buffer()
    with pytest.raises(ssl.SSLWantReadError):
        peer.do_handshake()
    assert stdlib_group(peer) is None
    buf.process_incoming(outgoing.read())
    with pytest.raises(unitls.WantReadError):
        buf.do_handshake()
    flight = buf.process_outgoing(1 << 20)
    assert server_hello_random(flight) != HRR_RANDOM
    incoming.write(flight)
    peer.do_handshake()
    buf.process_incoming(outgoing.read())
    buf.do_handshake()
    assert buf.negotiated_group == "x25519"
    assert stdlib_group(peer) == "x25519"


def against_stdlib_over_tcp(
    client_ctx: Any,
    server_ctx: Any,
    ca: CA,
    server_cert: Issued,
    tmp_path: Path,
    ssl_version: ssl.TLSVersion | None = None,
) -> dict[str, Any]:
    """An echo over TCP each way: the engine's client socket against a stdlib server, then the
    engine's server socket against a stdlib client (both limited to ``ssl_version`` if given).
    Returns the group each end reports and the engine client's TLS version."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp_path / "chain.pem").write_bytes(server_cert.chain_pem + server_cert.key_pem)
    sctx.load_cert_chain(tmp_path / "chain.pem")
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(cadata=ca.cert_pem.decode())
    if ssl_version is not None:
        sctx.minimum_version = sctx.maximum_version = ssl_version
        cctx.minimum_version = cctx.maximum_version = ssl_version
    seen: dict[str, Any] = {}
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            conn, _ = listener.accept()
            with sctx.wrap_socket(conn, server_side=True) as tls:
                seen["stdlib server"] = stdlib_group(tls)
                tls.sendall(tls.recv(10))

        t, errors = run_thread(serve)
        with client_ctx.connect((HOST, listener.getsockname()[1]), timeout=TIMEOUT) as sock:
            sock.sendall(b"hi")
            assert sock.recv(10) == b"hi"
            seen["version"] = sock.negotiated_tls_version
            seen["engine client"] = sock.negotiated_group
        t.join(TIMEOUT)
    assert not errors, errors

    server = server_ctx.connect((HOST, 0))
    server.settimeout(TIMEOUT)

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            seen["engine server"] = conn.negotiated_group
            conn.sendall(conn.recv(10))

    t, errors = run_thread(accept)
    try:
        with socket.create_connection(server.getsockname()[:2], timeout=TIMEOUT) as raw:
            with cctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"yo")
                assert tls.recv(10) == b"yo"
                seen["stdlib client"] = stdlib_group(tls)
    finally:
        t.join(TIMEOUT)
        server.close()
    assert not errors, errors
    return seen


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_stdlib_peer_over_tcp(
    engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path, version: str
) -> None:
    """Both roles over TCP: the engine's socket and the stdlib's agree on a classical group."""
    client = engine.client_context(TLSClientConfiguration(trust_store=ca.trust_store()))
    server = engine.server_context(
        TLSServerConfiguration(certificate_chain=[server_cert.signing_chain()])
    )
    seen = against_stdlib_over_tcp(
        client, server, ca, server_cert, tmp_path, getattr(ssl.TLSVersion, version)
    )
    assert seen["version"] is getattr(TLSVersion, version)
    assert seen["engine client"] == seen["stdlib server"] == "x25519"
    assert seen["engine server"] == seen["stdlib client"] == "x25519"


# -- the groups option: choosing the key exchange ---------------------------------------------


def _group_contexts(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    client_groups: tuple[str, ...] | None,
    server_groups: tuple[str, ...] | None,
    version: TLSVersion = TLSVersion.TLSv1_3,
) -> tuple[Any, Any]:
    client = client_engine.client_context(
        TLSClientConfiguration(
            trust_store=ca.trust_store(),
            lowest_supported_version=version,
            highest_supported_version=version,
        ),
        groups=client_groups,
    )
    server = server_engine.server_context(
        TLSServerConfiguration(certificate_chain=[server_cert.signing_chain()]),
        groups=server_groups,
    )
    return client, server


# TLS 1.2 servers also need the curve of their ECDSA certificate (P-256 here) among the client's
# groups (RFC 8422), so the TLS 1.2 cases keep secp256r1 on both sides.
@pytest.mark.parametrize(
    ("client_groups", "server_groups", "expected", "version"),
    [
        (("secp384r1",), None, "secp384r1", TLSVersion.TLSv1_3),
        # Any case; the first gets the key share.
        (("SECP256R1", "x25519"), None, "secp256r1", TLSVersion.TLSv1_3),
        (None, ("secp256r1",), "secp256r1", TLSVersion.TLSv1_3),  # a HelloRetryRequest
        (("x25519", "secp384r1"), ("secp384r1", "secp256r1"), "secp384r1", TLSVersion.TLSv1_3),
        (("secp256r1",), None, "secp256r1", TLSVersion.TLSv1_2),
        (None, ("secp256r1",), "secp256r1", TLSVersion.TLSv1_2),
    ],
)
def test_groups_every_pair(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    pump: Any,
    client_groups: tuple[str, ...] | None,
    server_groups: tuple[str, ...] | None,
    expected: str,
    version: TLSVersion,
) -> None:
    client_ctx, server_ctx = _group_contexts(
        client_engine, server_engine, ca, server_cert, client_groups, server_groups, version
    )
    client, server = client_ctx.create_buffer("localhost"), server_ctx.create_buffer()
    pump.handshake(client, server)
    assert client.negotiated_group == server.negotiated_group == expected
    assert client.negotiated_tls_version is version
    assert pump.send(client, server, b"ping") == b"ping"


def test_groups_without_a_common_group_fail_the_handshake(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, pump: Any
) -> None:
    client_ctx, server_ctx = _group_contexts(
        client_engine, server_engine, ca, server_cert, ("x25519",), ("secp384r1",)
    )
    client, server = client_ctx.create_buffer("localhost"), server_ctx.create_buffer()
    with pytest.raises(unitls.TLSError) as info:
        pump.handshake(client, server)  # the server finds out first
    if server_engine.name in ("rustls", "openssl"):  # NSS says SSL_ERROR_NO_CYPHER_OVERLAP
        assert "no key exchange group in common" in str(info.value)
        assert "groups=" in str(info.value)


def test_groups_classical_only_turns_the_hybrid_off(ca: CA, server_cert: Issued) -> None:
    """The escape hatch for peers that choke on large key shares: one x25519 share, no hybrid."""
    rustls = unitls.get_implementation("rustls")
    client, _ = _group_contexts(rustls, rustls, ca, server_cert, ("x25519", "secp256r1"), None)
    buf = client.create_buffer("localhost")
    with pytest.raises(unitls.WantReadError):
        buf.do_handshake()
    _, shares = parse_client_hello(first_handshake_message(buf.process_outgoing(1 << 20)))
    assert list(shares) == [X25519]


def test_groups_over_sockets_and_against_the_stdlib(
    engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    """The engine's own sockets (the native path on the Rust engines) with a chosen group, as
    client of a stdlib server and as server of a stdlib client (which offers x25519 first: the
    engine's server asks again)."""
    client_ctx, server_ctx = _group_contexts(
        engine, engine, ca, server_cert, ("secp384r1",), ("secp384r1",)
    )
    seen = against_stdlib_over_tcp(client_ctx, server_ctx, ca, server_cert, tmp_path)
    assert seen["engine client"] == seen["stdlib server"] == "secp384r1"
    assert seen["engine server"] == seen["stdlib client"] == "secp384r1"


@pytest.mark.parametrize("side", ["client", "server"])
def test_groups_bad_values(engine: Impl, ca: CA, server_cert: Issued, side: str) -> None:
    def make(groups: Any, version: TLSVersion = TLSVersion.TLSv1_3) -> Any:
        if side == "client":
            return engine.client_context(
                TLSClientConfiguration(
                    trust_store=ca.trust_store(), highest_supported_version=version
                ),
                groups=groups,
            )
        return engine.server_context(
            TLSServerConfiguration(
                certificate_chain=[server_cert.signing_chain()],
                highest_supported_version=version,
            ),
            groups=groups,
        )

    with pytest.raises(TypeError, match="sequence of group names"):
        make("x25519")
    with pytest.raises(TypeError, match="group names"):
        make([29])
    with pytest.raises(ValueError, match="at least one"):
        make(())
    with pytest.raises(ValueError, match="unknown key exchange group 'x25520'"):
        make(["x25520"])
    with pytest.raises(ValueError, match="listed twice"):
        make(["x25519", "X25519"])
    lacking = "X25519MLKEM768" if engine.name not in PQ_ENGINES else "secp521r1"
    with pytest.raises(unitls.ConfigurationError, match=f"cannot do .*{lacking}.*choose among"):
        make([lacking])
    if engine.name in PQ_ENGINES:
        with pytest.raises(unitls.ConfigurationError, match=r"TLS 1\.3 only"):
            make([HYBRID], TLSVersion.TLSv1_2)
        make([HYBRID, "x25519"], TLSVersion.TLSv1_2)  # a classical group to fall back on


# -- the hybrid checked against an independent ML-KEM and X25519 (cryptography) -------------


def test_rustls_client_hello_carries_the_hybrid_and_its_x25519_part(ca: CA) -> None:
    rustls = unitls.get_implementation("rustls")
    ctx = rustls.client_context(TLSClientConfiguration(trust_store=ca.trust_store()))
    client = ctx.create_buffer("localhost")
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    _, shares = parse_client_hello(first_handshake_message(client.process_outgoing(1 << 20)))
    assert list(shares) == [X25519MLKEM768, X25519]
    hybrid = shares[X25519MLKEM768]
    assert len(hybrid) == 1184 + 32
    # One X25519 key serves both offers (no second key generated).
    assert hybrid[1184:] == shares[X25519]
    # A valid ML-KEM-768 encapsulation key by an independent implementation.
    ek = mlkem.MLKEM768PublicKey.from_public_bytes(hybrid[:1184])
    assert ek.public_bytes_raw() == hybrid[:1184]


@pytest.mark.parametrize("order", ["pq-first", "classical-first"])
def test_rustls_server_against_independent_client(
    server_config: TLSServerConfiguration, order: str
) -> None:
    """A ClientHello offering only X25519MLKEM768, made with cryptography's ML-KEM and X25519:
    the rustls server's ciphertext decapsulates, and the keys derived from ML-KEM secret ||
    X25519 secret (the draft's order) decrypt its EncryptedExtensions; the other order does
    not (so the check can fail)."""
    dk, xk = mlkem_x25519_keys()
    share = dk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    ch = client_hello({X25519MLKEM768: share})
    server = unitls.get_implementation("rustls").server_context(server_config).create_buffer()
    server.process_incoming(record(22, ch, 0x0301))
    with pytest.raises(unitls.WantReadError):
        server.do_handshake()
    flight = records(server.process_outgoing(1 << 20))
    sh = first_handshake_message(flight[0][1] + flight[0][2])
    _, group, server_share = parse_server_hello(sh)
    assert group == X25519MLKEM768
    assert len(server_share) == 1088 + 32
    pq = dk.decapsulate(server_share[:1088])
    classical = xk.exchange(x25519.X25519PublicKey.from_public_bytes(server_share[1088:]))
    secret = pq + classical if order == "pq-first" else classical + pq
    keys = handshake_keys(secret, ch + sh)
    encrypted = [(h, b) for ctype, h, b in flight if ctype == 23]
    assert encrypted, "no encrypted handshake records after the ServerHello"
    if order == "pq-first":
        plaintext = open_record(keys["s"], 0, *encrypted[0])
        assert plaintext[-1] == 22 and plaintext[0] == 8  # EncryptedExtensions
    else:
        with pytest.raises(InvalidTag):
            open_record(keys["s"], 0, *encrypted[0])


@pytest.mark.parametrize("fault", ["short", "coefficient-not-reduced"])
def test_rustls_server_refuses_a_bad_hybrid_share(
    server_config: TLSServerConfiguration, fault: str
) -> None:
    """A malformed X25519MLKEM768 share (wrong length; an encapsulation key failing FIPS 203's
    modulus check) ends the handshake with a TLSError and an alert, not a crash or a hang."""
    dk, xk = mlkem_x25519_keys()
    ek = dk.public_key().public_bytes_raw()
    if fault == "short":
        share = ek[:-1] + xk.public_key().public_bytes_raw()
    else:
        share = b"\xff\xff" + ek[2:] + xk.public_key().public_bytes_raw()  # coefficient 4095
    server = unitls.get_implementation("rustls").server_context(server_config).create_buffer()
    with pytest.raises(unitls.TLSError) as info:
        server.process_incoming(record(22, client_hello({X25519MLKEM768: share}), 0x0301))
        server.do_handshake()
    assert not isinstance(info.value, unitls.WantReadError)
    alert = records(server.process_outgoing(1 << 20))
    assert [ctype for ctype, _, _ in alert] == [21]
    assert alert[0][2] == b"\x02\x2f"  # fatal illegal_parameter


@pytest.mark.parametrize("order", ["pq-first", "classical-first"])
def test_rustls_client_against_independent_server(ca: CA, order: str) -> None:
    """A ServerHello made with cryptography's ML-KEM encapsulation to the rustls client's key
    and X25519 against its X25519 share, then an EncryptedExtensions under the derived keys:
    the client takes it (and waits for the certificate) only when the secret is ML-KEM ||
    X25519."""
    config = TLSClientConfiguration(trust_store=ca.trust_store())
    client = unitls.get_implementation("rustls").client_context(config).create_buffer("localhost")
    with pytest.raises(unitls.WantReadError):
        client.do_handshake()
    ch = first_handshake_message(client.process_outgoing(1 << 20))
    session_id, shares = parse_client_hello(ch)
    hybrid = shares[X25519MLKEM768]
    pq, ciphertext = mlkem.MLKEM768PublicKey.from_public_bytes(hybrid[:1184]).encapsulate()
    xk = x25519.X25519PrivateKey.generate()
    classical = xk.exchange(x25519.X25519PublicKey.from_public_bytes(hybrid[1184:]))
    sh = server_hello(session_id, X25519MLKEM768, ciphertext + xk.public_key().public_bytes_raw())
    secret = pq + classical if order == "pq-first" else classical + pq
    keys = handshake_keys(secret, ch + sh)
    encrypted_extensions = handshake(8, vector(b"", 2))
    flight = record(22, sh) + seal(keys["s"], 0, encrypted_extensions, 22)
    if order == "pq-first":
        client.process_incoming(flight)
        with pytest.raises(unitls.WantReadError):  # EncryptedExtensions taken; Certificate next
            client.do_handshake()
    else:
        with pytest.raises(unitls.ProtocolError, match="decrypt"):
            client.process_incoming(flight)
            client.do_handshake()


# -- the OpenSSL engine's reader refuses what it cannot check --------------------------------


def test_openssl_reader_is_available_here() -> None:
    """On CPython with OpenSSL 3 the layout checks pass: the feature is not silently off."""
    from unitls import _openssl_ffi

    assert _openssl_ffi.AVAILABLE


def test_openssl_reader_rejects_foreign_objects(ca: CA) -> None:
    from unitls import openssl

    reader = openssl._group_of
    assert reader(object()) is None
    assert reader(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)) is None
    assert _group_of(None) is None
    # Before the handshake (fresh, then mid-handshake) OpenSSL cannot be asked: once a crash.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
    assert reader(obj._sslobj) is None  # type: ignore[attr-defined]
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    assert reader(obj._sslobj) is None  # type: ignore[attr-defined]


def test_openssl_groups_without_ctypes_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``_openssl_ffi`` cannot reach OpenSSL, one group still goes through the stdlib's
    ``set_ecdh_curve``; a list is refused, not cut short."""
    from unitls import _openssl_ffi, openssl

    monkeypatch.setattr(_openssl_ffi, "AVAILABLE", False)
    assert openssl._probe_groups() == (0x0017, 0x0018, 0x0019, 0x001D, 0x001E)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert openssl._set_groups(ctx, (0x0018,))
    assert not openssl._set_groups(ctx, (0x001D, 0x0018))
    assert not openssl._set_groups(ctx, (0x0100,))  # ffdhe2048: no curve name for the stdlib


def test_groups_on_insecure_contexts(engine: Impl, ca: CA, server_cert: Issued, pump: Any) -> None:
    from unitls.insecure import InsecureConfiguration, SecurityWarning, get_insecure_implementation

    server = engine.server_context(
        TLSServerConfiguration(certificate_chain=[server_cert.signing_chain()])
    )
    with pytest.warns(SecurityWarning):
        client = get_insecure_implementation(engine.name).client_context(
            TLSClientConfiguration(),
            InsecureConfiguration(disable_verification=True, disable_hostname_check=True),
            groups=("secp384r1",),
        )
        c, s = client.create_buffer("localhost"), server.create_buffer()
    pump.handshake(c, s)
    assert c.negotiated_group == s.negotiated_group == "secp384r1"
