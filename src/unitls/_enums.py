"""The PEP's enumerations and default cipher lists."""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = [
    "DEFAULT_CIPHER_LIST",
    "DEFAULT_TLS12_CIPHER_LIST",
    "DEFAULT_TLS13_CIPHER_LIST",
    "CipherSuite",
    "NextProtocol",
    "TLSVersion",
]


class CipherSuite(IntEnum):
    """Known cipher suites, valued by their IANA two-octet identifier.

    See: <https://www.iana.org/assignments/tls-parameters/tls-parameters.xhtml>
    """

    TLS_AES_128_GCM_SHA256 = 0x1301
    TLS_AES_256_GCM_SHA384 = 0x1302
    TLS_CHACHA20_POLY1305_SHA256 = 0x1303
    TLS_AES_128_CCM_SHA256 = 0x1304
    TLS_AES_128_CCM_8_SHA256 = 0x1305
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 = 0xC02B
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 = 0xC02C
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 = 0xC02F
    TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 = 0xC030
    TLS_ECDHE_ECDSA_WITH_AES_128_CCM = 0xC0AC
    TLS_ECDHE_ECDSA_WITH_AES_256_CCM = 0xC0AD
    TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 = 0xC0AE
    TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8 = 0xC0AF
    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 = 0xCCA8
    TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 = 0xCCA9


class NextProtocol(Enum):
    """The underlying negotiated ("next") protocol."""

    H2 = b"h2"
    H2C = b"h2c"
    HTTP1 = b"http/1.1"
    WEBRTC = b"webrtc"
    C_WEBRTC = b"c-webrtc"
    FTP = b"ftp"
    STUN = b"stun.nat-discovery"
    TURN = b"stun.turn"


class TLSVersion(Enum):
    """TLS versions.

    ``MINIMUM_SUPPORTED`` and ``MAXIMUM_SUPPORTED`` are open ended: the lowest and highest
    mutually supported versions. unitls never negotiates below TLS 1.2.
    """

    MINIMUM_SUPPORTED = "MINIMUM_SUPPORTED"
    TLSv1_2 = "TLSv1.2"
    TLSv1_3 = "TLSv1.3"
    MAXIMUM_SUPPORTED = "MAXIMUM_SUPPORTED"


#: The five TLS 1.3 suites of RFC 8446.
DEFAULT_TLS13_CIPHER_LIST: tuple[CipherSuite, ...] = (
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_AES_128_CCM_SHA256,
    CipherSuite.TLS_AES_128_CCM_8_SHA256,
)

#: TLS 1.2 suites of the enum built on AES-GCM or ChaCha20-Poly1305 (all ECDHE: forward secret).
DEFAULT_TLS12_CIPHER_LIST: tuple[CipherSuite, ...] = (
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
)

#: What a configuration with ``ciphers=None`` means.
DEFAULT_CIPHER_LIST: tuple[CipherSuite, ...] = DEFAULT_TLS13_CIPHER_LIST + DEFAULT_TLS12_CIPHER_LIST

# Version order used for validation and for engines.
VERSION_ORDER = {
    TLSVersion.MINIMUM_SUPPORTED: 0,
    TLSVersion.TLSv1_2: 1,
    TLSVersion.TLSv1_3: 2,
    TLSVersion.MAXIMUM_SUPPORTED: 3,
}

TLS13_SUITES = frozenset({0x1301, 0x1302, 0x1303, 0x1304, 0x1305})


def cipher_from_id(value: int) -> CipherSuite | int:
    """The enum member for an IANA id, or the id itself when the enum lacks it."""
    try:
        return CipherSuite(value)
    except ValueError:
        return value


def protocol_from_bytes(value: bytes) -> NextProtocol | bytes:
    """The enum member for an ALPN name, or the bytes themselves when the enum lacks it."""
    try:
        return NextProtocol(value)
    except ValueError:
        return value
