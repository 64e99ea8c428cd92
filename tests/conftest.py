"""Shared fixtures: every engine found by ``unitls.implementations()`` (or a third-party one).

The helpers these fixtures use (the buffer pump, the stdlib peer, certificates, fault tools) are
in ``kit.py``, the one test kit.

Point the suite at another PEP 748 implementation with ``--tls-implementation module[:attr]``
or the ``UNITLS_TEST_IMPLEMENTATION`` environment variable (``module:attr`` must be a
``TLSImplementation``; ``module`` alone means ``module.IMPLEMENTATION``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from kit import BufferPump

import unitls
from unitls._certgen import CA, Issued


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tls-implementation",
        action="append",
        default=[],
        help="run the conformance suite against this TLSImplementation (module[:attr])",
    )


def _engine_names(config: pytest.Config) -> list[str]:
    names = list(config.getoption("--tls-implementation"))
    env = os.environ.get("UNITLS_TEST_IMPLEMENTATION")
    if env:
        names.extend(n for n in env.split(",") if n)
    return names or unitls.implementations()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = _engine_names(metafunc.config)
    for fixture in ("engine", "client_engine", "server_engine"):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> unitls.TLSImplementation[Any, Any]:
    """Each engine under test (the conformance suite's main axis)."""
    return unitls.get_implementation(request.param)


@pytest.fixture(scope="session")
def client_engine(request: pytest.FixtureRequest) -> unitls.TLSImplementation[Any, Any]:
    return unitls.get_implementation(request.param)


@pytest.fixture(scope="session")
def server_engine(request: pytest.FixtureRequest) -> unitls.TLSImplementation[Any, Any]:
    return unitls.get_implementation(request.param)


@pytest.fixture(scope="session")
def ca() -> CA:
    """A throwaway root CA (ECDSA P-256)."""
    return CA.create("unitls test root")


@pytest.fixture(scope="session")
def server_cert(ca: CA) -> Issued:
    """A server certificate for localhost / 127.0.0.1 / ::1 signed by ``ca``."""
    return ca.issue("localhost", "127.0.0.1", "::1")


@pytest.fixture(scope="session")
def client_cert(ca: CA) -> Issued:
    """A client certificate (clientAuth EKU) signed by ``ca``."""
    return ca.issue("client.example", server=False, client=True)


@pytest.fixture(scope="session")
def server_config(server_cert: Issued) -> unitls.TLSServerConfiguration:
    return unitls.TLSServerConfiguration(certificate_chain=[server_cert.signing_chain()])


@pytest.fixture(scope="session")
def client_config(ca: CA) -> unitls.TLSClientConfiguration:
    return unitls.TLSClientConfiguration(trust_store=ca.trust_store())


@pytest.fixture(scope="session")
def pump() -> BufferPump:
    """Helpers to pair, handshake and exchange data between in-memory TLS buffers."""
    return BufferPump()


@pytest.fixture(scope="session")
def intermediate_ca(ca: CA) -> CA:
    """An intermediate CA under ``ca``: its leaves carry it as the chain to send."""
    return ca.intermediate("unitls test intermediate")
