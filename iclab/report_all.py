"""`iclab report DIR`: every reproduction and every sweep found under DIR in one self-contained HTML page.

The page opens offline (figures are embedded, nothing is fetched): a summary of every claim (paper, claim,
reference, measured, tolerance, holds, the failing ones marked), then one section per reproduction — its tables
as HTML tables, its claims, its figures, its wall time, the machine and the iclab version and git SHA it ran with,
and its configs — and one per sweep: where it stands, the mean over seeds per cell and its figure.

A reproduction is a directory with a results.json holding "name" and "claims" (what `iclab reproduce` writes);
a sweep is a directory with a sweep.json (`iclab sweep`).
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path
from typing import Any

from iclab import html as pages
from iclab.errors import RunNotFoundError
from iclab.runs import atomic_write_bytes

__all__ = ["find", "report_all"]


def find(directory: Path) -> tuple[list[Path], list[Path]]:
    """(reproduction directories, sweep directories) under `directory`, sorted; runs inside them are not listed."""
    repros, sweeps = [], []
    for path in sorted(directory.rglob("results.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"name", "claims"} <= set(data):
            repros.append(path.parent)
    sweeps = sorted(p.parent for p in directory.rglob("sweep.json"))
    return repros, sweeps


def _provenance(out: Path) -> dict[str, Any]:
    """iclab version, git SHA and torch version of the reproduction's runs (from a run's config.json)."""
    for config in sorted((out / "runs").glob("*/config.json")):
        try:
            record = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return {k: record.get(k) for k in ("iclab_version", "git_sha", "torch_version", "created")}
    return {}


def _title(out: Path, results: dict[str, Any]) -> str:
    md = out / "report.md"
    if md.is_file():
        first = md.read_text(encoding="utf-8").splitlines()[:1]
        if first and first[0].startswith("# "):
            return first[0][2:]
    return str(results["name"])


def _reproduction(out: Path, root: Path) -> tuple[dict[str, Any], list[str]]:
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    title = _title(out, results)
    claims = results["claims"]
    held = sum(bool(c["holds"]) for c in claims)
    metrics = results.get("metrics", {})
    config = results.get("config", {})
    prov = _provenance(out)
    machine = config.get("machine") or {}
    machine_text = (
        f"{machine.get('cpu', '?')} ({machine.get('cpu_cores', '?')} cores)"
        + (f", {machine['gpu']}" if machine.get("gpu") else "")
        if machine
        else "not recorded"
    )
    wall = metrics.get("wall_time_s")
    meta = [
        f"directory: {out.relative_to(root) if out.is_relative_to(root) else out}",
        f"scale: {config.get('scale', '?')}, device: {config.get('device', '?')}, seed: {config.get('seed', '?')}",
        f"wall time: {wall:.0f} s" if isinstance(wall, int | float) else "wall time: not recorded",
        f"machine: {machine_text}",
        f"iclab {prov.get('iclab_version', '?')}, git {prov.get('git_sha') or 'unknown'}, torch "
        f"{prov.get('torch_version', '?')}",
    ]
    body = [
        f"<h2>{html.escape(title)}</h2>",
        f'<p class="meta">{"<br>".join(html.escape(m) for m in meta)}</p>',
        f"<p>{held}/{len(claims)} claims hold.</p>",
        pages.claims_table(claims),
        "<ul>" + "".join(f"<li><b>{html.escape(c['id'])}</b> — {html.escape(c['description'])}</li>" for c in claims),
        "</ul>",
    ]
    if results.get("table"):
        body.append("<h3>Results</h3>" + pages.text_table(results["table"]))
    body += [pages.figure(f) for f in sorted((out / "figures").glob("*.png"))]
    body.append(pages.details("configs (JSON)", json.dumps(config, indent=2)))
    return {"name": results["name"], "title": title, "claims": claims}, body


def _sweep(out: Path, root: Path) -> list[str]:
    from iclab.sweeps import collect, plot_sweep, summarise, sweep_status
    from iclab.sweeps.store import SweepDir

    status = sweep_status(out)
    axes = SweepDir(out).record()["axes"]
    table = collect(out, write=False)
    counts = ", ".join(f"{n} {s}" for s, n in status["counts"].items() if n)
    body = [
        f"<h2>Sweep {html.escape(status['name'])}</h2>",
        f'<p class="meta">directory: {html.escape(str(out.relative_to(root) if out.is_relative_to(root) else out))}'
        f"<br>units: {html.escape(counts)}</p>",
        "<h3>Mean over seeds per cell</h3>" + pages.text_table(summarise(table, axes)),
    ]
    if axes and "eval_half_mse" in table:
        with tempfile.TemporaryDirectory() as tmp:
            hue = axes[1] if len(axes) > 1 else None
            body.append(pages.figure(plot_sweep(table, axes[0], hue, Path(tmp) / f"sweep-{status['name']}.png")))
    return body


def report_all(directory: str | Path, out: str | Path | None = None) -> tuple[Path, dict[str, int]]:
    """Write the report of everything under `directory` to `out` (default DIRECTORY/iclab-report.html); returns
    (its path, {"reproductions", "sweeps", "claims", "holding"})."""
    root = Path(directory)
    if not root.is_dir():
        raise RunNotFoundError(f"report: {root} is not a directory")
    repros, sweeps = find(root)
    if not repros and not sweeps:
        raise RunNotFoundError(f"report: no reproduction (results.json) or sweep (sweep.json) under {root}")
    sections, summary_rows, skipped = [], [], []
    for path in repros:
        try:
            info, body = _reproduction(path, root)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged results.json: named, the rest goes on
            skipped.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        sections += body
        summary_rows += [{"paper": info["name"], **c} for c in info["claims"]]
    for path in sweeps:
        try:
            sections += _sweep(path, root)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            skipped.append(f"{path}: {type(exc).__name__}: {exc}")
    if skipped:
        sections.append("<h2>Skipped</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>")
    held = sum(bool(r["holds"]) for r in summary_rows)
    failing = len(summary_rows) - held
    verdict = f'<span class="summary-fail">{failing} do not hold</span>' if failing else "all hold"
    head = [
        "<h1>iclab report</h1>",
        f"<p>{len(repros)} reproduction(s), {len(sweeps)} sweep(s) under {html.escape(str(root))}; "
        f"{held}/{len(summary_rows)} claims hold ({verdict}).</p>",
        "<h2>Summary</h2>",
        pages.claims_table(summary_rows),
    ]
    target = Path(out) if out is not None else root / "iclab-report.html"
    atomic_write_bytes(target, pages.page("iclab report", head + sections).encode())
    counts = {
        "reproductions": len(repros),
        "sweeps": len(sweeps),
        "claims": len(summary_rows),
        "holding": held,
        "skipped": len(skipped),
    }
    return target, counts
