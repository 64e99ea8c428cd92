"""Where the OpenSSL engine's in-memory bulk row loses to the stdlib: the same loop as
``unitls._bench.bulk_memory`` (16 KiB written, pumped, read), with parts of the engine's path
replaced by the bare C calls under it, in alternating rounds.

python benchmarks/openssl_memory_parts.py [--rounds 14] [--records 4000]

Rows: ``stdlib`` (``ssl.SSLObject`` and its ``MemoryBIO``s), ``engine`` (the PEP's calls on the
engine's ``TLSBuffer``), ``engine, bare pump`` (the engine's ``read``/``write`` but the pump on
its ``MemoryBIO``s directly, as the stdlib side), ``engine, bare read/write`` (the C object's
``read``/``write`` with the PEP's pump), and ``C objects only`` (no Python frame at all on
either side's C objects: the cost of OpenSSL's own work on each side's connection).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import unitls  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ab_core import alternating  # this directory's A/B helper

from unitls import _bench, get_implementation

Loop = tuple[Callable[..., Any], Callable[..., Any], Callable[[], None]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--records", type=int, default=4000)
    args = parser.parse_args()
    with _bench._material() as (leaf, ca, tmpdir):
        std = _bench._Stdlib(leaf, ca, tmpdir)
        eng = _bench._Engine(get_implementation("openssl"), leaf, ca)

        def opened(side: Any) -> tuple[Any, Any, Callable[[], None]]:
            c, s, c2s, s2c = side.buffer_pair()
            side.handshake(c, s, c2s, s2c)
            s2c()
            return c, s, c2s

        def bare_pump(c: Any, s: Any) -> Callable[[], None]:
            out, into = c._out, s._in

            def c2s() -> None:
                if out.pending:
                    into.write(out.read())

            return c2s

        def stdlib() -> Loop:
            c, s, c2s = opened(std)
            return c.write, s.read, c2s

        def engine() -> Loop:
            c, s, c2s = opened(eng)
            return c.write, s.read, c2s

        def engine_bare_pump() -> Loop:
            c, s, _ = opened(eng)
            return c.write, s.read, bare_pump(c, s)

        def engine_bare_read_write() -> Loop:
            c, s, c2s = opened(eng)
            return c._obj.write, s._obj.read, c2s

        def c_only_stdlib() -> Loop:
            c, s, c2s = opened(std)  # its pump is on the MemoryBIOs already
            return c._sslobj.write, s._sslobj.read, c2s

        def c_only_engine() -> Loop:
            c, s, _ = opened(eng)
            return c._obj.write, s._obj.read, bare_pump(c, s)

        loops = {
            "stdlib": stdlib,
            "engine": engine,
            "engine, bare pump": engine_bare_pump,
            "engine, bare read/write": engine_bare_read_write,
            "C objects only, stdlib": c_only_stdlib,
            "C objects only, engine": c_only_engine,
        }
        chunk = bytes(_bench.CHUNK)
        view = memoryview(bytearray(_bench.CHUNK))

        records: int = args.records

        def records_per_second(make: Callable[[], Loop]) -> float:
            write, read, c2s = make()
            start = time.perf_counter()
            for _ in range(records):
                write(chunk)
                c2s()
                want = _bench.CHUNK
                while want:
                    want -= read(want, view)
            return records / (time.perf_counter() - start)

        results = alternating(loops, args.rounds, records_per_second)
    base = statistics.median(results["stdlib"])
    for name, values in results.items():
        value = statistics.median(values)
        print(f"{name:28} {value:10.0f} records/s  {value / base:.3f}x")


if __name__ == "__main__":
    main()
