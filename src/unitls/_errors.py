"""The exception hierarchy: the PEP's four classes plus finer ones users need to tell apart.

Every failure of a TLS operation, in any engine, is a ``TLSError``. The finer classes below let
callers distinguish a certificate problem from a dropped connection without parsing messages.
Where the underlying failure came from another library (``ssl.SSLError``, ``OSError``, rustls),
it is chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "CertificateVerificationError",
    "ConfigurationError",
    "HandshakeClosedError",
    "ProtocolError",
    "RaggedEOF",
    "TLSConnectionError",
    "TLSError",
    "TLSTimeoutError",
    "WantReadError",
    "WantWriteError",
]


class TLSError(Exception):
    """The base exception for all TLS related errors from any implementation.

    Catching this error is sufficient to catch *all* TLS errors, regardless of the engine.
    """


class WantWriteError(TLSError):
    """The operation cannot complete until the output buffer is drained to the network.

    Raised only with non-blocking sockets or buffer-only I/O, and only when no progress at all
    is possible.
    """


class WantReadError(TLSError):
    """The operation cannot complete until more data is read from the network.

    Raised only with non-blocking sockets or buffer-only I/O, and only when no progress at all
    is possible.
    """


class RaggedEOF(TLSError):
    """The peer closed the transport without sending a TLS close_notify alert first.

    A concern only for protocols that cannot detect truncation themselves; HTTP/1.1 with a
    content length and HTTP/2 can ignore it.
    """


class ConfigurationError(TLSError, ValueError):
    """The configuration asks for something this engine cannot do, or is self-contradictory.

    Also a ``ValueError``: invalid configuration values are raised as this class too.
    """


class CertificateVerificationError(TLSError):
    """A certificate failed verification: the peer's (chain or name), or ours, by the peer.

    ``reason`` holds the engine's short explanation (for example "certificate has expired" or
    "hostname mismatch"). ``alert`` is None when *we* rejected the peer's certificate, and the
    name of the TLS alert the peer sent (for example ``"unknown_ca"``) when it rejected ours.
    """

    def __init__(self, reason: str, message: str | None = None, alert: str | None = None) -> None:
        super().__init__(message or f"certificate verification failed: {reason}")
        self.reason = reason
        self.alert = alert


class HandshakeClosedError(TLSError):
    """The peer closed the connection before the TLS handshake completed."""


class ProtocolError(TLSError):
    """The peer broke the TLS protocol, sent a fatal alert, or sent bytes that are not TLS.

    ``alert``: the name of the fatal alert the peer sent (RFC 8446 spelling, for example
    ``"handshake_failure"``), None when the failure was detected locally.
    """

    def __init__(self, message: str = "", alert: str | None = None) -> None:
        super().__init__(message)
        self.alert = alert


class TLSConnectionError(TLSError, ConnectionError):
    """The transport under TLS failed (refused, reset, unreachable, broken pipe).

    Also a ``ConnectionError`` (hence ``OSError``), so code written for sockets keeps working.
    """


class TLSTimeoutError(TLSError, TimeoutError):
    """A blocking TLS operation did not finish within the socket's timeout.

    Also a ``TimeoutError``, so code written for sockets keeps working.
    """
