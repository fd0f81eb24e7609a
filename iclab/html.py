"""Self-contained HTML for reports: real tables (from rows or from `format_table` text), claims with the failing
ones marked, figures embedded as data URIs, one stylesheet. A page opens offline: it loads nothing."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

__all__ = ["cell_text", "claims_table", "details", "figure", "page", "table", "text_table"]

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.3em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.1em}
.scroll{overflow-x:auto;margin:.5em 0}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th,td{white-space:normal;overflow-wrap:break-word;max-width:26em}
th{background:#f0f0f0}
tr.fail td{background:#fde2e2;color:#8a0000;font-weight:600}
td.holds-no{color:#b00000;font-weight:700}td.holds-yes{color:#116611}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
details pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:.8em}
.meta{color:#555;font-size:.9em}
.summary-fail{color:#b00000;font-weight:700}
"""


def cell_text(value: Any) -> str:
    """A table cell's text: yes / NO for verdicts, 4 significant digits for floats."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[dict[str, Any]], *, fail_column: str | None = None) -> str:
    """An HTML table of `rows` (keys of the first row as the header); with `fail_column`, rows whose value there is
    False get class "fail"."""
    if not rows:
        return "<p>(none)</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        failed = fail_column is not None and row.get(fail_column) is False
        cells = []
        for c in columns:
            value = row.get(c, "")
            verdict = "holds-yes" if value else "holds-no"
            cls = f' class="{verdict}"' if c == fail_column and isinstance(value, bool) else ""
            cells.append(f"<td{cls}>{html.escape(cell_text(value))}</td>")
        row_class = ' class="fail"' if failed else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    rows_html = "".join(body)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table></div>'


def text_table(text: str) -> str:
    """HTML for the text of `iclab.report.format_table` (a Markdown pipe table, possibly several under headings):
    each table becomes a real table; other lines become headings or paragraphs."""
    out: list[str] = []
    block: list[list[str]] = []

    def flush() -> None:
        if block:
            header, *rows = block
            out.append(table([dict(zip(header, r)) for r in rows]) if rows else "")
            block.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            cells = [c.strip() for c in stripped[1:-1].split("|")]
            if all(set(c) <= {"-", ":"} and c for c in cells):
                continue  # the separator row
            block.append(cells)
        else:
            flush()
            if stripped:
                out.append(f"<h3>{html.escape(stripped)}</h3>")
    flush()
    return "".join(out)


def claims_table(claims: list[dict[str, Any]]) -> str:
    """The claims (Claim.to_dict, each with an optional "paper") as a table — paper, claim, reference, measured,
    tolerance, holds; failing ones stand out."""
    rows = [
        {
            **({"paper": c["paper"]} if "paper" in c else {}),
            "claim": c["id"],
            "reference": c["reference"],
            "measured": c["measured"],
            "tolerance": c["tolerance"],
            "holds": bool(c["holds"]),
        }
        for c in claims
    ]
    return table(rows, fail_column="holds")


def figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.stem)}</figcaption></figure>"
    )


def details(summary: str, text: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>"


def page(title: str, body: list[str]) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
