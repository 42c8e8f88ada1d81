"""The client's errors, one class per meaning, and the gRPC status names they carry.

:class:`ClientError` is every request that failed (refused input, an unreachable or failing
server, an answer that breaks the serving contract), with its gRPC status; :class:`MissingExtraError`
is a command that needs an optional extra which is not installed. Standard library only.
"""

from __future__ import annotations

import re

GRPC_STATUS_PREFIX = "StatusCode."
#: Status given to errors tritonclient raises without a gRPC status.
UNKNOWN_STATUS = "UNKNOWN"
#: The video's own fault; also given to input refused before sending it.
INVALID_ARGUMENT = "INVALID_ARGUMENT"
#: Status of a server answer that does not match the serving contract.
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
NOT_FOUND = "NOT_FOUND"
PERMISSION_DENIED = "PERMISSION_DENIED"
# Triton answers a call to a protocol restricted with a key (and no key sent) with UNAVAILABLE and
# this message; waiting does not help, so it is reported as PERMISSION_DENIED and not retried.
RESTRICTED_PROTOCOL_MESSAGE = "This protocol is restricted"
#: Statuses worth retrying: the server is restarting, overloaded or slow.
RETRYABLE_STATUSES = frozenset({UNAVAILABLE, DEADLINE_EXCEEDED})
# Triton (>= 24.07) does not restart a python-backend stub that died: the requests it held or is
# sent fail with INTERNAL and this message until a supervisor (the embedded server's watchdog, a
# Kubernetes readiness probe) loads the model again, so they are retried too.
DEAD_STUB_MESSAGE = re.compile(r"Stub process '[^']+' is not healthy")


class ClientError(Exception):
    """A request that failed, with the gRPC status and the server's message.

    Attributes:
        status: gRPC status name without prefix, e.g. ``"INVALID_ARGUMENT"`` or ``"UNAVAILABLE"``.
        message: the server's message (or the client's, for input rejected before sending and for
            answers that break the serving contract).
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (server side trouble)."""
        if self.status == INTERNAL and DEAD_STUB_MESSAGE.search(self.message) is not None:
            return True
        return self.status in RETRYABLE_STATUSES

    @classmethod
    def from_triton(cls, error) -> ClientError:
        """Converts tritonclient's ``InferenceServerException``, keeping status and message."""
        status = error.status() or UNKNOWN_STATUS
        status = status.removeprefix(GRPC_STATUS_PREFIX)
        message = error.message()
        message = message if message is not None else str(error)
        if status == UNAVAILABLE and message.startswith(RESTRICTED_PROTOCOL_MESSAGE):
            status = PERMISSION_DENIED
        return cls(status, message)


class MissingExtraError(RuntimeError):
    """A command needs an optional extra (pillow, PyAV, the web or eval packages) that is not installed.

    The message says what is missing and how to install it.
    """
