"""Make a throwaway CA and two certificates signed by it, for trying unitls out.

Writes ca.pem (the CA), localhost.pem + localhost-key.pem (a server certificate for
localhost, 127.0.0.1 and ::1) and client.pem + client-key.pem (a client certificate),
valid for 30 days. For real services use certificates from your CA.
"""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def issue(subject: str, public_key, ca_key, ca: bool, sans=()) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name("Test CA"))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    else:
        names = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


ca_key = ec.generate_private_key(ec.SECP256R1())
ca_cert = issue("Test CA", ca_key.public_key(), ca_key, ca=True)
write("ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))

for stem, sans in [("localhost", ["localhost", "127.0.0.1", "::1"]), ("client", ["client.test"])]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(stem, key.public_key(), ca_key, ca=False, sans=sans)
    write(f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))
    write(
        f"{stem}-key.pem",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
