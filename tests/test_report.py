"""Report: claims tables and the Markdown/HTML report with embedded figures."""

import numpy as np

from iclab.plotting import plot_curves
from iclab.report import Claim, claims_table, format_table, write_report


def test_format_table_aligns_columns_and_formats_numbers():
    table = format_table([{"a": 0.123456, "b": True}, {"a": 12, "b": False}])
    lines = table.splitlines()
    assert lines[0].startswith("| a ") and len({len(line) for line in lines}) == 1
    assert "0.1235" in table and "yes" in table and "NO" in table


def test_write_report_embeds_figures_and_lists_claims(tmp_path):
    fig = plot_curves(
        np.arange(3), {"c": np.array([1.0, 2.0, 3.0])}, tmp_path / "figures" / "f.png", xlabel="x", ylabel="y"
    )
    claims = [Claim("c1", "first claim", 1.0, 1.01, "5 %", True), Claim("c2", "second", 0.0, 3.0, "≤ 1", False)]
    md, html = write_report(tmp_path, "Title", [("Results", "| t |")], claims, [fig])
    text = md.read_text()
    assert "# Title" in text and "figures/f.png" in text and "**c2** — second" in text
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 1 and "second" in page
    assert "c2" in claims_table(claims) and "NO" in claims_table(claims)
