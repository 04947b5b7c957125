"""Code comments cite documents inside this repository: every cited ``docs/...`` file exists, and
nothing points at design files kept outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SOURCES = ("backend", "services", "tests", "frontend/src")
SUFFIXES = {".py", ".ts", ".tsx"}
SKIP_PARTS = {"node_modules", "dist", "__pycache__", ".venv"}

CITATION = re.compile(r"\bdocs/[\w./-]+\.md\b")
#: A section sign not preceded by a document name (``docs/design-notes.md §5`` is fine).
OUTSIDE = re.compile(r"\bDESIGN(\.md)?\b\s*§|\.\./shared/|\bshared/DESIGN|\bdesign/0\d\d_")


def _sources() -> list[Path]:
    me = Path(__file__).resolve()
    files = []
    for top in SOURCES:
        for path in (ROOT / top).rglob("*"):
            if path.suffix in SUFFIXES and not SKIP_PARTS & set(path.parts) and path.resolve() != me:
                files.append(path)
    return sorted(files)


def test_there_are_sources_to_check() -> None:
    assert len(_sources()) > 100


def test_cited_documents_exist() -> None:
    missing = []
    for path in _sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for cited in CITATION.findall(line):
                if not (ROOT / cited).is_file():
                    missing.append(f"{path.relative_to(ROOT)}:{lineno} cites {cited}")
    assert not missing, "\n".join(missing)


def test_no_comment_points_outside_the_repository() -> None:
    outside = []
    for path in _sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                outside.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not outside, "cite docs/ instead:\n" + "\n".join(outside)


def test_section_signs_name_their_document() -> None:
    """A bare ``§5`` is ambiguous; every section sign follows a cited document on the same line."""
    bare = []
    for path in _sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "§" in line and not CITATION.search(line) and "design notes" not in line:
                bare.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not bare, "\n".join(bare)


def test_the_rules_catch_an_outside_citation() -> None:
    assert OUTSIDE.search("(" + "DESIGN" + " §5)")
    assert OUTSIDE.search("see ../" + "shared/DESIGN.md")
    assert not OUTSIDE.search("(docs/design-notes.md §5)")
    assert CITATION.findall("see docs/design-notes.md §5 and docs/adr/0004-fast-tts.md") == [
        "docs/design-notes.md",
        "docs/adr/0004-fast-tts.md",
    ]
