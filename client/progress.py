"""A one-line progress bar for terminals, and a console that keeps it intact.

Result lines and the bar may share one terminal (stdout and stderr), so every
message goes through :class:`Console`, which lifts the bar, writes the line
and draws the bar again.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

BAR_WIDTH = 30
FILLED = "#"
EMPTY = "."
# Carriage return, then erase to the end of the line (ANSI "EL").
CLEAR_LINE = "\r\x1b[K"
SECONDS_PER_MINUTE = 60


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``; ``9.6`` -> ``"10s"``."""
    whole = round(seconds)
    minutes, rest = divmod(whole, SECONDS_PER_MINUTE)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def render_bar(done: int, total: int, failed: int, elapsed_s: float, width: int = BAR_WIDTH) -> str:
    """The bar's text, e.g. ``[#####.....] 5/10 videos, 1 failed, 12s, ETA 12s``."""
    filled = width if total <= 0 else min(width, done * width // total)
    text = f"[{FILLED * filled}{EMPTY * (width - filled)}] {done}/{total} videos"
    if failed:
        text += f", {failed} failed"
    text += f", {format_duration(elapsed_s)}"
    if 0 < done < total:
        text += f", ETA {format_duration(elapsed_s / done * (total - done))}"
    return text


class Console:
    """Thread-safe writer of result lines, notes and an optional progress bar.

    Args:
        out: where result lines go (stdout).
        err: where notes and the bar go (stderr).
        total: number of videos, for the bar.
        show_bar: draw the bar (only sensible when ``err`` is a terminal).
    """

    def __init__(self, out: TextIO, err: TextIO, total: int = 0, show_bar: bool = False) -> None:
        self._out = out
        self._err = err
        self._total = total
        self._show_bar = show_bar
        self._done = 0
        self._failed = 0
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._bar_drawn = False

    def result(self, line: str) -> None:
        """Writes a line to ``out``."""
        self._write(self._out, line)

    def note(self, line: str) -> None:
        """Writes a line to ``err``."""
        self._write(self._err, line)

    def draw(self) -> None:
        """Draws the bar (at the start, before any video has finished)."""
        with self._lock:
            self._draw()

    def advance(self, failed: bool) -> None:
        """Counts one finished video and redraws the bar."""
        with self._lock:
            self._done += 1
            self._failed += int(failed)
            self._draw()

    def close(self) -> None:
        """Leaves the final state of the bar on its own line."""
        with self._lock:
            if self._bar_drawn:
                self._err.write("\n")
                self._err.flush()
                self._bar_drawn = False
            self._show_bar = False

    def _write(self, stream: TextIO, line: str) -> None:
        with self._lock:
            if self._bar_drawn:
                self._err.write(CLEAR_LINE)
                self._err.flush()
                self._bar_drawn = False
            stream.write(line + "\n")
            stream.flush()
            self._draw()

    def _draw(self) -> None:
        if not self._show_bar:
            return
        elapsed = time.monotonic() - self._start
        self._err.write(CLEAR_LINE + render_bar(self._done, self._total, self._failed, elapsed))
        self._err.flush()
        self._bar_drawn = True
