"""The judge itself (``python -m tests.cpython_bridge``): its comparison and its list of
expected differences. CI runs the judge in full (``.ci/run``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cpython_bridge.__main__ import (
    EXPECTED_FILE,
    MODULES,
    STRICT,
    Expected,
    Run,
    compare,
    load_expected,
)


def _run(engine: str, outcomes: dict[str, str], module: str = "test_ssl") -> Run:
    return Run(module, engine, outcomes=dict(outcomes))


def test_compare_finds_every_kind_of_difference() -> None:
    base = _run("stdlib", {"a": "pass", "b": "pass", "c": "skip", "d": "fail", "e": "pass"})
    run = _run("x", {"a": "pass", "b": "timeout", "c": "error", "d": "pass", "e": "skip"})
    expected = [Expected("test_ssl", "e", None, "because", 1)]
    unexpected, known, better = compare(base, run, expected)
    assert [line.split(":")[0] for line in unexpected] == ["b", "c"]
    assert known == ["e: skip (expected: because)"]
    assert better == ["d: fail -> pass"]


def test_expected_entries_apply_to_their_engines_only() -> None:
    base = _run("stdlib", {"t": "pass"})
    entry = [Expected("test_ssl", "t", frozenset({"rustls"}), "why", 1)]
    assert compare(base, _run("rustls", {"t": "fail"}), entry)[0] == []
    assert compare(base, _run("openssl", {"t": "fail"}), entry)[0] != []


def test_the_expected_differences_file(tmp_path: Path) -> None:
    entries = load_expected()
    assert entries, "the list is read"
    for entry in entries:
        assert entry.module in MODULES and entry.module not in STRICT
        assert len(entry.reason) > 20  # a reason, not a placeholder
    seen = [(e.module, e.test, e.engines) for e in entries]
    assert len(seen) == len(set(seen)), "an entry is listed twice"
    bad = tmp_path / "bad.txt"
    bad.write_text("test_httplib  SomeTest.test_x  all  a module that must match exactly\n")
    with pytest.raises(SystemExit, match="must match the stdlib exactly"):
        load_expected(bad)
    bad.write_text("test_ssl  Test.test_x  all\n")
    with pytest.raises(SystemExit, match="REASON"):
        load_expected(bad)
    assert EXPECTED_FILE.exists()
