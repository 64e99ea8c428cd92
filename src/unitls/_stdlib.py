"""The stdlib ``ssl`` module's own classes, whatever has been injected into it since.

``unitls.compat.inject_into_ssl()`` rebinds ``ssl.SSLContext`` to the bridge. The OpenSSL engine
must keep building the stdlib's own contexts (else it would run on the injected engine), and the
bridge must not depend on the module global (ssl.py's setters would recurse). Both find the
original here, also when they are first imported while something is injected.
"""

from __future__ import annotations

import ssl

__all__ = ["ORIGINAL_SSLCONTEXT"]


def _find_original() -> type[ssl.SSLContext]:
    # ssl.SSLContext may already be rebound (by us or another injector): find the stdlib's.
    for cls in ssl.SSLContext.__mro__:
        if cls.__module__ == "ssl" and cls.__name__ == "SSLContext":
            return cls
    raise ImportError("cannot find the ssl module's own SSLContext class")


#: The stdlib's ``ssl.SSLContext``.
ORIGINAL_SSLCONTEXT: type[ssl.SSLContext] = _find_original()
