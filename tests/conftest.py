"""Shared fixtures: every engine found by ``unitls.implementations()`` (or a third-party one).

Point the suite at another PEP 748 implementation with ``--tls-implementation module[:attr]``
or the ``UNITLS_TEST_IMPLEMENTATION`` environment variable (``module:attr`` must be a
``TLSImplementation``; ``module`` alone means ``module.IMPLEMENTATION``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

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


# -- in-memory helpers shared by the buffer-level suites -----------------------------------------

Chunk = int | Callable[[], int] | None


class BufferPump:
    """The "network" of buffer tests: moves ciphertext between two ``TLSBuffer`` objects.

    Only PEP 748 calls are used, so every engine (and every client x server pair) runs the same.
    """

    max_rounds = 200

    @staticmethod
    def pair(
        client_engine: unitls.TLSImplementation[Any, Any],
        server_engine: unitls.TLSImplementation[Any, Any],
        client_config: unitls.TLSClientConfiguration,
        server_config: unitls.TLSServerConfiguration,
        server_hostname: str = "localhost",
    ) -> tuple[unitls.TLSBuffer, unitls.TLSBuffer]:
        """A fresh (client, server) pair of buffers, not yet handshaken."""
        client = client_engine.client_context(client_config).create_buffer(server_hostname)
        server = server_engine.server_context(server_config).create_buffer()
        return client, server

    @staticmethod
    def transfer(src: unitls.TLSBuffer, dst: unitls.TLSBuffer, chunk: Chunk = None) -> int:
        """Move all of ``src``'s pending ciphertext into ``dst`` (in ``chunk``-sized pieces)."""
        total = 0
        while True:
            size = chunk() if callable(chunk) else (chunk or 1 << 20)
            data = src.process_outgoing(size)
            if not data:
                return total
            assert len(data) <= size, "process_outgoing returned more than asked for"
            total += len(data)
            dst.process_incoming(data)

    def handshake(
        self, client: unitls.TLSBuffer, server: unitls.TLSBuffer, chunk: Chunk = None
    ) -> None:
        """Drive both handshakes to completion; engine errors propagate."""
        done_c = done_s = False
        for _ in range(self.max_rounds):
            if not done_c:
                try:
                    client.do_handshake()
                    done_c = True
                except unitls.WantReadError:
                    pass
            moved = self.transfer(client, server, chunk)
            if not done_s:
                try:
                    server.do_handshake()
                    done_s = True
                except unitls.WantReadError:
                    pass
            moved += self.transfer(server, client, chunk)
            if done_c and done_s and not moved:
                return
        raise AssertionError(f"handshake stuck (client done: {done_c}, server done: {done_s})")

    @staticmethod
    def drain(buf: unitls.TLSBuffer, amt: int = 65536) -> bytes:
        """All plaintext ``buf`` can give now (stops at WantReadError or a clean EOF)."""
        out = bytearray()
        while True:
            try:
                data = buf.read(amt)
            except unitls.WantReadError:
                return bytes(out)
            assert isinstance(data, bytes)
            if not data:
                return bytes(out)
            out += data

    def send(
        self,
        src: unitls.TLSBuffer,
        dst: unitls.TLSBuffer,
        data: bytes,
        write_size: int = 65536,
        chunk: Chunk = None,
    ) -> bytes:
        """Write ``data`` on ``src`` and return what ``dst`` reads (the caller compares)."""
        view = memoryview(data)
        received = bytearray()
        for off in range(0, len(data), write_size):
            piece = view[off : off + write_size]
            taken = src.write(piece)
            assert taken == len(piece), f"write took {taken} of {len(piece)} bytes"
            self.transfer(src, dst, chunk)
            received += self.drain(dst)
        for _ in range(self.max_rounds):
            if len(received) >= len(data):
                break
            moved = self.transfer(src, dst, chunk) + self.transfer(dst, src, chunk)
            more = self.drain(dst)
            received += more
            if not moved and not more:
                break
        return bytes(received)

    def connected(
        self,
        client_engine: unitls.TLSImplementation[Any, Any],
        server_engine: unitls.TLSImplementation[Any, Any],
        client_config: unitls.TLSClientConfiguration,
        server_config: unitls.TLSServerConfiguration,
        server_hostname: str = "localhost",
    ) -> tuple[unitls.TLSBuffer, unitls.TLSBuffer]:
        """A handshaken (client, server) pair."""
        client, server = self.pair(
            client_engine, server_engine, client_config, server_config, server_hostname
        )
        self.handshake(client, server)
        return client, server


@pytest.fixture(scope="session")
def pump() -> BufferPump:
    """Helpers to pair, handshake and exchange data between in-memory TLS buffers."""
    return BufferPump()


@pytest.fixture(scope="session")
def intermediate_ca(ca: CA) -> CA:
    """An intermediate CA under ``ca``: its leaves carry it as the chain to send."""
    return ca.intermediate("unitls test intermediate")
