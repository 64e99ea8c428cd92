"""The ``unitls`` command line tool, run for real in subprocesses against local servers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import unitls
from unitls._certgen import CA

SRC = str(Path(unitls.__file__).resolve().parents[1])
ENGINES = unitls.implementations()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    env.pop("UNITLS_DEBUG", None)
    env.pop("UNITLS_ENGINE", None)
    return env


def run_cli(
    *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "unitls", *args],
        input=input.decode() if input is not None else None,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for w in words:
        assert w.lower() in errors[0].lower(), errors[0]


class Server:
    """``unitls serve --port 0 --once`` in a subprocess, its port read from its first line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "unitls", "serve", "--port", "0", "--once", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        self._started = threading.Event()
        # Reader threads own the pipes (mixing readline() and communicate() loses buffered text).
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()
        if not self._started.wait(30) or not self.lines:
            self.kill()
            raise AssertionError(f"serve did not start: {''.join(self.err)}")
        match = re.search(r"://(?:\[[^\]]+\]|[^:/]+):(\d+)/", self.lines[0])
        assert match, self.lines[0]
        self.port = int(match.group(1))

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            if sink is self.lines:
                self._started.set()
        self._started.set()

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._readers:
            t.join(10)
        err = "".join(self.err)
        assert "Traceback" not in err, err
        return self.proc.returncode, "".join(self.lines), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def get_once(
    tmp_path: Path, serve_args: list[str], connect_args: list[str]
) -> tuple[subprocess.CompletedProcess[str], tuple[int, str, str]]:
    """``unitls serve --once`` with ``serve_args`` and one HTTP/1.0 GET from ``unitls connect``
    with ``connect_args``: (the client's process, the server's (code, stdout, stderr))."""
    ca_file = str(tmp_path / "ca.pem")
    server = Server(*serve_args, "--write-ca", ca_file)
    try:
        proc = run_cli(
            "connect",
            f"127.0.0.1:{server.port}",
            *connect_args,
            "--cafile",
            ca_file,
            "--timeout",
            "20",
            input=b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n",
        )
        return proc, server.finish()
    finally:
        server.kill()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """A CA, a server cert/key and a client cert/key as PEM files, plus a mismatched key."""
    ca = CA.create("unitls cli test CA")
    server = ca.issue("localhost", "127.0.0.1", "::1")
    client = ca.issue("cli client", server=False, client=True)
    other = ca.issue("other")
    out = {}
    for name, data in {
        "ca": ca.cert_pem,
        "server_cert": server.chain_pem,
        "server_key": server.key_pem,
        "client_cert": client.chain_pem,
        "client_key": client.key_pem,
        "other_key": other.key_pem,
    }.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(data)
        out[name] = str(path)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- help, demo, engines -----------------------------------------------------------------------


def test_help_documents_exit_codes() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("demo", "connect", "serve", "engines", "bench"):
        assert cmd in proc.stdout
    assert "exit codes" in proc.stdout and "verification failed" in proc.stdout
    proc = run_cli("connect", "--help")
    assert proc.returncode == 0 and "exit codes" in proc.stdout


def test_no_command_and_unknown_command() -> None:
    assert_one_line_error(run_cli(), 2, "command")
    assert_one_line_error(run_cli("frobnicate"), 2, "frobnicate")


def test_demo_every_pair() -> None:
    proc = run_cli("demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for client in ENGINES:
        for server in ENGINES:
            for mode in ("socket", "buffer"):
                pattern = (
                    rf"^{client}\s+{server}\s+{mode}\s+TLSv1\.3\s+\S+\s+h2\s+.*CN=localhost\s+ok$"
                )
                assert re.search(pattern, proc.stdout, re.M), (client, server, mode, proc.stdout)
    n = 2 * len(ENGINES) ** 2
    assert f"{n}/{n} pairs ok" in proc.stdout


def test_demo_mutual() -> None:
    proc = run_cli("demo", "--mutual")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("CN=unitls demo client") >= 2 * len(ENGINES) ** 2


def test_engines_table() -> None:
    proc = run_cli("engines")
    assert proc.returncode == 0, proc.stderr
    for name in ENGINES:
        assert re.search(rf"^{name}\s+\S", proc.stdout, re.M)
    assert "TLS 1.3" in proc.stdout and "mutual TLS" in proc.stdout
    assert "TLS_AES_128_GCM_SHA256" in proc.stdout
    assert re.search(r"^x25519\s+yes", proc.stdout, re.M)


def test_engines_json() -> None:
    proc = run_cli("engines", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    by_name = {e["name"]: e for e in data["engines"]}
    for name in ENGINES:
        entry = by_name[name]
        assert entry["available"] is True
        assert entry["library_version"] != "?"
        assert entry["features"]["TLS 1.3"]["supported"] is True
        assert entry["features"]["ALPN"]["supported"] is True
        assert isinstance(entry["cipher_suites"], dict)
        assert entry["groups"]["x25519"]["supported"] is True
        assert entry["groups"]["secp256r1"]["supported"] is True
        # The hybrid where the engine has ML-KEM (rustls; OpenSSL from 3.5), never on NSS 3.87.
        if name == "rustls":
            assert entry["groups"]["X25519MLKEM768"]["supported"] is True
        if name == "nss":
            assert entry["groups"]["X25519MLKEM768"]["supported"] is False


# -- serve + connect ----------------------------------------------------------------------------


@pytest.mark.parametrize("srv_engine", ENGINES)
@pytest.mark.parametrize("cli_engine", ENGINES)
def test_serve_once_and_connect(tmp_path: Path, srv_engine: str, cli_engine: str) -> None:
    proc, (code, out, err) = get_once(
        tmp_path,
        ["--engine", srv_engine, "--alpn", "http/1.1"],
        ["--engine", cli_engine, "--alpn", "http/1.1"],
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"TLS version:\s+TLSv1\.3", proc.stdout)
    assert re.search(r"cipher:\s+TLS_\w+", proc.stdout)
    group = "X25519MLKEM768" if srv_engine == cli_engine == "rustls" else "x25519"
    assert re.search(rf"key exchange:\s+{group}\n", proc.stdout)
    assert f"key exchange {group}," in out
    assert re.search(r"ALPN:\s+http/1\.1", proc.stdout)
    assert re.search(r"subject:\s+CN=localhost", proc.stdout)
    assert "DNS:localhost" in proc.stdout and "IP:127.0.0.1" in proc.stdout
    assert "HTTP/1.0 200 OK" in proc.stdout
    assert f"<td>{srv_engine}</td>" in proc.stdout
    assert code == 0, err
    assert "CA certificate written to" in out and "TLSv1.3" in out


def test_serve_and_connect_choose_groups(tmp_path: Path, engine: Any) -> None:
    """--groups on both ends: the server accepts secp384r1 and x25519, the client offers
    secp384r1 first; both report it."""
    proc, (code, out, err) = get_once(
        tmp_path,
        ["--engine", engine.name, "--groups", "secp384r1,x25519"],
        ["--engine", engine.name, "--groups", " SECP384R1 , secp256r1"],
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"key exchange:\s+secp384r1\n", proc.stdout)
    assert "key exchange secp384r1," in out
    assert code == 0, err


@pytest.mark.parametrize("command", ["connect", "serve"])
def test_bad_groups_are_one_line_usage_errors(command: str) -> None:
    where = ["127.0.0.1:9"] if command == "connect" else ["--port", "0", "--once"]
    assert_one_line_error(run_cli(command, *where, "--groups", ","), 2, "at least one group")
    assert_one_line_error(run_cli(command, *where, "--groups", "x25520"), 2, "unknown key exchange")
    bad = run_cli(command, *where, "--engine", "openssl", "--groups", "X25519MLKEM768")
    assert_one_line_error(bad, 2, "cannot do the key exchange group")


@pytest.mark.parametrize("srv_engine", ENGINES)
@pytest.mark.parametrize("cli_engine", ENGINES)
def test_connect_prints_the_peer_chain(tmp_path: Path, srv_engine: str, cli_engine: str) -> None:
    root = CA.create("cli test root")
    inter = root.intermediate("cli test intermediate")
    leaf = inter.issue("localhost", "127.0.0.1")
    (tmp_path / "chain.pem").write_bytes(leaf.chain_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    server = Server(
        "--engine",
        srv_engine,
        "--cert",
        str(tmp_path / "chain.pem"),
        "--key",
        str(tmp_path / "key.pem"),
    )
    try:
        proc = run_cli(
            "connect",
            f"127.0.0.1:{server.port}",
            "--engine",
            cli_engine,
            "--cafile",
            str(tmp_path / "root.pem"),
            "--timeout",
            "20",
            input=b"GET / HTTP/1.0\r\n\r\n",
        )
        server.finish()
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stderr
    assert "Peer certificate 0 (leaf)" in proc.stdout
    assert "Peer certificate 1 (chain certificate 1)" in proc.stdout
    assert re.search(r"subject:\s+CN=cli test intermediate", proc.stdout)
    assert re.search(r"issuer:\s+CN=cli test root", proc.stdout)


def test_serve_echo_tls12_ipv6_style_target(tmp_path: Path) -> None:
    ca_file = str(tmp_path / "ca.pem")
    server = Server("--echo", "--write-ca", ca_file)
    try:
        proc = run_cli(
            "connect",
            f"localhost:{server.port}",
            "--cafile",
            ca_file,
            "--tls-max",
            "1.2",
            input=b"hello echo\n",
        )
        code, _, err = server.finish()
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"TLS version:\s+TLSv1\.2", proc.stdout)
    assert proc.stdout.endswith("hello echo\n")
    assert code == 0, err


def test_mutual_tls_with_files(files: dict[str, str]) -> None:
    server = Server(
        "--cert", files["server_cert"], "--key", files["server_key"], "--client-ca", files["ca"]
    )
    try:
        proc = run_cli(
            "connect",
            f"127.0.0.1:{server.port}",
            "--cafile",
            files["ca"],
            "--cert",
            files["client_cert"],
            "--key",
            files["client_key"],
            input=b"GET / HTTP/1.0\r\n\r\n",
        )
        code, out, err = server.finish()
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stderr
    assert "CN=cli client" in proc.stdout  # the page shows the client certificate
    assert code == 0, err
    assert "client certificate CN=cli client" in out


def test_connect_untrusted_server_is_a_verification_error(tmp_path: Path) -> None:
    server = Server()
    try:
        proc = run_cli("connect", f"127.0.0.1:{server.port}", "--timeout", "20")
        server.finish()
    finally:
        server.kill()
    assert_one_line_error(proc, 3, "certificate verification failed")


def test_connect_name_mismatch_is_a_verification_error(tmp_path: Path) -> None:
    proc, _ = get_once(tmp_path, [], ["--servername", "wrong.example"])
    assert_one_line_error(proc, 3, "certificate verification failed")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("eng", ENGINES)
def test_ipv6(tmp_path: Path, eng: str) -> None:
    ca_file = str(tmp_path / "ca.pem")
    server = Server("--host", "::1", "--engine", eng, "--write-ca", ca_file)
    try:
        assert "[::1]" in server.lines[0]
        proc = run_cli("connect", f"[::1]:{server.port}", "--cafile", ca_file, "--engine", eng)
        code, _, err = server.finish()
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stderr
    assert "Connected to [::1]" in proc.stdout
    assert code == 0, err


def test_connect_insecure_warns(tmp_path: Path) -> None:
    server = Server()
    try:
        proc = run_cli("connect", f"127.0.0.1:{server.port}", "--insecure")
        server.finish()
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr
    assert "verified:      no" in proc.stdout


def _default_interrupt_signals() -> None:
    # In the child, before exec: a shell's foreground command starts with SIGINT and SIGQUIT at
    # their defaults. Twice in full suite runs the child started with both ignored (its
    # /proc/PID/status), the mark of a system() call in progress in this process at fork
    # time, and Python then installs no KeyboardInterrupt handler; the caller was not found.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def test_serve_handles_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "unitls", "serve", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_default_interrupt_signals,
    )
    try:
        assert proc.stdout is not None
        assert "Listening on" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err


# -- failure paths: one line on stderr, a distinct exit code, no traceback ----------------------


@pytest.mark.parametrize(
    "args",
    [
        ["connect", "127.0.0.1:443", "--engine", "nosuchengine"],
        ["serve", "--engine", "nosuchengine"],
        ["bench", "--engine", "nosuchengine"],
    ],
)
def test_unknown_engine(args: list[str]) -> None:
    assert_one_line_error(run_cli(*args), 2, "nosuchengine")


@pytest.mark.parametrize(
    "args",
    [
        ["connect", "127.0.0.1:99999"],
        ["connect", "127.0.0.1:http"],
        ["connect", "[::1:443"],
        ["serve", "--port", "70000"],
        ["serve", "--port", "-1"],
        ["connect", "localhost", "--tls-min", "1.1"],
        ["connect", "localhost", "--timeout", "-3"],
        ["bench", "--seconds", "zero"],
    ],
)
def test_bad_values(args: list[str]) -> None:
    assert_one_line_error(run_cli(*args), 2)


def test_unreadable_files(tmp_path: Path, files: dict[str, str]) -> None:
    missing = str(tmp_path / "missing.pem")
    assert_one_line_error(
        run_cli("serve", "--cert", missing, "--key", files["server_key"]), 2, "cannot read"
    )
    assert_one_line_error(
        run_cli("connect", "127.0.0.1:443", "--cafile", missing), 2, "cannot read"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    assert_one_line_error(
        run_cli("serve", "--cert", str(garbage), "--key", files["server_key"]), 2, "--cert"
    )


def test_wrong_key(files: dict[str, str]) -> None:
    assert_one_line_error(
        run_cli("serve", "--cert", files["server_cert"], "--key", files["other_key"]),
        2,
        "does not match",
    )
    assert_one_line_error(
        run_cli(
            "connect", "127.0.0.1:443", "--cert", files["client_cert"], "--key", files["other_key"]
        ),
        2,
        "does not match",
    )


def test_connection_refused() -> None:
    assert_one_line_error(run_cli("connect", f"127.0.0.1:{_free_port()}"), 4, "refused")


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A listening socket that completes TCP handshakes (backlog) but never answers."""
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_connect_timeout(silent_listener: int) -> None:
    proc = run_cli("connect", f"127.0.0.1:{silent_listener}", "--timeout", "0.5")
    assert_one_line_error(proc, 4, "timed out")


def test_serve_port_in_use(silent_listener: int) -> None:
    proc = run_cli("serve", "--port", str(silent_listener))
    assert_one_line_error(proc, 4, "cannot listen")


# -- bench --------------------------------------------------------------------------------------


def test_bench_json() -> None:
    proc = run_cli("bench", "--seconds", "0.05", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    names = {(r["name"], r["engine"]) for r in rows}
    for engine in ENGINES:
        for bench in ("bulk-socket", "bulk-memory", "handshake-memory", "roundtrip-socket"):
            assert (bench, engine) in names
    for r in rows:
        assert {"name", "engine", "value", "unit", "baseline", "ratio"} <= set(r)
    # Both sides resume (a handshake that does not is an error in its row).
    resumed = [r for r in rows if r["name"] == "handshake-resumed-memory"]
    assert {r["engine"] for r in resumed} == set(ENGINES)
    assert all(r["value"] and r["baseline"] and not r.get("error") for r in resumed), resumed
    # Like for like: every engine's handshakes make the stdlib's X25519 exchange; an engine
    # preferring another group gets a row of its own for that default (rustls: the hybrid).
    for r in rows:
        if r["name"] in ("handshake-memory", "connections-socket", "handshake-resumed-memory"):
            assert r["group"] == "x25519", r
    defaults = {r["engine"]: r for r in rows if r["name"] == "handshake-memory-default-groups"}
    if "rustls" in ENGINES:
        assert defaults.pop("rustls")["group"] == "X25519MLKEM768"
    assert not defaults, defaults
    # benchmarks/bench_compat.py (in this checkout): the bridge's GETs on every engine, and
    # their bound, the same GETs without TLS, measured against the stdlib's TLS.
    gets = {r["engine"]: r for r in rows if r["name"] == "http.client GET (keep-alive)"}
    assert set(ENGINES) < set(gets), gets
    bound = gets["no TLS"]
    assert bound["bound"] and bound["value"] > 0 and bound["baseline"] > 0, bound
    assert bound.get("target") is None, bound


def test_bench_plot_without_matplotlib(tmp_path: Path) -> None:
    # Hide matplotlib (installed or not) from the child: the error must still be one line.
    code = (
        "import sys; sys.modules['matplotlib'] = None; from unitls.__main__ import main; "
        f"sys.exit(main(['bench', '--plot', {str(tmp_path / 'x.png')!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_one_line_error(proc, 2, "pip install matplotlib")


def test_bench_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "ratios.png"
    proc = run_cli(
        "bench",
        "--seconds",
        "0.05",
        "--core-only",
        "--engine",
        ENGINES[0],
        "--plot",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_progress_bar() -> None:
    from unitls._cli.bench import progress_line

    assert progress_line("[8/16] rustls: bulk-memory (stdlib)") == (
        "[" + "#" * 15 + "." * 15 + "] 8/16 rustls: bulk-memory (stdlib)"
    )
    assert progress_line("bench_compat ...") == "bench_compat ..."


@pytest.mark.parametrize("row", ["handshake-memory", "bulk-memory"])
def test_instructions_script_runs_each_sides_loop(row: str) -> None:
    """``benchmarks/instructions.py`` counts what its child runs under valgrind; the child's
    loops (the timed rows' calls, one operation each) must work on the stdlib and every engine
    (valgrind itself is not needed for this)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "instructions.py"
    for side in ["stdlib", *ENGINES]:
        proc = subprocess.run(
            [sys.executable, str(script), "--child", side, row, "1"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
        assert proc.returncode == 0 and not proc.stderr, (side, proc.stderr)


def test_get_costs_script_measures_every_client() -> None:
    """``benchmarks/get_costs.py`` (what one http.client GET costs the client, the server in a
    process of its own): every client, TLS-free, the stdlib and each engine's bridge, makes its
    GETs and reports their cost (valgrind is not used here)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "get_costs.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--gets", "20", "--rounds", "1", "--json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    table = json.loads(proc.stdout)
    assert list(table) == ["no TLS", "stdlib", *ENGINES]
    for client, costs in table.items():
        assert set(costs) == {"wall", "cpu"} and costs["wall"] > 0 and costs["cpu"] > 0, client
