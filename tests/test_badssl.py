"""badssl-style certificate scenarios, made at test time, run as in-memory handshakes per engine.

Each case says whether the client must accept, must reject, or may do either ("record": the
outcome is printed per engine). Any rejection must be a ``CertificateVerificationError`` with a
reason, never a generic error.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import unitls
from unitls import TLSClientConfiguration, TLSServerConfiguration
from unitls._certgen import CA, Issued

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(120)

PASS, FAIL, RECORD = "pass", "fail", "record"


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


@dataclass(frozen=True)
class Scenario:
    """What the server presents, what the client trusts and asks for, what must happen."""

    chain: unitls.SigningChain
    trust: bytes  # PEM of the client's trust anchors
    hostname: str
    expected: str


Builder = Callable[[CA], Scenario]


def _s(issued: Issued, root: CA, host: str, expected: str, **kw: Any) -> Scenario:
    return Scenario(issued.signing_chain(**kw), root.cert_pem, host, expected)


def _days(n: int) -> datetime.datetime:
    return _now() + datetime.timedelta(days=n)


CASES: dict[str, Builder] = {
    # Controls: these must work, or the failures below prove nothing.
    "good": lambda r: _s(r.issue("localhost"), r, "localhost", PASS),
    "good-uppercase-name": lambda r: _s(r.issue("localhost"), r, "LOCALHOST", PASS),
    "good-intermediate": lambda r: _s(r.intermediate().issue("localhost"), r, "localhost", PASS),
    "good-rsa2048": lambda r: _s(r.issue("localhost", key_type="rsa"), r, "localhost", PASS),
    "good-ed25519": lambda r: _s(r.issue("localhost", key_type="ed25519"), r, "localhost", PASS),
    "good-no-eku": lambda r: _s(custom_leaf(r, ekus=()), r, "localhost", PASS),
    "good-both-ekus": lambda r: _s(
        r.issue("localhost", server=True, client=True), r, "localhost", PASS
    ),
    # Validity period.
    "expired": lambda r: _s(
        r.issue("localhost", not_before=_days(-30), not_after=_days(-1)), r, "localhost", FAIL
    ),
    "not-yet-valid": lambda r: _s(
        r.issue("localhost", not_before=_days(1), not_after=_days(30)), r, "localhost", FAIL
    ),
    # Names.
    "wrong-host": lambda r: _s(r.issue("example.test"), r, "localhost", FAIL),
    "cn-only-no-san": lambda r: _s(
        r.issue("localhost", include_san=False, common_name="localhost"), r, "localhost", FAIL
    ),
    "wildcard-one-label": lambda r: _s(r.issue("*.example.test"), r, "www.example.test", PASS),
    "wildcard-two-labels": lambda r: _s(r.issue("*.example.test"), r, "a.b.example.test", FAIL),
    "wildcard-bare-domain": lambda r: _s(r.issue("*.example.test"), r, "example.test", FAIL),
    "wildcard-partial-label": lambda r: _s(
        r.issue("w*.example.test"), r, "www.example.test", RECORD
    ),
    "wildcard-not-leftmost": lambda r: _s(r.issue("www.*.test"), r, "www.example.test", FAIL),
    "wildcard-tld": lambda r: _s(r.issue("*.test"), r, "example.test", RECORD),
    "ip-san": lambda r: _s(r.issue("127.0.0.1"), r, "127.0.0.1", PASS),
    "ip-san-v6": lambda r: _s(r.issue("::1"), r, "::1", PASS),
    "ip-san-wrong-ip": lambda r: _s(r.issue("127.0.0.2"), r, "127.0.0.1", FAIL),
    "ip-as-dns-san": lambda r: _s(custom_leaf(r, dns=("127.0.0.1",)), r, "127.0.0.1", FAIL),
    "ip-in-cn-only": lambda r: _s(custom_leaf(r, cn="127.0.0.1", dns=()), r, "127.0.0.1", FAIL),
    "dns-name-for-ip-host": lambda r: _s(r.issue("localhost"), r, "127.0.0.1", FAIL),
    # Trust.
    "self-signed": lambda r: _s(custom_leaf(None), r, "localhost", FAIL),
    "self-signed-trusted": lambda r: Scenario(
        (leaf := custom_leaf(None)).signing_chain(), leaf.cert_pem, "localhost", RECORD
    ),
    "untrusted-root": lambda r: _s(CA.create("untrusted").issue("localhost"), r, "localhost", FAIL),
    "incomplete-chain": lambda r: _s(
        r.intermediate().issue("localhost"), r, "localhost", FAIL, include_intermediates=False
    ),
    "intermediate-not-ca": lambda r: _s(
        r.intermediate("not a CA", is_ca=False).issue("localhost"), r, "localhost", FAIL
    ),
    "path-length-violated": lambda r: _s(
        r.intermediate("pathlen 0", path_length=0).intermediate("too deep").issue("localhost"),
        r,
        "localhost",
        FAIL,
    ),
    "leaf-is-ca": lambda r: _s(custom_leaf(r, is_ca=True), r, "localhost", RECORD),
    # Key usage and algorithms.
    "client-auth-only-eku": lambda r: _s(
        r.issue("localhost", server=False, client=True), r, "localhost", FAIL
    ),
    "code-signing-eku": lambda r: _s(
        custom_leaf(r, ekus=(ExtendedKeyUsageOID.CODE_SIGNING,)), r, "localhost", FAIL
    ),
    "rsa1024": lambda r: _s(r.issue("localhost", key_type="rsa1024"), r, "localhost", RECORD),
    # (A SHA-1 signed leaf cannot be made: cryptography >= 45 refuses to sign with SHA-1.)
}


# What an engine's library cannot do at all: the case must be refused at configuration with a
# ConfigurationError naming it (NSS 3.87 has no Ed25519), neither accepted nor failed otherwise.
LIMITS: dict[tuple[str, str], str] = {("nss", "good-ed25519"): "Ed25519"}


@pytest.fixture(scope="module")
def root() -> CA:
    return CA.create("badssl root")


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> Iterator[dict[tuple[str, str], str]]:
    """Collects each engine's outcome per case and prints a table at the end of the module."""
    results: dict[tuple[str, str], str] = {}
    yield results
    lines = ["", "badssl outcomes (engine / case: outcome):"]
    lines += [f"  {eng:8} {case:28} {outcome}" for (eng, case), outcome in sorted(results.items())]
    print_uncaptured(request, lines)


def print_uncaptured(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print to the terminal even while pytest captures output (reports, not diagnostics)."""
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if capman is None or tr is None:
        return
    with capman.global_and_fixture_disabled():
        for line in lines:
            tr.write_line(line)


def _outcome(engine: Impl, scenario: Scenario, pump: Any) -> tuple[str, BaseException | None]:
    try:
        sctx = engine.server_context(TLSServerConfiguration(certificate_chain=[scenario.chain]))
    except unitls.ConfigurationError as exc:
        return f"server refused: {exc}", exc
    cctx = engine.client_context(
        TLSClientConfiguration(trust_store=unitls.TrustStore.from_buffer(scenario.trust))
    )
    client = cctx.create_buffer(scenario.hostname)
    server = sctx.create_buffer()
    try:
        pump.handshake(client, server)
        assert pump.send(client, server, b"ping") == b"ping"
        assert pump.send(server, client, b"pong") == b"pong"
    except unitls.CertificateVerificationError as exc:
        return f"rejected: {exc.reason}", exc
    except unitls.TLSError as exc:
        return f"ERROR {type(exc).__name__}: {exc}", exc
    return "accepted", None


@pytest.mark.parametrize("case", list(CASES))
def test_badssl(
    engine: Impl,
    root: CA,
    pump: Any,
    report: dict[tuple[str, str], str],
    case: str,
) -> None:
    scenario = CASES[case](root)
    outcome, exc = _outcome(engine, scenario, pump)
    report[(engine.name, case)] = f"{outcome}  [expected: {scenario.expected}]"
    limit = LIMITS.get((engine.name, case))
    if limit is not None:
        assert isinstance(exc, unitls.ConfigurationError) and limit in str(exc), outcome
        return
    if scenario.expected == PASS:
        assert exc is None, f"{case}: a valid certificate was refused: {outcome}"
        return
    if exc is None:
        assert scenario.expected == RECORD, f"{case}: a bad certificate was accepted"
        return
    if isinstance(exc, unitls.ConfigurationError) and scenario.expected == RECORD:
        return  # the server engine refuses to use such a certificate at all (e.g. RSA-1024)
    assert isinstance(exc, unitls.CertificateVerificationError), (
        f"{case}: rejection must be a CertificateVerificationError, got {outcome}"
    )
    assert exc.reason, f"{case}: CertificateVerificationError without a reason"


def test_rsa1024_server_seen_by_client(
    engine: Impl, root: CA, pump: Any, tmp_path: Any, report: dict[tuple[str, str], str]
) -> None:
    """A client facing an RSA-1024 server certificate (served by the stdlib at SECLEVEL 0,
    since the engines refuse to serve one): reject with CertificateVerificationError or accept."""
    import ssl

    leaf = root.issue("localhost", key_type="rsa1024")
    path = tmp_path / "rsa1024.pem"
    path.write_bytes(leaf.chain_pem + leaf.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(path)
    server = _StdlibServer(ctx)
    client = engine.client_context(
        TLSClientConfiguration(trust_store=root.trust_store())
    ).create_buffer("localhost")
    try:
        pump.handshake(client, server)
        outcome = "accepted"
    except unitls.CertificateVerificationError as exc:
        outcome = f"rejected: {exc.reason}"
    except unitls.TLSError as exc:
        report[(engine.name, "rsa1024-client")] = f"ERROR {type(exc).__name__}: {exc}"
        pytest.fail(f"rejection must be a CertificateVerificationError, got {exc!r}")
    report[(engine.name, "rsa1024-client")] = f"{outcome}  [expected: record]"


class _StdlibServer:
    """Minimal ``ssl.SSLObject`` server driven by BufferPump (see test_interop_stdlib)."""

    def __init__(self, ctx: Any) -> None:
        import ssl

        self._ssl = ssl
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def do_handshake(self) -> None:
        try:
            self.obj.do_handshake()
        except self._ssl.SSLWantReadError:
            raise unitls.WantReadError("stdlib server wants data") from None
        except self._ssl.SSLError as exc:
            raise unitls.TLSError(f"stdlib server: {exc}") from exc

    def process_incoming(self, data: bytes) -> None:
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def process_outgoing(self, n: int) -> bytes:
        return self.outgoing.read(n)
