"""The ``ssl.SSLContext`` bridge: run code written for the ``ssl`` module on any PEP 748 engine:

    import ssl, urllib.request, unitls.compat
    ctx = unitls.compat.SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation="rustls")
    ctx.load_default_certs()
    urllib.request.urlopen("https://example.org", context=ctx)

or, process-wide (every ``ssl.SSLContext``, ``ssl.create_default_context()``, the stdlib's mail and
FTP clients, urllib3 and requests):

    unitls.compat.inject_into_ssl("rustls")
    ...
    unitls.compat.extract_from_ssl()

While injected, the stdlib's ``_create_stdlib_context`` (smtplib, imaplib, poplib, ftplib) gives
*verifying* contexts, unlike Python 3.11's default.
"""

from __future__ import annotations

import ssl
import sys
import threading
from typing import Any

from .._protocols import TLSImplementation
from ._context import (
    ORIGINAL_SSLCONTEXT,
    SAFE_PROPERTIES,
    IgnoredSettingWarning,
    SSLContext,
    UnsupportedSettingError,
    safe_property,
)
from ._sslobj import SSLSession

__all__ = [
    "ORIGINAL_SSLCONTEXT",
    "IgnoredSettingWarning",
    "SSLContext",
    "SSLSession",
    "UnsupportedSettingError",
    "extract_from_ssl",
    "inject_into_ssl",
    "is_injected",
]

_lock = threading.Lock()
_ORIGINAL_UNVERIFIED = ssl._create_unverified_context
# What injection replaced: (object, attribute) -> original value.
_saved: dict[tuple[Any, str], Any] = {}


def _verifying_stdlib_context(
    protocol: int | None = None,
    *,
    cert_reqs: int | None = None,
    check_hostname: bool | None = None,
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
    certfile: Any = None,
    keyfile: Any = None,
    cafile: Any = None,
    capath: Any = None,
    cadata: Any = None,
) -> ssl.SSLContext:
    """``ssl._create_stdlib_context`` while injected: clients verify the server by default."""
    client = purpose == ssl.Purpose.SERVER_AUTH
    if cert_reqs is None:
        cert_reqs = ssl.CERT_REQUIRED if client else ssl.CERT_NONE
    if check_hostname is None:
        check_hostname = client and cert_reqs != ssl.CERT_NONE
    ctx: ssl.SSLContext = _ORIGINAL_UNVERIFIED(
        protocol,
        cert_reqs=cert_reqs,
        check_hostname=check_hostname,
        purpose=purpose,
        certfile=certfile,
        keyfile=keyfile,
        cafile=cafile,
        capath=capath,
        cadata=cadata,
    )
    return ctx


def _replace(obj: Any, name: str, value: Any) -> None:
    key = (obj, name)
    if key not in _saved:
        _saved[key] = getattr(obj, name)
    setattr(obj, name, value)


def is_injected() -> bool:
    """True between ``inject_into_ssl()`` and ``extract_from_ssl()``."""
    return bool(_saved)


def inject_into_ssl(implementation: str | TLSImplementation[Any, Any] | None = None) -> None:
    """Make ``ssl.SSLContext`` (and what is built on it) run on a PEP 748 engine.

    ``implementation``: an engine name, a ``TLSImplementation``, or None for the default engine.
    Contexts created before the call keep using OpenSSL directly. Calling it again switches the
    engine; ``extract_from_ssl()`` restores everything.
    """
    from . import _context

    # Resolve now so a bad name fails here, not in the middle of someone's request.
    _context._resolve(implementation)
    bridge = type("SSLContext", (SSLContext,), {"_unitls_default": implementation})
    bridge.__module__ = SSLContext.__module__
    bridge.__qualname__ = "SSLContext"
    bridge.__doc__ = SSLContext.__doc__
    with _lock:
        # The stdlib class's setters look up the module global we are about to rebind.
        for name in SAFE_PROPERTIES:
            _replace(ORIGINAL_SSLCONTEXT, name, safe_property(name))
        _replace(ssl, "SSLContext", bridge)
        _replace(ssl, "_create_stdlib_context", _verifying_stdlib_context)
        # Modules that copied the name at import time.
        for module_name in ("urllib3.util.ssl_", "urllib3.util"):
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, "SSLContext", None) is not None:
                _replace(module, "SSLContext", bridge)


def extract_from_ssl() -> None:
    """Undo ``inject_into_ssl()``: the ssl module, urllib3 and requests use OpenSSL again."""
    with _lock:
        for (obj, name), value in reversed(list(_saved.items())):
            setattr(obj, name, value)
        _saved.clear()
        # urllib3 imported while injected copied the bridge class: point it back too.
        for module_name in ("urllib3.util.ssl_", "urllib3.util"):
            module = sys.modules.get(module_name)
            current = getattr(module, "SSLContext", None)
            if isinstance(current, type) and issubclass(current, SSLContext):
                module.__dict__["SSLContext"] = ORIGINAL_SSLCONTEXT
