"""x509-limbo (C2SP) certificate-validation vectors, each run as a real in-memory handshake.

For each SERVER case with a key and without a fixed validation time, the server presents the
peer certificate and the untrusted intermediates; the client trusts ``trusted_certs`` and checks
``expected_peer_name``. The per-engine score (cases whose outcome agrees with the expected one)
must not drop below the one recorded in ``limbo_scores.json``.
"""

from __future__ import annotations

import json
import ssl
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from kit import StdlibPeer

import unitls
from unitls import Certificate, PrivateKey, SigningChain, TLSClientConfiguration

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

# The vectors ship with the tests (Apache-2.0, see x509-limbo/LICENSE and README.md).
LIMBO = Path(__file__).with_name("x509-limbo") / "limbo.json"
SCORES = Path(__file__).with_name("limbo_scores.json")

pytestmark = pytest.mark.timeout(600)


@dataclass
class Tally:
    agree: int = 0
    total: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    disagree: list[str] = field(default_factory=list)
    non_verification_errors: int = 0

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _stdlib_server(chain_pem: bytes, key_pem: bytes, tmp: Path) -> StdlibPeer:
    """Presents a chain the engine's own server refuses to load (stdlib ``ssl``, SECLEVEL 0):
    the limbo cases test the client's verification, not what a server agrees to serve."""
    path = tmp / "limbo-server.pem"
    path.write_bytes(chain_pem + key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(path)
    return StdlibPeer(ctx, server_side=True)


def _pem(text: str) -> bytes:
    return text.strip().encode() + b"\n"


def _client(engine: Impl, case: dict[str, Any]) -> unitls.TLSBuffer:
    store = unitls.TrustStore.from_buffer(b"".join(_pem(c) for c in case["trusted_certs"]))
    config = TLSClientConfiguration(trust_store=store)
    name = case.get("expected_peer_name")
    if name:
        buf: unitls.TLSBuffer = engine.client_context(config).create_buffer(name["value"])
        return buf
    # No name to check: verify the chain only.
    from unitls.insecure import InsecureConfiguration, get_insecure_implementation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        insecure = get_insecure_implementation(engine.name)
        ctx = insecure.client_context(config, InsecureConfiguration(disable_hostname_check=True))
        return ctx.create_buffer("limbo.invalid")  # type: ignore[no-any-return]


def _server(engine: Impl, case: dict[str, Any], tmp: Path) -> Any:
    leaf, key = _pem(case["peer_certificate"]), _pem(case["peer_certificate_key"])
    inters = [_pem(c) for c in case["untrusted_intermediates"]]
    chain = SigningChain(
        (Certificate.from_buffer(leaf), PrivateKey.from_buffer(key)),
        [Certificate.from_buffer(c) for c in inters],
    )
    try:
        return engine.server_context(
            unitls.TLSServerConfiguration(certificate_chain=[chain])
        ).create_buffer()
    except unitls.ConfigurationError:
        return _stdlib_server(leaf + b"".join(inters), key, tmp)


def _run_case(engine: Impl, case: dict[str, Any], pump: Any, tmp: Path) -> str:
    """'SUCCESS', 'FAILURE' (verification error) or 'ERROR' (another TLSError)."""
    client = _client(engine, case)
    server = _server(engine, case, tmp)
    try:
        pump.handshake(client, server)
        # TLS 1.3: make sure the client really accepted (data flows both ways).
        if pump.send(client, server, b"ping") != b"ping":
            return "ERROR"
        if pump.send(server, client, b"pong") != b"pong":
            return "ERROR"
    except unitls.CertificateVerificationError:
        return "FAILURE"
    except unitls.TLSError:
        return "ERROR"
    return "SUCCESS"


def _print(request: pytest.FixtureRequest, line: str) -> None:
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if capman is None or tr is None:
        print(line)
        return
    with capman.global_and_fixture_disabled():
        tr.write_line("")
        tr.write_line(line)


def test_limbo(engine: Impl, pump: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cases = json.loads(LIMBO.read_text())["testcases"]
    tally = Tally()
    for case in cases:
        if case["validation_kind"] != "SERVER":
            tally.skip("client validation")
            continue
        if not case.get("peer_certificate_key"):
            tally.skip("no key")
            continue
        if case.get("validation_time"):
            tally.skip("validation_time")
            continue
        try:
            outcome = _run_case(engine, case, pump, tmp_path)
        except (unitls.ConfigurationError, ssl.SSLError) as exc:
            tally.skip(f"cannot present ({type(exc).__name__})")
            continue
        tally.total += 1
        if outcome == "ERROR":
            tally.non_verification_errors += 1
        # A connection refused for another reason still refused the certificate.
        accepted = outcome == "SUCCESS"
        if accepted == (case["expected_result"] == "SUCCESS"):
            tally.agree += 1
        else:
            tally.disagree.append(f"{case['id']} (expected {case['expected_result']})")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(tally.skipped.items()))
    _print(
        request,
        f"x509-limbo [{engine.name}]: agree {tally.agree}/{tally.total} "
        f"({tally.non_verification_errors} refused with a non-verification error; "
        f"skipped {sum(tally.skipped.values())}: {skipped})",
    )
    recorded = json.loads(SCORES.read_text()).get(engine.name) if SCORES.exists() else None
    if recorded is not None:
        assert tally.agree >= recorded["agree"], (
            f"x509-limbo score of {engine.name} dropped from {recorded['agree']} to "
            f"{tally.agree}; disagreeing cases: {tally.disagree}"
        )
