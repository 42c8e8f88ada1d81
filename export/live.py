"""Making repository changes live on a running server, through Triton's model-control API.

The server must run in explicit model-control mode (the embedded server does; the container does
with ``--model-control-mode=explicit --load-model=*``). Loading a model that is already loaded makes
Triton read its folder again: versions that appeared are loaded, versions whose folder went away
(``export retire``) are unloaded, and the versions that did not change get new instances too (Triton
2.51), the old ones serving until the new ones are ready, so requests in flight are not failed
(measured under load: ``benchmarks/versions.py``).
Models that appeared (the first temporal model of a length) are loaded in dependency order: the
classifiers, then the steps that call them, then the ensembles.

The API is restricted: the admin key travels in the header :data:`contract.ADMIN_KEY_HEADER`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from contract import ADMIN_KEY_ENV, ADMIN_KEY_HEADER, SELECTED_KINDS, VERSIONED_KINDS, parse_model_name
from serve.control import STATE_READY, ControlClient
from serve.errors import ControlError

__all__ = ["ADMIN_KEY_ENV", "ADMIN_KEY_HEADER", "LiveError", "reload_server"]


class LiveError(Exception):
    """The server could not be reached, refused the key, or could not load a model (its message)."""


def _rank(name: str) -> int:
    parsed = parse_model_name(name)
    kind = parsed[0] if parsed else None
    if kind in VERSIONED_KINDS:
        return 0
    if kind in SELECTED_KINDS:
        return 1
    return 2


def _base_url(url: str) -> str:
    return url if "://" in url else f"http://{url}"


def reload_server(
    url: str,
    admin_key: str | None,
    header: str = ADMIN_KEY_HEADER,
    timeout: float = 600.0,
    models: Sequence[str] | None = None,
) -> Iterator[str]:
    """Loads ``models`` again (default: every versioned model) and every model of ours with no
    ready version; yields one line per model loaded.

    Raises:
        LiveError: the server cannot be reached, refuses the key, or fails to load a model.
    """
    headers = {header: admin_key} if admin_key else {}
    control = ControlClient(_base_url(url), health_headers={}, repository_headers=headers)
    try:
        index = control.repository_index()
    except ControlError as exc:
        hint = "" if admin_key else f" (no admin key given: --admin-key, --admin-key-file or ${ADMIN_KEY_ENV})"
        raise LiveError(f"{exc}{hint}") from exc
    # The index has one entry per version of a loaded model: a model is ready when one of them is.
    ready = {entry.name for entry in index if entry.state == STATE_READY}
    ours = {entry.name for entry in index if parse_model_name(entry.name) is not None}
    wanted = set(models) if models is not None else {name for name in ours if _rank(name) == 0}
    # Versioned models first (their new versions), each on its own.
    for name in sorted((wanted & ours) | {n for n in ours - ready if _rank(n) == 0}):
        yield _load(control, name, timeout)
    # Models that appeared: loading an ensemble loads the steps it calls, so the ensembles go
    # first and each step is loaded once; then whatever is still not ready.
    new = ours - ready - {name for name in ours if _rank(name) == 0}
    for name in sorted(n for n in new if _rank(n) == 2):
        yield _load(control, name, timeout)
    try:
        still = {entry.name for entry in control.repository_index() if entry.state == STATE_READY}
    except ControlError as exc:
        raise LiveError(str(exc)) from exc
    for name in sorted(new - still):
        yield _load(control, name, timeout)


def _load(control: ControlClient, name: str, timeout: float) -> str:
    try:
        control.load_model(name, timeout=timeout)
    except ControlError as exc:
        raise LiveError(str(exc)) from exc
    return f"loaded {name}"
