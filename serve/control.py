"""The few calls of Triton's HTTP API that supervise a server: health, repository index, load.

The standard library is enough for these and is safe to use from the watchdog thread while the
main thread runs its own clients.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from serve.errors import ControlError

DEFAULT_TIMEOUT_S = 5.0
STATE_READY = "READY"
STATE_UNAVAILABLE = "UNAVAILABLE"
HTTP_OK = 200


@dataclass(frozen=True)
class ModelState:
    """One entry of the repository index.

    Attributes:
        name: the model's name.
        state: Triton's state (``READY``, ``UNAVAILABLE``, ``LOADING``, ``UNLOADING``); empty for
            a model Triton has not tried to load.
        reason: why it is not ready (the server's own message), empty otherwise.
    """

    name: str
    state: str
    reason: str = ""
    version: str = ""


@dataclass
class ControlClient:
    """Calls a server's HTTP endpoint.

    Attributes:
        base_url: ``http://host:port``.
        health_headers: headers sent with health calls (a restricted ``health`` API needs them).
        repository_headers: headers sent with repository calls (index, load).
    """

    base_url: str
    health_headers: Mapping[str, str] = field(default_factory=dict)
    repository_headers: Mapping[str, str] = field(default_factory=dict)

    def _call(self, method: str, path: str, headers: Mapping[str, str], timeout: float) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            headers=dict(headers),
            data=b"" if method == "POST" else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise ControlError(f"{method} {self.base_url}{path}: {error}") from error

    def is_live(self, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
        """Whether the server answers ``/v2/health/live`` with 200.

        Raises:
            ControlError: the server cannot be reached.
        """
        status, _ = self._call("GET", "/v2/health/live", self.health_headers, timeout)
        return status == HTTP_OK

    def is_model_ready(self, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
        """Whether ``/v2/models/<name>/ready`` answers 200.

        Raises:
            ControlError: the server cannot be reached.
        """
        status, _ = self._call("GET", f"/v2/models/{urllib.parse.quote(name)}/ready", self.health_headers, timeout)
        return status == HTTP_OK

    def repository_index(self, timeout: float = DEFAULT_TIMEOUT_S) -> list[ModelState]:
        """Every model the server found in its repository, with state and reason.

        Raises:
            ControlError: the server cannot be reached or refused the call.
        """
        status, body = self._call("POST", "/v2/repository/index", self.repository_headers, timeout)
        if status != HTTP_OK:
            raise ControlError(f"repository index: HTTP {status}: {_error_text(body)}")
        entries = json.loads(body)
        return [
            ModelState(
                str(entry["name"]),
                str(entry.get("state", "")),
                str(entry.get("reason", "")),
                str(entry.get("version", "")),
            )
            for entry in entries
        ]

    def unload_model(self, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Asks Triton to unload a model (it returns before the unload has finished).

        Raises:
            ControlError: the server cannot be reached or refused.
        """
        status, body = self._call(
            "POST", f"/v2/repository/models/{urllib.parse.quote(name)}/unload", self.repository_headers, timeout
        )
        if status != HTTP_OK:
            raise ControlError(f"unloading model '{name}': HTTP {status}: {_error_text(body)}")

    def load_model(self, name: str, timeout: float) -> None:
        """Loads (or loads again) a model; returns once Triton has finished.

        Raises:
            ControlError: the server cannot be reached or could not load the model (its message).
        """
        status, body = self._call(
            "POST", f"/v2/repository/models/{urllib.parse.quote(name)}/load", self.repository_headers, timeout
        )
        if status != HTTP_OK:
            raise ControlError(f"loading model '{name}': HTTP {status}: {_error_text(body)}")


def _error_text(body: bytes) -> str:
    """The ``error`` field of a Triton error body, or the body itself."""
    text = body.decode("utf-8", errors="replace")
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text
