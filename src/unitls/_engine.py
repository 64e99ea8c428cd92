"""Helpers shared by the engines: version bounds, reading key material, support checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._enums import TLS13_SUITES, CipherSuite, TLSVersion
from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._config import TLSClientConfiguration, TLSServerConfiguration
    from ._objects import Certificate, PrivateKey, TrustStore

TLS12 = 0x0303
TLS13 = 0x0304

_LOW = {
    None: TLS12,
    TLSVersion.MINIMUM_SUPPORTED: TLS12,
    TLSVersion.TLSv1_2: TLS12,
    TLSVersion.TLSv1_3: TLS13,
    TLSVersion.MAXIMUM_SUPPORTED: TLS13,
}
_HIGH = {
    None: TLS13,
    TLSVersion.MINIMUM_SUPPORTED: TLS12,
    TLSVersion.TLSv1_2: TLS12,
    TLSVersion.TLSv1_3: TLS13,
    TLSVersion.MAXIMUM_SUPPORTED: TLS13,
}
VERSION_ENUM = {TLS12: TLSVersion.TLSv1_2, TLS13: TLSVersion.TLSv1_3}


def version_bounds(config: TLSClientConfiguration | TLSServerConfiguration) -> tuple[int, int]:
    """(lowest, highest) wire versions; never below TLS 1.2."""
    return _LOW[config.lowest_supported_version], _HIGH[config.highest_supported_version]


def versions(config: TLSClientConfiguration | TLSServerConfiguration) -> list[int]:
    low, high = version_bounds(config)
    return [v for v in (TLS12, TLS13) if low <= v <= high]


def split_ciphers(ids: list[int]) -> tuple[list[int], list[int]]:
    """(TLS 1.3 suites, TLS 1.2 suites) of a cipher id list, order kept."""
    return [c for c in ids if c in TLS13_SUITES], [c for c in ids if c not in TLS13_SUITES]


def suite_name(suite: int) -> str:
    try:
        return CipherSuite(suite).name
    except ValueError:
        return f"{suite:#06x}"


def read_source(obj: Certificate | PrivateKey | TrustStore, what: str) -> bytes:
    """The bytes of a buffer- or file-backed object (``from_id`` must be rejected earlier)."""
    if obj.buffer is not None:
        return obj.buffer
    if obj.path is not None:
        try:
            with open(obj.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read {what} file {obj.path!r}: {exc.strerror or exc}"
            ) from exc
        if not data:
            raise ConfigurationError(f"{what} file {obj.path!r} is empty")
        return data
    raise ConfigurationError(f"{what} {obj!r} has no buffer or file to read")


def reject_ids(config: TLSClientConfiguration | TLSServerConfiguration, engine: str) -> None:
    """Raise ConfigurationError if any certificate, key or trust store is ``from_id``."""
    from ._objects import SigningChain

    chains = config.certificate_chain
    if isinstance(chains, SigningChain):
        chains = (chains,)
    for chain in chains or ():
        cert, key = chain.leaf
        for obj, what in [(cert, "certificate"), (key, "private key")] + [
            (c, "chain certificate") for c in chain.chain
        ]:
            if obj is not None and obj.id is not None:
                raise ConfigurationError(
                    f"the {engine} engine cannot load a {what} from an identifier "
                    f"({obj!r}): load it from a buffer or a file"
                )
    store = config.trust_store
    if store is not None and store.id is not None:
        raise ConfigurationError(
            f"the {engine} engine cannot load a trust store from an identifier ({store!r}): "
            "use TrustStore.system(), from_buffer() or from_file()"
        )
