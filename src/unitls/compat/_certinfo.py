"""What ``ssl`` reports about a connection, rebuilt from PEP 748 values.

``getpeercert()`` returns the dict ``_ssl.c`` builds from OpenSSL structures; here it is parsed
from the DER with ``cryptography`` (OpenSSL is not necessarily the engine). ``cipher()`` returns
OpenSSL's suite names, the ones callers log and compare.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from .._enums import CipherSuite

__all__ = ["cert_dict", "cipher_tuple", "verify_code"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# IANA id -> (OpenSSL name, secret bits) for the suites unitls engines negotiate.
_CIPHERS: dict[int, tuple[str, int]] = {
    CipherSuite.TLS_AES_128_GCM_SHA256: ("TLS_AES_128_GCM_SHA256", 128),
    CipherSuite.TLS_AES_256_GCM_SHA384: ("TLS_AES_256_GCM_SHA384", 256),
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: ("TLS_CHACHA20_POLY1305_SHA256", 256),
    CipherSuite.TLS_AES_128_CCM_SHA256: ("TLS_AES_128_CCM_SHA256", 128),
    CipherSuite.TLS_AES_128_CCM_8_SHA256: ("TLS_AES_128_CCM_8_SHA256", 128),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: ("ECDHE-ECDSA-AES128-GCM-SHA256", 128),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: ("ECDHE-ECDSA-AES256-GCM-SHA384", 256),
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: ("ECDHE-RSA-AES128-GCM-SHA256", 128),
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: ("ECDHE-RSA-AES256-GCM-SHA384", 256),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CCM: ("ECDHE-ECDSA-AES128-CCM", 128),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_CCM: ("ECDHE-ECDSA-AES256-CCM", 256),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8: ("ECDHE-ECDSA-AES128-CCM8", 128),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8: ("ECDHE-ECDSA-AES256-CCM8", 256),
    CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: ("ECDHE-RSA-CHACHA20-POLY1305", 256),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        256,
    ),
}


def cipher_tuple(suite: int | None, version: str | None) -> tuple[str, str, int] | None:
    """``SSLSocket.cipher()``: (OpenSSL name, protocol version, secret bits)."""
    if suite is None:
        return None
    name, bits = _CIPHERS.get(int(suite), (f"0x{int(suite):04X}", 0))
    return (name, version or "", bits)


def _time(value: datetime) -> str:
    # ASN1_TIME_print's format, independent of the locale: "May  9 07:35:25 2026 GMT".
    return f"{_MONTHS[value.month - 1]} {value.day:2d} {value:%H:%M:%S} {value.year} GMT"


def _name(name: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
    out = []
    for rdn in name.rdns:
        attrs = []
        for attr in rdn:
            key = attr.oid._name
            if key == "Unknown OID":
                key = attr.oid.dotted_string
            value = attr.value
            attrs.append((key, value if isinstance(value, str) else value.hex()))
        out.append(tuple(attrs))
    return tuple(out)


def _ip(value: ipaddress.IPv4Address | ipaddress.IPv6Address | Any) -> str:
    if isinstance(value, ipaddress.IPv6Address):
        # _ssl.c prints every group, upper case, without compression.
        return ":".join(
            f"{int.from_bytes(value.packed[i : i + 2], 'big'):X}" for i in range(0, 16, 2)
        )
    return str(value)


def _general_name(gn: x509.GeneralName) -> tuple[str, Any]:
    if isinstance(gn, x509.DNSName):
        return ("DNS", gn.value)
    if isinstance(gn, x509.IPAddress):
        return ("IP Address", _ip(gn.value))
    if isinstance(gn, x509.RFC822Name):
        return ("email", gn.value)
    if isinstance(gn, x509.UniformResourceIdentifier):
        return ("URI", gn.value)
    if isinstance(gn, x509.DirectoryName):
        return ("DirName", _name(gn.value))
    if isinstance(gn, x509.RegisteredID):
        return ("Registered ID", gn.value.dotted_string)
    return ("othername", "<unsupported>")


def cert_dict(der: bytes) -> dict[str, Any]:
    """The dict ``SSLSocket.getpeercert()`` returns for a verified peer certificate."""
    cert = x509.load_der_x509_certificate(der)
    serial = f"{cert.serial_number:X}"
    out: dict[str, Any] = {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": serial if len(serial) % 2 == 0 else "0" + serial,
        "notBefore": _time(cert.not_valid_before_utc),
        "notAfter": _time(cert.not_valid_after_utc),
    }
    exts = cert.extensions
    try:
        san = exts.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        pass
    else:
        assert isinstance(san, x509.SubjectAlternativeName)
        out["subjectAltName"] = tuple(_general_name(gn) for gn in san)
    try:
        aia = exts.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    except x509.ExtensionNotFound:
        pass
    else:
        assert isinstance(aia, x509.AuthorityInformationAccess)
        for oid, key in (
            (AuthorityInformationAccessOID.OCSP, "OCSP"),
            (AuthorityInformationAccessOID.CA_ISSUERS, "caIssuers"),
        ):
            uris = tuple(
                d.access_location.value
                for d in aia
                if d.access_method == oid
                and isinstance(d.access_location, x509.UniformResourceIdentifier)
            )
            if uris:
                out[key] = uris
    try:
        crl = exts.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    except x509.ExtensionNotFound:
        pass
    else:
        assert isinstance(crl, x509.CRLDistributionPoints)
        points = tuple(
            gn.value
            for dp in crl
            for gn in dp.full_name or ()
            if isinstance(gn, x509.UniformResourceIdentifier)
        )
        if points:
            out["crlDistributionPoints"] = points
    return out


def verify_code(reason: str) -> int:
    """A best guess of OpenSSL's X509_V_ERR code for an engine's verification reason."""
    text = reason.lower()
    if "hostname" in text or "name mismatch" in text or "notvalidforname" in text:
        return 62  # X509_V_ERR_HOSTNAME_MISMATCH
    if "expired" in text:
        return 10  # X509_V_ERR_CERT_HAS_EXPIRED
    if "not yet valid" in text or "notvalidyet" in text:
        return 9  # X509_V_ERR_CERT_NOT_YET_VALID
    if "self-signed" in text or "self signed" in text:
        return 18  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    if "issuer" in text:
        return 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    return 1  # X509_V_ERR_UNSPECIFIED
