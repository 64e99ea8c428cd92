"""The documentation site's code examples run, and print what the pages say they print.

Every ```` ```python ```` block in ``docs/**/*.md`` is executed, page by page, in a fresh
interpreter whose working directory holds the certificate files that ``docs/guide/make_certs.py``
writes (the files the examples use); the blocks of one page share one namespace, in page order.
A ```` ```text ```` block right after a python block (blank lines between them at most) is the
output that block prints, compared like doctest with ``...`` matching anything. A block preceded
by an ``<!-- not-run: reason -->`` line is skipped (code that cannot run on its own, such as the
skeleton of an engine); the reason is required. Every server in the examples is local.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MAKE_CERTS = DOCS / "guide" / "make_certs.py"

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)(.*)$")
_NOT_RUN = re.compile(r"^<!--\s*not-run:\s*\S.*-->\s*$")
_SNIPPET = re.compile(r'^--8<--\s+"([^"]+)"\s*$')
# Between blocks the runner prints this line, so stdout can be split per block.
_MARK = "\x00--unitls-docs-block--\x00"

# Runs in the child: exec each block (compiled under its page:line name, so tracebacks point at
# the page), printing the marker after each.
_RUNNER = f"""
import json, sys
blocks = json.load(sys.stdin)
namespace = {{"__name__": "__main__"}}
for name, line, code in blocks:
    exec(compile("\\n" * (line - 1) + code, name, "exec"), namespace)
    sys.stdout.flush()
    print({_MARK!r}, flush=True)
"""


@dataclass
class Block:
    page: str
    line: int  # line of the first code line, 1-based
    code: str
    expected: str | None = None


def _blocks(page: Path, root: Path = ROOT) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    rel = str(page.relative_to(root))
    blocks: list[Block] = []
    last_end: int | None = None  # line index just after the previous python block
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2)
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != fence:
            end += 1
        body = lines[start:end]
        if lang == "python":
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            skipped = j >= 0 and _NOT_RUN.match(lines[j].strip()) is not None
            if not skipped:
                if len(body) == 1 and (s := _SNIPPET.match(body[0].strip())):
                    code = (root / s.group(1)).read_text(encoding="utf-8")
                else:
                    code = "\n".join(body) + "\n"
                blocks.append(Block(rel, start + 1, code))
                last_end = end + 1
            else:
                last_end = None
        elif lang == "text" and last_end is not None and blocks:
            between = lines[last_end:i]
            if all(not s.strip() for s in between) and blocks[-1].expected is None:
                blocks[-1].expected = "\n".join(body) + "\n"
            last_end = None
        else:
            last_end = None
        i = end + 1
    return blocks


def _pages() -> list[Path]:
    """The pages with at least one python block to run."""
    return sorted(p for p in DOCS.rglob("*.md") if _blocks(p))


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doc-certs")
    subprocess.run([sys.executable, str(MAKE_CERTS)], cwd=path, check=True, timeout=60)
    return path


def test_pages_are_found() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert {"guide/quickstart.md", "guide/sockets-and-buffers.md"} <= names


def test_parser_pairs_outputs_and_honours_not_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nprint(1)\n```\n\n```text\n1\n```\n\n"
        "<!-- not-run: a fragment -->\n```python\nundefined_name\n```\n\n"
        "```python\nx = 2\n```\nprose\n```text\nnot an output\n```\n",
        encoding="utf-8",
    )
    blocks = _blocks(page, root=tmp_path)
    assert [(b.line, b.code, b.expected) for b in blocks] == [
        (2, "print(1)\n", "1\n"),
        (15, "x = 2\n", None),
    ]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_examples_run(page: Path, cert_dir: Path, tmp_path: Path) -> None:
    blocks = _blocks(page)
    for item in cert_dir.iterdir():
        shutil.copy(item, tmp_path / item.name)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("UNITLS_ENGINE", None)
    if os.environ.get("UNITLS_DOCS_ENGINE"):  # to try the pages on another default engine
        env["UNITLS_ENGINE"] = os.environ["UNITLS_DOCS_ENGINE"]
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps([(b.page, b.line, b.code) for b in blocks]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    outputs = proc.stdout.split(_MARK + "\n")
    assert proc.returncode == 0, f"{page} failed:\n{proc.stderr}"
    assert len(outputs) == len(blocks) + 1, proc.stdout
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for block, got in zip(blocks, outputs, strict=False):
        if block.expected is not None:
            assert checker.check_output(block.expected, got, flags), (
                f"{block.page}:{block.line}: printed\n{got}\nbut the page shows\n{block.expected}"
            )
