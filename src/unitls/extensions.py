"""What unitls engines offer beyond PEP 748, as typed protocols to check with ``isinstance``.

For example:

    from unitls.extensions import SupportsPeerCertChain
    if isinstance(sock, SupportsPeerCertChain):
        chain = sock.getpeercertchain()
"""

from ._extensions import (
    SupportsConnectTimeout,
    SupportsCreateBufferFor,
    SupportsIncomingInto,
    SupportsIncomingViews,
    SupportsPeerCertChain,
    SupportsServerName,
    SupportsSessionCache,
    SupportsSessionExport,
    SupportsSessionInfo,
    SupportsStdlibContext,
    SupportsUpgrade,
)

__all__ = [
    "SupportsConnectTimeout",
    "SupportsCreateBufferFor",
    "SupportsIncomingInto",
    "SupportsIncomingViews",
    "SupportsPeerCertChain",
    "SupportsServerName",
    "SupportsSessionCache",
    "SupportsSessionExport",
    "SupportsSessionInfo",
    "SupportsStdlibContext",
    "SupportsUpgrade",
]
