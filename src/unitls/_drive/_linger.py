"""Closing a TCP connection without destroying what was just sent.

Closing a socket that still holds unread bytes (or that receives bytes afterwards) makes the
kernel send a reset, and a reset can destroy data in flight: a TLS alert, a close_notify. After a
failed handshake the peer usually still has bytes coming, so shells half-close, read and discard
until the peer's EOF (or a short time passes), then close (``openssl s_server`` does the same).
"""

from __future__ import annotations

import _socket
import socket
import time

from ._io import wait_fd

__all__ = ["LINGER", "drain", "linger_close"]

#: How long a failed connection is drained before it is closed anyway (seconds).
LINGER = 2.0


def drain(sock: socket.socket) -> bool:
    """Read off what is waiting, without blocking (the socket must be non-blocking: CPython
    waits for a socket with a timeout even with MSG_DONTWAIT); True once the peer's EOF (or an
    error) came. Reads at most 1 MiB: a peer that keeps sending is not waited for."""
    try:
        for _ in range(16):
            if not _socket.socket.recv(sock, 65536, socket.MSG_DONTWAIT):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    return False


def half_close(sock: socket.socket) -> None:
    """``shutdown(SHUT_WR)`` on the socket itself (``ssl.SSLSocket.shutdown`` would drop its
    TLS state); errors mean the connection is gone already."""
    try:
        _socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        pass


def linger_close(sock: socket.socket, linger: float = LINGER) -> None:
    """Half-close, drain until the peer's EOF or ``linger`` seconds, then close (blocking)."""
    try:
        if sock.fileno() == -1:
            return
        sock.setblocking(False)
        half_close(sock)
        end = time.monotonic() + linger
        while not drain(sock):
            left = end - time.monotonic()
            if left <= 0 or not wait_fd(sock.fileno(), True, False, left):
                break
    finally:
        sock.close()
