"""unitls: PEP 748, "A Unified TLS API for Python", on several TLS engines.

Code written once against these types runs on any engine:

    import unitls
    impl = unitls.get_implementation("rustls")      # or "openssl", or None for the default
    ctx = impl.client_context(unitls.TLSClientConfiguration())
    with ctx.connect(("example.org", 443)) as sock:
        sock.send(b"GET / HTTP/1.0\\r\\nHost: example.org\\r\\n\\r\\n")

Engines are imported lazily: ``import unitls`` loads neither ``ssl`` nor the rustls extension.
"""

from __future__ import annotations

from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._enums import (
    DEFAULT_CIPHER_LIST,
    DEFAULT_TLS12_CIPHER_LIST,
    DEFAULT_TLS13_CIPHER_LIST,
    CipherSuite,
    NextProtocol,
    TLSVersion,
)
from ._errors import (
    CertificateVerificationError,
    ConfigurationError,
    HandshakeClosedError,
    ProtocolError,
    RaggedEOF,
    TLSConnectionError,
    TLSError,
    TLSTimeoutError,
    WantReadError,
    WantWriteError,
)
from ._objects import Certificate, PrivateKey, SigningChain, TrustStore
from ._protocols import ClientContext, ServerContext, TLSBuffer, TLSImplementation, TLSSocket
from ._registry import ENGINE_ENV, get_implementation, implementations
from ._socket import upgrade_socket

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CIPHER_LIST",
    "DEFAULT_TLS12_CIPHER_LIST",
    "DEFAULT_TLS13_CIPHER_LIST",
    "ENGINE_ENV",
    "Certificate",
    "CertificateVerificationError",
    "CipherSuite",
    "ClientContext",
    "ConfigurationError",
    "HandshakeClosedError",
    "NextProtocol",
    "PrivateKey",
    "ProtocolError",
    "RaggedEOF",
    "ServerContext",
    "SigningChain",
    "TLSBuffer",
    "TLSClientConfiguration",
    "TLSConnectionError",
    "TLSError",
    "TLSImplementation",
    "TLSServerConfiguration",
    "TLSSocket",
    "TLSTimeoutError",
    "TLSVersion",
    "TrustStore",
    "WantReadError",
    "WantWriteError",
    "get_implementation",
    "implementations",
    "upgrade_socket",
]
