"""One core benchmark, engine against the stdlib, in many short alternating rounds: the quick
A/B used while changing a hot path (``unitls bench`` runs every row; this runs one, longer).

python benchmarks/ab_core.py FUNCTION ENGINE [--rounds 10] [--seconds 0.3] [--mix]

FUNCTION is one of ``unitls._bench``'s measurements (``connections_socket``, ``handshake_memory``,
``bulk_memory``, ``bulk_socket``, ``roundtrip_socket``). ``--mix`` (socket benchmarks) also
pairs an engine server with a stdlib client and the reverse, which tells on which end a
connection's extra cost is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

try:
    import unitls  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unitls import _bench, get_implementation

T = TypeVar("T")
R = TypeVar("R")


def alternating(sides: dict[str, T], rounds: int, measure: Callable[[T], R]) -> dict[str, list[R]]:
    """``measure`` of every side, ``rounds`` times, in an order reversed every other round (a
    drift of the machine's speed then weighs on every side alike)."""
    results: dict[str, list[R]] = {name: [] for name in sides}
    order = list(sides.items())
    for rnd in range(rounds):
        for name, side in order if rnd % 2 == 0 else order[::-1]:
            results[name].append(measure(side))
    return results


class _Mixed:
    """The server end of one side and the client end of another."""

    def __init__(self, server: Any, client: Any) -> None:
        self.server_side, self.client_side = server, client
        self.name = f"{server.name} server / {client.name} client"

    def listen(self) -> Any:
        return self.server_side.listen()

    def accept(self, listener: Any) -> Any:
        return self.server_side.accept(listener)

    def connect(self, port: int) -> Any:
        return self.client_side.connect(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("function")
    parser.add_argument("engine")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=0.3, help="per round and side")
    parser.add_argument("--mix", action="store_true")
    args = parser.parse_args()
    measure = getattr(_bench, args.function)
    with _bench._material() as (leaf, ca, tmpdir):
        stdlib = _bench._Stdlib(leaf, ca, tmpdir)
        engine = _bench._Engine(get_implementation(args.engine), leaf, ca)
        sides: dict[str, Any] = {"stdlib": stdlib, args.engine: engine}
        if args.mix:
            sides[f"{args.engine} server, stdlib client"] = _Mixed(engine, stdlib)
            sides[f"stdlib server, {args.engine} client"] = _Mixed(stdlib, engine)
        results = alternating(sides, args.rounds, lambda side: measure(side, args.seconds))
    base = statistics.median(results["stdlib"])
    for name, values in results.items():
        value = statistics.median(values)
        print(f"{args.function:20} {name:32} {value:12.1f}  {value / base:.3f}x")


if __name__ == "__main__":
    main()
