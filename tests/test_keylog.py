"""Key logging for Wireshark (NSS key log format), on every engine, both sides.

The client random is read from the wire (bytes 11..43 of the first record, the ClientHello),
the logged secrets are checked by decrypting records of the same connection with them
(HKDF-Expand-Label for TLS 1.3, the TLS 1.2 PRF's key block for TLS 1.2), and compared with
the stdlib ``ssl`` module's own key log of the same connection where it is the peer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

import unitls
from unitls import CipherSuite, TLSClientConfiguration, TLSServerConfiguration, TLSVersion
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(120)

TLS13_LABELS = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
}
LINE = re.compile(r"^([A-Z_0-9]+) ([0-9a-f]{64}) ([0-9a-f]{64,})$")
PAYLOAD = b"application data for the key log test"


def client_cfg(ca: CA, version: TLSVersion, suite: CipherSuite | None = None) -> Any:
    return TLSClientConfiguration(
        trust_store=ca.trust_store(),
        lowest_supported_version=version,
        highest_supported_version=version,
        ciphers=[suite] if suite is not None else None,
    )


def server_cfg(cert: Issued, version: TLSVersion | None = None) -> TLSServerConfiguration:
    return TLSServerConfiguration(
        certificate_chain=[cert.signing_chain()], lowest_supported_version=version
    )


def tls13_labels(*engines: str) -> set[str]:
    """The TLS 1.3 labels every engine of a connection logs: NSS has no call for the exporter
    secret (see ``unitls.nss``)."""
    return TLS13_LABELS - {"EXPORTER_SECRET"} if "nss" in engines else TLS13_LABELS


def common(a: dict[tuple[str, str], str], b: dict[tuple[str, str], str]) -> tuple[Any, Any]:
    """Both logs restricted to the lines both have a label for (NSS logs no EXPORTER_SECRET)."""
    shared = {label for label, _ in a} & {label for label, _ in b}
    keep = lambda log: {k: v for k, v in log.items() if k[0] in shared}  # noqa: E731
    return keep(a), keep(b)


def read_log(path: Path) -> dict[tuple[str, str], str]:
    """{(label, client random hex): secret hex}; every line must be well-formed."""
    entries: dict[tuple[str, str], str] = {}
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line:
            continue  # OpenSSL's header comment
        m = LINE.match(line)
        assert m, f"malformed key log line: {line!r}"
        entries[(m[1], m[2])] = m[3]
    return entries


class Wire:
    """Drives a client/server pair of buffers and keeps what each side sent."""

    def __init__(self, client: Any, server: Any) -> None:
        self.client, self.server = client, server
        self.c2s = bytearray()
        self.s2c = bytearray()

    def _move(self) -> int:
        moved = 0
        for src, dst, log in (
            (self.client, self.server, self.c2s),
            (self.server, self.client, self.s2c),
        ):
            n = src.outgoing_bytes_buffered()
            if n:
                data = src.process_outgoing(n)
                log += data
                dst.process_incoming(data)
                moved += len(data)
        return moved

    def handshake(self) -> None:
        done_c = done_s = False
        for _ in range(50):
            for side in ("c", "s"):
                buf = self.client if side == "c" else self.server
                if (side == "c" and done_c) or (side == "s" and done_s):
                    continue
                try:
                    buf.do_handshake()
                except unitls.WantReadError:
                    continue
                if side == "c":
                    done_c = True
                else:
                    done_s = True
            if not self._move() and done_c and done_s:
                return
        raise AssertionError("handshake stuck")

    def exchange(self) -> tuple[int, int]:
        """Client and server each send PAYLOAD; returns where their sends begin on the wire."""
        c_at, s_at = len(self.c2s), len(self.s2c)
        self.client.write(PAYLOAD)
        self.server.write(PAYLOAD)
        self._move()
        for buf in (self.client, self.server):
            assert buf.read(len(PAYLOAD)) == PAYLOAD
        self._move()
        return c_at, s_at

    @property
    def client_random(self) -> str:
        assert self.c2s[0] == 0x16 and self.c2s[5] == 0x01, "the first record is a ClientHello"
        return bytes(self.c2s[11:43]).hex()

    @property
    def server_random(self) -> bytes:
        assert self.s2c[0] == 0x16 and self.s2c[5] == 0x02, "the server starts with ServerHello"
        return bytes(self.s2c[11:43])


def records(stream: bytes | bytearray, start: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
    """(content type, header, body) of every TLS record from ``start``."""
    pos = start
    while pos + 5 <= len(stream):
        header = bytes(stream[pos : pos + 5])
        length = int.from_bytes(header[3:5], "big")
        yield header[0], header, bytes(stream[pos + 5 : pos + 5 + length])
        pos += 5 + length


# -- TLS 1.3 and TLS 1.2 record protection, from the logged secrets ------------------------------


def hkdf_expand_label(secret: bytes, label: bytes, length: int, algorithm: Any) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(algorithm, length, info).derive(secret)


def open_tls13(secret_hex: str, seq: int, header: bytes, body: bytes) -> tuple[int, bytes]:
    """Decrypt one TLS 1.3 record (TLS_AES_128_GCM_SHA256): (inner content type, content)."""
    secret = bytes.fromhex(secret_hex)
    key = hkdf_expand_label(secret, b"key", 16, hashes.SHA256())
    iv = hkdf_expand_label(secret, b"iv", 12, hashes.SHA256())
    nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big"), strict=True))
    inner = AESGCM(key).decrypt(nonce, body, header).rstrip(b"\x00")
    return inner[-1], inner[:-1]


def prf_sha256(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    out, a = b"", label + seed
    while len(out) < length:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + label + seed, hashlib.sha256).digest()
    return out[:length]


def open_tls12(
    master_hex: str,
    client_random: bytes,
    server_random: bytes,
    seq: int,
    header: bytes,
    body: bytes,
) -> bytes:
    """Decrypt one client record of TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (RFC 5288)."""
    block = prf_sha256(
        bytes.fromhex(master_hex), b"key expansion", server_random + client_random, 40
    )
    client_key, client_salt = block[:16], block[32:36]
    explicit, sealed = body[:8], body[8:]
    aad = seq.to_bytes(8, "big") + header[:3] + (len(sealed) - 16).to_bytes(2, "big")
    return AESGCM(client_key).decrypt(client_salt + explicit, sealed, aad)


# -- the tests ---------------------------------------------------------------------------------


def test_tls13_secrets_decrypt_the_connection(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    client_log, server_log = tmp_path / "client.keys", tmp_path / "server.keys"
    cfg = client_cfg(ca, TLSVersion.TLSv1_3, CipherSuite.TLS_AES_128_GCM_SHA256)
    client = client_engine.client_context(cfg, keylog_filename=client_log)
    server = server_engine.server_context(
        server_cfg(server_cert, TLSVersion.TLSv1_3), keylog_filename=str(server_log)
    )
    wire = Wire(client.create_buffer("localhost"), server.create_buffer())
    wire.handshake()
    c_at, _ = wire.exchange()
    random = wire.client_random
    for path, side in ((client_log, client_engine.name), (server_log, server_engine.name)):
        entries = read_log(path)
        assert {label for label, r in entries if r == random} == tls13_labels(side), path.name
        assert all(r == random for _, r in entries), "only this connection was logged"
    secrets = {label: s for (label, _), s in read_log(client_log).items()}
    theirs, ours = common(read_log(server_log), read_log(client_log))
    assert theirs == ours and len(ours) >= 4

    # The client's Finished is its first protected record; its data the first after that.
    protected = [(h, b) for t, h, b in records(wire.c2s) if t == 0x17]
    inner_type, finished = open_tls13(secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], 0, *protected[0])
    assert (inner_type, finished[:1]) == (0x16, b"\x14")  # handshake: Finished
    data = [(h, b) for t, h, b in records(wire.c2s, c_at) if t == 0x17]
    assert open_tls13(secrets["CLIENT_TRAFFIC_SECRET_0"], 0, *data[0]) == (0x17, PAYLOAD)
    # The server's first protected record is EncryptedExtensions; its first one under the
    # traffic secret (a session ticket or the data) authenticates too.
    server_protected = [(h, b) for t, h, b in records(wire.s2c) if t == 0x17]
    inner_type, extensions = open_tls13(
        secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"], 0, *server_protected[0]
    )
    assert (inner_type, extensions[:1]) == (0x16, b"\x08")
    handshake_records = 1 + sum(
        1
        for h, b in server_protected[1:]
        if _opens(secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"], h, b)
    )
    open_tls13(secrets["SERVER_TRAFFIC_SECRET_0"], 0, *server_protected[handshake_records])


def _opens(secret: str, header: bytes, body: bytes) -> bool:
    """Whether the record decrypts under ``secret`` at any of the first few sequence numbers."""
    for seq in range(8):
        try:
            open_tls13(secret, seq, header, body)
            return True
        except Exception:
            continue
    return False


def test_tls12_client_random_line_decrypts_the_connection(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    client_log, server_log = tmp_path / "client.keys", tmp_path / "server.keys"
    suite = CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    if "nss" in (client_engine.name, server_engine.name):
        # NSS gives no TLS 1.2 master secret: key logging with TLS 1.2 allowed is refused.
        engine = client_engine if client_engine.name == "nss" else server_engine
        with pytest.raises(unitls.ConfigurationError, match=r"TLS 1\.3 secrets only"):
            engine.client_context(client_cfg(ca, TLSVersion.TLSv1_2), keylog_filename=client_log)
        with pytest.raises(unitls.ConfigurationError, match=r"TLS 1\.3 secrets only"):
            engine.server_context(server_cfg(server_cert), keylog_filename=server_log)
        return
    client = client_engine.client_context(
        client_cfg(ca, TLSVersion.TLSv1_2, suite), keylog_filename=client_log
    )
    server = server_engine.server_context(server_cfg(server_cert), keylog_filename=server_log)
    wire = Wire(client.create_buffer("localhost"), server.create_buffer())
    wire.handshake()
    c_at, _ = wire.exchange()
    random = wire.client_random
    for path in (client_log, server_log):
        assert set(read_log(path)) == {("CLIENT_RANDOM", random)}, path.name
    master = read_log(client_log)[("CLIENT_RANDOM", random)]
    assert read_log(server_log)[("CLIENT_RANDOM", random)] == master
    # After ChangeCipherSpec the client's Finished is sequence number 0, its data 1.
    data = [(h, b) for t, h, b in records(wire.c2s, c_at) if t == 0x17]
    plain = open_tls12(master, bytes.fromhex(random), wire.server_random, 1, *data[0])
    assert plain == PAYLOAD


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3], ids=lambda v: v.name)
@pytest.mark.parametrize("engine_side", ["client", "server"])
def test_same_lines_as_the_stdlib_key_log(
    engine: Impl, engine_side: str, version: TLSVersion, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    """The stdlib as the peer logs the same connection itself: the lines must be equal."""
    ours, theirs = tmp_path / "unitls.keys", tmp_path / "stdlib.keys"
    if engine.name == "nss" and version is TLSVersion.TLSv1_2:
        with pytest.raises(unitls.ConfigurationError, match=r"TLS 1\.3 secrets only"):
            engine.client_context(client_cfg(ca, version), keylog_filename=ours)
        return
    server_side = engine_side == "client"
    stdlib = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    stdlib.keylog_filename = str(theirs)
    wire_version = ssl.TLSVersion[version.name]
    stdlib.minimum_version = stdlib.maximum_version = wire_version
    if server_side:
        pem = tmp_path / "server.pem"
        pem.write_bytes(server_cert.chain_pem + server_cert.key_pem)
        stdlib.load_cert_chain(pem)
        client = engine.client_context(client_cfg(ca, version), keylog_filename=ours)
        wire = Wire(client.create_buffer("localhost"), StdlibBuffer(stdlib, None))
    else:
        stdlib.load_verify_locations(cadata=ca.cert_pem.decode())
        server = engine.server_context(server_cfg(server_cert, version), keylog_filename=ours)
        wire = Wire(StdlibBuffer(stdlib, "localhost"), server.create_buffer())
    wire.handshake()
    wire.exchange()
    expected = tls13_labels(engine.name) if version is TLSVersion.TLSv1_3 else {"CLIENT_RANDOM"}
    assert {label for label, _ in read_log(ours)} == expected
    assert {r for _, r in read_log(ours)} == {wire.client_random}
    mine, stdlibs = common(read_log(ours), read_log(theirs))
    assert mine == stdlibs == read_log(ours)


class StdlibBuffer:
    """An ``ssl.SSLObject`` with the TLSBuffer calls ``Wire`` makes (hostname None: server)."""

    def __init__(self, ctx: ssl.SSLContext, hostname: str | None) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=hostname is None, server_hostname=hostname
        )

    def do_handshake(self) -> None:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            raise unitls.WantReadError("the stdlib peer wants data") from None

    def outgoing_bytes_buffered(self) -> int:
        return self.outgoing.pending

    def process_outgoing(self, n: int) -> bytes:
        return self.outgoing.read(n)

    def process_incoming(self, data: bytes) -> None:
        self.incoming.write(data)

    def write(self, data: bytes) -> int:
        return self.obj.write(data)

    def read(self, n: int) -> bytes:
        return self.obj.read(n)


def _connection(client: Any, server: Any) -> str:
    """One in-memory connection with data both ways; returns its client random."""
    wire = Wire(client.create_buffer("localhost"), server.create_buffer())
    wire.handshake()
    wire.exchange()
    return wire.client_random


def test_sslkeylogfile_environment_variable(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sys.flags.ignore_environment:
        pytest.skip("python -E ignores SSLKEYLOGFILE")
    path = tmp_path / "env.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    v13 = TLSVersion.TLSv1_3
    client = client_engine.client_context(client_cfg(ca, v13))
    server = server_engine.server_context(server_cfg(server_cert, v13))
    random = _connection(client, server)
    entries = read_log(path)
    names = (client_engine.name, server_engine.name)
    # Both sides log into the one file: the union of what each engine can log.
    expected = tls13_labels(*[n for n in names if n != "nss"] or ["nss"])
    assert {label for label, r in entries if r == random} == expected
    # The keyword wins over the variable.
    chosen = tmp_path / "chosen.keys"
    before = path.read_bytes()
    version = v13 if "nss" in names else TLSVersion.TLSv1_2
    client = client_engine.client_context(client_cfg(ca, version), keylog_filename=chosen)
    server = server_engine.server_context(server_cfg(server_cert, version), keylog_filename=chosen)
    random = _connection(client, server)
    assert {r for _, r in read_log(chosen)} == {random}
    assert path.read_bytes() == before


def test_nothing_is_written_when_the_variable_is_unset(
    client_engine: Impl,
    server_engine: Impl,
    ca: CA,
    server_cert: Issued,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "would-be.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    monkeypatch.delenv("SSLKEYLOGFILE")
    monkeypatch.chdir(tmp_path)
    for version in (TLSVersion.TLSv1_2, TLSVersion.TLSv1_3):
        client = client_engine.client_context(client_cfg(ca, version))
        server = server_engine.server_context(server_cfg(server_cert))
        _connection(client, server)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("SSLKEYLOGFILE", "")  # empty: off, as for the stdlib
    _connection(client_engine.client_context(client_cfg(ca, TLSVersion.TLSv1_3)), server)
    assert list(tmp_path.iterdir()) == []


def test_key_log_file_is_private_and_appended(
    engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    path = tmp_path / "new.keys"
    client = engine.client_context(client_cfg(ca, TLSVersion.TLSv1_3), keylog_filename=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds secrets
    server = engine.server_context(server_cfg(server_cert))
    first = _connection(client, server)
    second = _connection(client, server)
    randoms = {r for _, r in read_log(path)}
    assert randoms == {first, second}


def test_unwritable_key_log_is_a_configuration_error(
    engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no such dir" / "x.keys"
    with pytest.raises(unitls.ConfigurationError, match=r"key log file .*no such dir"):
        engine.client_context(client_cfg(ca, TLSVersion.TLSv1_3), keylog_filename=missing)
    with pytest.raises(unitls.ConfigurationError, match="key log file"):
        engine.server_context(server_cfg(server_cert), keylog_filename=missing)
    with pytest.raises(TypeError, match="keylog_filename"):
        engine.client_context(client_cfg(ca, TLSVersion.TLSv1_3), keylog_filename=3)
    if not sys.flags.ignore_environment:
        monkeypatch.setenv("SSLKEYLOGFILE", str(missing))
        with pytest.raises(unitls.ConfigurationError, match="SSLKEYLOGFILE"):
            engine.client_context(client_cfg(ca, TLSVersion.TLSv1_3))


_CHILD = """
import sys, unitls
from unitls._certgen import CA
engine, n = sys.argv[1], int(sys.argv[2])
ca = CA.create("child"); leaf = ca.issue("localhost")
impl = unitls.get_implementation(engine)
v13 = unitls.TLSVersion.TLSv1_3
client = impl.client_context(
    unitls.TLSClientConfiguration(trust_store=ca.trust_store(), lowest_supported_version=v13),
    resumption=False,
)
server = impl.server_context(
    unitls.TLSServerConfiguration(
        certificate_chain=[leaf.signing_chain()], lowest_supported_version=v13
    )
)
for _ in range(n):
    c, s = client.create_buffer("localhost"), server.create_buffer()
    for _ in range(10):
        for b in (c, s):
            try:
                b.do_handshake()
            except unitls.WantReadError:
                pass
        for src, dst in ((c, s), (s, c)):
            k = src.outgoing_bytes_buffered()
            if k:
                dst.process_incoming(src.process_outgoing(k))
"""


def test_many_threads_and_processes_write_whole_lines(
    engine: Impl, ca: CA, server_cert: Issued, tmp_path: Path
) -> None:
    """Two processes and eight threads log into one file: every line arrives whole."""
    path = tmp_path / "shared.keys"
    env = {**os.environ, "SSLKEYLOGFILE": str(path)}
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, engine.name, "30"], env=env)
        for _ in range(2)
    ]
    # No resumption: resumed handshakes may log one more secret (CLIENT_EARLY_TRAFFIC_SECRET).
    client = engine.client_context(
        client_cfg(ca, TLSVersion.TLSv1_3), keylog_filename=path, resumption=False
    )
    server = engine.server_context(
        server_cfg(server_cert, TLSVersion.TLSv1_3), keylog_filename=path
    )
    randoms: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                randoms.append(_connection(client, server))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for child in children:
        assert child.wait(60) == 0
    assert not errors
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert all(LINE.match(ln) for ln in lines), "a line was torn or interleaved"
    # Ours: both sides log each of the 80 connections (5 lines each, NSS 4); the children:
    # their client and server, 30 connections each.
    per_side = len(tls13_labels(engine.name))
    ours = [ln for ln in lines if ln.split()[1] in set(randoms)]
    assert len(ours) == 80 * per_side * 2
    assert len(lines) == (80 + 2 * 30) * per_side * 2
