"""The repository explains itself: every `docs/<page>.md` (§n) cited in the code, tests or README exists, with the
cited section; nothing cites documents outside the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "iclab").rglob("*.py")), *sorted((ROOT / "tests").glob("*.py")), ROOT / "README.md"]
CITATION = re.compile(r"docs/([\w-]+\.md)(?: (§\d+))?")
OUTSIDE = re.compile(r"REFERENCE §|REFERENCE\.md|DESIGN\.md|DESIGN \"|PERF_NOTES|STYLE\.md|\.\./shared")


def _citations() -> list[tuple[str, str, str | None]]:
    found = []
    for path in SOURCES:
        if path.name == "test_docs.py":
            continue
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(ROOT)), match.group(1), match.group(2)))
    return found


def test_the_code_cites_docs():
    assert len(_citations()) >= 30  # the docstrings do cite docs/: a broken pattern would make the next test vacuous


@pytest.mark.parametrize(("source", "page", "section"), _citations())
def test_every_citation_resolves(source, page, section):
    doc = ROOT / "docs" / page
    assert doc.is_file(), f"{source} cites docs/{page}, which does not exist"
    if section is not None:
        headings = [line for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
        assert any(f"{section} " in h for h in headings), f"{source} cites docs/{page} {section}: no such section"


def test_nothing_cites_documents_outside_the_repository():
    for path in SOURCES:
        if path.name == "test_docs.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not OUTSIDE.search(line), f"{path.relative_to(ROOT)}:{number} cites outside the repo: {line.strip()}"


def test_the_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "README.md":
            assert f"({page.name})" in index, page.name
