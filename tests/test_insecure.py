"""The insecure module on every engine: what it weakens, what it still checks, how loudly."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import unitls
from unitls._certgen import CA, Issued
from unitls.insecure import InsecureConfiguration, SecurityWarning, get_insecure_implementation


@pytest.fixture
def insecure(engine: Any) -> Any:
    with pytest.warns(SecurityWarning):
        return get_insecure_implementation(engine.name)


def _client(insecure: Any, config: unitls.TLSClientConfiguration, **opts: bool) -> Any:
    with pytest.warns(SecurityWarning):
        options = InsecureConfiguration(**opts)
    with pytest.warns(SecurityWarning):
        return insecure.client_context(config, options)


def _connect(client_ctx: Any, server_ctx: Any, name: str, pump: Any) -> Any:
    with pytest.warns(SecurityWarning):
        client = client_ctx.create_buffer(name)
    server = server_ctx.create_buffer()
    pump.handshake(client, server)
    return client


def test_disable_verification_accepts_an_untrusted_server(
    engine: Any, insecure: Any, server_config: unitls.TLSServerConfiguration, pump: Any
) -> None:
    stranger = CA.create("some other CA")
    config = unitls.TLSClientConfiguration(trust_store=stranger.trust_store())
    client = _client(insecure, config, disable_verification=True)
    server_ctx = engine.server_context(server_config)
    assert _connect(client, server_ctx, "wrong.example", pump).negotiated_tls_version


def test_disable_hostname_check_still_verifies_the_chain(
    engine: Any,
    insecure: Any,
    ca: CA,
    server_config: unitls.TLSServerConfiguration,
    pump: Any,
) -> None:
    server_ctx = engine.server_context(server_config)
    trusted = _client(
        insecure,
        unitls.TLSClientConfiguration(trust_store=ca.trust_store()),
        disable_hostname_check=True,
    )
    assert _connect(trusted, server_ctx, "wrong.example", pump).negotiated_tls_version
    untrusted = _client(
        insecure,
        unitls.TLSClientConfiguration(trust_store=CA.create("other CA").trust_store()),
        disable_hostname_check=True,
    )
    with pytest.raises(unitls.CertificateVerificationError):
        _connect(untrusted, server_ctx, "localhost", pump)


def test_secure_context_rejects_what_the_insecure_one_accepts(
    engine: Any, server_config: unitls.TLSServerConfiguration, pump: Any
) -> None:
    config = unitls.TLSClientConfiguration(trust_store=CA.create("other CA").trust_store())
    client = engine.client_context(config).create_buffer("localhost")
    server = engine.server_context(server_config).create_buffer()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SecurityWarning)  # the secure path never warns
        with pytest.raises(unitls.CertificateVerificationError):
            pump.handshake(client, server)


def test_server_cannot_accept_unverified_client_certificates(
    insecure: Any, ca: CA, server_cert: Issued
) -> None:
    config = unitls.TLSServerConfiguration(
        [server_cert.signing_chain()], trust_store=ca.trust_store()
    )
    with pytest.warns(SecurityWarning):
        options = InsecureConfiguration(disable_verification=True)
    with pytest.warns(SecurityWarning), pytest.raises(unitls.ConfigurationError):
        insecure.server_context(config, options)
