"""Progress off a terminal (iclab.progress): plain lines, throttled, never carriage-return redraws."""

import io

from iclab.progress import LineProgress, SweepProgress, format_duration, step_progress


def test_sweep_progress_writes_throttled_plain_lines_when_not_a_terminal():
    stream = io.StringIO()  # not a terminal
    progress = SweepProgress(3, stream=stream, every_s=3600.0)
    progress.move("pending", "running")  # the first change is printed
    progress.move("running", "done", wall_s=2.0)  # within every_s: not printed
    progress.move("pending", "running")
    progress.show(final=True)  # the last line always is
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2
    assert lines[0].startswith("sweep: 0/3 done, 1 running, 2 pending")
    assert lines[1].startswith("sweep: 1/3 done, 1 running, 1 pending") and "ETA 4s" in lines[1]  # 2 s each x 2 left


def test_line_progress_prints_the_end_and_at_most_every_interval():
    stream = io.StringIO()
    bar = LineProgress(100, 0, "run", stream=stream, every_s=3600.0)
    for _ in range(10):
        bar.update(10)
        bar.set_postfix(eval_half_mse="0.1")
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]  # only step 100/100
    assert stream.getvalue().startswith("run: step 100/100 (100%)") and "eval_half_mse=0.1" in stream.getvalue()


def test_step_progress_is_plain_off_a_terminal_and_durations_read_well():
    assert isinstance(step_progress(10, 0, "x", enabled=True), LineProgress)  # pytest's stderr is not a terminal
    assert [format_duration(s) for s in (42, 185, 3725)] == ["42s", "3m05s", "1h02m"]
