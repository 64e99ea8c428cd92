"""The bridge's ClientHello reader (``unitls.compat._hello``): real hellos, fragments, garbage."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unitls
from unitls.compat import ORIGINAL_SSLCONTEXT
from unitls.compat._hello import parse_client_hello

Engine = unitls.TLSImplementation[Any, Any]


def _stdlib_hello(name: str | None) -> bytes:
    ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_stdlib_hello() -> None:
    hello = parse_client_hello(_stdlib_hello("www.example.org"))
    assert hello is not None
    assert hello.server_name == "www.example.org"
    assert 0x1301 in hello.cipher_suites  # TLS_AES_128_GCM_SHA256
    no_sni = parse_client_hello(_stdlib_hello("127.0.0.1"))  # an IP: no SNI
    assert no_sni is not None and no_sni.server_name is None


def test_engine_hello(engine: Engine) -> None:
    buf = engine.client_context(unitls.TLSClientConfiguration()).create_buffer("a.example")
    with pytest.raises(unitls.WantReadError):
        buf.do_handshake()
    hello = parse_client_hello(buf.process_outgoing(buf.outgoing_bytes_buffered()))
    assert hello is not None and hello.server_name == "a.example"
    assert hello.cipher_suites


def test_fragments_and_records() -> None:
    raw = _stdlib_hello("frag.example")
    for cut in (1, 4, 5, 6, 40, len(raw) - 1):
        assert parse_client_hello(raw[:cut]) is None  # incomplete: wait for more
    # The same handshake message split over several records (allowed by TLS).
    body = raw[5:]
    records = b"".join(
        bytes([22, 3, 1]) + len(body[i : i + 50]).to_bytes(2, "big") + body[i : i + 50]
        for i in range(0, len(body), 50)
    )
    hello = parse_client_hello(records)
    assert hello is not None and hello.server_name == "frag.example"


def test_not_a_hello() -> None:
    with pytest.raises(ValueError):
        parse_client_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ValueError):
        parse_client_hello(bytes([22, 3, 3, 0, 4, 2, 0, 0, 0]))  # a ServerHello


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        parse_client_hello(bytes([22, 3, 3]) + len(data).to_bytes(2, "big") + data)
    except ValueError:
        pass
