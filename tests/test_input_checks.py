"""Bad input is refused early and clearly: at configuration, with a message saying what is wrong.

ALPN lists too long for a ClientHello, files that are not regular files or are too big, private
keys no handshake can use, on every engine.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from kit import CA, BufferPump, Issued

import unitls
from unitls import (
    Certificate,
    PrivateKey,
    SigningChain,
    TLSClientConfiguration,
    TLSServerConfiguration,
    TrustStore,
)
from unitls._config import ALPN_LIST_MAX
from unitls._objects import MAX_FILE_SIZE

Impl: TypeAlias = unitls.TLSImplementation[Any, Any]

pytestmark = pytest.mark.timeout(60)


# -- ALPN -------------------------------------------------------------------------------------------


def _alpn_list(encoded_size: int) -> list[bytes]:
    """Distinct ASCII protocol names whose ALPN encoding (a length byte each) is this size."""
    names = []
    left = encoded_size
    i = 0
    while left:
        size = min(255, left - 1) if left - 1 <= 255 else 200
        names.append((b"%05d" % i + b"p" * 255)[:size])
        left -= size + 1
        i += 1
    return names


def test_alpn_list_over_the_clienthello_limit_is_refused_at_configuration(
    server_cert: Issued,
) -> None:
    too_long = _alpn_list(ALPN_LIST_MAX + 1)
    assert sum(1 + len(p) for p in too_long) == ALPN_LIST_MAX + 1
    with pytest.raises(unitls.ConfigurationError, match="ALPN"):
        TLSClientConfiguration(inner_protocols=too_long)
    with pytest.raises(unitls.ConfigurationError, match="ALPN"):
        TLSServerConfiguration(
            certificate_chain=[server_cert.signing_chain()], inner_protocols=too_long
        )
    with pytest.raises(unitls.ConfigurationError, match="65,535"):
        TLSClientConfiguration(inner_protocols=_alpn_list(70_000))


def test_longest_alpn_list_allowed_makes_a_working_handshake(
    client_engine: Impl, server_engine: Impl, ca: CA, server_cert: Issued
) -> None:
    longest = _alpn_list(ALPN_LIST_MAX)
    client, server = BufferPump().connected(
        client_engine,
        server_engine,
        TLSClientConfiguration(trust_store=ca.trust_store(), inner_protocols=longest),
        TLSServerConfiguration(
            certificate_chain=[server_cert.signing_chain()], inner_protocols=longest[-1:]
        ),
    )
    assert client.negotiated_protocol() == server.negotiated_protocol() == longest[-1]


# -- files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Certificate, PrivateKey, TrustStore])
def test_from_file_refuses_what_is_not_a_regular_file(cls: Any, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(tmp_path), str(fifo)):
        with pytest.raises(unitls.ConfigurationError, match="not a regular file"):
            cls.from_file(path)


def test_from_file_refuses_a_file_over_the_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)  # sparse: nothing is written
    with pytest.raises(unitls.ConfigurationError, match="limit"):
        TrustStore.from_file(big)


def test_a_file_replaced_by_a_fifo_fails_at_once_when_the_engine_reads_it(
    engine: Impl, ca: CA, tmp_path: Path
) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem)
    store = TrustStore.from_file(path)
    path.unlink()
    os.mkfifo(path)  # opening it for reading would wait for a writer forever
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            engine.client_context(TLSClientConfiguration(trust_store=store))
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=build, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # unblock the reader before failing
        with open(path, "wb"):
            pass
        pytest.fail("reading a FIFO blocked the engine")
    assert len(outcome) == 1 and isinstance(outcome[0], unitls.ConfigurationError), outcome
    assert "not a regular file" in str(outcome[0])


# -- private keys -----------------------------------------------------------------------------------


def _pkcs8(key: Any, encryption: Any = None) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


UNUSABLE_KEYS = {
    "dsa": (lambda: _pkcs8(dsa.generate_private_key(2048)), "DSA"),
    "secp256k1": (lambda: _pkcs8(ec.generate_private_key(ec.SECP256K1())), "secp256k1"),
    "brainpool": (lambda: _pkcs8(ec.generate_private_key(ec.BrainpoolP256R1())), "brainpool"),
    "rsa1024": (lambda: _pkcs8(rsa.generate_private_key(65537, 1024)), "RSA-1024 is too small"),
    "encrypted": (
        lambda: _pkcs8(
            ec.generate_private_key(ec.SECP256R1()),
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "decrypt",
    ),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE_KEYS))
def test_unusable_keys_are_refused_at_configuration_saying_why(
    engine: Impl, server_cert: Issued, case: str
) -> None:
    make, says = UNUSABLE_KEYS[case]
    chain = SigningChain((server_cert.certificate, PrivateKey.from_buffer(make())))
    with pytest.raises(unitls.ConfigurationError) as info:
        engine.server_context(TLSServerConfiguration(certificate_chain=[chain]))
    assert says in str(info.value), str(info.value)


def test_a_truncated_pem_key_is_named_as_such(engine: Impl, server_cert: Issued) -> None:
    cut = server_cert.key_pem[: len(server_cert.key_pem) // 2]
    chain = SigningChain((server_cert.certificate, PrivateKey.from_buffer(cut)))
    with pytest.raises(unitls.ConfigurationError, match="END line"):
        engine.server_context(TLSServerConfiguration(certificate_chain=[chain]))
