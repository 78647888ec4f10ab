"""The docs speak to users: no machine paths, tracker numbers or benchmark run letters.

A measurement names its commit and its date instead (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USER_DOCS = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
FORBIDDEN = {
    "an issue number": re.compile(r"\bissues? #?\d+", re.IGNORECASE),
    "a machine path": re.compile(r"/work/|/check/"),
    "a benchmark run letter": re.compile(r"\b[Rr]uns? [A-Z]\b"),
}


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_user_doc_names_no_issue_and_no_machine_path(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    found = [
        f"{what} at line {text.count(chr(10), 0, m.start()) + 1}: {m.group()!r}"
        for what, pattern in FORBIDDEN.items()
        for m in pattern.finditer(text)
    ]
    assert found == []


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_file_a_user_doc_names_exists(doc: Path) -> None:
    """A reader who opens the test or module a doc points to finds it (tests moved under
    tests/unit and tests/integration; the docs must follow)."""
    text = doc.read_text(encoding="utf-8")
    named = set(re.findall(r"\b((?:tests|benchmarks|batch_sender)/[\w/]+\.py)\b", text))
    assert sorted(p for p in named if not (ROOT / p).exists()) == []
