"""CPython's own TLS tests as the judge of the ``ssl`` bridge (``unitls.compat``).

::

    python -m tests.cpython_bridge                    # every engine, every module (~10 min)
    python -m tests.cpython_bridge --engine rustls --module test_httplib -j 2

Each module of CPython's ``test`` package runs once without injection (the baseline, "stdlib")
and once per engine with ``unitls.compat.inject_into_ssl(engine)`` called before it is imported,
so every ``ssl.SSLContext`` it makes is a bridge context. Results are compared test by test: a
test that passes in the baseline must pass under injection, unless it is listed, with the
engines it applies to and the reason, in ``expected_differences.txt`` next to this file. A listed
difference that no longer happens is reported too (the list must stay true).

A test that runs longer than ``--timeout`` seconds is ended by ``faulthandler`` (its traceback
is in the log), recorded as ``timeout``, and the module goes on in a fresh process without it.
Exit status: 0 when every difference is expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED_FILE = HERE / "expected_differences.txt"
MODULES = (
    "test_httplib",
    "test_urllib2_localnet",
    "test_asyncio.test_ssl",
    "test_asyncio.test_sslproto",
    "test_asyncio.test_events",
    "test_ssl",
)
# The modules that must match the baseline exactly (the targets); only test_ssl may
# have listed differences.
STRICT = frozenset(MODULES) - {"test_ssl"}
BASELINE = "stdlib"
PASSED = "pass"
BROKEN = ("fail", "error", "timeout", "crash")


@dataclass
class Run:
    module: str
    engine: str
    outcomes: dict[str, str] = field(default_factory=dict)  # short test id -> outcome
    details: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    restarts: int = 0
    log: str = ""

    @property
    def ran(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return sum(1 for o in self.outcomes.values() if o == PASSED)


def _short(module: str, test_id: str) -> str:
    prefix = f"test.{module}."
    return test_id[len(prefix) :] if test_id.startswith(prefix) else test_id


def run_module(module: str, engine: str, timeout: float, log_dir: Path) -> Run:
    """Run one module in child processes until every test has an outcome."""
    run = Run(module, engine)
    log_path = log_dir / f"{module}.{engine}.log"
    run.log = str(log_path)
    started = time.monotonic()
    seen: list[str] = []
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    with tempfile.TemporaryDirectory(prefix="cpython-bridge-") as tmp, open(log_path, "w") as log:
        results = Path(tmp) / "results.jsonl"
        exclude = Path(tmp) / "exclude.txt"
        while True:
            exclude.write_text("".join(t + "\n" for t in seen))
            results.write_text("")
            cmd = [
                sys.executable, "-m", "tests.cpython_bridge._child",
                "--engine", engine, "--module", module, "--results", str(results),
                "--exclude", str(exclude), "--timeout", str(timeout),
            ]  # fmt: skip
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            # cwd: a scratch directory (tests write files named after TESTFN there).
            proc = subprocess.run(
                cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=_child_env(env)
            )
            current: str | None = None
            done = False
            for line in results.read_text().splitlines():
                record = json.loads(line)
                if "start" in record:
                    current = record["start"]
                elif "done" in record:
                    done = True
                else:
                    test_id = record["id"]
                    short = _short(module, test_id)
                    # A test may report twice (a failed subtest, then its own outcome):
                    # anything but a pass wins.
                    if run.outcomes.get(short, PASSED) == PASSED:
                        run.outcomes[short] = record["outcome"]
                        if record.get("detail"):
                            run.details[short] = record["detail"]
                    run.durations[short] = record.get("seconds", 0.0)
                    if test_id not in seen:
                        seen.append(test_id)
                    if test_id == current:
                        current = None
            if done:
                break
            if current is None:
                # Died outside a test (import, a class fixture): record it and stop.
                run.outcomes[f"<{module} process>"] = "crash"
                run.details[f"<{module} process>"] = f"exit status {proc.returncode}"
                break
            run.outcomes[_short(module, current)] = "timeout" if proc.returncode == 1 else "crash"
            run.details[_short(module, current)] = f"exit status {proc.returncode}; see {log_path}"
            seen.append(current)
            run.restarts += 1
    run.seconds = time.monotonic() - started
    return run


def _child_env(env: dict[str, str]) -> dict[str, str]:
    # The child imports tests.cpython_bridge from this checkout whatever its working directory.
    root = str(HERE.parent.parent)
    path = env.get("PYTHONPATH")
    return dict(env, PYTHONPATH=root if not path else root + os.pathsep + path)


@dataclass(frozen=True)
class Expected:
    module: str
    test: str
    engines: frozenset[str] | None  # None: every engine
    reason: str
    line: int


def load_expected(path: Path = EXPECTED_FILE) -> list[Expected]:
    """``MODULE  TEST  ENGINES  REASON`` per line; ENGINES is ``all`` or ``a,b``; # comments."""
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) < 4:
            raise SystemExit(f"{path}:{number}: want MODULE TEST ENGINES REASON, got {raw!r}")
        module, test, engines, reason = parts
        if module in STRICT:
            raise SystemExit(f"{path}:{number}: {module} must match the stdlib exactly")
        chosen = None if engines == "all" else frozenset(engines.split(","))
        entries.append(Expected(module, test, chosen, reason, number))
    return entries


def _expected_for(
    entries: Iterable[Expected], module: str, test: str, engine: str
) -> Expected | None:
    for entry in entries:
        if entry.module == module and entry.test == test:
            if entry.engines is None or engine in entry.engines:
                return entry
    return None


def _regressed(before: str, after: str) -> bool:
    """Passed in the baseline and not now, or fails now where the baseline skipped."""
    if before == PASSED:
        return after != PASSED
    return after in BROKEN and after != before


def compare(
    baseline: Run, run: Run, expected: list[Expected]
) -> tuple[list[str], list[str], list[str]]:
    """(unexpected differences, expected ones, improvements) as report lines."""
    unexpected, known, better = [], [], []
    for test in sorted(set(baseline.outcomes) | set(run.outcomes)):
        before = baseline.outcomes.get(test, "absent")
        after = run.outcomes.get(test, "absent")
        if _regressed(before, after):
            entry = _expected_for(expected, run.module, test, run.engine)
            if entry is not None:
                known.append(f"{test}: {after} (expected: {entry.reason})")
            else:
                first = run.details.get(test, "").strip().splitlines()
                tail = f" -- {first[-1][:200]}" if first else ""
                unexpected.append(f"{test}: {before} -> {after}{tail}")
        elif after == PASSED and before != PASSED:
            better.append(f"{test}: {before} -> pass")
    return unexpected, known, better


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cpython_bridge", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--engine", action="append", help="engine to inject (default: all)")
    parser.add_argument(
        "--module", action="append", help=f"test module (default: {', '.join(MODULES)})"
    )
    parser.add_argument("-j", "--jobs", type=int, default=2, help="modules run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test (default 60)")
    parser.add_argument("--logs", type=Path, help="directory for the children's output")
    parser.add_argument("--json", type=Path, help="write every outcome to this file")
    args = parser.parse_args(argv)

    import unitls

    engines = args.engine or unitls.implementations()
    modules = args.module or list(MODULES)
    for module in modules:
        if module not in MODULES:
            parser.error(f"unknown module {module!r}: choose from {', '.join(MODULES)}")
    expected = load_expected()
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="cpython-bridge-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    jobs = [(m, e) for m in modules for e in [BASELINE, *engines]]
    # Longest first, so the two workers finish together.
    order = {
        m: i
        for i, m in enumerate(("test_ssl", "test_asyncio.test_events", "test_asyncio.test_ssl"))
    }
    jobs.sort(key=lambda job: order.get(job[0], 99))
    started = time.monotonic()
    runs: dict[tuple[str, str], Run] = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(run_module, m, e, args.timeout, log_dir): (m, e) for m, e in jobs}
        for future, key in futures.items():
            runs[key] = future.result()
            r = runs[key]
            print(
                f"  {key[0]} [{key[1]}]: {r.passed}/{r.ran} passed in {r.seconds:.0f} s"
                + (f", {r.restarts} restart(s)" if r.restarts else ""),
                flush=True,
            )

    failed = False
    problems: list[str] = []  # repeated last: a CI log's tail must name what failed
    print(f"\nCPython {sys.version.split()[0]} test modules, tests passed (baseline: ran / passed)")
    header = f"{'module':28} {'stdlib':>10} " + " ".join(f"{e:>10}" for e in engines)
    print(header)
    for module in modules:
        base = runs[(module, BASELINE)]
        cells = " ".join(f"{runs[(module, e)].passed:>10}" for e in engines)
        print(f"{module:28} {f'{base.ran} / {base.passed}':>10} {cells}")
    for module in modules:
        base = runs[(module, BASELINE)]
        for engine in engines:
            unexpected, known, better = compare(base, runs[(module, engine)], expected)
            if unexpected or known or better:
                print(f"\n{module} [{engine}] (log: {runs[(module, engine)].log})")
            for line in unexpected:
                print(f"  UNEXPECTED {line}")
                problems.append(f"UNEXPECTED {module} [{engine}] {line.splitlines()[0][:200]}")
            for line in known:
                print(f"  expected   {line}")
            for line in better:
                print(f"  better     {line}")
            failed |= bool(unexpected)
    # Listed differences that did not happen: the list must stay true.
    for entry in expected:
        if entry.module not in modules:
            continue
        for engine in engines if entry.engines is None else sorted(entry.engines & set(engines)):
            outcome = runs[(entry.module, engine)].outcomes.get(entry.test, "absent")
            if (
                outcome == PASSED
                or outcome == "absent"
                or runs[(entry.module, BASELINE)].outcomes.get(entry.test) != PASSED
            ):
                stale = (
                    f"STALE {EXPECTED_FILE.name}:{entry.line}: {entry.module} {entry.test} "
                    f"[{engine}] is {outcome} (baseline {runs[(entry.module, BASELINE)].outcomes.get(entry.test, 'absent')})"
                )
                print(stale)
                problems.append(stale)
                failed = True
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    f"{m} [{e}]": {t: [o, r.durations.get(t)] for t, o in r.outcomes.items()}
                    for (m, e), r in runs.items()
                },
                indent=1,
                sort_keys=True,
            )
        )
    if problems:
        print("\nWhat failed:")
        for problem in problems:
            print(f"  {problem}")
    print(
        f"\n{'FAILED' if failed else 'OK'} in {time.monotonic() - started:.0f} s; logs in {log_dir}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
