"""``unitls bench``: the benchmark suite, each engine as a ratio of the stdlib ``ssl`` module."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    format_table,
    get_engine,
    note,
    one_line,
    positive_float,
)

_DEFAULT_SECONDS = 1.0
# Benchmarks written outside the package: run when present, skipped when absent.
_EXTRA_MODULES = ("bench_compat.py", "bench_asyncio.py")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark each engine against the stdlib ssl module (ratios)",
        description=(
            "Measures bulk throughput (loopback TCP and in memory), full and resumed TLS 1.3 "
            "handshakes per second and 100-byte round trips for each engine and for the stdlib "
            "ssl module in the "
            "same run, alternating the two, and prints engine/stdlib ratios. Also runs "
            "benchmarks/bench_compat.py and bench_asyncio.py when they exist. Absolute numbers "
            "vary between runs on a shared machine; compare the ratios."
        ),
    )
    p.add_argument(
        "--seconds",
        metavar="S",
        default=str(_DEFAULT_SECONDS),
        help=f"measuring time per side and benchmark (default {_DEFAULT_SECONDS:g})",
    )
    p.add_argument(
        "--engine",
        action="append",
        metavar="NAME",
        help="benchmark only this engine (repeatable; default: every usable engine)",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the ratios (needs matplotlib)")
    p.add_argument(
        "--core-only",
        action="store_true",
        help="skip benchmarks/bench_compat.py and bench_asyncio.py",
    )
    p.set_defaults(handler=run)


def _benchmarks_dir() -> Path | None:
    """The repository's benchmarks/ folder (next to src/), or ./benchmarks."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "benchmarks", Path.cwd() / "benchmarks"):
        if candidate.is_dir():
            return candidate
    return None


def _load_extra(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"_unitls_bench_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_STEP = re.compile(r"^\[(\d+)/(\d+)\] (.*)$")
_BAR_WIDTH = 30


def progress_line(message: str) -> str:
    """``[12/16] rustls: ...`` -> ``[######....] 12/16 rustls: ...`` (a bar when counted)."""
    m = _STEP.match(message)
    if not m:
        return message
    done, total, what = int(m[1]), int(m[2]), m[3]
    filled = _BAR_WIDTH * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total} {what}"


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{progress_line(message)}")
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run_all(
    seconds: float, engines: list[str] | None, core_only: bool = False
) -> list[dict[str, Any]]:
    from .._bench import TARGETS, run_core

    rows = run_core(seconds, engines, progress=_progress)
    folder = None if core_only else _benchmarks_dir()
    for filename in _EXTRA_MODULES:
        path = folder / filename if folder else None
        if path is None or not path.is_file():
            continue
        _progress(f"{path.stem} ...")
        try:
            extra = list(_load_extra(path).run(seconds))
        except Exception as exc:
            note(f"warning: {filename} failed: {type(exc).__name__}: {one_line(exc)}")
            continue
        for row in extra:
            if not isinstance(row, dict):
                continue
            if engines is None or row.get("engine") in engines or row.get("bound"):
                targets = TARGETS.get(str(row.get("engine")), {})
                row.setdefault("target", targets.get(str(row.get("name"))))
                rows.append(row)
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    return rows


def _num(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def format_rows(rows: list[dict[str, Any]]) -> str:
    table = []
    for r in rows:
        ratio, target = r.get("ratio"), r.get("target")
        status = "FAILED" if r.get("error") else "-"
        if isinstance(ratio, (int, float)) and isinstance(target, (int, float)):
            status = "ok" if ratio >= target else "BELOW"
        table.append(
            [
                r.get("name", "?"),
                r.get("engine", "?"),
                _num(r.get("value")),
                _num(r.get("baseline")),
                r.get("unit", ""),
                "-" if ratio is None else f"{ratio:.2f}x",
                "-" if target is None else f">= {target:.2f}x",
                status,
            ]
        )
    headers = ["benchmark", "engine", "value", "stdlib", "unit", "ratio", "target", "status"]
    suites = sorted({str(r["suite"]) for r in rows if r.get("suite")})
    text = format_table(headers, table)
    if suites:
        text += "\n\nnegotiated suite: " + "; ".join(suites)
    # Key exchange groups, per engine: the rows' own, then any row that differs (named).
    kx: dict[str, list[str]] = {}
    for r in rows:
        if r.get("group"):
            engine, group = str(r.get("engine")), str(r["group"])
            seen = kx.setdefault(engine, [])
            entry = group if not seen else f"{group} ({r.get('name')})"
            if group not in seen[:1] and entry not in seen:
                seen.append(entry)
    if kx:
        text += "\nnegotiated key exchange: " + "; ".join(
            f"{engine} {', '.join(groups)}" for engine, groups in sorted(kx.items())
        )
    for r in rows:
        if r.get("error"):
            text += f"\n{r.get('name')} ({r.get('engine')}) failed: {one_line(r['error'])}"
    return text


def plot(rows: list[dict[str, Any]], path: str) -> None:
    # Imported by name: matplotlib is optional and has no type information here.
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    engines = sorted({str(r.get("engine")) for r in rows})
    names = list(dict.fromkeys(str(r.get("name")) for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) + 2), 4.5))
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        ratios = []
        for n in names:
            match = [r for r in rows if r.get("engine") == engine and r.get("name") == n]
            value = match[0].get("ratio") if match else None
            ratios.append(float(value) if isinstance(value, (int, float)) else 0.0)
        xs = [x + (i - (len(engines) - 1) / 2) * width for x in range(len(names))]
        ax.bar(xs, ratios, width, label=engine)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel("engine / stdlib ssl (higher is better)")
    ax.set_title("unitls engines vs the stdlib ssl module")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    seconds = positive_float(args.seconds, "--seconds") or _DEFAULT_SECONDS
    engines = None
    if args.engine:
        engines = [get_engine(name).name for name in args.engine]
    if args.plot:
        # Fail before spending a minute on measurements.
        if importlib.util.find_spec("matplotlib") is None:
            raise CLIError("--plot needs matplotlib: pip install matplotlib", EXIT_USAGE)
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise CLIError(f"--plot: folder {folder!r} does not exist", EXIT_USAGE)
    start = time.perf_counter()
    rows = run_all(seconds, engines, args.core_only)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_rows(rows))
        print(f"\n{len(rows)} results in {elapsed:.1f} s ({seconds:g} s per side and benchmark)")
    if args.plot:
        try:
            plot(rows, args.plot)
        except Exception as exc:
            raise CLIError(f"--plot: {one_line(exc)}", EXIT_ERROR) from None
        note(f"plot written to {args.plot}")
    return EXIT_OK
