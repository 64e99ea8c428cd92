"""Core benchmarks (throughput, handshakes, round trips): each engine vs the stdlib ``ssl`` module.

The code lives in ``unitls._bench`` so that ``unitls bench`` can run it from an installed
package; this script only runs it. ``run(seconds)`` returns rows like the other
``benchmarks/bench_*.py`` modules.

    python benchmarks/bench_core.py [--seconds 1.0] [--engine NAME] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import unitls  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def run(seconds: float) -> list[dict[str, Any]]:
    from unitls._bench import run_core

    return run_core(seconds)


def main(argv: list[str] | None = None) -> int:
    from unitls.__main__ import main as unitls_main

    return unitls_main(["bench", "--core-only", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
