"""The test tree itself: pytest's default "prepend" import mode imports each test file under
its bare module name, so two files with one basename in different folders stop the whole
collection ("import file mismatch")."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_basename() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert len(names) > 50  # the glob found the tree
    assert [n for n, count in names.items() if count > 1] == []
