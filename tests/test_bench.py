"""`iclab bench` runs both paths of every case and reports their times (speed itself is not asserted)."""

import json

from iclab.bench import TRAIN_STEPS
from iclab.cli import main


def test_bench_cli_writes_every_case(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--repeats", "1", "--batch", "32", "--eval-prompts", "8", "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    assert "speed-up" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["machine"]["cpu"] and written["machine"]["torch_threads"] == 1
    cases = written["cases"]
    # a training step per model family, three ensembles, GD, one eval row per learner and the eval total
    assert len(cases) == len(TRAIN_STEPS) + 3 + 2 + 8  # … LSA ensembles of 8 and 64, 16 attn_only members
    assert {c["case"].split(",")[0] for c in cases} >= {case.split(",")[0] for case, *_ in TRAIN_STEPS}
    for case in cases:
        assert case["fast_ms"] > 0 and case["naive_ms"] > 0
        assert abs(case["speedup"] - case["naive_ms"] / case["fast_ms"]) < 1e-9


def test_bench_rejects_bad_repeats(capsys):
    assert main(["bench", "--repeats", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: repeats")


def test_target_lines_compare_with_the_targets_and_name_the_bound():
    from iclab.bench import BenchResult, target_lines

    results = [
        BenchResult("LSA train step, 1 layer, batch 2048", 3.0, 6.0),
        BenchResult("LSA train step, 5 layers, batch 2048", 10.0, 30.0),
        BenchResult("64 LSA members, batch 256 each: ensemble vs one by one", 20.0, 80.0),
    ]
    lines = target_lines(results)
    assert (
        lines[0].startswith("target LSA train step, 1 layer") and "missed by 1.50x; bound: prompt sampling" in lines[0]
    )
    assert lines[1].endswith(": met")
    assert "ensemble 4.0x" in lines[2] and "missed (4.0x)" in lines[2]
    assert target_lines([BenchResult("LSA train step, 1 layer, batch 32", 1.0, 2.0)]) == []  # other sizes: no claim
