"""One progress line per interval for a long stage: where it is, how fast it goes, when it will finish."""

from __future__ import annotations

import math
import sys
import time


def duration(seconds: float) -> str:
    """``42s``, ``16m``, ``2h05m``: short enough for a log line; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(
    noun: str, done: int, total: int, seconds_per_item: float, rate: str = "", **values: float
) -> str:
    """``step 120/2000 (6%) loss 0.412 1.9 samples/s eta 16m``: ``values`` are printed as ``name value``
    (4 significant digits) and the ETA is the items left at ``seconds_per_item``."""
    shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
    eta = duration((total - done) * seconds_per_item)
    parts = [f"{noun} {done}/{total} ({100 * done / max(total, 1):.0f}%)", shown, rate, f"eta {eta}"]
    return " ".join(p for p in parts if p)


class Progress:
    """Items done out of a total; the ETA and rate come from the average time per item so far."""

    def __init__(self, noun: str, total: int, clock=time.perf_counter) -> None:
        self.noun, self.total, self.clock = noun, total, clock
        self.start = clock()

    def line(self, done: int, **values: float) -> str:
        elapsed = self.clock() - self.start
        per_item = elapsed / done if done else math.nan
        rate = f"{done / elapsed:.3g} {self.noun}/s" if done and elapsed > 0 else ""
        return progress_line(self.noun, done, self.total, per_item, rate, **values)


def console(line: str) -> None:
    """Write one line to the process's own stdout. Inside a Ray Train worker ``print`` is patched to go to a
    logger as well as to a wrapped stdout, so a printed line reached the driver's console twice."""
    out = sys.__stdout__ or sys.stdout
    out.write(line + "\n")
    out.flush()
