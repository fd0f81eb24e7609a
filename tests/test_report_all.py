"""`iclab report DIR` (iclab.report_all): one self-contained page for every reproduction and sweep found, with real
tables, failing claims marked and figures embedded; rendered by headless Chromium where it is installed."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib import image

from iclab.cli import main
from iclab.report_all import report_all
from iclab.sweeps import parse_spec, run_sweep

MAGENTA = (1.0, 0.0, 1.0)


def _fake_reproduction(out, name="paper-a", holds=(True, False)):
    (out / "figures").mkdir(parents=True)
    picture = np.zeros((120, 200, 3))
    picture[:] = MAGENTA  # a colour no other part of the page has: its pixels prove the figure is drawn
    image.imsave(out / "figures" / "only.png", picture)
    claims = [
        {"id": f"claim_{i}", "description": f"claim {i}", "reference": 1.0, "measured": 1.0 + i, "tolerance": "1 %",
         "holds": h}
        for i, h in enumerate(holds)
    ]  # fmt: skip
    table = "| model | loss |\n|-------|------|\n| LSA   | 0.2  |"
    results = {"name": name, "config": {"scale": "smoke", "device": "cpu", "seed": 0}, "metrics": {"wall_time_s": 12.0},
               "claims": claims, "table": table}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results))
    (out / "report.md").write_text(f"# {name} title\n")


def test_the_report_gathers_reproductions_and_sweeps_into_one_page(tmp_path, capsys):
    _fake_reproduction(tmp_path / "a")
    _fake_reproduction(tmp_path / "nested" / "b", name="paper-b", holds=(True,))
    spec = parse_spec(
        {
            "name": "tiny",
            "base": {"overrides": {"task.d": 2, "task.n_points": 4, "train.steps": 10, "train.batch_size": 16,
                                   "train.eval_every": 5, "train.checkpoint_every": 5, "eval.n_prompts": 50}},
            "grid": {"task.noise_var": [0.0, 0.5]},
            "seeds": [0, 1],
        }
    )  # fmt: skip
    run_sweep(spec, out=tmp_path / "sweeps" / "tiny")
    assert main(["report", str(tmp_path)]) == 0
    assert "2 reproduction(s), 1 sweep(s); 2/3 claims hold" in capsys.readouterr().out
    page = (tmp_path / "iclab-report.html").read_text()
    assert page.count("<table>") >= 5 and "<pre>| model" not in page  # real tables, not preformatted text
    assert len(re.findall(r'<tr class="fail">', page)) == 2  # the failing claim in the summary and in its section
    assert page.count("data:image/png;base64,") == 3  # both reproductions' figures and the sweep's
    assert not re.search(r'(src|href)="(https?:)?//', page)  # opens offline: nothing fetched
    assert "paper-b title" in page and "Sweep tiny" in page and "1 do not hold" in page


def test_an_empty_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no reproduction (results.json) or sweep (sweep.json)" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_headless_chromium_renders_every_figure(tmp_path):
    _fake_reproduction(tmp_path / "a")
    page, _ = report_all(tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
         "--window-size=1280,2400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = image.imread(shot)[..., :3]
    magenta = np.all(np.abs(pixels - np.array(MAGENTA)) < 0.05, axis=-1)
    assert magenta.sum() > 0.5 * 120 * 200  # the embedded figure is drawn (at least half of its pixels)
    reddish = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.93) & (pixels[..., 1] > 0.8) & (pixels[..., 2] < 0.93)
    assert reddish.sum() > 1000  # the failing claim's row background (#fde2e2) stands out


def test_a_damaged_reproduction_is_skipped_and_named(tmp_path, capsys):
    _fake_reproduction(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"name": "bad", "claims": [{"id": "x"}]}))
    assert main(["report", str(tmp_path)]) == 0
    assert "1 damaged one(s) skipped" in capsys.readouterr().out
    page = (tmp_path / "iclab-report.html").read_text()
    assert "<h2>Skipped</h2>" in page and "bad" in page and "paper-a title" in page
