"""Errors raised by the preprocessing library.

Two families:

* :class:`InputError` and its subclasses: the input (the uploaded bytes) is at
  fault. A server answers these with INVALID_ARGUMENT and the message as is.
* :class:`ConfigError`: the pipeline was configured with a bad value; this is
  the operator's mistake, found when the pipeline is built.
"""

from __future__ import annotations


class InputError(ValueError):
    """The input cannot be processed: bad bytes, unsupported container, no face, ..."""


class LimitError(InputError):
    """A configured limit was exceeded.

    Attributes:
        limit: Name of the limit (the :class:`~preprocessing.PipelineConfig`
            field, e.g. ``"max_bytes"``).
        value: The value seen in the input.
        maximum: The configured maximum.
    """

    def __init__(self, limit: str, value: float, maximum: float, what: str = "") -> None:
        self.limit = limit
        self.value = value
        self.maximum = maximum
        detail = f" ({what})" if what else ""
        super().__init__(f"input exceeds {limit}: {_fmt(value)} > {_fmt(maximum)}{detail}")


class NoFaceError(InputError):
    """No face was found in any of the selected frames."""


class ConfigError(ValueError):
    """A pipeline setting has a bad value (the message names the setting)."""


def _fmt(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return str(int(value))
