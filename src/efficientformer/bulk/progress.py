"""A quiet progress report for long runs: images done, images/s and time left, on stderr.

On a terminal the line is redrawn in place (at most REDRAW_SECONDS apart); anywhere else (a log file, a CI
job, a pipe) a plain line is written at most every LOG_SECONDS, plus one at the end, so a job over a
million files writes hundreds of lines, not millions of carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

REDRAW_SECONDS = 0.2
LOG_SECONDS = 10.0


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """`update(n)` after each batch, `write(line)` to print a result without breaking the bar, `close()`.

    Args:
        total: images to do in this run.
        desc: the word the line starts with.
        stream: where the report goes (default stderr).
        interval: seconds between lines when `stream` is not a terminal (default LOG_SECONDS).
        clock: the time function (tests pass their own).
    """

    def __init__(self, total: int, desc: str = "predicting", stream: TextIO | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc = total, desc
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = REDRAW_SECONDS if self.tty else (LOG_SECONDS if interval is None else interval)
        self.done = 0
        self.start = self.clock()
        self.last = self.start
        self.drawn = False
        self.closed = False

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = f", {_duration((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total else ""
        if self.tty and self.total:
            width = 20
            full = int(width * self.done / self.total)
            bar = "[" + "#" * full + "." * (width - full) + "] "
        else:
            bar = ""
        return (f"{self.desc} {bar}{self.done}/{self.total}{share}, {rate:.1f} images/s, "
                f"{_duration(elapsed)} elapsed{left}")

    def _draw(self, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
            self.drawn = not final
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def update(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._draw()

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print `text` (a result line) to `file` (default stdout), keeping a terminal's bar below it."""
        out = file if file is not None else sys.stdout
        if self.tty and self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
        print(text, file=out, flush=True)
        if self.tty and self.drawn:
            self._draw()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._draw(final=True)
