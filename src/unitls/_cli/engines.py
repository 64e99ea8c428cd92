"""``unitls engines``: each engine, its library version, and what it supports (probed live)."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from .._config import TLSClientConfiguration, TLSServerConfiguration
from .._enums import CipherSuite, NextProtocol, TLSVersion
from .._errors import ConfigurationError, TLSError
from .._objects import Certificate, PrivateKey, SigningChain, TrustStore
from .._registry import builtin_engines
from .common import EXIT_OK, cert_subject, format_table, one_line
from .demo import handshake_in_memory

_TLS13 = {0x1301, 0x1302, 0x1303, 0x1304, 0x1305}
# Key exchange groups probed with the engines' ``groups`` option (TLS 1.3 handshakes).
_GROUPS = (
    "X25519MLKEM768",
    "x25519",
    "secp256r1",
    "secp384r1",
    "secp521r1",
    "x448",
    "ffdhe2048",
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "engines",
        help="list the TLS engines, their library versions and what they support",
        description=(
            "Lists each built-in engine with its library version and the features, cipher suites "
            "and key exchange groups it supports. "
            "Support is probed by building contexts and running real in-memory handshakes, "
            "not read from a list."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


class _Certs:
    """Throwaway certificates of each key type, made once for all engines."""

    def __init__(self) -> None:
        from .._certgen import CA

        self.ca = CA.create("unitls engines probe CA")
        self.rsa_ca = CA.create("unitls engines probe RSA CA", key_type="rsa")
        self.leaves = {
            "ECDSA P-256": self.ca.issue("localhost"),
            "ECDSA P-384": self.ca.issue("localhost", key_type="ec384"),
            "Ed25519": self.ca.issue("localhost", key_type="ed25519"),
            "RSA 2048": self.rsa_ca.issue("localhost", key_type="rsa"),
        }
        self.client = self.ca.issue("probe client", server=False, client=True)

    def trust(self) -> TrustStore:
        return TrustStore.from_buffer(self.ca.cert_pem + self.rsa_ca.cert_pem)


def _handshake(
    impl: Any, server: TLSServerConfiguration, client: TLSClientConfiguration, **options: Any
) -> tuple[Any, Any]:
    """(client buffer, server buffer) after a real in-memory handshake with itself; ``options``
    are given to both contexts (the engines' keyword options, e.g. ``groups``)."""
    c = impl.client_context(client, **options).create_buffer("localhost")
    s = impl.server_context(server, **options).create_buffer()
    handshake_in_memory(c, s)
    return c, s


def _probe(fn: Any) -> tuple[bool, str]:
    """(supported, detail): ConfigurationError means "not supported", other errors "fails"."""
    try:
        detail = fn()
    except ConfigurationError as exc:
        return False, one_line(exc)
    except (TLSError, ValueError, OSError) as exc:
        return False, f"fails: {one_line(exc)}"
    return True, str(detail or "")


def probe_engine(name: str, certs: _Certs) -> dict[str, Any]:
    import unitls

    info: dict[str, Any] = {"name": name, "module": builtin_engines()[name]}
    try:
        impl = unitls.get_implementation(name)
    except ConfigurationError as exc:
        info.update(available=False, reason=one_line(exc), library_version="?")
        return info
    module = importlib.import_module(builtin_engines()[name])
    info.update(available=True, library_version=str(getattr(module, "LIBRARY_VERSION", "?")))
    trust = certs.trust()
    ecdsa = certs.leaves["ECDSA P-256"].signing_chain()
    features: dict[str, dict[str, Any]] = {}

    def feature(key: str, fn: Any) -> None:
        ok, detail = _probe(fn)
        features[key] = {"supported": ok, "detail": detail}

    def version(v: TLSVersion) -> str:
        c, _ = _handshake(
            impl,
            TLSServerConfiguration(
                [ecdsa], lowest_supported_version=v, highest_supported_version=v
            ),
            TLSClientConfiguration(
                trust_store=trust, lowest_supported_version=v, highest_supported_version=v
            ),
        )
        got = c.negotiated_tls_version
        if got is not v:
            raise TLSError(f"negotiated {got} instead")
        return ""

    feature("TLS 1.2", lambda: version(TLSVersion.TLSv1_2))
    feature("TLS 1.3", lambda: version(TLSVersion.TLSv1_3))

    def alpn() -> str:
        protos = [NextProtocol.H2, NextProtocol.HTTP1]
        c, _ = _handshake(
            impl,
            TLSServerConfiguration([ecdsa], inner_protocols=protos),
            TLSClientConfiguration(trust_store=trust, inner_protocols=protos),
        )
        got = c.negotiated_protocol()
        if got not in (NextProtocol.H2, b"h2"):
            raise TLSError(f"negotiated {got!r} instead of h2")
        return "h2"

    feature("ALPN", alpn)

    def mutual() -> str:
        _, s = _handshake(
            impl,
            TLSServerConfiguration([ecdsa], trust_store=trust),
            TLSClientConfiguration(
                certificate_chain=certs.client.signing_chain(), trust_store=trust
            ),
        )
        if not s.getpeercert():
            raise TLSError("the server saw no client certificate")
        return ""

    feature("mutual TLS", mutual)

    def system_trust() -> str:
        config = TLSClientConfiguration(trust_store=TrustStore.system())
        impl.validate_config(config)
        impl.client_context(config)
        return ""

    feature("system trust store", system_trust)

    def from_id() -> str:
        impl.validate_config(
            TLSServerConfiguration(
                [SigningChain((Certificate.from_id(b"probe"), PrivateKey.from_id(b"probe")))]
            )
        )
        impl.validate_config(TLSClientConfiguration(trust_store=TrustStore.from_id(b"probe")))
        return ""

    feature("from_id objects", from_id)

    def insecure() -> str:
        import warnings

        from ..insecure import get_insecure_implementation

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            get_insecure_implementation(name)
        return ""

    feature("insecure variant", insecure)

    def sni() -> str:
        other = certs.ca.issue("other.example")
        server = TLSServerConfiguration([other.signing_chain(), ecdsa])
        c, _ = _handshake(impl, server, TLSClientConfiguration(trust_store=trust))
        got = cert_subject(c.getpeercert())
        if got != "CN=localhost":
            raise TLSError(f"served {got} to a client asking for localhost")
        return ""

    feature("SNI certificate choice", sni)

    for label, leaf in certs.leaves.items():

        def key_type(leaf: Any = leaf) -> str:
            _handshake(
                impl,
                TLSServerConfiguration([leaf.signing_chain()]),
                TLSClientConfiguration(trust_store=trust),
            )
            return ""

        feature(f"{label} certificate", key_type)
    info["features"] = features

    suites: dict[str, dict[str, Any]] = {}
    for suite in CipherSuite:
        v = TLSVersion.TLSv1_3 if suite.value in _TLS13 else TLSVersion.TLSv1_2
        chain = certs.leaves["RSA 2048" if "_RSA_" in suite.name else "ECDSA P-256"].signing_chain()

        def cipher(suite: CipherSuite = suite, v: TLSVersion = v, chain: Any = chain) -> str:
            c, _ = _handshake(
                impl,
                TLSServerConfiguration(
                    [chain],
                    ciphers=[suite],
                    lowest_supported_version=v,
                    highest_supported_version=v,
                ),
                TLSClientConfiguration(
                    trust_store=trust,
                    ciphers=[suite],
                    lowest_supported_version=v,
                    highest_supported_version=v,
                ),
            )
            if c.cipher() != suite:
                raise TLSError(f"negotiated {c.cipher()!r} instead")
            return ""

        ok, detail = _probe(cipher)
        suites[suite.name] = {"supported": ok, "detail": detail}
    info["cipher_suites"] = suites

    groups: dict[str, dict[str, Any]] = {}
    for group in _GROUPS:

        def key_exchange(group: str = group) -> str:
            cb, _ = _handshake(
                impl,
                TLSServerConfiguration([ecdsa]),
                TLSClientConfiguration(trust_store=trust),
                groups=(group,),
            )
            got = getattr(cb, "negotiated_group", group)
            if got != group:
                raise TLSError(f"negotiated {got} instead")
            return ""

        try:
            ok, detail = _probe(key_exchange)
        except TypeError:  # an engine without the groups option
            ok, detail = False, "the engine cannot choose key exchange groups"
        groups[group] = {"supported": ok, "detail": detail}
    info["groups"] = groups
    return info


def run(args: argparse.Namespace) -> int:
    certs = _Certs()
    engines = [probe_engine(name, certs) for name in builtin_engines()]
    if args.json:
        print(json.dumps({"engines": engines}, indent=2))
        return EXIT_OK
    names = [e["name"] for e in engines]
    print(
        format_table(
            ["engine", "library", "status"],
            [
                [e["name"], e["library_version"], "available" if e["available"] else e["reason"]]
                for e in engines
            ],
        )
    )
    usable = [e for e in engines if e["available"]]
    if not usable:
        return EXIT_OK
    names = [e["name"] for e in usable]

    def mark(entry: dict[str, Any]) -> str:
        if entry["supported"]:
            return "yes" + (f" ({entry['detail']})" if entry["detail"] else "")
        if entry["detail"].startswith("fails:"):
            return "fails"
        if "cannot restrict" in entry["detail"]:
            return "not alone"  # enabled, but the engine cannot be limited to it
        return "no"

    print()
    keys = list(usable[0]["features"])
    print(
        format_table(
            ["feature", *names], [[k, *(mark(e["features"][k]) for e in usable)] for k in keys]
        )
    )
    print()
    suites = list(usable[0]["cipher_suites"])
    print(
        format_table(
            ["cipher suite", *names],
            [[s, *(mark(e["cipher_suites"][s]) for e in usable)] for s in suites],
        )
    )
    print()
    print(
        format_table(
            ["key exchange group", *names],
            [[g, *(mark(e["groups"][g]) for e in usable)] for g in usable[0]["groups"]],
        )
    )
    failing = [
        (e["name"], k, d["detail"])
        for e in usable
        for group in ("features", "cipher_suites", "groups")
        for k, d in e[group].items()
        if not d["supported"] and d["detail"].startswith("fails:")
    ]
    if failing:
        print()
        for name, k, detail in failing:
            print(f"  {name} {k}: {detail}")
    print()
    print(
        "no: the engine refuses the configuration (ConfigurationError); "
        "fails: it accepts it but the handshake fails;\n"
        "not alone: the engine cannot be restricted to that one suite (it may still negotiate it)"
    )
    return EXIT_OK
