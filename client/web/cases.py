"""The page's case history and its reviewers: who is asking, recording each scored upload, the routes.

The history is kept when the page has a database: ``DEEPFAKE_BANK`` in its environment (the bank's
own database, :mod:`bank.cases`); without it the page works as before and the case routes answer
404. Who is asking comes from the request's ``Authorization: Bearer <token>`` alone:

- a reviewer's own token (``deepfake reviewers add NAME``) names that reviewer: it opens scoring and
  every case route, and every case action records that name;
- the shared page token (``DEEPFAKE_WEB_TOKEN``) opens scoring only: uploads are recorded as cases
  (by nobody), but it cannot read the history or record a decision (403);
- no token, on a page without a shared token: scoring as before; the case routes answer 401.

A body may name the reviewer (``reviewer``); naming anyone but the token's reviewer is refused with
403, so a request can never act as another reviewer. Database calls run in a worker thread; a
database that cannot be reached answers 503 with the reason (scoring goes on, the card says the case
was not recorded), and the next request tries again.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bank.cases import (
    DECISIONS,
    MAX_LISTED,
    CaseHistory,
    CaseNotFound,
    NoFingerprint,
    check_sha256,
    retention_days,
    write_csv,
)
from bank.store import BankError, BankUnavailable
from contract import BANK_ENV

from ..evaluate.layouts import MEDIA_SUFFIXES

RETRY_AFTER_S = "5"
#: Largest JSON body a case route reads.
MAX_JSON_BYTES = 16 * 1024
#: Fields a body may name the reviewer with; only the token's own reviewer is accepted.
REVIEWER_FIELDS = ("reviewer", "by")
DEFAULT_LISTED = 50
DEFAULT_MEDIA = "media"
UNAUTHENTICATED_MESSAGE = (
    "this page needs its access token: enter it on the page, or send 'Authorization: Bearer <token>'"
)
SHARED_TOKEN_MESSAGE = (
    "the shared page token (DEEPFAKE_WEB_TOKEN) opens scoring only: the case history and its decisions need "
    "a reviewer's own token (deepfake reviewers add NAME)"
)
NO_REVIEWER_MESSAGE = (
    "the case history needs a reviewer's own token (deepfake reviewers add NAME): send it as "
    "'Authorization: Bearer <token>' or enter it on the page"
)
HISTORY_OFF_MESSAGE = f"this page keeps no case history: start it with {BANK_ENV} set (the bank's database)"


class CaseError(Exception):
    """An answer of the case routes other than 200: ``{"error": message, "status": status}``."""

    def __init__(self, status_code: int, message: str, status: str, retry: bool = False) -> None:
        super().__init__(message)
        self.status_code, self.message, self.status, self.retry = status_code, message, status, retry


@dataclass(frozen=True)
class Identity:
    """Who a request is: a reviewer (by name), the shared token, or nobody (an open page).

    Attributes:
        reviewer: the reviewer's name when the token is a reviewer's.
        via: ``reviewer``, ``shared`` or ``open``.
        note: why a token that was sent names nobody.
        unavailable: the database's error when it could not be asked who the token is.
    """

    reviewer: str | None
    via: str
    note: str | None = None
    unavailable: str | None = None


def bearer(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def unavailable(error: BankUnavailable) -> CaseError:
    return CaseError(503, f"{error}; retry in a moment", "UNAVAILABLE", True)


class Access:
    """Tells who a request is (see the module docstring)."""

    def __init__(self, shared_token: str | None, history: CaseHistory | None) -> None:
        self.shared_token = shared_token
        self.history = history

    async def identify(self, request: Request) -> Identity:
        """The request's identity.

        Raises:
            CaseError: 401 a token needed and missing or wrong, or a disabled reviewer's; 503 a token
                that is not the shared one while the database that would know it cannot be reached.
        """
        given = bearer(request)
        shared = self.shared_token is not None and given is not None
        if shared and hmac.compare_digest(given.encode(), self.shared_token.encode()):
            return Identity(None, "shared")
        if given is not None and self.history is not None:
            try:
                reviewer = await asyncio.to_thread(self.history.reviewer_for_token, given)
            except BankUnavailable as error:
                if self.shared_token is not None:
                    raise unavailable(error) from None
                return Identity(None, "open", unavailable=str(error))
            if reviewer is not None and not reviewer.active:
                raise CaseError(
                    401, f"the reviewer {reviewer.name} was disabled ({reviewer.disabled_at})", "UNAUTHENTICATED"
                )
            if reviewer is not None:
                return Identity(reviewer.name, "reviewer")
        if self.shared_token is not None:
            raise CaseError(401, UNAUTHENTICATED_MESSAGE, "UNAUTHENTICATED")
        return Identity(None, "open", None if given is None else "the token sent is no reviewer's")


def require_reviewer(identity: Identity) -> str:
    """The reviewer's name, or 403 (the shared token) / 401 (nobody) / 503 (the database could not say)."""
    if identity.reviewer is not None:
        return identity.reviewer
    if identity.unavailable is not None:
        raise CaseError(503, f"{identity.unavailable}; retry in a moment", "UNAVAILABLE", True)
    if identity.via == "shared":
        raise CaseError(403, SHARED_TOKEN_MESSAGE, "PERMISSION_DENIED")
    message = NO_REVIEWER_MESSAGE if identity.note is None else f"{NO_REVIEWER_MESSAGE} ({identity.note})"
    raise CaseError(401, message, "UNAUTHENTICATED")


def check_acting_as(body: dict, reviewer: str) -> None:
    """403 for a body that names another reviewer: the reviewer is the token's, nobody else."""
    for name in REVIEWER_FIELDS:
        if name in body and body[name] != reviewer:
            raise CaseError(
                403,
                f"this token is the reviewer {reviewer}'s: a request acts as its own reviewer only, never as "
                f"{str(body[name])[:64]!r}",
                "PERMISSION_DENIED",
            )


async def read_json(request: Request, fields: frozenset[str]) -> dict:
    """A small JSON object body, its fields among ``fields`` (and the reviewer fields)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_JSON_BYTES):
        raise CaseError(413, f"a case request's body is at most {MAX_JSON_BYTES} bytes", "PAYLOAD_TOO_LARGE")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise CaseError(413, f"a case request's body is at most {MAX_JSON_BYTES} bytes", "PAYLOAD_TOO_LARGE")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise CaseError(415, "send a case request's body as application/json", "UNSUPPORTED_MEDIA_TYPE")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CaseError(400, f"the body is not JSON: {error}", "BAD_REQUEST") from None
    if not isinstance(body, dict):
        raise CaseError(400, "the body must be a JSON object", "BAD_REQUEST")
    unknown = set(body) - fields - set(REVIEWER_FIELDS)
    if unknown:
        raise CaseError(
            400,
            f"unknown field {sorted(unknown)[0]!r} (fields: {', '.join(sorted(fields | set(REVIEWER_FIELDS)))})",
            "BAD_REQUEST",
        )
    for name, value in body.items():
        if name != "case_id" and not isinstance(value, str):
            raise CaseError(400, f"'{name}' must be a string", "BAD_REQUEST")
    return body


def case_number(text: str) -> int:
    """A case id from the path (404 for anything but a whole number: no such case)."""
    if not text.isdigit() or len(text) > 18:
        raise CaseError(404, f"no case {text[:40]!r}", "NOT_FOUND")
    return int(text)


def listed_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LISTED:
        raise CaseError(400, f"'limit' must be a whole number from 1 to {MAX_LISTED}, got '{text[:40]}'", "BAD_REQUEST")
    return int(text)


def history_setting(environ=os.environ) -> str | None:
    """The case history's database: ``$DEEPFAKE_BANK`` when set, else none (the history is off)."""
    return environ.get(BANK_ENV, "").strip() or None


#: What app.py gives the search route for an upload: (identity, content sha256, the score result).
FingerprintUpload = Callable[[Request], Awaitable[tuple[Identity, str, Any]]]


class Cases:
    """The page's case history: identities, recording, and the routes (mounted by :meth:`mount`)."""

    def __init__(self, shared_token: str | None, setting: str | None) -> None:
        self.history = CaseHistory(setting) if setting else None
        self.retention_days = retention_days() if setting else None
        self.access = Access(shared_token, self.history)

    @property
    def enabled(self) -> bool:
        return self.history is not None

    def _history(self) -> CaseHistory:
        if self.history is None:
            raise CaseError(404, HISTORY_OFF_MESSAGE, "NOT_FOUND")
        return self.history

    async def _call(self, function, *args, **kwargs):
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except BankUnavailable as error:
            raise unavailable(error) from None

    async def record(self, identity: Identity, content_sha256: str, result, frames: int, model: str) -> dict | None:
        """Records one scored upload; what the answer's ``case`` says: null (no history), the case's
        id and content sha256, or ``status: unavailable`` with the reason (the score stands)."""
        if self.history is None:
            return None
        try:
            case = await asyncio.to_thread(
                self.history.record,
                content_sha256=content_sha256,
                file_name=result.video,
                uploaded_by=identity.reviewer,
                model=model,
                model_version=result.model_version,
                checkpoint_sha256=result.checkpoint_sha256,
                frames=frames,
                prob_fake=float(result.prob_fake),
                decision=result.decision,
                known_match=result.known_match,
                fingerprint=result.fingerprint,
            )
        except BankError as error:
            return {"status": "unavailable", "reason": f"the case was not recorded: {error}"}
        return {"id": case.id, "content_sha256": case.content_sha256, "uploaded_by": case.uploaded_by}

    def mount(self, app: FastAPI, fingerprint_upload: FingerprintUpload) -> None:
        """Adds the case routes (and the answer to :class:`CaseError`) to ``app``."""

        @app.exception_handler(CaseError)
        async def case_error(request: Request, error: CaseError) -> JSONResponse:
            headers = {"retry-after": RETRY_AFTER_S} if error.retry else {}
            if error.status_code == 401:
                headers["www-authenticate"] = "Bearer"
            return JSONResponse(
                {"error": error.message, "status": error.status}, status_code=error.status_code, headers=headers
            )

        @app.get("/api/cases/status", summary="whether the page keeps a case history, and who the token is")
        async def status(request: Request) -> JSONResponse:
            identity = await self.access.identify(request)
            if self.history is None:
                why = HISTORY_OFF_MESSAGE
            elif identity.reviewer is not None:
                why = None
            elif identity.unavailable is not None:
                why = f"the reviewer could not be looked up: {identity.unavailable}"
            elif identity.via == "shared":
                why = SHARED_TOKEN_MESSAGE
            else:
                why = NO_REVIEWER_MESSAGE if identity.note is None else f"{NO_REVIEWER_MESSAGE} ({identity.note})"
            return JSONResponse(
                {
                    "history": self.enabled,
                    "reviewer": identity.reviewer,
                    "can_review": self.enabled and identity.reviewer is not None,
                    "why": why,
                    "retention_days": self.retention_days,
                    "decisions": list(DECISIONS),
                }
            )

        @app.get("/api/cases/export.csv", summary="the reviewed videos as a labelled CSV (evaluate, deepfake-train)")
        async def export(request: Request, media: str = DEFAULT_MEDIA) -> Response:
            history = self._history()
            require_reviewer(await self.access.identify(request))
            try:
                rows, unsure = await self._call(history.export_rows, media, MEDIA_SUFFIXES)
            except BankError as error:
                raise CaseError(400, str(error), "BAD_REQUEST") from None
            return Response(
                write_csv(rows),
                media_type="text/csv; charset=utf-8",
                headers={
                    "content-disposition": 'attachment; filename="cases.csv"',
                    "x-videos-left-out-unsure": str(unsure),
                },
            )

        @app.get("/api/cases", summary="cases of a content sha256, or the latest ones, with their reviews")
        async def cases(
            request: Request, sha256: str | None = None, pdq: str | None = None, limit: str = str(DEFAULT_LISTED)
        ) -> JSONResponse:
            history = self._history()
            require_reviewer(await self.access.identify(request))
            try:
                if sha256 is not None:
                    check_sha256(sha256)
                found = await self._call(history.find, sha256, pdq=pdq, limit=listed_count(limit))
            except BankError as error:
                raise CaseError(400, str(error), "BAD_REQUEST") from None
            return JSONResponse({"cases": [case.as_dict() for case in found], "retention_days": self.retention_days})

        @app.get("/api/cases/{case_id}", summary="one case with its reviews")
        async def one(request: Request, case_id: str) -> JSONResponse:
            history = self._history()
            require_reviewer(await self.access.identify(request))
            try:
                case = await self._call(history.get, case_number(case_id))
            except CaseNotFound as error:
                raise CaseError(404, str(error), "NOT_FOUND") from None
            return JSONResponse(case.as_dict())

        @app.post("/api/cases/search-similar", summary="cases whose fingerprint matches an upload's or a case's")
        async def search_similar(request: Request) -> JSONResponse:
            history = self._history()
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            known_match = None
            if kind == "multipart/form-data":
                identity, content_sha256, result = await fingerprint_upload(request)
                require_reviewer(identity)
                if not result.fingerprint:
                    raise CaseError(422, "the server gave no fingerprint for this upload", "INVALID_ARGUMENT")
                fingerprint, exclude, known_match = result.fingerprint, None, result.known_match
                query = {"content_sha256": content_sha256, "file_name": result.video}
            else:
                require_reviewer(await self.access.identify(request))
                body = await read_json(request, frozenset({"case_id"}))
                case_id = body.get("case_id")
                if isinstance(case_id, bool) or not isinstance(case_id, int):
                    raise CaseError(
                        400, "give 'case_id' (a whole number) as JSON, or upload a video as 'file'", "BAD_REQUEST"
                    )
                try:
                    case = await self._call(history.get, case_id)
                except CaseNotFound as error:
                    raise CaseError(404, str(error), "NOT_FOUND") from None
                if not case.fingerprint:
                    raise CaseError(422, f"case {case_id} has no fingerprint to search with", "INVALID_ARGUMENT")
                fingerprint, exclude = case.fingerprint, case.id
                query = {"case_id": case.id, "content_sha256": case.content_sha256, "file_name": case.file_name}
            found = await self._call(history.similar, fingerprint, exclude=exclude)
            return JSONResponse(
                {
                    "query": query,
                    "known_match": known_match,
                    "matches": [{"case": case.as_dict(), **match} for case, match in found],
                }
            )

        @app.post("/api/cases/{case_id}/review", summary="record the reviewer's decision (fake, real, unsure)")
        async def review(request: Request, case_id: str) -> JSONResponse:
            history = self._history()
            reviewer = require_reviewer(await self.access.identify(request))
            body = await read_json(request, frozenset({"decision", "note"}))
            check_acting_as(body, reviewer)
            try:
                done = await self._call(
                    history.review,
                    case_number(case_id),
                    reviewer=reviewer,
                    decision=body.get("decision", ""),
                    note=body.get("note", ""),
                )
            except CaseNotFound as error:
                raise CaseError(404, str(error), "NOT_FOUND") from None
            except BankError as error:
                raise CaseError(400, str(error), "BAD_REQUEST") from None
            return JSONResponse({"review": done.as_dict()})

        @app.post("/api/cases/{case_id}/confirm", summary="confirm the case's video as a fake into the bank")
        async def confirm(request: Request, case_id: str) -> JSONResponse:
            history = self._history()
            reviewer = require_reviewer(await self.access.identify(request))
            body = await read_json(request, frozenset({"note", "why"}))
            check_acting_as(body, reviewer)
            try:
                entry, done = await self._call(
                    history.confirm,
                    case_number(case_id),
                    reviewer=reviewer,
                    note=body.get("note", ""),
                    why=body.get("why", ""),
                )
            except CaseNotFound as error:
                raise CaseError(404, str(error), "NOT_FOUND") from None
            except NoFingerprint as error:
                raise CaseError(422, str(error), "INVALID_ARGUMENT") from None
            except BankError as error:
                raise CaseError(409, str(error), "CONFLICT") from None
            return JSONResponse({"entry": entry.as_dict(), "review": done.as_dict()})
