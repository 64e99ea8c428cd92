"""One CPython test module in this process, optionally under ``inject_into_ssl(engine)``.

Started by ``tests.cpython_bridge`` (see its ``__main__``); not meant to be run by hand. Results go
to ``--results`` as JSON lines, written and flushed as they happen, so that when the watchdog ends
a hung test the parent still knows everything that ran before it.

The environment is libregrtest's defaults (``python -m test MODULE``): no extra resources
(``network`` tests skip), quiet, the module loaded with ``TestLoader.loadTestsFromModule``.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import sys
import time
import traceback
import unittest
from typing import Any, TextIO


class _Recorder(unittest.TextTestResult):
    """Writes one line per event; the watchdog is re-armed at every test start and stop."""

    out: TextIO
    timeout: float

    def _emit(self, **record: Any) -> None:
        if "outcome" in record:
            record["seconds"] = round(time.monotonic() - self._started, 3)
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def _arm(self) -> None:
        faulthandler.dump_traceback_later(self.timeout, exit=True)

    def startTest(self, test: unittest.TestCase) -> None:
        self._failed_sub: str | None = None
        self._started = time.monotonic()
        self._emit(start=test.id())
        self._arm()
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        if self._failed_sub is not None:
            self._emit(id=test.id(), outcome="fail", detail=self._failed_sub)
        self._arm()

    def _detail(self, err: Any) -> str:
        text = "".join(traceback.format_exception(*err)) if isinstance(err, tuple) else str(err)
        return text[-3000:]

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        if self._failed_sub is None:
            self._emit(id=test.id(), outcome="pass")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._emit(id=test.id(), outcome="fail", detail=self._detail(err))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        # Class and module fixtures fail as "_ErrorHolder"s named e.g. "setUpClass (...)".
        self._emit(id=test.id(), outcome="error", detail=self._detail(err))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._emit(id=test.id(), outcome="skip", detail=reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._emit(id=test.id(), outcome="pass", detail="expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._emit(id=test.id(), outcome="fail", detail="unexpected success")

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None and self._failed_sub is None:
            self._failed_sub = f"{subtest.id()}: {self._detail(err)}"


def _filter(suite: unittest.TestSuite, exclude: set[str]) -> None:
    kept = []
    for test in suite._tests:  # type: ignore[attr-defined]
        if isinstance(test, unittest.TestSuite):
            _filter(test, exclude)
            kept.append(test)
        elif test.id() not in exclude:
            kept.append(test)
    suite._tests = kept  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True, help="an engine name, or 'stdlib' for none")
    parser.add_argument("--module", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--exclude", help="file of test ids already run (one per line)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    from test import support

    support.use_resources = []
    support.verbose = 0
    faulthandler.enable()
    if args.engine != "stdlib":
        import unitls.compat

        unitls.compat.inject_into_ssl(args.engine)
    exclude: set[str] = set()
    if args.exclude:
        with open(args.exclude) as f:
            exclude = {line.strip() for line in f if line.strip()}
    with open(args.results, "a") as out:
        _Recorder.out = out
        _Recorder.timeout = args.timeout
        faulthandler.dump_traceback_later(args.timeout, exit=True)  # import and loading
        module = importlib.import_module("test." + args.module)
        loader = unittest.TestLoader()
        suite = loader.loadTestsFromModule(module)
        for error in loader.errors:
            out.write(
                json.dumps({"id": f"<load {args.module}>", "outcome": "error", "detail": error})
                + "\n"
            )
        _filter(suite, exclude)
        runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=0, resultclass=_Recorder)
        runner.run(suite)
        faulthandler.cancel_dump_traceback_later()
        out.write(json.dumps({"done": True}) + "\n")
    sys.stdout.flush()
    # Skip interpreter teardown: a thread a failed test left behind must not hang the exit.
    import os

    os._exit(0)


if __name__ == "__main__":
    main()
