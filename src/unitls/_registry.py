"""Finding engines at run time."""

from __future__ import annotations

import importlib
import os
from typing import Any

from ._errors import ConfigurationError
from ._protocols import TLSImplementation

__all__ = ["ENGINE_ENV", "get_implementation", "implementations"]

#: Environment variable naming the default engine (a built-in name or ``module[:attribute]``).
ENGINE_ENV = "UNITLS_ENGINE"

# Built-in engines (name -> module defining IMPLEMENTATION), in order of preference for the
# default. The one place that names them.
_BUILTIN = {"openssl": "unitls.openssl", "rustls": "unitls.rustls", "nss": "unitls.nss"}


def builtin_engines() -> dict[str, str]:
    """Built-in engine names and the modules that define them (usable here or not)."""
    return dict(_BUILTIN)


def _load(name: str) -> TLSImplementation[Any, Any]:
    module_name, _, attr = (_BUILTIN.get(name, name)).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if name in _BUILTIN:
            raise ConfigurationError(f"the {name} engine is not usable here: {exc}") from exc
        raise ConfigurationError(
            f"unknown TLS engine {name!r}: not a built-in engine ({', '.join(_BUILTIN)}) "
            f"and no module {module_name!r} can be imported ({exc})"
        ) from exc
    impl = getattr(module, attr or "IMPLEMENTATION", None)
    if not isinstance(impl, TLSImplementation):
        raise ConfigurationError(
            f"{module_name}.{attr or 'IMPLEMENTATION'} is not a TLSImplementation"
        )
    return impl


def get_implementation(name: str | None = None) -> TLSImplementation[Any, Any]:
    """The engine called ``name`` ("openssl", "rustls", "nss", or ``"module[:attribute]"`` for a
    third-party ``TLSImplementation``). ``None``: the ``UNITLS_ENGINE`` environment variable if
    set, otherwise the OpenSSL engine."""
    if name is None:
        name = os.environ.get(ENGINE_ENV) or "openssl"
    if not isinstance(name, str) or not name:
        raise TypeError("engine name must be a non-empty str")
    return _load(name)


def implementations() -> list[str]:
    """Names of the built-in engines that import and work on this machine."""
    usable = []
    for name in _BUILTIN:
        try:
            _load(name)
        except ConfigurationError:
            continue
        usable.append(name)
    return usable
