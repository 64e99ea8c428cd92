"""Shared pieces of the subcommands: exit codes, argument checks, tables, certificate text."""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Sequence
from typing import Any

from .._enums import CipherSuite, NextProtocol, TLSVersion
from .._errors import (
    CertificateVerificationError,
    ConfigurationError,
    HandshakeClosedError,
    TLSConnectionError,
    TLSError,
    TLSTimeoutError,
)
from .._objects import Certificate, PrivateKey, SigningChain, TrustStore

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_CONNECT = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    other error (TLS protocol failure, a failed demo pair, ...)
  2    bad usage or input (unknown option or engine, bad port, unreadable or mismatched files)
  3    certificate verification failed
  4    connection failed (refused, unreachable, reset, timed out)
  130  interrupted (Ctrl-C)
"""


class CLIError(Exception):
    """A failure to report as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: object) -> str:
    """Collapse a message to one line (engines' messages may span several)."""
    return re.sub(r"\s*\n\s*", "; ", str(text)).strip() or "unknown error"


def error_line(message: str) -> None:
    sys.stderr.write(f"unitls: error: {one_line(message)}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    sys.stderr.write(f"unitls: {one_line(message)}\n")
    sys.stderr.flush()


def cli_error_from(exc: BaseException, what: str = "") -> CLIError:
    """The CLIError (message and exit code) for a TLS or socket failure."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, CertificateVerificationError):
        return CLIError(f"{prefix}certificate verification failed: {exc.reason}", EXIT_VERIFY)
    if isinstance(exc, OSError) and not isinstance(exc, TLSError) and exc.strerror:
        # "[Errno 111] Connection refused" -> "Connection refused"
        exc = type(exc)(exc.strerror)
    if isinstance(exc, ConfigurationError):
        return CLIError(f"{prefix}{exc}", EXIT_USAGE)
    if isinstance(exc, (TLSTimeoutError, TimeoutError)):
        msg = str(exc) or "timed out"
        return CLIError(f"{prefix}{msg}", EXIT_CONNECT)
    if isinstance(exc, (TLSConnectionError, HandshakeClosedError, ConnectionError)):
        return CLIError(f"{prefix}{exc}", EXIT_CONNECT)
    if isinstance(exc, TLSError):
        return CLIError(f"{prefix}{exc}", EXIT_ERROR)
    if isinstance(exc, OSError):
        return CLIError(f"{prefix}{exc.strerror or exc}", EXIT_CONNECT)
    return CLIError(f"{prefix}{type(exc).__name__}: {exc}", EXIT_ERROR)


# -- argument values ----------------------------------------------------------------------------

_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


def parse_version(value: str | None, option: str) -> TLSVersion | None:
    if value is None:
        return None
    v = value.strip().lower().removeprefix("tlsv").removeprefix("tls")
    if v not in _VERSIONS:
        raise CLIError(f"{option} must be 1.2 or 1.3, not {value!r}", EXIT_USAGE)
    return _VERSIONS[v]


def parse_alpn(values: Sequence[str] | None) -> list[bytes]:
    out: list[bytes] = []
    for v in values or ():
        raw = v.encode("utf-8", "surrogateescape")
        if not 1 <= len(raw) <= 255:
            raise CLIError(f"--alpn protocol {v!r} must be 1 to 255 bytes long", EXIT_USAGE)
        out.append(raw)
    return out


GROUPS_HELP = (
    "key exchange groups to offer or accept, comma-separated, preferred first (IANA names), "
    "e.g. x25519,secp256r1 or X25519MLKEM768; default: the engine's"
)


def parse_groups(value: str | None) -> tuple[str, ...] | None:
    """``--groups a,b`` as the ``groups`` option of the engines' contexts (None: not given)."""
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise CLIError("--groups needs at least one group name, e.g. x25519", EXIT_USAGE)
    return names


def with_groups(factory: Any, groups: tuple[str, ...] | None, *args: Any) -> Any:
    """``factory(*args, groups=groups)`` (no keyword when ``groups`` is None), with the CLI's
    errors for a bad list or an engine without the option."""
    if groups is None:
        return factory(*args)
    try:
        return factory(*args, groups=groups)
    except TypeError as exc:
        if "groups" not in str(exc):
            raise
        raise CLIError(
            "--groups: this engine cannot choose key exchange groups", EXIT_USAGE
        ) from None
    except (ValueError, ConfigurationError) as exc:
        raise CLIError(f"--groups: {exc}", EXIT_USAGE) from None


def parse_port(value: str, option: str = "port", *, allow_zero: bool = False) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        raise CLIError(f"{option} must be a number, not {value!r}", EXIT_USAGE) from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise CLIError(f"{option} must be from {low} to 65535, not {port}", EXIT_USAGE)
    return port


def parse_host_port(value: str, default_port: int = 443) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6]:PORT, [IPv6] or a bare IPv6 address."""
    text = value.strip()
    if not text:
        raise CLIError("the host is empty", EXIT_USAGE)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CLIError(f"missing ']' in {value!r} (write IPv6 as [::1]:443)", EXIT_USAGE)
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise CLIError(f"unexpected {rest!r} after ']' in {value!r}", EXIT_USAGE)
        port = parse_port(rest[1:], "the port") if rest else default_port
    elif text.count(":") > 1:
        host, port = text, default_port  # a bare IPv6 address
    elif ":" in text:
        host, _, p = text.partition(":")
        port = parse_port(p, "the port")
    else:
        host, port = text, default_port
    if not host:
        raise CLIError(f"no host in {value!r}", EXIT_USAGE)
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise CLIError(f"{host!r} is not a valid IPv6 address", EXIT_USAGE) from None
    return host, port


def positive_float(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except ValueError:
        raise CLIError(f"{option} must be a number of seconds, not {value!r}", EXIT_USAGE) from None
    if not f > 0 or f != f or f == float("inf"):
        raise CLIError(f"{option} must be a positive number of seconds, not {value!r}", EXIT_USAGE)
    return f


def get_engine(name: str | None) -> Any:
    """The TLSImplementation for --engine (one-line usage error if unknown or unusable)."""
    from .._registry import get_implementation

    try:
        return get_implementation(name)
    except (ConfigurationError, TypeError) as exc:
        raise CLIError(f"--engine: {exc}", EXIT_USAGE) from None


# -- files --------------------------------------------------------------------------------------


def read_file(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CLIError(
            f"cannot read {option} file {path!r}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    if not data:
        raise CLIError(f"{option} file {path!r} is empty", EXIT_USAGE)
    return data


def _split_pem(data: bytes, label: bytes) -> list[bytes]:
    pattern = re.compile(
        rb"-----BEGIN " + label + rb"-----.+?-----END " + label + rb"-----\s*", re.DOTALL
    )
    return [m.group(0) for m in pattern.finditer(data)]


def load_certificates(path: str, option: str) -> list[bytes]:
    """The certificates of a PEM (one or more) or DER file, checked with ``cryptography``."""
    from cryptography import x509

    data = read_file(path, option)
    pems = _split_pem(data, b"CERTIFICATE")
    try:
        if pems:
            for p in pems:
                x509.load_pem_x509_certificate(p)
            return pems
        x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CLIError(
            f"{option} file {path!r} holds a broken certificate: {exc}", EXIT_USAGE
        ) from None
    return [data]


def load_signing_chain(cert_path: str, key_path: str | None, prefix: str = "") -> SigningChain:
    """A SigningChain from a certificate file (leaf first, then intermediates) and a key file.

    Checks here that the key matches the certificate, so a mismatch is reported in one line
    naming the files instead of as an engine's handshake-time error.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_opt, key_opt = f"--{prefix}cert", f"--{prefix}key"
    certs = load_certificates(cert_path, cert_opt)
    key_data = read_file(key_path, key_opt) if key_path else read_file(cert_path, cert_opt)
    if not key_path and not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", key_data):
        raise CLIError(
            f"{cert_opt} file {cert_path!r} holds no private key: give {key_opt} FILE", EXIT_USAGE
        )
    try:
        if b"-----BEGIN" in key_data:
            key = serialization.load_pem_private_key(key_data, password=None)
        else:
            key = serialization.load_der_private_key(key_data, password=None)
    except TypeError:
        raise CLIError(
            f"{key_opt} file {key_path or cert_path!r} is encrypted: decrypt it first "
            "(e.g. openssl pkey -in KEY -out PLAIN)",
            EXIT_USAGE,
        ) from None
    except Exception as exc:
        raise CLIError(
            f"{key_opt} file {key_path or cert_path!r} holds no usable private key: {one_line(exc)}",
            EXIT_USAGE,
        ) from None
    if certs[0].startswith(b"-----"):
        leaf = x509.load_pem_x509_certificate(certs[0])
    else:
        leaf = x509.load_der_x509_certificate(certs[0])
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise CLIError(
            f"{key_opt} {key_path or cert_path!r} does not match the certificate in "
            f"{cert_opt} {cert_path!r}",
            EXIT_USAGE,
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningChain(
        (Certificate.from_buffer(certs[0]), PrivateKey.from_buffer(key_pem)),
        [Certificate.from_buffer(c) for c in certs[1:]],
    )


def load_trust_store(path: str, option: str) -> TrustStore:
    certs = load_certificates(path, option)
    if certs[0].startswith(b"-----"):
        return TrustStore.from_buffer(b"".join(certs))
    return TrustStore.from_buffer(certs[0])


# -- presenting values --------------------------------------------------------------------------


def fmt_version(v: TLSVersion | None) -> str:
    return "-" if v is None else str(v.value)


def fmt_cipher(c: CipherSuite | int | None) -> str:
    if c is None:
        return "-"
    if isinstance(c, CipherSuite):
        return c.name
    try:
        return CipherSuite(c).name
    except ValueError:
        return f"{int(c):#06x}"


def fmt_alpn(p: NextProtocol | bytes | None) -> str:
    if p is None:
        return "-"
    raw = p.value if isinstance(p, NextProtocol) else bytes(p)
    return raw.decode("ascii", "backslashreplace")


def cert_subject(der: bytes | None) -> str:
    if not der:
        return "-"
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string() or "(empty)"
    except ValueError:
        return "(unparsable certificate)"


def describe_cert(der: bytes) -> list[tuple[str, str]]:
    """Subject, issuer, validity, SANs, key and fingerprint of a DER certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return [("error", f"cannot parse the certificate: {exc}")]
    rows = [
        ("subject", cert.subject.rfc4514_string() or "(empty)"),
        ("issuer", cert.issuer.rfc4514_string() or "(empty)"),
        (
            "valid",
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
        ),
    ]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        names += [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]
        names += [f"email:{n}" for n in san.get_values_for_type(x509.RFC822Name)]
        names += [f"URI:{n}" for n in san.get_values_for_type(x509.UniformResourceIdentifier)]
        rows.append(("SANs", ", ".join(names) or "(none)"))
    except x509.ExtensionNotFound:
        rows.append(("SANs", "(none)"))
    except ValueError as exc:
        rows.append(("SANs", f"(unparsable: {exc})"))
    try:
        pub = cert.public_key()
        if isinstance(pub, ec.EllipticCurvePublicKey):
            key = f"ECDSA {pub.curve.name}"
        elif isinstance(pub, rsa.RSAPublicKey):
            key = f"RSA {pub.key_size} bits"
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            key = "Ed25519"
        elif isinstance(pub, ed448.Ed448PublicKey):
            key = "Ed448"
        else:
            key = type(pub).__name__
    except ValueError:
        key = "(unsupported)"
    rows.append(("key", key))
    rows.append(("sha256", cert.fingerprint(hashes.SHA256()).hex(":")))
    return rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: columns padded to their widest cell, a dashed rule under the header."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
