"""What one http.client GET costs the client, by TLS path: none, the stdlib's, each engine's bridge.

``bench_compat``'s GET row times client and server together (the stdlib ``http.server`` runs in
the same process), so it cannot tell how much of a GET is the client's TLS, which is all an
engine can change. Here the server (``bench_compat``'s handler, the stdlib's TLS, and the same
handler over plain TCP) runs in a process of its own, and each client runs alone in a fresh
process, in alternating rounds: wall time and the client's CPU time per GET (``thread_time``,
with spinning off, so that waiting is not counted as work), and with ``--instructions`` the
instructions per GET counted by callgrind (N GETs minus 0, after the same warm-up).

    python benchmarks/get_costs.py [ENGINE ...] [--gets 2000] [--rounds 4] [--instructions] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import unitls
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import unitls

# Siblings (a script's folder is on sys.path).
import bench_compat
from ab_core import alternating
from instructions import callgrind

_WARM_UP = 20
# Spinning (UNITLS_SPIN_US) would count waiting for the server as the client's CPU time.
_ENV = {**os.environ, "UNITLS_SPIN_US": "0"}


def _serve(folder: Path) -> None:
    """The servers, until standard input closes: their ports and CA go to ``folder``."""
    from unitls._certgen import CA

    ca = CA.create("get_costs CA")
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    with bench_compat._server(None) as plain, bench_compat._server(ca) as tls:
        (folder / "ports").write_text(f"{plain} {tls}")
        print("ready", flush=True)
        sys.stdin.read()


def _client(which: str, gets: int, folder: Path) -> None:
    """``gets`` GETs after the warm-up, on one keep-alive connection; prints what they cost."""
    plain_port, tls_port = map(int, (folder / "ports").read_text().split())
    if which == "no TLS":
        conn = bench_compat._connection(None, plain_port)
    else:
        from unitls.compat import ORIGINAL_SSLCONTEXT, SSLContext

        if which == "stdlib":
            ctx = ORIGINAL_SSLCONTEXT(ssl.PROTOCOL_TLS_CLIENT)
        else:
            ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT, implementation=which)
        ctx.load_verify_locations(cafile=str(folder / "ca.pem"))
        conn = bench_compat._connection(ctx, tls_port)
    for _ in range(_WARM_UP):
        conn.request("GET", "/")
        conn.getresponse().read()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(gets):
        conn.request("GET", "/")
        conn.getresponse().read()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    conn.close()
    print(json.dumps({"wall": wall / max(gets, 1), "cpu": cpu / max(gets, 1)}))


def _client_command(which: str, gets: int, folder: Path) -> list[str]:
    return [sys.executable, __file__, "--client", which, str(gets), str(folder)]


def _costs(which: str, gets: int, folder: Path) -> dict[str, float]:
    """One client's run, in a process of its own: wall and CPU seconds per GET."""
    command = _client_command(which, gets, folder)
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=_ENV)
    costs: dict[str, float] = json.loads(out.stdout)
    return costs


def measure(
    clients: list[str], gets: int, rounds: int, instructions: int = 0
) -> dict[str, dict[str, float]]:
    """Per client: median wall and CPU µs per GET over ``rounds`` alternating rounds, and with
    ``instructions`` > 0 the instructions per GET (that many GETs under callgrind, minus 0)."""
    with tempfile.TemporaryDirectory(prefix="unitls-get-costs-") as tmp:
        folder = Path(tmp)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_ENV,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("the server did not start")
            runs = alternating(
                {c: c for c in clients}, rounds, lambda which: _costs(which, gets, folder)
            )
            table = {
                which: {
                    key: statistics.median(r[key] * 1e6 for r in seen) for key in ("wall", "cpu")
                }
                for which, seen in runs.items()
            }
            for which in clients if instructions else ():
                counts = [
                    callgrind(_client_command(which, n, folder), _ENV) for n in (instructions, 0)
                ]
                table[which]["instructions"] = (counts[0] - counts[1]) / instructions
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(30)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="*", help="default: every usable engine")
    parser.add_argument("--gets", type=int, default=2000, help="GETs per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--instructions", nargs="?", type=int, const=300, default=0, metavar="GETS",
        help="also count instructions per GET under callgrind (default 300 GETs)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(Path(args.serve))
        return
    if args.client:
        _client(args.client[0], int(args.client[1]), Path(args.client[2]))
        return
    if args.instructions and shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    clients = ["no TLS", "stdlib", *(args.engines or unitls.implementations())]
    table = measure(clients, args.gets, args.rounds, args.instructions)
    if args.json:
        print(json.dumps(table, indent=1))
        return
    base = table["stdlib"]
    print(f"{'client':8} {'wall µs/GET':>12} {'CPU µs/GET':>11} {'instructions/GET':>17}")
    for which, row in table.items():
        count = f"{row['instructions']:,.0f}" if "instructions" in row else "-"
        print(f"{which:8} {row['wall']:>12.1f} {row['cpu']:>11.1f} {count:>17}")
    tls = base["cpu"] - table["no TLS"]["cpu"]
    print(f"\nthe stdlib client's TLS: {tls:.1f} µs of CPU per GET (stdlib minus no TLS)")


if __name__ == "__main__":
    main()
