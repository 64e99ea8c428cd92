"""The engine-independent API: names, configuration values, key material objects, registry."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import unitls
from unitls import (
    Certificate,
    CipherSuite,
    ConfigurationError,
    NextProtocol,
    PrivateKey,
    SigningChain,
    TLSClientConfiguration,
    TLSServerConfiguration,
    TLSVersion,
    TrustStore,
)
from unitls._certgen import CA, Issued

SRC = Path(unitls.__file__).resolve().parents[1]

# The names PEP 748 defines, plus the additions unitls documents.
PEP_NAMES = [
    "TLSClientConfiguration",
    "TLSServerConfiguration",
    "ClientContext",
    "ServerContext",
    "TLSSocket",
    "TLSBuffer",
    "TLSImplementation",
    "CipherSuite",
    "NextProtocol",
    "TLSVersion",
    "DEFAULT_CIPHER_LIST",
    "TLSError",
    "WantReadError",
    "WantWriteError",
    "RaggedEOF",
    "ConfigurationError",
    "Certificate",
    "PrivateKey",
    "TrustStore",
    "SigningChain",
]
EXTRA_NAMES = [
    "CertificateVerificationError",
    "HandshakeClosedError",
    "ProtocolError",
    "TLSConnectionError",
    "TLSTimeoutError",
    "get_implementation",
    "implementations",
    "upgrade_socket",
    "ENGINE_ENV",
]


@pytest.fixture(scope="module")
def leaf(ca: CA) -> Issued:
    return ca.issue("api.example")


@pytest.fixture(scope="module")
def chain(leaf: Issued) -> SigningChain:
    return leaf.signing_chain()


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PEP_NAMES + EXTRA_NAMES)
def test_public_name_importable(name: str) -> None:
    assert getattr(unitls, name) is not None
    assert name in unitls.__all__


def test_all_is_importable() -> None:
    for name in unitls.__all__:
        assert hasattr(unitls, name), name


def test_import_loads_no_engine() -> None:
    code = "import sys, unitls; print('ssl' in sys.modules, 'unitls._native' in sys.modules)"
    out = _run_python(code)
    assert out.split() == ["False", "False"]


def test_error_hierarchy() -> None:
    for name in [
        "WantReadError",
        "WantWriteError",
        "RaggedEOF",
        "ConfigurationError",
        "CertificateVerificationError",
        "HandshakeClosedError",
        "ProtocolError",
        "TLSConnectionError",
        "TLSTimeoutError",
    ]:
        assert issubclass(getattr(unitls, name), unitls.TLSError), name
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(unitls.TLSConnectionError, ConnectionError)
    assert issubclass(unitls.TLSTimeoutError, TimeoutError)
    err = unitls.CertificateVerificationError("certificate has expired")
    assert err.reason == "certificate has expired"
    assert "certificate has expired" in str(err)


def test_default_cipher_list() -> None:
    assert all(isinstance(c, CipherSuite) for c in unitls.DEFAULT_CIPHER_LIST)
    assert set(unitls.DEFAULT_TLS13_CIPHER_LIST) <= set(unitls.DEFAULT_CIPHER_LIST)
    assert set(unitls.DEFAULT_TLS12_CIPHER_LIST) <= set(unitls.DEFAULT_CIPHER_LIST)


# -- configurations ----------------------------------------------------------------------------


def _full_client(chain: SigningChain, store: TrustStore) -> TLSClientConfiguration:
    return TLSClientConfiguration(
        certificate_chain=chain,
        ciphers=[CipherSuite.TLS_AES_128_GCM_SHA256, 0xC02F],
        inner_protocols=[NextProtocol.H2, b"custom/1"],
        lowest_supported_version=TLSVersion.TLSv1_2,
        highest_supported_version=TLSVersion.TLSv1_3,
        trust_store=store,
    )


def test_client_config_defaults() -> None:
    cfg = TLSClientConfiguration()
    assert cfg.certificate_chain is None
    assert cfg.ciphers is None
    assert tuple(cfg.inner_protocols) == ()
    assert cfg.lowest_supported_version is None
    assert cfg.highest_supported_version is None
    assert cfg.trust_store is None


@pytest.mark.parametrize(
    "attr",
    [
        "certificate_chain",
        "ciphers",
        "inner_protocols",
        "lowest_supported_version",
        "highest_supported_version",
        "trust_store",
        "_ciphers",
        "new_attribute",
    ],
)
def test_configs_immutable(attr: str, chain: SigningChain, ca: CA) -> None:
    for cfg in (
        _full_client(chain, ca.trust_store()),
        TLSServerConfiguration(certificate_chain=[chain]),
    ):
        with pytest.raises(AttributeError):
            setattr(cfg, attr, None)


def test_values_undeletable(chain: SigningChain, ca: CA) -> None:
    # Deleting an attribute must fail like setting one (AttributeError, not a TypeError).
    values: list[object] = [
        _full_client(chain, ca.trust_store()),
        TLSServerConfiguration(certificate_chain=[chain]),
        chain,
        chain.leaf[0],
        ca.trust_store(),
    ]
    for value in values:
        for attr in ("_buffer", "_chain", "new_attribute"):
            with pytest.raises(AttributeError):
                delattr(value, attr)


def test_config_equality_and_hash(chain: SigningChain, ca: CA) -> None:
    a = _full_client(chain, ca.trust_store())
    b = _full_client(chain, ca.trust_store())
    assert a is not b
    assert a == b
    assert hash(a) == hash(b)
    assert a != TLSClientConfiguration()
    assert TLSClientConfiguration() == TLSClientConfiguration()
    s1 = TLSServerConfiguration(certificate_chain=[chain], inner_protocols=[b"h2"])
    s2 = TLSServerConfiguration(certificate_chain=(chain,), inner_protocols=(NextProtocol.H2,))
    assert s1 == s2 and hash(s1) == hash(s2)
    # Client and server configurations never compare equal, even with the same fields.
    assert TLSClientConfiguration(certificate_chain=chain) != s1


def test_configs_as_dict_keys(chain: SigningChain, ca: CA) -> None:
    cache: dict[Any, str] = {}
    cache[_full_client(chain, ca.trust_store())] = "client"
    cache[TLSServerConfiguration(certificate_chain=[chain])] = "server"
    assert cache[_full_client(chain, ca.trust_store())] == "client"
    assert cache[TLSServerConfiguration(certificate_chain=[chain])] == "server"
    assert len({TLSClientConfiguration(), TLSClientConfiguration()}) == 1


def test_config_sequences_are_tuples(chain: SigningChain) -> None:
    ciphers: list[CipherSuite | int] = [CipherSuite.TLS_AES_256_GCM_SHA384, 0xC02F]
    protos: list[NextProtocol | bytes] = [NextProtocol.HTTP1, b"h2"]
    chains = [chain]
    cfg = TLSServerConfiguration(certificate_chain=chains, ciphers=ciphers, inner_protocols=protos)
    assert isinstance(cfg.ciphers, tuple)
    assert isinstance(cfg.inner_protocols, tuple)
    assert isinstance(cfg.certificate_chain, tuple)
    # Mutating the caller's lists must not reach into the configuration.
    ciphers.append(0x1303)
    protos.append(b"x")
    chains.clear()
    assert len(cfg.ciphers) == 2
    assert len(cfg.inner_protocols) == 2
    assert len(cfg.certificate_chain) == 1


def test_config_normalises_known_values() -> None:
    cfg = TLSClientConfiguration(ciphers=[0x1301, 0xFFFE], inner_protocols=[b"h2", b"zz/9"])
    assert cfg.ciphers == (CipherSuite.TLS_AES_128_GCM_SHA256, 0xFFFE)
    assert cfg.inner_protocols == (NextProtocol.H2, b"zz/9")


def test_config_pickle_roundtrip(chain: SigningChain, ca: CA) -> None:
    for cfg in (
        _full_client(chain, ca.trust_store()),
        TLSServerConfiguration(certificate_chain=[chain]),
    ):
        assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_config_repr_hides_key(leaf: Issued, chain: SigningChain) -> None:
    for cfg in (
        TLSClientConfiguration(certificate_chain=chain),
        TLSServerConfiguration(certificate_chain=[chain]),
    ):
        text = repr(cfg)
        _assert_no_key_material(text, leaf)


def test_lowest_above_highest() -> None:
    with pytest.raises(ConfigurationError, match=r"lowest_supported_version TLSv1_3 .*TLSv1_2"):
        TLSClientConfiguration(
            lowest_supported_version=TLSVersion.TLSv1_3,
            highest_supported_version=TLSVersion.TLSv1_2,
        )
    with pytest.raises(ConfigurationError):
        TLSClientConfiguration(
            lowest_supported_version=TLSVersion.MAXIMUM_SUPPORTED,
            highest_supported_version=TLSVersion.TLSv1_2,
        )


@pytest.mark.parametrize("proto", [b"", b"x" * 256])
def test_alpn_length(proto: bytes, chain: SigningChain) -> None:
    with pytest.raises(ConfigurationError, match="ALPN") as info:
        TLSClientConfiguration(inner_protocols=[proto])
    assert str(len(proto)) in str(info.value)
    with pytest.raises(ConfigurationError, match="ALPN"):
        TLSServerConfiguration(certificate_chain=[chain], inner_protocols=[b"h2", proto])


def test_alpn_limits_ok() -> None:
    assert TLSClientConfiguration(inner_protocols=[b"x", b"y" * 255]).inner_protocols == (
        b"x",
        b"y" * 255,
    )


@pytest.mark.parametrize("chains", [None, [], ()])
def test_server_config_without_chains(chains: Any) -> None:
    with pytest.raises(ConfigurationError, match="at least one SigningChain"):
        TLSServerConfiguration(certificate_chain=chains)


def test_cipher_validation() -> None:
    with pytest.raises(ConfigurationError, match="16-bit"):
        TLSClientConfiguration(ciphers=[0x10000])
    with pytest.raises(ConfigurationError, match="empty"):
        TLSClientConfiguration(ciphers=[])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ciphers": "TLS_AES_128_GCM_SHA256"}, "ciphers"),
        ({"ciphers": ["TLS_AES_128_GCM_SHA256"]}, "cipher suite"),
        ({"ciphers": [True]}, "cipher suite"),
        ({"inner_protocols": "h2"}, "inner_protocols"),
        ({"inner_protocols": ["h2"]}, "inner protocol"),
        ({"lowest_supported_version": "TLSv1.2"}, "lowest_supported_version"),
        ({"highest_supported_version": 0x0304}, "highest_supported_version"),
        ({"trust_store": b"-----BEGIN CERTIFICATE-----"}, "trust_store"),
    ],
)
def test_wrong_types(kwargs: dict[str, Any], message: str, chain: SigningChain) -> None:
    with pytest.raises(TypeError, match=message):
        TLSClientConfiguration(**kwargs)
    with pytest.raises(TypeError, match=message):
        TLSServerConfiguration(certificate_chain=[chain], **kwargs)


def test_wrong_chain_types(chain: SigningChain, leaf: Issued) -> None:
    with pytest.raises(TypeError, match="SigningChain"):
        TLSClientConfiguration(certificate_chain=[chain])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list"):
        TLSServerConfiguration(certificate_chain=chain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SigningChain"):
        TLSServerConfiguration(certificate_chain=[leaf.certificate])  # type: ignore[list-item]


# -- certificates, keys, trust stores, signing chains -------------------------------------------


def test_certificate_value_semantics(leaf: Issued, tmp_path: Path) -> None:
    a = Certificate.from_buffer(leaf.cert_pem)
    b = Certificate.from_buffer(bytearray(leaf.cert_pem))  # type: ignore[arg-type]
    assert a == b and hash(a) == hash(b)
    assert a.buffer == leaf.cert_pem and a.path is None and a.id is None
    assert a != Certificate.from_buffer(leaf.cert_der)
    f = tmp_path / "c.pem"
    fa, fb = Certificate.from_file(f), Certificate.from_file(str(f))
    assert fa == fb and fa.path == str(f) and fa.buffer is None
    assert Certificate.from_id(b"x").id == b"x"
    assert fa != a
    assert {a, b, fa, fb} == {a, fa}
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a._buffer = b"x"
    with pytest.raises(AttributeError):
        a.buffer = b"x"  # type: ignore[misc]


def test_object_argument_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        Certificate.from_buffer(b"")
    with pytest.raises(TypeError, match="str"):
        Certificate.from_buffer("-----BEGIN CERTIFICATE-----")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be empty"):
        Certificate()
    with pytest.raises(ValueError, match="cannot be empty"):
        PrivateKey()
    with pytest.raises(ValueError, match="one of"):
        Certificate(buffer=b"x", path="/x")
    with pytest.raises(TypeError):
        TrustStore.from_file(42)  # type: ignore[arg-type]


def test_private_key_repr_redacted(leaf: Issued, tmp_path: Path) -> None:
    for data in (leaf.key_pem, leaf.key_der):
        key = PrivateKey.from_buffer(data)
        _assert_no_key_material(repr(key), leaf)
        _assert_no_key_material(str(key), leaf)
        assert str(len(data)) not in repr(key)
        chain = SigningChain((leaf.certificate, key))
        _assert_no_key_material(repr(chain), leaf)
    assert repr(PrivateKey.from_file(tmp_path / "k.pem")).startswith("PrivateKey.from_file(")
    assert PrivateKey.from_buffer(leaf.key_pem) == PrivateKey.from_buffer(leaf.key_pem)


def test_trust_store_values(ca: CA) -> None:
    assert TrustStore.system() == TrustStore.system()
    assert TrustStore.system().is_system
    assert hash(TrustStore.system()) == hash(TrustStore())
    s = ca.trust_store()
    assert not s.is_system and s == TrustStore.from_buffer(ca.cert_pem)
    assert s != TrustStore.system()
    # Different types with the same source are different values.
    assert Certificate.from_buffer(ca.cert_pem) != s


def test_signing_chain_values(leaf: Issued, ca: CA) -> None:
    inter = Certificate.from_buffer(ca.cert_pem)
    a = SigningChain((leaf.certificate, leaf.private_key), [inter])
    b = SigningChain((leaf.certificate, leaf.private_key), (inter,))
    assert a == b and hash(a) == hash(b)
    assert isinstance(a.chain, tuple) and a.chain == (inter,)
    assert a.leaf == (leaf.certificate, leaf.private_key)
    assert a != SigningChain((leaf.certificate, leaf.private_key))
    assert SigningChain((leaf.certificate, None)).leaf[1] is None
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a._chain = ()
    with pytest.raises(TypeError):
        SigningChain(leaf.certificate)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SigningChain((leaf.cert_pem, None))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SigningChain((leaf.certificate, leaf.key_pem))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SigningChain((leaf.certificate, None), [ca.cert_pem])  # type: ignore[list-item]


# -- protocols ---------------------------------------------------------------------------------


class _DuckBuffer:
    """Has every TLSBuffer member, so the runtime-checkable protocol accepts it."""

    context = None
    negotiated_tls_version = None

    def read(self, amt: int, buffer: Any = None) -> bytes:
        return b""

    def write(self, buf: Any) -> int:
        return 0

    def do_handshake(self) -> None:
        pass

    def cipher(self) -> None:
        return None

    def negotiated_protocol(self) -> None:
        return None

    def shutdown(self) -> None:
        pass

    def process_incoming(self, data: bytes) -> None:
        pass

    def incoming_bytes_buffered(self) -> int:
        return 0

    def process_outgoing(self, n: int) -> bytes:
        return b""

    def outgoing_bytes_buffered(self) -> int:
        return 0

    def getpeercert(self) -> None:
        return None


def test_protocols_runtime_checkable() -> None:
    for proto in (unitls.TLSBuffer, unitls.TLSSocket, unitls.ClientContext, unitls.ServerContext):
        assert not isinstance(object(), proto)
    assert isinstance(_DuckBuffer(), unitls.TLSBuffer)
    assert not isinstance(_DuckBuffer(), unitls.TLSSocket)


# -- registry ----------------------------------------------------------------------------------


_FAKE_ENGINE = textwrap.dedent(
    """
    import unitls

    class Client:
        def __init__(self, configuration):
            self.configuration = configuration

    class Server(Client):
        pass

    def validate(config):
        pass

    IMPLEMENTATION = unitls.TLSImplementation(Client, Server, validate, name="fake")
    OTHER = unitls.TLSImplementation(Client, Server, validate, name="other")
    NOT_ONE = object()
    """
)


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    mod = "unitls_test_fake_engine"
    (tmp_path / f"{mod}.py").write_text(_FAKE_ENGINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, mod, raising=False)
    return mod


def test_get_implementation_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(unitls.ENGINE_ENV, raising=False)
    assert unitls.ENGINE_ENV == "UNITLS_ENGINE"
    if "openssl" in unitls.implementations():
        impl = unitls.get_implementation()
        assert impl.name == "openssl"
        assert isinstance(impl, unitls.TLSImplementation)
    else:
        with pytest.raises(ConfigurationError, match="openssl"):
            unitls.get_implementation()


def test_get_implementation_env(monkeypatch: pytest.MonkeyPatch, fake_engine: str) -> None:
    monkeypatch.setenv("UNITLS_ENGINE", fake_engine)
    assert unitls.get_implementation().name == "fake"
    monkeypatch.setenv("UNITLS_ENGINE", f"{fake_engine}:OTHER")
    assert unitls.get_implementation().name == "other"
    # An explicit name wins over the environment.
    assert unitls.get_implementation(fake_engine).name == "fake"
    monkeypatch.setenv("UNITLS_ENGINE", "no_such_engine_xyz")
    with pytest.raises(ConfigurationError, match="no_such_engine_xyz"):
        unitls.get_implementation()


def test_get_implementation_third_party(fake_engine: str) -> None:
    impl = unitls.get_implementation(f"{fake_engine}:IMPLEMENTATION")
    assert impl.name == "fake"
    cfg = TLSClientConfiguration()
    assert impl.client_context(cfg).configuration is cfg
    with pytest.raises(ConfigurationError, match="not a TLSImplementation"):
        unitls.get_implementation(f"{fake_engine}:NOT_ONE")
    with pytest.raises(ConfigurationError, match="not a TLSImplementation"):
        unitls.get_implementation(f"{fake_engine}:MISSING")


def test_get_implementation_unknown() -> None:
    with pytest.raises(ConfigurationError, match="unknown TLS engine 'nonesuch'"):
        unitls.get_implementation("nonesuch")
    with pytest.raises(TypeError):
        unitls.get_implementation("")


def test_implementations_lists_usable() -> None:
    names = unitls.implementations()
    assert set(names) <= {"openssl", "rustls", "nss"}
    for name in names:
        impl = unitls.get_implementation(name)
        assert impl.name == name
        assert isinstance(impl.client_context, type)
        assert isinstance(impl.server_context, type)


# -- insecure ----------------------------------------------------------------------------------


def test_insecure_import_does_not_warn() -> None:
    out = _run_python(
        "import warnings; warnings.simplefilter('error');"
        "import unitls.insecure; from unitls.insecure import InsecureConfiguration;"
        "print('ok')"
    )
    assert out.strip() == "ok"


def test_insecure_configuration_warns() -> None:
    from unitls.insecure import InsecureConfiguration, SecurityWarning

    with pytest.warns(SecurityWarning, match="testing"):
        a = InsecureConfiguration(disable_verification=True)
    assert a.disable_verification and a.disable_hostname_check
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        b = InsecureConfiguration(disable_verification=True)
        c = InsecureConfiguration(disable_hostname_check=True)
    assert a == b and hash(a) == hash(b) and a != c
    assert not c.disable_verification and c.disable_hostname_check
    with pytest.raises(AttributeError):
        a._disable_verification = False


# -- helpers -----------------------------------------------------------------------------------


def _assert_no_key_material(text: str, leaf: Issued) -> None:
    body = b"".join(leaf.key_pem.splitlines()[1:-1]).decode()
    for i in range(0, len(body) - 16, 16):
        assert body[i : i + 16] not in text
    assert leaf.key_der.hex()[:32] not in text
    assert repr(leaf.key_der)[2:30] not in text


def _run_python(code: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.pop("UNITLS_ENGINE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_conformance_suite_runs_against_a_third_party_implementation(tmp_path: Path) -> None:
    """``--tls-implementation module`` points the suite at any TLSImplementation."""
    (tmp_path / "thirdparty_tls.py").write_text(
        "import unitls\n"
        "from unitls.openssl import IMPLEMENTATION as _base\n"
        "IMPLEMENTATION = unitls.TLSImplementation(\n"
        "    _base.client_context, _base.server_context, _base.validate_config, name='thirdparty'\n"
        ")\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tmp_path), str(SRC), env.get("PYTHONPATH")])
    )
    tests = Path(__file__).resolve().parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tests / "test_conformance_buffer.py"),
            "-k",
            "handshake_and_data",
            "--tls-implementation",
            "thirdparty_tls",
            "-rA",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tests.parent),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "thirdparty_tls" in proc.stdout and "1 passed" in proc.stdout, proc.stdout
