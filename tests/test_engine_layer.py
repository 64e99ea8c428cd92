"""The engine layer (``unitls._engine``): what every engine inherits, and a new engine on it."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import unitls
from unitls import extensions
from unitls._certgen import CA
from unitls._engine import ClientContextBase, ServerContextBase, engine_implementation
from unitls.insecure import InsecureConfiguration, SecurityWarning, get_insecure_implementation


@pytest.mark.parametrize("bad", ["", ".", "bad\x00name", 123, None])
def test_create_buffer_checks_the_server_name(engine: Any, client_config: Any, bad: Any) -> None:
    ctx = engine.client_context(client_config)
    with pytest.raises((TypeError, ValueError)):
        ctx.create_buffer(bad)


def test_contexts_refuse_the_wrong_configuration_kind(
    engine: Any, client_config: Any, server_config: Any
) -> None:
    with pytest.raises(TypeError, match="TLSClientConfiguration"):
        engine.client_context(server_config)
    with pytest.raises(TypeError, match="TLSServerConfiguration"):
        engine.server_context(client_config)


def test_builtin_engines_declare_their_extensions(
    engine: Any, client_config: Any, server_config: Any
) -> None:
    client = engine.client_context(client_config)
    server = engine.server_context(server_config)
    assert isinstance(client, extensions.SupportsConnectTimeout)
    assert isinstance(client, extensions.SupportsUpgrade)
    assert isinstance(server, extensions.SupportsCreateBufferFor)
    buffer = client.create_buffer("localhost")
    assert isinstance(buffer, extensions.SupportsPeerCertChain)
    assert isinstance(buffer, extensions.SupportsServerName)
    assert isinstance(buffer, extensions.SupportsIncomingViews)
    assert buffer.copies_incoming is True


def test_insecure_variants_are_derived_once_per_engine(engine: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        first = get_insecure_implementation(engine.name)
        second = get_insecure_implementation(engine.name)
    assert first.client_context is second.client_context
    assert first.server_context is second.server_context
    assert issubclass(first.client_context, engine.client_context)
    assert first.name == engine.name


# -- an engine in a page: the rustls core behind contexts that only fill in three steps ----------


class PageClientContext(ClientContextBase[Any]):
    __slots__ = ()
    engine_name = "page"

    @staticmethod
    def validate(config: unitls.TLSClientConfiguration | unitls.TLSServerConfiguration) -> None:
        if config.ciphers is not None:
            raise unitls.ConfigurationError("the page engine takes no cipher list")

    def _compile(self, configuration: unitls.TLSClientConfiguration) -> Any:
        from unitls import rustls

        verify, check_hostname = self._verification()
        return rustls._client_config(
            configuration, verify, check_hostname, self._resumption, self._keylog
        )

    def _new_buffer(self, server_hostname: str, port: int | None, session: Any) -> Any:
        from unitls.rustls import RustlsBuffer

        conn = self._native.new_connection(server_hostname, port, session)
        return RustlsBuffer(self, conn)  # type: ignore[arg-type]

    def clear_session_cache(self) -> None:
        self._native.clear_session_cache()


class PageServerContext(ServerContextBase[Any]):
    __slots__ = ()
    engine_name = "page"
    validate = PageClientContext.validate

    def _compile(self, configuration: unitls.TLSServerConfiguration) -> Any:
        from unitls import rustls

        return rustls._server_config(configuration, self._session_tickets, self._keylog)

    def _new_buffer(self, local_address: str | None) -> Any:
        from unitls.rustls import RustlsBuffer

        return RustlsBuffer(self, self._native.new_connection(local_address))  # type: ignore[arg-type]


PAGE = engine_implementation(PageClientContext, PageServerContext)


@pytest.mark.skipif("rustls" not in unitls.implementations(), reason="rustls engine not built")
def test_an_engine_in_a_page_gets_sockets_starttls_and_insecure_variants(
    client_config: Any, server_config: Any
) -> None:
    import threading

    assert PAGE.name == "page"
    with pytest.raises(unitls.ConfigurationError, match="no cipher list"):
        PAGE.client_context(
            unitls.TLSClientConfiguration(ciphers=[unitls.CipherSuite.TLS_AES_128_GCM_SHA256])
        )
    server = PAGE.server_context(server_config)
    client = PAGE.client_context(client_config)
    listener = server.connect(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())

    t = threading.Thread(target=serve)
    t.start()
    with client.connect(("localhost", port), timeout=10) as sock:
        sock.sendall(b"page")
        assert sock.recv(100) == b"PAGE"
        assert sock.negotiated_tls_version is unitls.TLSVersion.TLSv1_3
    t.join(10)
    listener.close()

    # The insecure variant comes for free and does turn verification off.
    ca = CA.create("someone else")
    other = ca.issue("localhost")
    foreign = PAGE.server_context(
        unitls.TLSServerConfiguration(certificate_chain=[other.signing_chain()])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        insecure = get_insecure_implementation("test_engine_layer:PAGE")
        lax = insecure.client_context(
            unitls.TLSClientConfiguration(), InsecureConfiguration(disable_verification=True)
        )
        buf_c = lax.create_buffer("localhost")
    buf_s = foreign.create_buffer()
    for _ in range(10):
        for side in (buf_c, buf_s):
            try:
                side.do_handshake()
            except unitls.WantReadError:
                pass
        for src, dst in ((buf_c, buf_s), (buf_s, buf_c)):
            data = src.process_outgoing(-1)
            if data:
                dst.process_incoming(data)
    assert buf_c.negotiated_tls_version is not None


@pytest.mark.parametrize("suite", [0x002F, 0x0035, 0x009C, 0xC013, 0x000A])
def test_weak_suites_are_refused_on_every_engine(engine: Any, suite: int) -> None:
    """CBC, static-RSA and 3DES suites by raw id: refused at configuration (AEAD+FS only)."""
    config = unitls.TLSClientConfiguration(
        ciphers=[unitls.CipherSuite.TLS_AES_128_GCM_SHA256, suite]
    )
    with pytest.raises(unitls.ConfigurationError, match="not AEAD suites with forward secrecy"):
        engine.validate_config(config)
    with pytest.raises(unitls.ConfigurationError, match="not AEAD suites with forward secrecy"):
        engine.client_context(config)


def test_sockets_verify_a_fully_qualified_name(
    engine: Any, client_config: Any, server_config: Any
) -> None:
    """A trailing-dot host name on a socket (``upgrade``; "localhost." does not resolve
    everywhere, so not ``connect``): the same certificate checks as without the dot, and the
    server gets the name without it."""
    import socket
    import threading

    listener = engine.server_context(server_config).connect(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[Any] = []

    def serve() -> None:
        conn, _ = listener.accept()
        seen.append(conn.recv(4))
        conn.close(force=True)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with engine.client_context(client_config).upgrade(raw, "localhost.") as tls:
            tls.sendall(b"fqdn")
    finally:
        thread.join(10)
        listener.close()
    assert seen == [b"fqdn"]
