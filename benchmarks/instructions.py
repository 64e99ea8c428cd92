"""Instructions per in-memory handshake and per MiB, engine against the stdlib, counted by
valgrind (callgrind): a measure the machine's load cannot move.

On a shared machine the timed rows of ``unitls bench`` swing by a few percent from run to run,
as much as the gaps left between the OpenSSL engine and the stdlib (which run the same C code).
Instructions do not swing: each side's loop (``unitls._bench``'s, the same calls as the timed
rows) runs under callgrind twice, with 0 and with N iterations after the same warm-up, and the
difference divided by N is the count per operation, setup excluded. Instructions are not time
(cache misses, branch mispredictions and system calls are not in them), so this tells whether a
gap is work the engine does, not whether the row meets its target.

    python benchmarks/instructions.py [ENGINE ...] [--handshakes 40] [--mib 8]

Needs valgrind on PATH; about 30 s per side and row.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import unitls
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import unitls

from unitls import _bench
from unitls._certgen import CA, Issued

ROWS = ("handshake-memory", "bulk-memory")
_WARM_UP = 3


def _side(name: str, material: tuple[Issued, CA, str]) -> _bench._Side:
    leaf, ca, tmpdir = material
    if name == "stdlib":
        return _bench._Stdlib(leaf, ca, tmpdir)
    return _bench._Engine(unitls.get_implementation(name), leaf, ca)


def _handshakes(side: _bench._Side, count: int) -> None:
    for _ in range(count):
        c, s, c2s, s2c = side.buffer_pair()
        side.handshake(c, s, c2s, s2c)


def _bulk(side: _bench._Side, mib: int) -> None:
    """``mib`` MiB client to server, moved as ``_bench.bulk_memory`` moves them."""
    _, move = _bench.memory_stream(side)
    move(_WARM_UP + mib * (1 << 20) // _bench.CHUNK)


def _child(side_name: str, row: str, count: int) -> None:
    """Run inside valgrind: the warm-up, then ``count`` operations of ``row``."""
    with _bench._material() as material:
        side = _side(side_name, material)
        if row == "handshake-memory":
            _handshakes(side, _WARM_UP + count)
        else:
            _bulk(side, count)


def callgrind(command: list[str], env: dict[str, str] | None = None) -> int:
    """Instructions callgrind counts for the whole process ``command`` starts."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def _instructions(side: str, row: str, count: int) -> int:
    """Instructions callgrind counts for the whole child process."""
    return callgrind([sys.executable, __file__, "--child", side, row, str(count)])


def per_operation(side: str, row: str, count: int) -> float:
    """Instructions per handshake (or per MiB) of ``side`` in ``row``, setup excluded."""
    return (_instructions(side, row, count) - _instructions(side, row, 0)) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="*", help="default: every usable engine")
    parser.add_argument("--handshakes", type=int, default=40)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    engines = args.engines or unitls.implementations()
    counts = {"handshake-memory": args.handshakes, "bulk-memory": args.mib}
    units = {"handshake-memory": "per handshake", "bulk-memory": "per MiB"}
    print(f"{'row':18} {'side':8} {'instructions':>14} {'unit':14} {'stdlib / side':>13}")
    for row in ROWS:
        base = per_operation("stdlib", row, counts[row])
        print(f"{row:18} {'stdlib':8} {base:>14,.0f} {units[row]:14} {1.0:>13.3f}")
        for engine in engines:
            value = per_operation(engine, row, counts[row])
            print(f"{row:18} {engine:8} {value:>14,.0f} {units[row]:14} {base / value:>13.3f}")


if __name__ == "__main__":
    main()
