"""Errors raised by the embedded server, each naming what went wrong and what to do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class ServeError(RuntimeError):
    """Base class of every error the embedded server raises on purpose."""


class SetupError(ServeError):
    """Something to fix before the server can start at all (install, repository, ports)."""


class TritonNotFoundError(SetupError):
    """The tritonserver binary or a python-backend file bundled with nvidia-pytriton is missing."""


class PortInUseError(SetupError):
    """A port the server should listen on is already taken."""


class RepositoryError(SetupError):
    """The model repository is missing or holds no model."""


class ArtifactsMissingError(SetupError):
    """Model folders lack the exported files their configuration loads.

    Attributes:
        missing: one line per missing file, ``<model>: <path>``.
        commands: the commands that build the missing files.
    """

    def __init__(self, missing: Sequence[str], commands: Sequence[str]) -> None:
        self.missing = tuple(missing)
        self.commands = tuple(commands)
        lines = ["these models lack the exported files they load:"]
        lines += [f"  {item}" for item in self.missing]
        lines.append("build them first:")
        lines += [f"  {command}" for command in self.commands]
        super().__init__("\n".join(lines))


class ModelLoadError(ServeError):
    """Triton could not load one or more models.

    Attributes:
        reasons: model name -> the server's own error message for it.
    """

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        lines = [f"tritonserver failed to load {len(self.reasons)} model(s):"]
        for name, reason in sorted(self.reasons.items()):
            lines.append(f"  {name}: {reason.strip()}")
        super().__init__("\n".join(lines))


class ServerStartError(ServeError):
    """The server process exited or did not become ready in time."""


class ControlError(ServeError):
    """A call to the server's HTTP API failed (connection refused, timeout or an error status)."""
