"""Sources cite papers and their own repository only: no issue numbers, no files outside the repository.

A reader of the code has the repository, not our issue tracker or the team's shared notes, so a
docstring or comment that points there points nowhere. Papers are cited by arXiv id or venue.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("codesign", "hwcost", "nets", "scripts", "tests")
# "issue 9", "issues 5 and 6", "shared/reference/x.md", "/work/shared/..."; a GitHub issue of
# another project cited by URL (github.com/.../issues/123) is a public reference and allowed
OUTSIDE = re.compile(r"\bissues? #?\d+|shared/reference|/work/shared|\.\./shared", re.IGNORECASE)


def outside_citations(text: str, name: str = "<source>") -> list[str]:
    """`file:line: text` for every line of `text` that cites an issue number or a file outside the repository."""
    return [f"{name}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line) and "github.com" not in line]


def test_the_pattern_finds_what_it_must():
    assert outside_citations('"""A demo of issue 9."""\n')
    assert outside_citations("# facts in shared/reference/duplex.md\n")
    assert outside_citations("see /work/shared/DESIGN.md\n")
    assert not outside_citations("# https://github.com/jax-ml/jax/issues/1234\n")
    assert not outside_citations('"""Duplex (MICRO 2024, arXiv 2409.01141)."""\n')


def test_no_source_cites_an_issue_or_an_outside_file():
    this = Path(__file__).resolve()
    found = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.resolve() != this:
                found += outside_citations(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)
