"""rustls-specific promises: no ssl module on its path, GIL released, threads in parallel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import unitls
from unitls._certgen import CA

pytestmark = pytest.mark.skipif(
    "rustls" not in unitls.implementations(), reason="rustls engine not built"
)

_NO_SSL_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    sys.modules["ssl"] = None          # any "import ssl" now raises ImportError
    sys.modules["_ssl"] = None
    sys.modules["cryptography"] = None  # cryptography links OpenSSL: keep it out too
    import unitls
    rustls = unitls.get_implementation("rustls")

    ca_pem, cert_pem, key_pem = (bytes.fromhex(x) for x in sys.argv[1:4])
    chain = unitls.SigningChain(
        (unitls.Certificate.from_buffer(cert_pem), unitls.PrivateKey.from_buffer(key_pem))
    )
    server = rustls.server_context(unitls.TLSServerConfiguration(certificate_chain=[chain]))
    client = rustls.client_context(
        unitls.TLSClientConfiguration(trust_store=unitls.TrustStore.from_buffer(ca_pem))
    )

    # Buffers.
    c, s = client.create_buffer("localhost"), server.create_buffer()
    for _ in range(10):
        for b in (c, s):
            try:
                b.do_handshake()
            except unitls.WantReadError:
                pass
        if c.outgoing_bytes_buffered():
            s.process_incoming(c.process_outgoing(-1))
        if s.outgoing_bytes_buffered():
            c.process_incoming(s.process_outgoing(-1))
    c.write(b"ping")
    s.process_incoming(c.process_outgoing(-1))
    assert s.read(10) == b"ping"

    # Sockets.
    listener = server.connect(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    def serve():
        conn, _ = listener.accept()
        conn.sendall(conn.recv(100).upper())
        conn.close()
    t = threading.Thread(target=serve)
    t.start()
    with client.connect(("localhost", port)) as sock:
        sock.sendall(b"hello")
        assert sock.recv(100) == b"HELLO"
    t.join()
    listener.close()
    assert "ssl" not in [m for m in sys.modules if sys.modules[m] is not None]
    print("OK", c.negotiated_tls_version.name)
    """
)


def test_rustls_runs_where_ssl_cannot_be_imported() -> None:
    ca = CA.create()
    leaf = ca.issue("localhost", "127.0.0.1")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _NO_SSL_SCRIPT,
            ca.cert_pem.hex(),
            leaf.cert_pem.hex(),
            leaf.key_pem.hex(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK TLSv1_3"


def _bulk(client: Any, server: Any, rounds: int) -> None:
    c, s = _handshaken(client, server)
    data = b"x" * 65536
    for _ in range(rounds):
        c.write(data)
        s.process_incoming(c.process_outgoing(-1))
        got = 0
        while got < len(data):
            got += len(s.read(len(data)))


def _handshaken(client: Any, server: Any) -> tuple[Any, Any]:
    c, s = client.create_buffer("localhost"), server.create_buffer()
    for _ in range(10):
        for b in (c, s):
            try:
                b.do_handshake()
            except unitls.WantReadError:
                pass
        if c.outgoing_bytes_buffered():
            s.process_incoming(c.process_outgoing(-1))
        if s.outgoing_bytes_buffered():
            c.process_incoming(s.process_outgoing(-1))
    assert c.negotiated_tls_version is not None
    return c, s


@pytest.fixture(scope="module")
def pair_contexts() -> tuple[Any, Any]:
    rustls = unitls.get_implementation("rustls")
    ca = CA.create()
    leaf = ca.issue("localhost")
    server = rustls.server_context(
        unitls.TLSServerConfiguration(certificate_chain=[leaf.signing_chain()])
    )
    client = rustls.client_context(unitls.TLSClientConfiguration(trust_store=ca.trust_store()))
    return client, server


def test_gil_is_released_while_rustls_encrypts_and_decrypts(pair_contexts: Any) -> None:
    """No timing involved: with a huge switch interval the interpreter never forces a thread
    switch, so the other thread can only run if rustls lets go of the GIL during the call."""
    client, server = pair_contexts
    c, s = _handshaken(client, server)
    counter = 0
    stop = threading.Event()
    started = threading.Event()

    def spin() -> None:
        nonlocal counter
        started.set()
        while not stop.is_set():
            counter += 1
            time.sleep(0)  # hand the GIL back as soon as the main thread wants it

    old = sys.getswitchinterval()
    t = threading.Thread(target=spin)
    t.start()
    started.wait()
    sys.setswitchinterval(100.0)
    try:
        payload = b"x" * (32 * 1024 * 1024)
        before = counter
        c.write(payload)
        during_write = counter - before
        wire = c.process_outgoing(-1)
        before = counter
        s.process_incoming(wire)
        during_decrypt = counter - before
    finally:
        sys.setswitchinterval(old)
        stop.set()
        t.join()
    assert during_write > 0, "write() held the GIL for all of its work"
    assert during_decrypt > 0, "process_incoming() held the GIL for all of its work"


def test_threads_on_different_connections_run_in_parallel() -> None:
    """Two threads, each with its own connections from shared contexts, run bulk transfers
    at the same time without errors or corruption."""
    rustls = unitls.get_implementation("rustls")
    ca = CA.create()
    leaf = ca.issue("localhost")
    server = rustls.server_context(
        unitls.TLSServerConfiguration(certificate_chain=[leaf.signing_chain()])
    )
    client = rustls.client_context(unitls.TLSClientConfiguration(trust_store=ca.trust_store()))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _bulk(client, server, 200)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert all(not t.is_alive() for t in threads)
