"""Live progress of long work: a tqdm bar where stderr is a terminal, else a periodic line.

A job run under nohup, cron, CI or a pipe has no terminal to redraw a bar on, and a bar's
carriage returns would fill a log file with one line per update; there a line like

    [20:55:01] crawl docs.python.org: 1,234 pages, 41.2/s, 12 errors, queue 5,678

is written at most every `interval` seconds (and once at the end), so a long run shows it is
alive and how fast it goes. `Progress` is what `Engine.map` (shards of every stage) and the
crawler (pages) report through.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm.auto import tqdm


class Progress:
    """Counts done items of `desc`; `mode` is "bar", "lines" or "off" (None: "bar" when
    `stream` is a terminal, else "lines"). `stats()` adds fields (errors, queue size) to each
    report. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        desc: str,
        *,
        total: int | None = None,
        unit: str = "item",
        mode: str | None = None,
        interval: float = 10.0,
        stats: Callable[[], dict[str, int]] | None = None,
        stream: TextIO | None = None,
    ):
        self.stream = stream or sys.stderr
        if mode is None:
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "lines"
        self.mode = mode
        self.desc = desc
        self.total = total
        self.unit = unit
        self.interval = interval
        self.stats = stats
        self.done = 0
        self.started = time.monotonic()
        self.last_line = self.started
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream) if mode == "bar" else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if self.stats is not None:
                self.bar.set_postfix(self.stats(), refresh=False)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self.last_line >= self.interval:
                self.last_line = now
                self._line()

    def line(self) -> str:
        """The current report: done (of total), rate, elapsed time and `stats()`."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        parts = [f"{done} {self.unit}s", f"{self.done / elapsed:.1f}/s", f"{elapsed:.0f}s"]
        for key, value in (self.stats() if self.stats is not None else {}).items():
            parts.append(f"{value:,} {key}")
        return f"[{time.strftime('%H:%M:%S')}] {self.desc}: " + ", ".join(parts)

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "lines" and self.done and time.monotonic() - self.started >= self.interval:
            self._line()  # the final count of a run long enough to have reported on the way
        self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
