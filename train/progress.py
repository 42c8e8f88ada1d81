"""Progress on stderr: a bar for the steps of each epoch with the loss and the validation AUC.

On a terminal the bar is redrawn in place (as :mod:`client.progress` draws the client's); elsewhere
(a log file, CI) one line per stage and per epoch is written instead.
"""

from __future__ import annotations

import time
from typing import TextIO

from client.progress import CLEAR_LINE, EMPTY, FILLED, format_duration

BAR_WIDTH = 24
#: Redraw the bar at most this often (seconds): steps can be much faster than a terminal.
REDRAW_S = 0.1


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class TrainingProgress:
    """Notes, stage counters and the epochs' bar.

    Args:
        err: where everything goes (stderr).
        bar: redraw in place (a terminal); else one line per epoch.
    """

    def __init__(self, err: TextIO, bar: bool) -> None:
        self._err = err
        self._bar = bar
        self._drawn = False
        self._last_draw = 0.0
        self._start = time.monotonic()
        self._counted: set[str] = set()

    def note(self, line: str) -> None:
        """A line of its own (the bar, if drawn, is lifted first)."""
        self._clear()
        self._err.write(line + "\n")
        self._err.flush()

    def count(self, what: str, done: int, total: int) -> None:
        """A stage's counter (``preprocessing 12/40``): redrawn on a terminal, else its last value only."""
        if self._bar:
            self._draw(f"{what} {done}/{total}", force=done == total)
        elif done == total and what not in self._counted:
            self._counted.add(what)
            self.note(f"{what} {done}/{total}")

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss: float, best_auc: float | None) -> None:
        if not self._bar:
            return
        filled = BAR_WIDTH * step // max(steps, 1)
        elapsed = format_duration(time.monotonic() - self._start)
        self._draw(
            f"epoch {epoch}/{epochs} [{FILLED * filled}{EMPTY * (BAR_WIDTH - filled)}] step {step}/{steps} "
            f"loss {loss:.4f} | best val AUC {_number(best_auc)} | {elapsed}",
            force=step == steps,
        )

    def epoch(self, epoch: int, epochs: int, loss: float, val_auc: float | None, val_loss: float | None, best: bool):
        elapsed = format_duration(time.monotonic() - self._start)
        self.note(
            f"epoch {epoch}/{epochs}: loss {loss:.4f}, validation AUC {_number(val_auc)}, "
            f"log-loss {_number(val_loss)}{' (best so far)' if best else ''}, {elapsed}"
        )

    def close(self) -> None:
        self._clear()

    def _draw(self, text: str, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < REDRAW_S:
            return
        self._last_draw = now
        self._err.write(CLEAR_LINE + text)
        self._err.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self._err.write(CLEAR_LINE)
            self._err.flush()
            self._drawn = False
