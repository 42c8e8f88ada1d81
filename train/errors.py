"""The one error a training run stops with: a sentence for the user and the exit status."""

from __future__ import annotations

from contract import Exit


class TrainError(Exception):
    """A run that cannot go on; ``str(error)`` is one line naming the problem.

    Args:
        message: what is wrong and, where it helps, what to do.
        status: the exit status (:attr:`contract.Exit.USAGE` for bad arguments or input, the
            default; :attr:`contract.Exit.FAILED` when the server failed).
    """

    def __init__(self, message: str, status: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.status = status
