"""Servers and clients' 0-RTT data they did not accept (found by tlsfuzzer's 0rtt-garbage probe).

A TLS 1.3 client may send early data right after its ClientHello; a server that does not accept
it must skip those records (RFC 8446 4.2.10: up to its max_early_data_size; OpenSSL and rustls
skip 16 KiB) and go on with the handshake. The probe below is a hand-made ClientHello offering a
PSK the server cannot know plus the early_data extension, followed by undecryptable records.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest

import unitls


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def _v8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _v16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def client_hello_with_early_data() -> bytes:
    exts = b"".join(
        [
            _ext(0x002B, _v8(b"\x03\x04")),  # supported_versions: TLS 1.3
            _ext(0x000A, _v16(b"\x00\x1d")),  # supported_groups: x25519
            _ext(0x000D, _v16(b"\x04\x03\x08\x04\x04\x01")),  # signature_algorithms
            _ext(0x0033, _v16(b"\x00\x1d" + _v16(os.urandom(32)))),  # key_share
            _ext(0x0000, _v16(b"\x00" + _v16(b"localhost"))),  # server_name
            _ext(0x002D, _v8(b"\x01")),  # psk_key_exchange_modes: psk_dhe_ke
            _ext(0x002A, b""),  # early_data
            # pre_shared_key (must be last): an identity no server knows, a 32-byte binder
            _ext(0x0029, _v16(_v16(os.urandom(64)) + bytes(4)) + _v16(_v8(os.urandom(32)))),
        ]
    )
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + _v8(os.urandom(32))
        + _v16(b"\x13\x01\x13\x02\x13\x03")
        + _v8(b"\x00")
        + _v16(exts)
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + _v16(handshake)


def early_data_records(total: int, size: int = 1024) -> bytes:
    out = bytearray()
    while total > 0:
        n = min(size, total)
        total -= n
        out += b"\x17\x03\x03" + _v16(os.urandom(n))
    return bytes(out)


def _offer(engine: Any, server_config: Any, early: int) -> unitls.TLSBuffer:
    server = engine.server_context(server_config).create_buffer()
    server.process_incoming(client_hello_with_early_data() + early_data_records(early))
    try:
        server.do_handshake()
    except unitls.WantReadError:
        pass
    return server


@pytest.mark.parametrize("early", [1024, 8192, 15 * 1024])
def test_rejected_early_data_is_skipped(engine: Any, server_config: Any, early: int) -> None:
    """Up to 15 KiB of early data arriving with the ClientHello: the server answers and waits
    for the rest of the handshake (before the fix, rustls aborted above ~4 KiB)."""
    server = _offer(engine, server_config, early)
    assert server.outgoing_bytes_buffered() > 0  # its ServerHello flight
    assert server.negotiated_tls_version is None  # still waiting for the client


def test_too_much_early_data_is_a_protocol_error(engine: Any, server_config: Any) -> None:
    with pytest.raises(unitls.ProtocolError):
        _offer(engine, server_config, 24 * 1024)
