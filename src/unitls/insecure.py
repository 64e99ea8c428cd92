"""Insecure variants for testing only: turning off certificate or hostname verification.

Nothing here is needed to talk to a server with a self-signed certificate: put that certificate
in a ``TrustStore`` instead. Every step through this module (configuration, implementation,
context, connection) emits a ``SecurityWarning``; importing it does not.
"""

from __future__ import annotations

import contextvars
import threading
import warnings
from abc import abstractmethod
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._config import TLSClientConfiguration, TLSServerConfiguration
from ._errors import ConfigurationError
from ._protocols import ClientContext, ServerContext, TLSImplementation
from ._registry import get_implementation

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

    def _verification(self) -> tuple[bool, bool]:
        """(verify the certificate chain, check the hostname), read by the engine's compile
        step (see ``unitls._engine``)."""
        insecure = self._insecure
        return not insecure.disable_verification, not insecure.disable_hostname_check

    def connect(self, address: tuple[str | None, int], **options: Any) -> Any:
        warn("connecting with TLS verification weakened (insecure context)")
        return super().connect(address, **options)  # type: ignore[misc]

    def create_buffer(self, server_hostname: str, **options: Any) -> Any:
        warn("TLS buffer with verification weakened (insecure context)")
        return super().create_buffer(server_hostname, **options)  # type: ignore[misc]


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


_derived_lock = threading.Lock()
_derived: dict[tuple[type, type], tuple[type, type]] = {}


def _derive(impl: TLSImplementation[Any, Any]) -> tuple[type, type]:
    """The insecure context classes of an engine built on ``unitls._engine``'s base classes
    (made once per engine, so ``isinstance`` checks stay meaningful)."""
    key = (impl.client_context, impl.server_context)
    with _derived_lock:
        found = _derived.get(key)
        if found is None:

            def variant(mixin: type, cls: type) -> type:
                namespace = {"__slots__": ("_insecure",), "__module__": cls.__module__}
                return type(f"Insecure{cls.__name__}", (mixin, cls), namespace)

            found = _derived[key] = (
                variant(InsecureClientContextMixin, impl.client_context),
                variant(InsecureServerContextMixin, impl.server_context),
            )
        return found


def get_insecure_implementation(name: str | None = None) -> InsecureTLSImplementation[Any, Any]:
    """The insecure variant of an engine (same naming as ``unitls.get_implementation``).

    Engines built on ``unitls._engine``'s base classes get theirs derived; other engines provide
    a module-level ``insecure_implementation()`` factory returning an
    ``InsecureTLSImplementation``.
    """
    from ._engine import ClientContextBase, ServerContextBase

    impl = get_implementation(name)
    if issubclass(impl.client_context, ClientContextBase) and issubclass(
        impl.server_context, ServerContextBase
    ):
        client, server = _derive(impl)
        return InsecureTLSImplementation(
            client_context=client,
            server_context=server,
            validate_config=impl.validate_config,
            name=impl.name,
        )
    import sys

    module = sys.modules.get(impl.client_context.__module__)
    factory = getattr(module, "insecure_implementation", None)
    if factory is None:
        raise ConfigurationError(
            f"TLS engine {impl.name!r} has no insecure variant (its module defines no "
            "insecure_implementation())"
        )
    variant = factory()
    if not isinstance(variant, InsecureTLSImplementation):
        raise ConfigurationError(
            f"{impl.client_context.__module__}.insecure_implementation() did not return an "
            "InsecureTLSImplementation"
        )
    return variant
