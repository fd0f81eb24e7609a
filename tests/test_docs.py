"""Every `docs/<file>.md §<n>` citation in the code, tests and README names a file and a section that exist, and no
source file still cites the notes that used to live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# This file is left out: its own examples cite sections that do not exist on purpose.
SOURCES = sorted(
    p
    for p in [*(ROOT / "iclab").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), ROOT / "README.md"]
    if p != Path(__file__).resolve()
)

# "docs/papers.md §6", "docs/papers.md §2, §5", "docs/papers.md §6–7", or a bare "docs/metrics.md".
CITATION = re.compile(r"docs/([\w./-]+?\.md)((?:\s*(?:§|,\s*§|[–-])\s*\d+)*)")
SECTION = re.compile(r"§\s*(\d+)(?:\s*[–-]\s*(\d+))?")
HEADING = re.compile(r"^#{1,6}\s+§(\d+)\b", re.MULTILINE)
# Spelled in pieces so that this file does not match its own check.
STALE = (
    "REFERENCE" + " §",
    "REFERENCE" + ".md",
    "DESIGN" + ".md",
    "DESIGN" + ' "',
    "PERF" + "_NOTES",
    "../" + "shared",
)


def citations(text: str) -> list[tuple[str, list[int]]]:
    """(file, cited section numbers) for each docs/ citation in `text`; ranges such as §6–7 expand."""
    found = []
    for match in CITATION.finditer(text):
        sections: list[int] = []
        for sec in SECTION.finditer(match.group(2)):
            lo = int(sec.group(1))
            sections.extend(range(lo, int(sec.group(2) or lo) + 1))
        tail = match.group(2)
        sections.extend(int(n) for n in re.findall(r",\s*(\d+)", tail))  # "§2, 5"
        found.append((match.group(1), sections))
    return found


def sections_of(doc: Path) -> set[int]:
    return {int(n) for n in HEADING.findall(doc.read_text(encoding="utf-8"))}


def _broken(paths: list[Path]) -> list[str]:
    problems = []
    for path in paths:
        for name, sections in citations(path.read_text(encoding="utf-8")):
            doc = DOCS / name
            if not doc.is_file():
                problems.append(f"{path.name}: docs/{name} does not exist")
                continue
            missing = sorted(set(sections) - sections_of(doc))
            if missing:
                problems.append(f"{path.name}: docs/{name} has no heading §{missing}")
    return problems


def test_citation_parser() -> None:
    assert citations("see docs/papers.md §2, §5 and docs/metrics.md.") == [("papers.md", [2, 5]), ("metrics.md", [])]
    assert citations("(docs/papers.md §6–7)") == [("papers.md", [6, 7])]


def test_sources_cite_docs() -> None:
    assert any(citations(p.read_text(encoding="utf-8")) for p in SOURCES), "no docs/ citations found at all"


def test_citations_resolve() -> None:
    assert _broken(SOURCES) == []


def test_broken_citation_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""See docs/papers.md §99 and docs/nowhere.md."""\n', encoding="utf-8")
    assert _broken([bad]) == ["bad.py: docs/papers.md has no heading §[99]", "bad.py: docs/nowhere.md does not exist"]


@pytest.mark.parametrize("stale", STALE)
def test_no_citations_outside_repo(stale: str) -> None:
    hits = [str(p.relative_to(ROOT)) for p in SOURCES if stale in p.read_text(encoding="utf-8")]
    assert hits == [], f"{stale!r} cited in {hits}; cite docs/ instead"


def test_docs_sections_numbered_in_order() -> None:
    for doc in sorted(DOCS.glob("*.md")):
        numbers = [int(n) for n in HEADING.findall(doc.read_text(encoding="utf-8"))]
        assert numbers == list(range(1, len(numbers) + 1)), (doc.name, numbers)
