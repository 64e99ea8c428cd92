"""Run the whole benchmark suite (core, compat, asyncio): the same as ``unitls bench``.

python benchmarks/run.py [--seconds 1.0] [--engine NAME] [--json] [--plot FILE.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import unitls  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unitls.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
