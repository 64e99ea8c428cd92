"""Throwaway certificate authorities and certificates, made in memory (for tests and the demo).

Uses the ``cryptography`` package; nothing is written to disk::

    ca = CA.create()
    server = ca.issue("localhost", "127.0.0.1")
    config = TLSServerConfiguration(certificate_chain=[server.signing_chain()])
    client = TLSClientConfiguration(trust_store=ca.trust_store())
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._objects import Certificate, PrivateKey, SigningChain, TrustStore

__all__ = ["CA", "Issued", "KeyType"]

KeyType = Literal["ec", "rsa", "rsa1024", "ed25519", "ec384"]
_Hash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
_PrivateKeyTypes = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _new_key(key_type: KeyType) -> _PrivateKeyTypes:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


def _key_pem(key: _PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(names: tuple[str, ...]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate with its key (PEM and DER), and the chain of intermediates above it."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    cert_der: bytes = field(repr=False)
    key_der: bytes = field(repr=False)
    intermediates_pem: tuple[bytes, ...] = ()

    @property
    def certificate(self) -> Certificate:
        return Certificate.from_buffer(self.cert_pem)

    @property
    def private_key(self) -> PrivateKey:
        return PrivateKey.from_buffer(self.key_pem)

    def signing_chain(self, *, include_intermediates: bool = True) -> SigningChain:
        """A SigningChain of this certificate, its key and (by default) its intermediates."""
        chain = [Certificate.from_buffer(p) for p in self.intermediates_pem]
        return SigningChain(
            (self.certificate, self.private_key), chain if include_intermediates else None
        )

    @property
    def chain_pem(self) -> bytes:
        """Leaf and intermediates as one PEM blob (what ``load_cert_chain`` files hold)."""
        return self.cert_pem + b"".join(self.intermediates_pem)


class CA:
    """A certificate authority that issues leaf and intermediate certificates."""

    def __init__(
        self,
        cert: x509.Certificate,
        key: _PrivateKeyTypes,
        parents_pem: tuple[bytes, ...] = (),
    ) -> None:
        self.cert = cert
        self.key = key
        # Intermediates between this CA and the root, this CA first (empty for a root).
        self._parents_pem = parents_pem

    @classmethod
    def create(
        cls,
        name: str = "unitls throwaway CA",
        *,
        key_type: KeyType = "ec",
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CA:
        """A new self-signed root CA."""
        key = _new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(days=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_signing_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        cert = builder.sign(key, _hash_for(key))
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def trust_store(self) -> TrustStore:
        """A TrustStore holding just this CA."""
        return TrustStore.from_buffer(self.cert_pem)

    def issue(
        self,
        *names: str,
        common_name: str | None = None,
        key_type: KeyType = "ec",
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        server: bool = True,
        client: bool = False,
        include_san: bool = True,
        hash_algorithm: _Hash | None = None,
    ) -> Issued:
        """A leaf certificate for ``names`` (DNS names or IP addresses), signed by this CA.

        ``server``/``client`` choose the extended key usages (both: both).
        """
        key = _new_key(key_type)
        now = _now()
        cn = common_name or (names[0] if names else "unitls leaf")
        ekus = []
        if server:
            ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(days=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        if names and include_san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_san(names)), critical=False
            )
        cert = builder.sign(self.key, hash_algorithm or _hash_for(self.key))
        return Issued(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            cert_der=cert.public_bytes(serialization.Encoding.DER),
            key_der=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            intermediates_pem=self._chain_above_leaf(),
        )

    def intermediate(
        self,
        name: str = "unitls throwaway intermediate",
        *,
        key_type: KeyType = "ec",
        is_ca: bool = True,
        path_length: int | None = None,
    ) -> CA:
        """An intermediate CA signed by this one (``is_ca=False`` makes a broken one)."""
        key = _new_key(key_type)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
            .add_extension(_signing_key_usage(cert_sign=is_ca), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, _hash_for(self.key))
        )
        return CA(cert, key, self._chain_above_leaf())

    def _chain_above_leaf(self) -> tuple[bytes, ...]:
        # A root CA's leaves carry no intermediates; an intermediate's carry it and its parents.
        if self.cert.issuer == self.cert.subject:
            return ()
        return (self.cert_pem, *self._parents_pem)


def _signing_key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """digitalSignature, plus keyCertSign and cRLSign for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _hash_for(key: _PrivateKeyTypes) -> _Hash | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
