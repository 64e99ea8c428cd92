"""TLS configurations: immutable, validated, hashable values (the PEP's concrete classes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._enums import VERSION_ORDER, CipherSuite, NextProtocol, TLSVersion, cipher_from_id
from ._enums import protocol_from_bytes as _protocol_from_bytes
from ._errors import ConfigurationError
from ._objects import SigningChain, TrustStore

__all__ = ["TLSClientConfiguration", "TLSServerConfiguration"]


def _ciphers(value: object) -> tuple[CipherSuite | int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError("ciphers must be a sequence of CipherSuite members or 16-bit ints")
    out: list[CipherSuite | int] = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"cipher suite {c!r} is not a CipherSuite or int")
        if not 0 <= c <= 0xFFFF:
            raise ConfigurationError(f"cipher suite id {c:#x} is not a 16-bit value")
        suite = cipher_from_id(int(c))
        if suite not in out:
            out.append(suite)
    if not out:
        raise ConfigurationError("ciphers is empty: pass None for the secure defaults")
    return tuple(out)


# The ALPN list has a 16-bit length, and so has the ClientHello's whole extension block, which it
# shares with SNI, key shares (post-quantum ones take over 1 KiB), session tickets...: beyond
# this, engines send a ClientHello whose length fields wrap or fail with "internal error".
ALPN_LIST_MAX = 0xFFFF - 8 * 1024


def _protocols(value: object) -> tuple[NextProtocol | bytes, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError("inner_protocols must be a sequence of NextProtocol members or bytes")
    out: list[NextProtocol | bytes] = []
    for p in value:
        if isinstance(p, NextProtocol):
            raw = p.value
        elif isinstance(p, (bytes, bytearray, memoryview)):
            raw = bytes(p)
        else:
            raise TypeError(f"inner protocol {p!r} is not a NextProtocol or bytes")
        if not 1 <= len(raw) <= 255:
            raise ConfigurationError(
                f"ALPN protocol name {raw!r} must be 1 to 255 bytes long, not {len(raw)}"
            )
        proto = _protocol_from_bytes(raw)
        if proto not in out:
            out.append(proto)
    encoded = sum(1 + len(p.value if isinstance(p, NextProtocol) else p) for p in out)
    if encoded > ALPN_LIST_MAX:
        raise ConfigurationError(
            f"the ALPN protocol list encodes to {encoded} bytes; at most {ALPN_LIST_MAX} fit in a "
            "TLS ClientHello beside its other extensions (65,535 bytes for all of them)"
        )
    return tuple(out)


def _version(name: str, value: object) -> TLSVersion | None:
    if value is None or isinstance(value, TLSVersion):
        return value
    raise TypeError(f"{name} must be a TLSVersion member or None, not {value!r}")


def _check_versions(low: TLSVersion | None, high: TLSVersion | None) -> None:
    if low is not None and high is not None and VERSION_ORDER[low] > VERSION_ORDER[high]:
        raise ConfigurationError(
            f"lowest_supported_version {low.name} is above highest_supported_version {high.name}"
        )
    if low is TLSVersion.MAXIMUM_SUPPORTED and high not in (None, TLSVersion.MAXIMUM_SUPPORTED):
        raise ConfigurationError("lowest_supported_version MAXIMUM_SUPPORTED leaves no version")


def _trust_store(value: object) -> TrustStore | None:
    if value is None or isinstance(value, TrustStore):
        return value
    raise TypeError(f"trust_store must be a TrustStore or None, not {type(value).__name__}")


class _Configuration:
    __slots__ = (
        "_certificate_chain",
        "_ciphers",
        "_highest_supported_version",
        "_inner_protocols",
        "_lowest_supported_version",
        "_trust_store",
    )
    _certificate_chain: Any
    _ciphers: tuple[CipherSuite | int, ...] | None
    _inner_protocols: tuple[NextProtocol | bytes, ...]
    _lowest_supported_version: TLSVersion | None
    _highest_supported_version: TLSVersion | None
    _trust_store: TrustStore | None

    def _init(
        self,
        certificate_chain: Any,
        ciphers: object,
        inner_protocols: object,
        lowest_supported_version: object,
        highest_supported_version: object,
        trust_store: object,
    ) -> None:
        low = _version("lowest_supported_version", lowest_supported_version)
        high = _version("highest_supported_version", highest_supported_version)
        _check_versions(low, high)
        setattr_ = object.__setattr__
        setattr_(self, "_certificate_chain", certificate_chain)
        setattr_(self, "_ciphers", _ciphers(ciphers))
        setattr_(self, "_inner_protocols", _protocols(inner_protocols))
        setattr_(self, "_lowest_supported_version", low)
        setattr_(self, "_highest_supported_version", high)
        setattr_(self, "_trust_store", _trust_store(trust_store))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def _key(self) -> tuple[Any, ...]:
        return (
            self._certificate_chain,
            self._ciphers,
            self._inner_protocols,
            self._lowest_supported_version,
            self._highest_supported_version,
            self._trust_store,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Configuration)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._key()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._key())

    def __repr__(self) -> str:
        fields = (
            "certificate_chain",
            "ciphers",
            "inner_protocols",
            "lowest_supported_version",
            "highest_supported_version",
            "trust_store",
        )
        args = ", ".join(f"{f}={v!r}" for f, v in zip(fields, self._key(), strict=True))
        return f"{type(self).__name__}({args})"

    @property
    def ciphers(self) -> Sequence[CipherSuite | int] | None:
        """Allowed cipher suites in preference order, or None for the engine's secure defaults."""
        return self._ciphers

    @property
    def inner_protocols(self) -> Sequence[NextProtocol | bytes]:
        """ALPN protocols offered (client) or accepted (server), in preference order."""
        return self._inner_protocols

    @property
    def lowest_supported_version(self) -> TLSVersion | None:
        """The lowest TLS version allowed (None: TLS 1.2)."""
        return self._lowest_supported_version

    @property
    def highest_supported_version(self) -> TLSVersion | None:
        """The highest TLS version allowed (None: the highest the engine has)."""
        return self._highest_supported_version

    @property
    def trust_store(self) -> TrustStore | None:
        """Trust anchors used to verify the peer (client: None means the system store;
        server: None means no client certificate is requested)."""
        return self._trust_store


class TLSClientConfiguration(_Configuration):
    """An immutable TLS client configuration."""

    __slots__ = ()
    _certificate_chain: SigningChain | None

    def __init__(
        self,
        certificate_chain: SigningChain | None = None,
        ciphers: Sequence[CipherSuite | int] | None = None,
        inner_protocols: Sequence[NextProtocol | bytes] | None = None,
        lowest_supported_version: TLSVersion | None = None,
        highest_supported_version: TLSVersion | None = None,
        trust_store: TrustStore | None = None,
    ) -> None:
        if certificate_chain is not None and not isinstance(certificate_chain, SigningChain):
            raise TypeError(
                "certificate_chain must be a SigningChain or None, "
                f"not {type(certificate_chain).__name__}"
            )
        self._init(
            certificate_chain,
            ciphers,
            inner_protocols,
            lowest_supported_version,
            highest_supported_version,
            trust_store,
        )

    @property
    def certificate_chain(self) -> SigningChain | None:
        """The client certificate chain for mutual TLS, if any."""
        return self._certificate_chain


class TLSServerConfiguration(_Configuration):
    """An immutable TLS server configuration: one or more signing chains, chosen by SNI."""

    __slots__ = ()
    _certificate_chain: tuple[SigningChain, ...]

    def __init__(
        self,
        certificate_chain: Sequence[SigningChain] | None = None,
        ciphers: Sequence[CipherSuite | int] | None = None,
        inner_protocols: Sequence[NextProtocol | bytes] | None = None,
        lowest_supported_version: TLSVersion | None = None,
        highest_supported_version: TLSVersion | None = None,
        trust_store: TrustStore | None = None,
    ) -> None:
        if isinstance(certificate_chain, SigningChain):
            raise TypeError(
                "a server's certificate_chain is a sequence of SigningChain: "
                "wrap a single chain in a list"
            )
        if certificate_chain is None or not isinstance(certificate_chain, Sequence):
            raise ConfigurationError(
                "a server needs at least one SigningChain in certificate_chain"
            )
        chains = tuple(certificate_chain)
        if not chains:
            raise ConfigurationError(
                "a server needs at least one SigningChain in certificate_chain"
            )
        for c in chains:
            if not isinstance(c, SigningChain):
                raise TypeError(f"certificate_chain entries must be SigningChain, not {c!r}")
        self._init(
            chains,
            ciphers,
            inner_protocols,
            lowest_supported_version,
            highest_supported_version,
            trust_store,
        )

    @property
    def certificate_chain(self) -> Sequence[SigningChain]:
        """The server's signing chains; the first is the default for clients without SNI."""
        return self._certificate_chain
