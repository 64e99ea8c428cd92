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
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from .._enums import CipherSuite

__all__ = [
    "PeerCertificate",
    "alert_reason",
    "cert_dict",
    "cipher_tuple",
    "verified_chain",
    "verify_code",
    "verify_message",
]

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
    if "hostname" in text or "not valid for name" in text or "notvalidforname" in text:
        return 62  # X509_V_ERR_HOSTNAME_MISMATCH (64 for an IP address: see verify_message)
    if "unknown issuer" in text or "issuer" in text:
        return 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    if "expired" in text:
        return 10  # X509_V_ERR_CERT_HAS_EXPIRED
    if "not yet valid" in text or "notvalidyet" in text:
        return 9  # X509_V_ERR_CERT_NOT_YET_VALID
    if "self-signed" in text or "self signed" in text:
        return 18  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    if "revoked" in text:
        return 23  # X509_V_ERR_CERT_REVOKED
    if "purpose" in text or "extended key usage" in text:
        return 26  # X509_V_ERR_INVALID_PURPOSE
    if "path length" in text:
        return 25  # X509_V_ERR_PATH_LENGTH_EXCEEDED
    if "signature" in text:
        return 7  # X509_V_ERR_CERT_SIGNATURE_FAILURE
    return 1  # X509_V_ERR_UNSPECIFIED


# X509_verify_cert_error_string() of OpenSSL 3 for the codes verify_code() gives: programs match
# on these texts (e.g. "unable to get local issuer certificate").
_VERIFY_MESSAGES = {
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    20: "unable to get local issuer certificate",
    23: "certificate revoked",
    25: "path length constraint exceeded",
    26: "unsupported certificate purpose",
}


def verify_message(code: int, reason: str, server_hostname: str | None) -> tuple[int, str]:
    """(code, message) as ``_ssl.c`` reports them: OpenSSL's text, the engine's reason where
    OpenSSL has no matching code."""
    if code == 62 and server_hostname is not None:
        try:
            ipaddress.ip_address(server_hostname)
        except ValueError:
            return 62, f"Hostname mismatch, certificate is not valid for '{server_hostname}'."
        return 64, f"IP address mismatch, certificate is not valid for '{server_hostname}'."
    return code, _VERIFY_MESSAGES.get(code, reason)


_ALERTS = {
    "close_notify": 0,
    "unexpected_message": 10,
    "bad_record_mac": 20,
    "decryption_failed": 21,
    "record_overflow": 22,
    "decompression_failure": 30,
    "handshake_failure": 40,
    "no_certificate": 41,
    "bad_certificate": 42,
    "unsupported_certificate": 43,
    "certificate_revoked": 44,
    "certificate_expired": 45,
    "certificate_unknown": 46,
    "illegal_parameter": 47,
    "unknown_ca": 48,
    "access_denied": 49,
    "decode_error": 50,
    "decrypt_error": 51,
    "export_restriction": 60,
    "protocol_version": 70,
    "insufficient_security": 71,
    "internal_error": 80,
    "inappropriate_fallback": 86,
    "user_canceled": 90,
    "no_renegotiation": 100,
    "missing_extension": 109,
    "unsupported_extension": 110,
    "certificate_unobtainable": 111,
    "unrecognized_name": 112,
    "bad_certificate_status_response": 113,
    "bad_certificate_hash_value": 114,
    "unknown_psk_identity": 115,
    "certificate_required": 116,
    "no_application_protocol": 120,
    "encrypted_client_hello_required": 121,
}


# OpenSSL's error reason for a fatal alert received: SSL_AD_REASON_OFFSET (1000) + the alert.
_ALERT_REASONS = {
    10: "SSLV3_ALERT_UNEXPECTED_MESSAGE",
    20: "SSLV3_ALERT_BAD_RECORD_MAC",
    21: "TLSV1_ALERT_DECRYPTION_FAILED",
    22: "TLSV1_ALERT_RECORD_OVERFLOW",
    30: "SSLV3_ALERT_DECOMPRESSION_FAILURE",
    40: "SSLV3_ALERT_HANDSHAKE_FAILURE",
    41: "SSLV3_ALERT_NO_CERTIFICATE",
    42: "SSLV3_ALERT_BAD_CERTIFICATE",
    43: "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    44: "SSLV3_ALERT_CERTIFICATE_REVOKED",
    45: "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    46: "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    47: "SSLV3_ALERT_ILLEGAL_PARAMETER",
    48: "TLSV1_ALERT_UNKNOWN_CA",
    49: "TLSV1_ALERT_ACCESS_DENIED",
    50: "TLSV1_ALERT_DECODE_ERROR",
    51: "TLSV1_ALERT_DECRYPT_ERROR",
    60: "TLSV1_ALERT_EXPORT_RESTRICTION",
    70: "TLSV1_ALERT_PROTOCOL_VERSION",
    71: "TLSV1_ALERT_INSUFFICIENT_SECURITY",
    80: "TLSV1_ALERT_INTERNAL_ERROR",
    86: "TLSV1_ALERT_INAPPROPRIATE_FALLBACK",
    90: "TLSV1_ALERT_USER_CANCELLED",
    100: "TLSV1_ALERT_NO_RENEGOTIATION",
    109: "TLSV13_ALERT_MISSING_EXTENSION",
    110: "TLSV1_UNSUPPORTED_EXTENSION",
    111: "TLSV1_CERTIFICATE_UNOBTAINABLE",
    112: "TLSV1_UNRECOGNIZED_NAME",
    113: "TLSV1_BAD_CERTIFICATE_STATUS_RESPONSE",
    114: "TLSV1_BAD_CERTIFICATE_HASH_VALUE",
    115: "TLSV1_ALERT_UNKNOWN_PSK_IDENTITY",
    116: "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    120: "TLSV1_ALERT_NO_APPLICATION_PROTOCOL",
}


def alert_reason(alert: int | str) -> tuple[str, str] | None:
    """OpenSSL's (reason, text) for a fatal alert received from the peer, given its number or
    its RFC name ("unknown_ca"): ("TLSV1_ALERT_UNKNOWN_CA", "tlsv1 alert unknown ca")."""
    number = alert if isinstance(alert, int) else _ALERTS.get(alert.strip().lower())
    if number is None:
        return None
    reason = _ALERT_REASONS.get(number)
    if reason is None:
        return None
    return reason, reason.lower().replace("_", " ")


class PeerCertificate:
    """What ``_ssl.Certificate`` offers (``get_verified_chain()`` and ``get_unverified_chain()``
    return these), for certificates a PEP 748 engine handed over as DER."""

    __slots__ = ("_der",)

    def __init__(self, der: bytes) -> None:
        self._der = der

    def public_bytes(self, format: int = 1) -> str | bytes:  # _ssl.ENCODING_PEM
        import ssl

        if format == 1:
            return ssl.DER_cert_to_PEM_cert(self._der)
        if format == 2:  # _ssl.ENCODING_DER
            return self._der
        raise ValueError("Unsupported format")

    def get_info(self) -> dict[str, Any]:
        return cert_dict(self._der)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PeerCertificate):
            return self._der == other._der
        public_bytes = getattr(other, "public_bytes", None)
        if public_bytes is None:
            return NotImplemented
        return bool(public_bytes(2) == self._der)

    def __hash__(self) -> int:
        return hash(self._der)

    def __repr__(self) -> str:
        subject = x509.load_der_x509_certificate(self._der).subject.rfc4514_string()
        return f"<Certificate '{subject}'>"


def verified_chain(sent: list[bytes], anchors: list[bytes]) -> list[bytes]:
    """The chain a successful verification built: from the leaf through the certificates the
    peer sent to the trust anchor (OpenSSL's ``SSL_get0_verified_chain``), found by issuer name
    and signature (the engine already verified it; this only reconstructs the path)."""
    if not sent:
        return []
    anchor_set = set(anchors)
    candidates = [(x509.load_der_x509_certificate(d), d) for d in dict.fromkeys(sent[1:] + anchors)]
    current = x509.load_der_x509_certificate(sent[0])
    chain = [sent[0]]
    while chain[-1] not in anchor_set and len(chain) < 16:
        found = None
        for cand, der in candidates:
            if der in chain or cand.subject != current.issuer:
                continue
            try:
                current.verify_directly_issued_by(cand)
            except (ValueError, TypeError, InvalidSignature):
                continue
            found = (cand, der)
            if der in anchor_set:
                break  # the path ends at the first anchor, as OpenSSL's does
        if found is None:
            break
        current, der = found
        chain.append(der)
    return chain
