"""The bridge behaves like the stdlib ``ssl`` module where CPython's own test suite looks.

One test (or a few) per cause of issue 12, each against real peers: the stdlib ``ssl`` module in
the other role, or a bridge context of the same engine. ``python -m tests.cpython_bridge`` runs
CPython's own tests under injection; these are the regression tests that would have caught each
difference it found.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import ssl
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from compat_servers import (
    TIMEOUT,
    CertFiles,
    bridge_client,
    bridge_server,
    cert_files,
    plain_client,
    plain_server,
)

import unitls
import unitls.compat
from unitls._certgen import CA
from unitls.compat import (
    ORIGINAL_SSLCONTEXT,
    IgnoredSettingWarning,
    SSLContext,
    UnsupportedSettingError,
)
from unitls.insecure import SecurityWarning

__all__ = ["bridge_client", "bridge_server", "cert_files", "plain_client", "plain_server"]

Engine = unitls.TLSImplementation[Any, Any]


class Server:
    """Accepts connections with ``ctx`` in a thread; ``action(conn)`` per connection (default:
    echo upper-cased). Exceptions are kept in ``errors``."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        action: Callable[[ssl.SSLSocket], None] | None = None,
        connections: int = 1,
    ) -> None:
        self.ctx = ctx
        self.action = action or _echo
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(connections,), daemon=True)
        self.thread.start()

    def _run(self, connections: int) -> None:
        for _ in range(connections):
            try:
                raw, _ = self.listener.accept()
            except OSError as exc:
                self.errors.append(exc)
                return
            raw.settimeout(TIMEOUT)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as conn:
                    self.action(conn)
            except (OSError, ValueError) as exc:
                self.errors.append(exc)
            finally:
                raw.close()

    def connect(
        self, ctx: ssl.SSLContext, hostname: str | None = "localhost", **kwargs: Any
    ) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        return ctx.wrap_socket(raw, server_hostname=hostname, **kwargs)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()


def _echo(conn: ssl.SSLSocket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data.upper())


def _talk(sock: ssl.SSLSocket) -> None:
    sock.sendall(b"ping")
    assert sock.recv(10) == b"PING"


@pytest.fixture
def injected(engine: Engine) -> Iterator[None]:
    unitls.compat.inject_into_ssl(engine)
    try:
        yield
    finally:
        unitls.compat.extract_from_ssl()


# -- 1: ssl.SSLContext() with no argument ---------------------------------------------------------


def test_no_argument_context_is_the_stdlib_default(engine: Engine, cert_files: CertFiles) -> None:
    with pytest.warns(DeprecationWarning, match="deprecated"):
        server = SSLContext(implementation=engine)
    assert server.protocol == ssl.PROTOCOL_TLS
    assert server.verify_mode == ssl.CERT_NONE and not server.check_hostname
    server.load_cert_chain(cert_files.cert_file, cert_files.key_file)
    with Server(server) as srv, srv.connect(_stdlib_client(cert_files)) as s:
        _talk(s)
    assert not srv.errors
    with pytest.warns(DeprecationWarning):
        client = SSLContext(implementation=engine)
    with Server(_stdlib_server(cert_files)) as srv:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # CERT_NONE: unauthenticated
            with srv.connect(client, hostname=None) as s:
                _talk(s)


def _stdlib_client(files: CertFiles) -> ssl.SSLContext:
    ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.ca_file)
    return ctx


def _stdlib_server(files: CertFiles) -> ssl.SSLContext:
    ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx


# -- 2: _msg_callback ----------------------------------------------------------------------------


def test_msg_callback_while_injected(engine: Engine, injected: None, cert_files: CertFiles) -> None:
    def callback(*args: Any) -> None:
        pass

    # ssl.py's own accessors look up the module global: they must not recurse, on contexts of
    # the stdlib class (made "before injection") or of the bridge.
    for ctx in (
        ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT),
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
    ):
        assert ctx._msg_callback is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IgnoredSettingWarning)
            ctx._msg_callback = callback
        assert ctx._msg_callback is callback
        with pytest.raises(TypeError):
            ctx._msg_callback = object()
        ctx._msg_callback = None
        assert ctx._msg_callback is None


def test_msg_callback_sees_the_handshake(engine: Engine, cert_files: CertFiles) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.load_verify_locations(cert_files.ca_file)
    seen: list[tuple[Any, ...]] = []

    def callback(
        conn: Any, direction: str, version: Any, ctype: Any, mtype: Any, data: bytes
    ) -> None:
        seen.append((conn, direction, ctype, mtype))

    if engine.name != "openssl":
        with pytest.warns(IgnoredSettingWarning, match="_msg_callback"):
            ctx._msg_callback = callback
        return
    ctx._msg_callback = callback
    with Server(_stdlib_server(cert_files)) as srv, srv.connect(ctx) as s:
        _talk(s)
    assert ("write", ssl._TLSContentType.HANDSHAKE, ssl._TLSMessageType.CLIENT_HELLO) in [
        x[1:] for x in seen
    ]
    assert all(x[0] is s for x in seen)  # the SSLSocket, as with the stdlib


# -- 3: load_cert_chain ---------------------------------------------------------------------------


def test_load_cert_chain_errors_are_the_stdlib_s(
    engine: Engine, cert_files: CertFiles, tmp_path: Path
) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    with pytest.raises(FileNotFoundError) as info:
        ctx.load_cert_chain(tmp_path / "missing.pem")
    assert info.value.errno == errno.ENOENT
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ssl.SSLError, match="PEM lib"):
        ctx.load_cert_chain(bad)
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(ssl.SSLError, match="PEM lib"):
        ctx.load_cert_chain(empty)
    with pytest.raises(ssl.SSLError, match="key values mismatch"):
        ctx.load_cert_chain(cert_files.cert_file, cert_files.client_key_file)
    assert not ctx._unitls_chains  # nothing half-loaded


def _encrypted_key(files: CertFiles, password: bytes, directory: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(files.key_file.read_bytes(), None)
    path = directory / "encrypted-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return path


@pytest.mark.parametrize(
    "password",
    ["secret", b"secret", bytearray(b"secret"), lambda: "secret", lambda: b"secret"],
    ids=["str", "bytes", "bytearray", "callable-str", "callable-bytes"],
)
def test_password_protected_key(
    engine: Engine, cert_files: CertFiles, tmp_path: Path, password: Any
) -> None:
    key = _encrypted_key(cert_files, b"secret", tmp_path)
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(cert_files.cert_file, key, "wrong")
    ctx.load_cert_chain(cert_files.cert_file, key, password)
    with Server(ctx) as srv, srv.connect(_stdlib_client(cert_files)) as s:
        _talk(s)  # the engine got the key, decrypted in memory
    assert not srv.errors


def test_encrypted_key_without_password_is_refused(
    engine: Engine, cert_files: CertFiles, tmp_path: Path
) -> None:
    key = _encrypted_key(cert_files, b"secret", tmp_path)
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    with pytest.raises(UnsupportedSettingError, match="password"):
        ctx.load_cert_chain(cert_files.cert_file, key)


# -- 4: CERT_REQUIRED without CA certificates ------------------------------------------------------


def test_no_ca_fails_in_the_handshake(engine: Engine, cert_files: CertFiles) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)  # nothing loaded
    with Server(_stdlib_server(cert_files)) as srv:
        sock = ctx.wrap_socket(socket.socket(), server_hostname="localhost")  # wrapping works
        with sock, pytest.raises(ssl.SSLCertVerificationError) as info:
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", srv.port))
    assert info.value.verify_code == 20
    assert info.value.verify_message == "unable to get local issuer certificate"
    assert "certificate verify failed" in str(info.value)
    # The server learns why, as from an OpenSSL client.
    assert srv.errors and getattr(srv.errors[0], "reason", None) == "TLSV1_ALERT_UNKNOWN_CA"


def test_connect_ex_returns_the_error_code(engine: Engine) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)  # nothing loaded
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        with ctx.wrap_socket(socket.socket(), server_hostname="localhost") as sock:
            assert sock.connect_ex(reserved.getsockname()) == errno.ECONNREFUSED


def test_server_without_ca_rejects_client_certificates(
    engine: Engine, cert_files: CertFiles
) -> None:
    server = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    server.load_cert_chain(cert_files.cert_file, cert_files.key_file)
    server.verify_mode = ssl.CERT_REQUIRED  # and no CA to verify clients with
    client = _stdlib_client(cert_files)
    client.load_cert_chain(cert_files.client_cert_file, cert_files.client_key_file)
    with Server(server) as srv:
        with pytest.raises(ssl.SSLError) as info, srv.connect(client) as s:
            s.recv(10)  # TLS 1.3: the client learns it on its first read
    assert info.value.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert isinstance(srv.errors[0], ssl.SSLCertVerificationError)


# -- 5: the peer rejected our certificate -----------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_peer_rejecting_our_certificate_is_an_alert(
    engine: Engine, cert_files: CertFiles, version: ssl.TLSVersion
) -> None:
    server = _stdlib_server(cert_files)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cadata=CA.create("not the client's CA").cert_pem.decode())
    client = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    client.load_verify_locations(cert_files.ca_file)
    client.load_cert_chain(cert_files.client_cert_file, cert_files.client_key_file)
    client.maximum_version = version
    with Server(server) as srv:
        with pytest.raises(ssl.SSLError) as info, srv.connect(client) as s:
            s.recv(10)  # TLS 1.3: the alert is the first record after the client's handshake
    # SSLError naming the alert, not SSLCertVerificationError: this side verified nothing.
    assert type(info.value) is ssl.SSLError
    assert info.value.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert "alert unknown ca" in str(info.value)


# -- 6: arguments ----------------------------------------------------------------------------------


def test_read_arguments_like_ssl(bridge_client: SSLContext, plain_server: ssl.SSLContext) -> None:
    import ctypes

    with Server(plain_server) as srv, srv.connect(bridge_client) as s:
        with pytest.raises(ValueError, match="negative"):
            s.recv(-1)
        s.sendall(b"data")
        ints = array.array("I", [0, 0])
        assert s.recv_into(ints) == 4
        assert bytes(ints)[:4] == b"DATA"
        s.sendall(b"xy")
        chars = (ctypes.c_char * 8)()
        assert s.recv_into(chars) == 2
        assert chars.raw[:2] == b"XY"


def test_server_hostname_checked_at_wrap(bridge_client: SSLContext) -> None:
    bio = ssl.MemoryBIO
    with pytest.raises(TypeError):
        bridge_client.wrap_bio(bio(), bio(), server_hostname="example.org\x00evil.com")
    for bad in ("", ".example.org"):
        with pytest.raises(ValueError):
            bridge_client.wrap_bio(bio(), bio(), server_hostname=bad)


# -- 7: peer certificate chains ---------------------------------------------------------------------


def test_peer_chains(
    bridge_client: SSLContext, plain_server: ssl.SSLContext, cert_files: CertFiles
) -> None:
    import _ssl

    with Server(plain_server) as srv, srv.connect(bridge_client) as s:
        unverified = s._sslobj.get_unverified_chain()
        verified = s._sslobj.get_verified_chain()
        _talk(s)
    leaf = cert_files.leaf.cert_der
    assert [c.public_bytes(_ssl.ENCODING_DER) for c in unverified] == [leaf]
    assert [c.public_bytes(_ssl.ENCODING_DER) for c in verified] == [leaf, cert_files.ca.cert_der]
    assert verified[0] == unverified[0] and hash(verified[0]) == hash(unverified[0])
    assert verified[0] != verified[1]
    assert "CN=localhost" in repr(verified[0])
    pem = verified[0].public_bytes(_ssl.ENCODING_PEM)
    assert ssl.PEM_cert_to_DER_cert(pem) == leaf
    assert verified[0].get_info()["subject"] == ((("commonName", "localhost"),),)


# -- 8: ALPN without a common protocol --------------------------------------------------------------


def test_alpn_without_common_protocol_completes(
    bridge_client: SSLContext,
    bridge_server: SSLContext,
    plain_client: ssl.SSLContext,
    plain_server: ssl.SSLContext,
) -> None:
    bridge_client.set_alpn_protocols(["http/3.0"])
    bridge_server.set_alpn_protocols(["foo", "bar"])
    plain_client.set_alpn_protocols(["http/4.0"])
    plain_server.set_alpn_protocols(["baz"])
    selected: list[str | None] = []

    def action(conn: ssl.SSLSocket) -> None:
        selected.append(conn.selected_alpn_protocol())
        _echo(conn)

    for server, client in (
        (bridge_server, plain_client),
        (plain_server, bridge_client),
        (bridge_server, bridge_client),
    ):
        with Server(server, action) as srv, srv.connect(client) as s:
            assert s.selected_alpn_protocol() is None
            _talk(s)
        assert not srv.errors
    assert selected == [None, None, None]


# -- 9: one certificate chain per key type -------------------------------------------------------


@pytest.mark.parametrize("rsa_first", [False, True], ids=["ecdsa-first", "rsa-first"])
def test_rsa_and_ecdsa_chains(engine: Engine, tmp_path: Path, rsa_first: bool) -> None:
    ca = CA.create("dual CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    files = {}
    for kind in ("ec", "rsa"):
        issued = ca.issue("localhost", key_type=kind)
        files[kind] = (tmp_path / f"{kind}.pem", issued.cert_der)
        files[kind][0].write_bytes(issued.chain_pem + issued.key_pem)
    server = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    for kind in ("rsa", "ec") if rsa_first else ("ec", "rsa"):
        server.load_cert_chain(files[kind][0])
    server.load_cert_chain(files["ec"][0])  # the same key type again replaces, as in OpenSSL
    assert sorted(server._unitls_chains) == ["EC", "RSA"]
    for suite, kind in (
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "ec"),
        ("ECDHE-RSA-AES128-GCM-SHA256", "rsa"),
    ):
        client = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(tmp_path / "ca.pem")
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers(suite)  # the only key type this client accepts
        with Server(server) as srv, srv.connect(client) as s:
            assert s.getpeercert(binary_form=True) == files[kind][1]
            _talk(s)
        assert not srv.errors


def test_client_without_sni_gets_the_chain_for_the_address(engine: Engine, tmp_path: Path) -> None:
    ca = CA.create("address CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    by_name = ca.issue("other.example", key_type="rsa")
    by_address = ca.issue("127.0.0.1", key_type="ec")
    server = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    for i, issued in enumerate((by_name, by_address)):  # the first is the default
        (tmp_path / f"{i}.pem").write_bytes(issued.chain_pem + issued.key_pem)
        server.load_cert_chain(tmp_path / f"{i}.pem")
    client = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(tmp_path / "ca.pem")
    with Server(server) as srv, srv.connect(client, "127.0.0.1") as s:  # an IP: no SNI
        assert s.getpeercert(binary_form=True) == by_address.cert_der
        _talk(s)


# -- 10: SSLObject.context / SSLSocket.context ------------------------------------------------------


def test_context_is_the_bridge_context(
    engine: Engine, bridge_client: SSLContext, plain_server: ssl.SSLContext
) -> None:
    obj = bridge_client.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
    assert obj.context is bridge_client
    with Server(plain_server) as srv, srv.connect(bridge_client) as s:
        assert s.context is bridge_client and s._sslobj.context is bridge_client
        other = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
        s.context = other  # after the handshake: recorded, as with OpenSSL
        assert s.context is other and s._sslobj.context is other
        _talk(s)


# -- 11: SecurityWarning once per context -----------------------------------------------------------


def test_security_warning_once_per_context(engine: Engine, cert_files: CertFiles) -> None:
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Server(_stdlib_server(cert_files), connections=3) as srv:
            for _ in range(3):
                with srv.connect(ctx, hostname=None) as s:
                    _talk(s)
    security = [w for w in caught if issubclass(w.category, SecurityWarning)]
    assert len(security) == 1, [str(w.message) for w in security]
    assert "verify_mode = CERT_NONE" in str(security[0].message)


# -- settings the bridge used to refuse -------------------------------------------------------------


@pytest.fixture
def sni_files(tmp_path: Path) -> dict[str, Path]:
    ca = CA.create("sni test CA")
    out = {"ca": tmp_path / "ca.pem"}
    out["ca"].write_bytes(ca.cert_pem)
    for name in ("a.example", "b.example"):
        issued = ca.issue(name)
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(issued.chain_pem + issued.key_pem)
    return out


def _sni_server(engine: Engine, files: dict[str, Path], name: str) -> SSLContext:
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    ctx.load_cert_chain(files[name])
    return ctx


def test_sni_callback(engine: Engine, sni_files: dict[str, Path]) -> None:
    server = _sni_server(engine, sni_files, "a.example")
    other = _sni_server(engine, sni_files, "b.example")
    client = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(sni_files["ca"])
    calls: list[tuple[Any, ...]] = []

    def callback(sock: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
        calls.append((type(sock), name, ctx))
        if name == "b.example":
            sock.context = other
        if name == "refused.example":
            return ssl.ALERT_DESCRIPTION_ACCESS_DENIED
        return None

    server.sni_callback = callback
    assert server.sni_callback is callback
    with Server(server, connections=3) as srv:
        for name in ("a.example", "b.example"):
            with srv.connect(client, name) as s:
                assert s.getpeercert()["subject"] == ((("commonName", name),),)
                _talk(s)
        with pytest.raises(ssl.SSLError) as info:
            srv.connect(client, "refused.example")
    assert info.value.reason == "TLSV1_ALERT_ACCESS_DENIED"
    assert calls == [
        (ssl.SSLSocket, "a.example", server),
        (ssl.SSLSocket, "b.example", server),
        (ssl.SSLSocket, "refused.example", server),
    ]
    server.set_servername_callback(None)
    assert server.sni_callback is None


@pytest.mark.parametrize(
    ("result", "alert", "unraisable"),
    [
        (ZeroDivisionError, "SSLV3_ALERT_HANDSHAKE_FAILURE", ZeroDivisionError),
        ("not an alert", "TLSV1_ALERT_INTERNAL_ERROR", TypeError),
    ],
    ids=["raises", "wrong-type"],
)
def test_sni_callback_failures(
    engine: Engine, sni_files: dict[str, Path], result: Any, alert: str, unraisable: type
) -> None:
    server = _sni_server(engine, sni_files, "a.example")
    client = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(sni_files["ca"])

    def callback(sock: Any, name: str | None, ctx: ssl.SSLContext) -> Any:
        if result is ZeroDivisionError:
            return 1 / 0
        return result

    server.sni_callback = callback
    reported: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        with Server(server) as srv, pytest.raises(ssl.SSLError) as info:
            srv.connect(client, "a.example")
    finally:
        sys.unraisablehook = hook
    assert info.value.reason == alert
    assert [r.exc_type for r in reported] == [unraisable]
    # Reported against what failed, as _ssl.c does: the callback, or the value it returned.
    assert reported[0].object is (callback if result is ZeroDivisionError else result)


def test_sni_callback_on_memory_bios(engine: Engine, sni_files: dict[str, Path]) -> None:
    server = _sni_server(engine, sni_files, "a.example")
    other = _sni_server(engine, sni_files, "b.example")
    server.sni_callback = lambda obj, name, ctx: setattr(obj, "context", other)
    client = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(sni_files["ca"])
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="b.example")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    _bio_handshake(c, s, c_in, c_out, s_in, s_out)
    assert s.context is other
    assert c.getpeercert()["subject"] == ((("commonName", "b.example"),),)


def _bio_handshake(c: Any, s: Any, c_in: Any, c_out: Any, s_in: Any, s_out: Any) -> None:
    done = set()
    for _ in range(20):
        for side, obj in (("c", c), ("s", s)):
            if side not in done:
                try:
                    obj.do_handshake()
                    done.add(side)
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if len(done) == 2:
            return
    raise AssertionError("the handshake did not finish")


def test_shared_ciphers(bridge_server: SSLContext, cert_files: CertFiles) -> None:
    bridge_server.set_ciphers("ECDHE+AESGCM")
    client = _stdlib_client(cert_files)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE+AES256")
    shared: list[Any] = []

    def action(conn: ssl.SSLSocket) -> None:
        shared.append(conn.shared_ciphers())
        _echo(conn)

    with Server(bridge_server, action) as srv, srv.connect(client) as s:
        assert s.shared_ciphers() is None  # client side: None, as with OpenSSL
        _talk(s)
    names = {name for name, _version, _bits in shared[0]}
    assert "ECDHE-ECDSA-AES256-GCM-SHA384" in names
    assert not any("AES128" in n and "TLS_" not in n for n in names)  # the client offered none
    assert all(isinstance(bits, int) and bits >= 128 for _n, _v, bits in shared[0])


def test_tls_unique(engine: Engine, bridge_client: SSLContext, cert_files: CertFiles) -> None:
    server_side: list[Any] = []

    def action(conn: ssl.SSLSocket) -> None:
        server_side.append(conn.get_channel_binding("tls-unique"))
        _echo(conn)

    bridge_client.maximum_version = ssl.TLSVersion.TLSv1_2
    with Server(_stdlib_server(cert_files), action) as srv, srv.connect(bridge_client) as s:
        ours = s.get_channel_binding("tls-unique")
        _talk(s)
    if engine.name == "openssl":
        assert ours and ours == server_side[0]  # the same Finished message on both sides
    else:
        assert ours is None  # rustls does not expose the Finished messages


def test_keylog_filename(engine: Engine, cert_files: CertFiles, tmp_path: Path) -> None:
    """``keylog_filename`` logs this context's connections on every engine (the OpenSSL engine
    natively, the others through the engine's own key log), and no other context's."""
    log = tmp_path / "keys.log"
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.load_verify_locations(cert_files.ca_file)
    neighbour = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    neighbour.load_verify_locations(cert_files.ca_file)  # the same settings as ctx
    if engine.name == "nss":
        # NSS hands over TLS 1.3 secrets only: with TLS 1.2 allowed the key log is refused.
        ctx.keylog_filename = str(log)
        with pytest.raises(UnsupportedSettingError, match=r"TLS 1\.3"):
            ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
        ctx.keylog_filename = None
        log.unlink()
        for c in (ctx, neighbour):
            c.minimum_version = ssl.TLSVersion.TLSv1_3
    with Server(_stdlib_server(cert_files), connections=2) as srv:
        with srv.connect(ctx) as s:  # before the key log is set (OpenSSL: shared contexts)
            _talk(s)
        ctx.keylog_filename = str(log)
        assert ctx.keylog_filename == str(log)
        with srv.connect(neighbour) as s:
            _talk(s)
    assert log.read_text().count("\n") == 1  # the header only: not the neighbour's secrets
    with Server(_stdlib_server(cert_files)) as srv, srv.connect(ctx) as s:
        _talk(s)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("#")
    labels = {line.split()[0] for line in lines[1:]}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"} <= labels
    assert len({line.split()[1] for line in lines[1:]}) == 1  # one connection's client random


def test_keylog_filename_takes_a_bytes_path(
    engine: Engine, cert_files: CertFiles, tmp_path: Path
) -> None:
    """As the stdlib: any path-like, bytes included, reaches the engine's key log."""
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    ctx.load_verify_locations(cert_files.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # (NSS logs TLS 1.3 only)
    ctx.keylog_filename = os.fsencode(tmp_path / "keys.log")
    with Server(_stdlib_server(cert_files)) as srv, srv.connect(ctx) as s:
        _talk(s)
    assert "CLIENT_TRAFFIC_SECRET_0" in (tmp_path / "keys.log").read_text()


def test_session_resumption(engine: Engine, cert_files: CertFiles) -> None:
    client = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    client.load_verify_locations(cert_files.ca_file)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    server = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    server.load_cert_chain(cert_files.cert_file, cert_files.key_file)
    if engine.name != "openssl":
        # A stdlib session cannot be offered to another engine.
        stdlib = _stdlib_client(cert_files)
        stdlib.maximum_version = ssl.TLSVersion.TLSv1_2
        with Server(_stdlib_server(cert_files)) as srv, srv.connect(stdlib) as s:
            session = s.session
            _talk(s)
        with pytest.raises(TypeError, match="not a SSLSession"):
            client.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x", session=session)
        # The engine also resumes by itself; session_reused tells it, as with the stdlib.
        reused = []
        with Server(_stdlib_server(cert_files), connections=2) as srv:
            for _ in range(2):
                with srv.connect(client) as s:
                    _talk(s)
                    reused.append(s.session_reused)
        assert reused == [False, True]
        return
    with Server(server, connections=2) as srv:
        with srv.connect(client) as s:
            session = s.session
            assert session is not None and not s.session_reused
            _talk(s)
        with srv.connect(client, session=session) as s:
            assert s.session_reused and s.session == session
            _talk(s)
    stats = server.session_stats()
    assert stats["accept"] == 2 and stats["hits"] == 1
    other = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    other.load_verify_locations(cert_files.ca_file)
    with pytest.raises(ValueError, match="different SSLContext"):
        other.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x", session=session)


def _forget_sessions(ctx: SSLContext) -> None:
    """Empty the engine's own session cache behind a bridge client context (the OpenSSL
    engine's bridge keeps none: it resumes only what is offered, as the stdlib)."""
    pep = ctx._unitls_context(False).pep
    if pep is not None:
        pep.clear_session_cache()


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_an_offered_session_resumes_on_every_engine(
    engine: Engine, cert_files: CertFiles, version: str
) -> None:
    """``session=`` and ``SSLSocket.session = ...`` resume exactly the session offered, against
    a stdlib server. The engine's own cache is emptied before each connection, so only the
    offered session can make it resume."""
    client = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    client.load_verify_locations(cert_files.ca_file)
    client.maximum_version = client.minimum_version = getattr(ssl.TLSVersion, version)
    with Server(_stdlib_server(cert_files), connections=5) as srv:
        with srv.connect(client) as s:
            _talk(s)  # TLS 1.3 tickets come after the handshake, with the first data read
            assert not s.session_reused
            session = s.session
            assert session is not None and session.has_ticket
            assert s.session == session  # the same session each time it is asked for
        _forget_sessions(client)
        with srv.connect(client) as s:
            _talk(s)
            assert not s.session_reused  # nothing cached, nothing offered: a full handshake
        _forget_sessions(client)
        with srv.connect(client, session=session) as s:
            _talk(s)
            assert s.session_reused
            later = s.session
            assert later is not None and later.has_ticket  # (NSS, TLS 1.2: the one it resumed)
        _forget_sessions(client)
        # The setter before connecting, as ssl.py passes it on for an unconnected socket.
        sock = client.wrap_socket(socket.socket(), server_hostname="localhost")
        with sock:
            sock.session = later
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", srv.port))
            _talk(sock)
            assert sock.session_reused
            if engine.name != "openssl" or version == "TLSv1_2":  # (OpenSSL: new TLS 1.3 ids)
                assert sock.session == later and sock.session.id == session.id  # one session
            with pytest.raises(ValueError, match="after handshake"):
                sock.session = later
        # Another server name: the engines do not offer it (it was verified for "localhost");
        # OpenSSL, as in the stdlib, leaves that to the server.
        _forget_sessions(client)
        with srv.connect(client, "127.0.0.1", session=later) as s:
            _talk(s)
            assert engine.name == "openssl" or not s.session_reused
    assert not srv.errors
    other = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=engine)
    with pytest.raises(ValueError, match="different SSLContext"):
        other.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x", session=session)
    server = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    server.load_cert_chain(cert_files.cert_file, cert_files.key_file)
    with pytest.raises(TypeError, match="not a SSLSession"):
        server.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True, session=object())


@pytest.mark.parametrize("setting", ["default", "OP_NO_TICKET", "num_tickets=0"])
def test_session_tickets_follow_the_server_settings(
    engine: Engine, cert_files: CertFiles, setting: str
) -> None:
    server = SSLContext(ssl.PROTOCOL_TLS_SERVER, implementation=engine)
    server.load_cert_chain(cert_files.cert_file, cert_files.key_file)
    if setting == "OP_NO_TICKET":
        server.options |= ssl.OP_NO_TICKET
    elif setting == "num_tickets=0":
        server.num_tickets = 0
    client = _stdlib_client(cert_files)
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # the ticket comes in the handshake
    with Server(server) as srv, srv.connect(client) as s:
        _talk(s)
        assert s.session is not None
        # num_tickets counts TLS 1.3 tickets (OpenSSL); engines without that knob stop all.
        # The NSS engine issues no TLS 1.2 tickets at all (NSS's ticket key is process-wide).
        expected = (setting == "default" and engine.name != "nss") or (
            setting == "num_tickets=0" and engine.name == "openssl"
        )
        assert s.session.has_ticket == expected
