"""What a bridge server learns from the ClientHello before its engine sees it.

PEP 748 engines choose the certificate themselves and report nothing about the ClientHello, but
the ``ssl`` API lets a server decide after it: ``sni_callback`` may switch the connection to
another context (another certificate) or refuse it with an alert, and ``shared_ciphers()`` lists
the suites both sides offered. A server connection (other than the OpenSSL engine's, which
``_ssl.c`` runs) therefore starts with ``HelloBuffer``: it collects the ClientHello (cleartext in
every TLS version), parses it, calls ``sni_callback`` the way ``_ssl.c`` does, and only then
creates the engine's buffer from the context chosen, feeds it every byte received and steps aside
(its methods become the engine buffer's own). On engines with native I/O (rustls, NSS) it then
raises ``SwitchToNative``: the rest of the connection runs in the extension.
"""

from __future__ import annotations

import operator
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ProtocolError, WantReadError
from .._extensions import SupportsCreateBufferFor, SupportsNativeIO, implements

if TYPE_CHECKING:
    from .._protocols import TLSBuffer

__all__ = [
    "ClientHello",
    "HelloBuffer",
    "SwitchToNative",
    "parse_client_hello",
    "report_unraisable",
]

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
# Alerts _ssl.c sends when the callback fails (ssl.ALERT_DESCRIPTION_*).
_HANDSHAKE_FAILURE = 40
_INTERNAL_ERROR = 80
# More than any real ClientHello (post-quantum key shares included): stop waiting, let the
# engine judge the bytes.
_MAX_HELLO = 64 * 1024
# The TLSBuffer methods that move bytes (HelloBuffer's until the engine's buffer exists).
_DATA_PATH = (
    "process_incoming",
    "process_outgoing",
    "outgoing_bytes_buffered",
    "incoming_bytes_buffered",
    "read",
    "write",
    "do_handshake",
    "shutdown",
)


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None
    cipher_suites: tuple[int, ...]


class _Incomplete(Exception):
    pass


class SwitchToNative(Exception):
    """Raised out of the Python driver by ``HelloBuffer`` of a connection that asked for it
    (``tls._native_switch``) once the engine's buffer exists and has native I/O: the bridge
    then continues the handshake on that buffer's connection in the extension
    (``unitls.compat._nativeio``). Nothing has been sent yet and every byte received is in the
    engine."""

    def __init__(self, hello: HelloBuffer, engine: TLSBuffer) -> None:
        super().__init__("switch to the native I/O path")
        self.hello = hello
        self.engine = engine


def parse_client_hello(data: bytes | bytearray) -> ClientHello | None:
    """The ClientHello at the start of ``data`` (TLS records); None while it is incomplete.

    Raises ValueError when the bytes are not a TLS ClientHello.
    """
    body = bytearray()
    pos = 0
    need: int | None = None
    while need is None or len(body) < need:
        if len(data) < pos + 5:
            return None
        if data[pos] != _HANDSHAKE or data[pos + 1] != 3:
            raise ValueError("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) < pos + 5 + length:
            return None
        body += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if need is None and len(body) >= 4:
            if body[0] != _CLIENT_HELLO:
                raise ValueError("the first handshake message is not a ClientHello")
            need = 4 + int.from_bytes(body[1:4], "big")
    try:
        return _parse_body(bytes(body[4:need]))
    except _Incomplete:
        raise ValueError("malformed ClientHello") from None


def _parse_body(hello: bytes) -> ClientHello:
    def take(pos: int, size: int) -> tuple[bytes, int]:
        if pos + size > len(hello):
            raise _Incomplete
        return hello[pos : pos + size], pos + size

    def vector(pos: int, width: int) -> tuple[bytes, int]:
        raw, pos = take(pos, width)
        return take(pos, int.from_bytes(raw, "big"))

    pos = 2 + 32  # legacy_version, random
    _, pos = vector(pos, 1)  # legacy_session_id
    suites_raw, pos = vector(pos, 2)
    _, pos = vector(pos, 1)  # legacy_compression_methods
    suites = tuple(
        int.from_bytes(suites_raw[i : i + 2], "big") for i in range(0, len(suites_raw) - 1, 2)
    )
    name = None
    if pos < len(hello):
        extensions, pos = vector(pos, 2)
        epos = 0
        while epos + 4 <= len(extensions):
            kind = int.from_bytes(extensions[epos : epos + 2], "big")
            size = int.from_bytes(extensions[epos + 2 : epos + 4], "big")
            payload = extensions[epos + 4 : epos + 4 + size]
            epos += 4 + size
            if kind == _SERVER_NAME and len(payload) >= 5 and payload[2] == 0:
                length = int.from_bytes(payload[3:5], "big")
                raw_name = payload[5 : 5 + length]
                # _ssl.c hands the callback the name as ASCII text (an IDNA A-label).
                name = raw_name.decode("ascii", "replace")
    return ClientHello(name, suites)


def report_unraisable(exc: BaseException, obj: Any) -> None:
    """``PyErr_WriteUnraisable``, which ``_ssl.c`` calls when an SNI callback fails."""
    sys.unraisablehook(_UnraisableHookArgs((type(exc), exc, exc.__traceback__, None, obj)))


def _unraisable_args_type() -> Any:
    # sys.UnraisableHookArgs is not exposed; catch one to learn its type.
    caught: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:

        class _Probe:
            def __del__(self) -> None:
                raise RuntimeError

        _Probe()
    finally:
        sys.unraisablehook = hook
    return type(caught[0])


_UnraisableHookArgs = _unraisable_args_type()


class HelloBuffer:
    """A server ``TLSBuffer`` that holds the connection until the ClientHello is complete.

    ``tls`` is the bridge ``_sslobj`` (it has ``_pep``, ``_context``, ``owner``): the engine
    buffer is made from ``tls._pep`` *after* ``sni_callback`` ran, which may have switched it.
    """

    def __init__(self, tls: Any) -> None:
        self._tls = tls
        self._data = bytearray()
        self._alert = b""
        self._failed: ProtocolError | None = None
        self.client_hello: ClientHello | None = None

    # -- until the ClientHello is in ---------------------------------------------------------

    def process_incoming(self, data_from_network: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        if not data_from_network:
            self._start(None).process_incoming(b"")  # the engine reports the early EOF
            return
        self._data += data_from_network
        try:
            hello = parse_client_hello(self._data)
        except ValueError:
            self._start(None)  # not a ClientHello: the engine fails with its own error
            return
        if hello is None and len(self._data) <= _MAX_HELLO:
            return
        self.client_hello = hello
        engine = self._start(hello)
        if hello is not None and getattr(self._tls, "_native_switch", False):
            if implements(engine, SupportsNativeIO):
                switch = SwitchToNative(self, engine)
                # Before the driver's locks are released: a thread that gets them next must
                # not drive the engine's buffer through the Python driver.
                self.retire(switch)
                raise switch

    def _start(self, hello: ClientHello | None) -> TLSBuffer:
        if hello is not None:
            self._call_sni_callback(hello.server_name)
        pep = self._tls._pep
        # Without SNI, engines pick the chain naming the address the client reached.
        local = self._tls._local_address() if hello is None or hello.server_name is None else None
        if local is not None and isinstance(pep, SupportsCreateBufferFor):
            buf: TLSBuffer = pep.create_buffer_for(local)
        else:
            buf = pep.create_buffer()
        # From now on every call goes straight to the engine's buffer.
        for name in (*_DATA_PATH, "getpeercert", "cipher", "negotiated_protocol"):
            setattr(self, name, getattr(buf, name))
        self._engine = buf
        if self._data:
            data, self._data = bytes(self._data), bytearray()
            buf.process_incoming(data)
        return buf

    def retire(self, switch: SwitchToNative) -> None:
        """After the switch to native I/O: a thread still in the Python driver (one that waited
        for its lock) gets ``switch`` from its next data-path call and follows the others; the
        information methods stay (the native ``_sslobj`` reads them here)."""

        def switched(*args: Any) -> Any:
            raise switch

        for name in _DATA_PATH:
            setattr(self, name, switched)

    def _call_sni_callback(self, server_name: str | None) -> None:
        tls = self._tls
        context = tls._context
        callback = getattr(context, "sni_callback", None)
        if callback is None:
            return
        owner = tls.owner
        tls._in_sni_callback = True  # the callback may switch tls.context (tls._pep)
        try:
            result = callback(owner if owner is not None else tls, server_name, context)
        except Exception as exc:
            report_unraisable(exc, callback)
            self._refuse(_HANDSHAKE_FAILURE, "the sni_callback raised an exception")
        finally:
            tls._in_sni_callback = False
        if result is None:
            return
        try:
            alert = operator.index(result)
        except TypeError as exc:
            report_unraisable(exc, result)
            self._refuse(_INTERNAL_ERROR, "the sni_callback returned neither None nor an alert")
        self._refuse(alert & 0xFF, f"the sni_callback refused the connection (alert {alert})")

    def _refuse(self, alert: int, why: str) -> None:
        # Nothing was sent yet, so the alert goes in a plaintext record, as OpenSSL sends it.
        self._alert = bytes([21, 3, 3, 0, 2, 2, alert])
        self._failed = ProtocolError(f"TLS handshake refused: {why}")
        raise self._failed

    def process_outgoing(self, amount_bytes_for_network: int) -> bytes:
        out, self._alert = (
            self._alert[:amount_bytes_for_network],
            self._alert[amount_bytes_for_network:],
        )
        return out

    def outgoing_bytes_buffered(self) -> int:
        return len(self._alert)

    def incoming_bytes_buffered(self) -> int:
        return len(self._data)

    def _waiting(self, *args: Any) -> Any:
        if self._failed is not None:
            raise self._failed
        raise WantReadError("waiting for the client's ClientHello")

    read = write = do_handshake = _waiting

    def shutdown(self) -> None:
        pass

    def getpeercert(self) -> None:
        return None

    def cipher(self) -> None:
        return None

    def negotiated_protocol(self) -> None:
        return None

    @property
    def negotiated_tls_version(self) -> Any:
        engine = self.__dict__.get("_engine")
        return None if engine is None else engine.negotiated_tls_version

    def __getattr__(self, name: str) -> Any:
        # Engine extras (getpeercertchain, ...) once the engine buffer exists.
        engine = self.__dict__.get("_engine")
        if engine is None:
            raise AttributeError(name)
        return getattr(engine, name)
