"""Thousands of connections per engine: no growth in memory (Python and native) or descriptors.

Memory is read from the process's resident set (``/proc/self/statm``), which includes what
rustls and OpenSSL allocate; a per-connection leak of even a few hundred bytes shows up over a
few thousand connections. The allowance covers allocator noise, not leaks.
"""

from __future__ import annotations

import ctypes
import gc
import os
from typing import Any

import pytest

import unitls

CONNECTIONS = 3000
WARMUP = 300
# Measured growth is under 100 KiB; 2 MiB is ~700 bytes per connection.
ALLOWED_GROWTH = 2 * 1024 * 1024

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)"
)


def _trim() -> None:
    # Hand freed heap back to the OS (glibc) so RSS tracks live memory, not old free lists.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    gc.collect()
    _trim()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_buffer_connections_do_not_grow_memory(
    engine: Any,
    client_config: unitls.TLSClientConfiguration,
    server_config: unitls.TLSServerConfiguration,
    pump: Any,
) -> None:
    client_ctx = engine.client_context(client_config)
    server_ctx = engine.server_context(server_config)

    def one() -> None:
        client = client_ctx.create_buffer("localhost")
        server = server_ctx.create_buffer()
        pump.handshake(client, server)
        assert pump.send(client, server, b"ping") == b"ping"
        client.shutdown()
        pump.transfer(client, server)
        assert server.read(10) == b""

    for _ in range(WARMUP):
        one()
    before, fds_before = _rss(), _fds()
    for _ in range(CONNECTIONS):
        one()
    growth = _rss() - before
    print(f"{engine.name}: RSS growth {growth / 1024:.0f} KiB over {CONNECTIONS} connections")
    assert _fds() == fds_before
    assert growth < ALLOWED_GROWTH, f"RSS grew {growth} bytes over {CONNECTIONS} connections"
