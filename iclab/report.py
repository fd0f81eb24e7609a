"""Claims tables and the report (Markdown + self-contained HTML) every reproduction writes."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from iclab import html as pages
from iclab.runs import atomic_write_bytes

__all__ = ["Claim", "format_table", "write_report"]


@dataclass(frozen=True)
class Claim:
    """One checked statement: `measured` against `reference` within `tolerance`; `holds` is the verdict."""

    id: str
    description: str
    reference: float | str
    measured: float
    tolerance: float | str
    holds: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Fixed-width text table (also valid Markdown)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    cells = [[pages.cell_text(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), sep, *(line(r) for r in cells)])


def claims_table(claims: list[Claim]) -> str:
    return format_table(
        [
            {
                "claim": c.id,
                "measured": c.measured,
                "reference": c.reference,
                "tolerance": c.tolerance,
                "holds": c.holds,
            }
            for c in claims
        ]
    )


def write_report(
    out: Path, title: str, sections: list[tuple[str, str]], claims: list[Claim], figures: list[Path]
) -> tuple[Path, Path]:
    """Write report.md and report.html (figures embedded) under `out`; return both paths."""
    md = [f"# {title}", ""]
    for heading, table in sections:
        md += [f"## {heading}", "", table, ""]
    md += ["## Claims", "", claims_table(claims), ""]
    for c in claims:
        md.append(f"* **{c.id}** — {c.description}")
    md += ["", "## Figures", ""] + [f"![{f.stem}]({f.relative_to(out)})" for f in figures]
    md_path = out / "report.md"
    atomic_write_bytes(md_path, ("\n".join(md) + "\n").encode())

    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, text in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>{pages.text_table(text)}")
    body.append(f"<h2>Claims</h2>{pages.claims_table([c.to_dict() for c in claims])}<ul>")
    body += [f"<li><b>{html.escape(c.id)}</b> — {html.escape(c.description)}</li>" for c in claims]
    body.append("</ul><h2>Figures</h2>")
    body += [pages.figure(f) for f in figures]
    page = pages.page(title, body)
    html_path = out / "report.html"
    atomic_write_bytes(html_path, page.encode())
    return md_path, html_path
