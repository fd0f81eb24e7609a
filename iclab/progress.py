"""Progress of many things at once (trials of a sweep), fit for a terminal and for a log file.

On a terminal one status line is redrawn in place; anywhere else (CI, ``nohup``, a file) a plain line is printed
when something changes, at most once every `every_s` seconds, plus a last one at the end — a log of a long sweep
stays a few lines per minute instead of thousands of carriage-return redraws. `LineProgress` does the same for the
steps of one training run (iclab.training.trainer uses it instead of tqdm when its output is not a terminal).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["LineProgress", "SweepProgress", "format_duration", "step_progress"]


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = round(max(seconds, 0.0))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class SweepProgress:
    """Counts of units by state (pending / running / done / diverged / failed) with an ETA from the finished
    ones' mean wall time and the number running at once."""

    STATES = ("pending", "running", "done", "diverged", "failed")

    def __init__(self, total: int, *, parallel: int = 1, stream: TextIO | None = None, every_s: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.counts = dict.fromkeys(self.STATES, 0)
        self.counts["pending"] = total
        self.total, self.parallel, self.every_s = total, max(parallel, 1), every_s
        self.began = time.perf_counter()
        self.walls: list[float] = []
        self._last_print = -float("inf")
        self._last_line = ""

    def move(self, old: str, new: str, wall_s: float | None = None) -> None:
        """One unit went from state `old` to `new` (its wall time if it finished)."""
        self.counts[old] -= 1
        self.counts[new] += 1
        if wall_s is not None and new in ("done", "diverged"):
            self.walls.append(wall_s)
        self.show()

    def line(self) -> str:
        c = self.counts
        left = c["pending"] + c["running"]
        eta = ""
        if self.walls and left:
            eta = f", ETA {format_duration(sum(self.walls) / len(self.walls) * left / self.parallel)}"
        failed = f", {c['failed']} failed" if c["failed"] else ""
        diverged = f", {c['diverged']} diverged" if c["diverged"] else ""
        return (
            f"sweep: {c['done']}/{self.total} done, {c['running']} running, {c['pending']} pending{diverged}{failed}"
            f" ({format_duration(time.perf_counter() - self.began)}{eta})"
        )

    def show(self, *, final: bool = False) -> None:
        line = self.line()
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last_line)) + ("\n" if final else ""))
        elif final or (time.perf_counter() - self._last_print >= self.every_s and line != self._last_line):
            self.stream.write(line + "\n")
            self._last_print = time.perf_counter()
        else:
            return
        self._last_line = line
        self.stream.flush()


class LineProgress:
    """tqdm's small subset the trainer uses (update, set_postfix, close), as plain lines at most every `every_s`
    seconds: "NAME: step 1200/3000 (40%), 12.3 s, eval_half_mse=0.133"."""

    def __init__(self, total: int, initial: int, desc: str, *, stream: TextIO | None = None, every_s: float = 30.0):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.n, self.desc, self.every_s = total, initial, desc, every_s
        self.began = self._last = time.perf_counter()
        self.postfix = ""

    def set_postfix(self, **values: str) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        now = time.perf_counter()
        if now - self._last >= self.every_s or self.n >= self.total:
            self._print()
            self._last = now

    def update(self, n: int) -> None:
        self.n += n

    def _print(self) -> None:
        pct = 100 * self.n / max(self.total, 1)
        extra = f", {self.postfix}" if self.postfix else ""
        self.stream.write(
            f"{self.desc}: step {self.n}/{self.total} ({pct:.0f}%), {time.perf_counter() - self.began:.1f} s{extra}\n"
        )
        self.stream.flush()

    def close(self) -> None:
        pass


def step_progress(total: int, initial: int, desc: str, *, enabled: bool) -> Any:
    """A progress display of training steps: tqdm on a terminal, LineProgress elsewhere, nothing if not `enabled`."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return LineProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, leave=False)
