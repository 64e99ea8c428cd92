"""Key exchange groups: the names that ``negotiated_group`` reports.

Every engine reports the group by its name in IANA's TLS Supported Groups registry
(<https://www.iana.org/assignments/tls-parameters/tls-parameters.xhtml#tls-parameters-8>), so
the same connection reads the same on every engine: ``"X25519MLKEM768"``, ``"x25519"``,
``"secp256r1"``, ``"ffdhe2048"``... An engine that learns the group as its 16-bit codepoint
(rustls, NSS) calls :func:`group_name`; one that learns it another way (OpenSSL's NIDs) maps to
the codepoint first.
"""

from __future__ import annotations

__all__ = ["GROUP_NAMES", "group_name"]

# The registry's names, as IANA spells them (case included).
GROUP_NAMES: dict[int, str] = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001A: "brainpoolP256r1",
    0x001B: "brainpoolP384r1",
    0x001C: "brainpoolP512r1",
    0x001D: "x25519",
    0x001E: "x448",
    0x001F: "brainpoolP256r1tls13",
    0x0020: "brainpoolP384r1tls13",
    0x0021: "brainpoolP512r1tls13",
    0x0022: "GC256A",
    0x0023: "GC256B",
    0x0024: "GC256C",
    0x0025: "GC256D",
    0x0026: "GC512A",
    0x0027: "GC512B",
    0x0028: "GC512C",
    0x0029: "curveSM2",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
    0x0200: "MLKEM512",
    0x0201: "MLKEM768",
    0x0202: "MLKEM1024",
    0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
}


def group_name(codepoint: int) -> str:
    """The IANA name of a group codepoint; ``"0x...."`` for one the registry table lacks."""
    return GROUP_NAMES.get(codepoint, f"{codepoint:#06x}")
