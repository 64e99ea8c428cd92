"""Insecure variants for testing only: turning off certificate or hostname verification.

Nothing here is needed to talk to a server with a self-signed certificate: put that certificate
in a ``TrustStore`` instead. Every step through this module (configuration, implementation,
context, connection) emits a ``SecurityWarning``; importing it does not.
"""

from __future__ import annotations

import contextvars
import importlib
import warnings
from abc import abstractmethod
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._errors import ConfigurationError
from ._protocols import ClientContext, ServerContext, TLSImplementation
from ._registry import _BUILTIN, ENGINE_ENV

__all__ = [
    "InsecureClientContext",
    "InsecureClientContextMixin",
    "InsecureConfiguration",
    "InsecureServerContext",
    "InsecureServerContextMixin",
    "InsecureTLSImplementation",
    "SecurityWarning",
    "get_insecure_implementation",
    "warn",
]


class SecurityWarning(UserWarning):
    """Warns that TLS protection is being weakened on purpose."""


# Set by a caller that has already warned for what it builds (unitls.compat warns once per
# ssl.SSLContext, whatever the engine): the warnings below would repeat that one.
_already_warned: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "unitls_insecure_already_warned", default=False
)


def warn(message: str, stacklevel: int = 3) -> None:
    """Emit a SecurityWarning (for engines implementing the insecure contexts)."""
    if not _already_warned.get():
        warnings.warn(message, SecurityWarning, stacklevel=stacklevel)


class InsecureConfiguration:
    """Options that weaken verification. Immutable and hashable like the TLS configurations.

    ``disable_verification``: a client accepts any server certificate; a server accepts any
    client certificate. Anyone on the network path can then impersonate the peer.
    ``disable_hostname_check``: a client verifies the chain but not that it names the server.
    """

    __slots__ = ("_disable_hostname_check", "_disable_verification")
    _disable_verification: bool
    _disable_hostname_check: bool

    def __init__(
        self, disable_verification: bool = False, disable_hostname_check: bool = False
    ) -> None:
        if not isinstance(disable_verification, bool) or not isinstance(
            disable_hostname_check, bool
        ):
            raise TypeError("InsecureConfiguration options are bools")
        warn(
            "InsecureConfiguration weakens TLS verification; use it for testing only "
            "(trust a self-signed certificate with TrustStore.from_buffer instead)"
        )
        object.__setattr__(self, "_disable_verification", disable_verification)
        object.__setattr__(
            self, "_disable_hostname_check", disable_hostname_check or disable_verification
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("InsecureConfiguration objects are immutable")

    @property
    def disable_verification(self) -> bool:
        return self._disable_verification

    @property
    def disable_hostname_check(self) -> bool:
        return self._disable_hostname_check

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InsecureConfiguration):
            return NotImplemented
        return (self.disable_verification, self.disable_hostname_check) == (
            other.disable_verification,
            other.disable_hostname_check,
        )

    def __hash__(self) -> int:
        return hash((self.disable_verification, self.disable_hostname_check))

    def __repr__(self) -> str:
        return (
            f"InsecureConfiguration(disable_verification={self.disable_verification}, "
            f"disable_hostname_check={self.disable_hostname_check})"
        )


@runtime_checkable
class InsecureClientContext(ClientContext, Protocol):
    """A client context that may skip certificate and/or hostname verification."""

    @abstractmethod
    def __init__(
        self,
        configuration: TLSClientConfiguration,
        insecure_configuration: InsecureConfiguration | None = None,
    ) -> None: ...

    @property
    @abstractmethod
    def insecure_configuration(self) -> InsecureConfiguration: ...


@runtime_checkable
class InsecureServerContext(ServerContext, Protocol):
    """A server context that may accept any client certificate."""

    @abstractmethod
    def __init__(
        self,
        configuration: TLSServerConfiguration,
        insecure_configuration: InsecureConfiguration | None = None,
    ) -> None: ...

    @property
    @abstractmethod
    def insecure_configuration(self) -> InsecureConfiguration: ...


class InsecureClientContextMixin:
    """What every engine's insecure client context shares: put it before the engine's secure
    client context class, which reads ``self._insecure`` when it builds its configuration.

    Each step warns: making the context, and every connection or buffer made from it.
    """

    __slots__ = ()
    _insecure: InsecureConfiguration

    def __init__(
        self,
        configuration: TLSClientConfiguration,
        insecure_configuration: InsecureConfiguration | None = None,
        **options: Any,
    ) -> None:
        # The slot is declared by the concrete engine class (mixins keep empty __slots__).
        self._insecure = insecure_configuration or InsecureConfiguration()  # type: ignore[misc]
        warn(f"insecure TLS client context: {self._insecure!r}")
        super().__init__(configuration, **options)  # type: ignore[call-arg]

    @property
    def insecure_configuration(self) -> InsecureConfiguration:
        return self._insecure

    def connect(self, address: tuple[str | None, int], **options: Any) -> Any:
        warn("connecting with TLS verification weakened (insecure context)")
        return super().connect(address, **options)  # type: ignore[misc]

    def create_buffer(self, server_hostname: str) -> Any:
        warn("TLS buffer with verification weakened (insecure context)")
        return super().create_buffer(server_hostname)  # type: ignore[misc]


class InsecureServerContextMixin:
    """What every engine's insecure server context shares (put it before the secure class).

    Neither engine can accept a client certificate *without* verifying it, so a server with a
    ``trust_store`` and ``disable_verification`` is refused rather than quietly verifying.
    """

    __slots__ = ()
    _insecure: InsecureConfiguration

    def __init__(
        self,
        configuration: TLSServerConfiguration,
        insecure_configuration: InsecureConfiguration | None = None,
        **options: Any,
    ) -> None:
        # The slot is declared by the concrete engine class (mixins keep empty __slots__).
        self._insecure = insecure_configuration or InsecureConfiguration()  # type: ignore[misc]
        warn(f"insecure TLS server context: {self._insecure!r}")
        if self._insecure.disable_verification and configuration.trust_store is not None:
            raise ConfigurationError(
                "accepting client certificates without verifying them is not supported: "
                "drop trust_store (no client authentication) or keep verification on"
            )
        super().__init__(configuration, **options)  # type: ignore[call-arg]

    @property
    def insecure_configuration(self) -> InsecureConfiguration:
        return self._insecure


_IC = TypeVar("_IC", bound=InsecureClientContext)
_IS = TypeVar("_IS", bound=InsecureServerContext)


class InsecureTLSImplementation(TLSImplementation[_IC, _IS]):
    """An engine's insecure contexts (``client_context``/``server_context`` are the insecure
    classes, which take an ``InsecureConfiguration`` as second argument)."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        warn(f"using the insecure variant of the {self.name} TLS engine: for testing only")

    @property
    def insecure_client_context(self) -> type[_IC]:
        return self.client_context

    @property
    def insecure_server_context(self) -> type[_IS]:
        return self.server_context


def get_insecure_implementation(name: str | None = None) -> InsecureTLSImplementation[Any, Any]:
    """The insecure variant of an engine (same naming as ``unitls.get_implementation``)."""
    import os

    if name is None:
        name = os.environ.get(ENGINE_ENV) or "openssl"
    module_name = _BUILTIN.get(name, name).partition(":")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"TLS engine {name!r} is not usable here: {exc}") from exc
    factory = getattr(module, "insecure_implementation", None)
    if factory is None:
        raise ConfigurationError(f"TLS engine {name!r} has no insecure variant")
    impl = factory()
    if not isinstance(impl, InsecureTLSImplementation):
        raise ConfigurationError(f"{module_name}.insecure_implementation() is not one")
    return impl
