"""The FastAPI application: the page, its JSON API, and the answers to every failure.

Why FastAPI (on uvicorn): its handlers are asyncio coroutines, which suits tritonclient's gRPC
asyncio client (one process holds many uploads waiting on Triton without a thread each); it
writes the OpenAPI schema of the API from the declared models; and it is small. The page is
static HTML, CSS and JavaScript of our own, so no template engine is needed and the
Content-Security-Policy allows scripts from this origin only, never inline ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect

from calibration.point import describe
from contract import DEFAULT_FRAMES, FACE_SIZE, MODEL_KEY, MODEL_VERSION_KEY, Kind, Mode, ModeError, model_name

from ..aio import AsyncDeepfakeClient
from ..batch import result_record
from ..codec import demo_warning
from ..errors import DEADLINE_EXCEEDED, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE, ClientError
from ..results import ExplainResult, ScoreResult
from ..versions import VERSIONS_KEY, check_served, check_version, describe_versions, version_entry
from .cases import Cases, Identity, history_setting, require_reviewer
from .form import FILE_FIELD, FormError, format_bytes, read_form
from .images import as_base64, explanation_pngs
from .settings import WebSettings

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_FILE = STATIC_DIR / "index.html"
API_VERSION = "1"
FRAMES_FIELD = "frames"
VERDICT_ONLY_FIELD = "verdict_only"
ALL_FACES_FIELD = "all_faces"
ORIGINAL_FIELD = "original"
TEMPORAL_FIELD = "temporal"
MODEL_VERSION_FIELD = MODEL_VERSION_KEY
#: The keys of model_info's entry left out of a result's ``checkpoint`` (big, and in /api/models).
ENTRY_KEYS_LEFT_OUT = frozenset({"export", VERSIONS_KEY})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
#: Deadline of the small calls (readiness, model list, model info).
PROBE_TIMEOUT_S = 5.0
#: How long a model_info answer is reused: it changes only when the server loads models again.
MODEL_INFO_TTL_S = 30.0
RETRY_AFTER_S = "5"
# Triton prefixes an ensemble step's error with the ensemble's name; the page shows the rest.
ENSEMBLE_PREFIX = re.compile(r"^in ensemble '[^']+'[,:] ")
UPLOAD_KINDS = ".mp4,.mov,.m4v,.webm,.mkv,.avi,.jpg,.jpeg,.png,video/*,image/jpeg,image/png"

# No inline script or style, nothing from another origin; the local video plays from a blob: URL
# and the heatmaps arrive as data: URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


# ----------------------------------------------------------------------------- schema (OpenAPI)


class ErrorResponse(BaseModel):
    error: str = Field(
        description="what went wrong, in the words of whoever refused it (Triton's message for a refused video)"
    )
    status: str = Field(description="gRPC status from Triton (e.g. INVALID_ARGUMENT, UNAVAILABLE) or the HTTP reason")


class ScoreResponse(BaseModel):
    """The keys of ``python -m client score --json`` (same values) plus per-frame values."""

    video: str
    prob_fake: float = Field(description="the faithful score: fake probability of the N-frame model (its N-th frame)")
    frame_prob_fake_mean: float | None
    label: str = Field(description="REAL or FAKE, as the original application showed it")
    confidence: float = Field(description="softmax probability of label, in percent")
    faces_found: int
    frames_decoded: int
    latency_ms: float = Field(description="gRPC round trip to Triton")
    error: None = None
    model_version: int = Field(
        description="the classifier version that answered (the latest served unless model_version was sent)"
    )
    checkpoint_sha256: str = Field(description="sha256 of the checkpoint file that version was exported from")
    decision: str = Field(
        description="FAKE, REAL or UNCERTAIN at the operating point served for that version (not label: the "
        "original app's argmax at 0.5)"
    )
    prob_fake_calibrated: float = Field(description="prob_fake through the version's calibration (= prob_fake without)")
    operating_point: dict[str, Any] = Field(
        description="the operating point of the decision: thresholds, target FPR, rates on its set, the set"
    )
    decision_text: str = Field(description="the decision and its operating point in a reviewer's words")
    known_match: dict[str, Any] | None = Field(
        description="what the bank of confirmed fakes says of the video: null (no match), the entry, or unavailable"
    )
    frames: int
    model: str
    logits: list[float]
    frame_prob_fake: list[float] | None = Field(description="each frame's own fake probability; null with verdict_only")
    face_boxes: list[list[float]] = Field(description="[N][x1, y1, x2, y2] in pixels of the upright frame")
    face_found: list[bool]
    frame_times: list[float] = Field(description="when each frame is shown, seconds from the video stream's start")
    checkpoint: dict[str, Any] | None = Field(
        description="model_info's entry of the version that answered (checkpoint, sha256, demo, lineage, ...)"
    )
    demo: bool | None = Field(description="true: demo checkpoints with random weights, the scores mean nothing")
    max_prob_fake: float | None = Field(
        None, description="with all_faces: is any face fake (largest mean frame score of a face)"
    )
    faces_seen: int | None = Field(
        None, description="with all_faces: faces found in the clip, those not scored included"
    )
    face_tracks: list[dict[str, Any]] | None = Field(
        None,
        description="with all_faces: one object per face, the main face first (prob_fake, frame_prob_fake, "
        "face_boxes, face_found, prominence)",
    )
    frame_weight: list[float] | None = Field(
        None, description="with temporal: how much each frame counted in the temporal model's answer (sums to 1)"
    )
    case: dict[str, Any] | None = Field(
        None,
        description="the upload recorded in the case history: its id, content_sha256 and uploaded_by (the "
        "reviewer, or null); status unavailable with the reason when it could not be recorded; null when the "
        "page keeps no history",
    )


class ExplainResponse(ScoreResponse):
    face_png: list[str] = Field(description=f"base64 PNG of each frame's face crop ({FACE_SIZE} x {FACE_SIZE})")
    heatmap_png: list[str] = Field(description="base64 PNG of each frame's heatmap over its face crop")


class ModelsResponse(BaseModel):
    lengths: list[int] = Field(description="N with deepfake_<N> ready")
    verdict_lengths: list[int]
    explain_lengths: list[int]
    temporal_lengths: list[int] = Field(description="N with a trained temporal model (temporal_<N>) ready")
    versions: dict[str, dict[str, list[dict[str, Any]]]] = Field(
        description="the versions model_info lists, by section (classifiers, temporal) and N: version, "
        "checkpoint, sha256, demo, ready, latest, lineage"
    )
    default_frames: int | None
    max_upload_bytes: int
    max_upload: str
    accept: str
    model_info: dict[str, Any] | None
    demo: bool
    warning: str | None
    triton_url: str


class HealthResponse(BaseModel):
    status: str
    live: bool
    ready: bool
    error: str | None = None


def _multipart_body(with_verdict_only: bool) -> dict:
    properties: dict[str, Any] = {
        FILE_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "the video (mp4, mov, webm, mkv, avi) or still (JPEG, PNG)",
        },
        FRAMES_FIELD: {
            "type": "integer",
            "default": DEFAULT_FRAMES,
            "description": "N, the sequence length of the model",
        },
        MODEL_VERSION_FIELD: {
            "type": "integer",
            "minimum": 1,
            "description": "the classifier version to answer (default: the latest served; GET /api/models lists them)",
        },
    }
    if with_verdict_only:
        properties[VERDICT_ONLY_FIELD] = {
            "type": "boolean",
            "default": False,
            "description": "the clip's score alone (verdict_<N>): no per-frame scores",
        }
        properties[ALL_FACES_FIELD] = {
            "type": "boolean",
            "default": False,
            "description": "every face scored (faces_<N>): adds max_prob_fake, faces_seen and face_tracks",
        }
        properties[ORIGINAL_FIELD] = {
            "type": "boolean",
            "default": False,
            "description": "the original app's answer (original_<N>): its frames, dlib's face detector and "
            "tight crops; slower, not with verdict_only or all_faces",
        }
        properties[TEMPORAL_FIELD] = {
            "type": "boolean",
            "default": False,
            "description": "a trained temporal model's answer (temporal_<N>, where one is served): adds "
            "frame_weight; not with the other choices",
        }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": [FILE_FIELD], "properties": properties}
                }
            },
        }
    }


_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 415, 422, 502, 503, 504)}


# ----------------------------------------------------------------------------- helpers


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, status: str, retry: bool = False) -> None:
        super().__init__(message)
        self.status_code, self.message, self.status, self.retry = status_code, message, status, retry


def error_response(status_code: int, message: str, status: str, retry: bool = False) -> JSONResponse:
    headers = {"retry-after": RETRY_AFTER_S} if retry else None
    return JSONResponse({"error": message, "status": status}, status_code=status_code, headers=headers)


def _from_client_error(error: ClientError, settings: WebSettings) -> ApiError:
    message = ENSEMBLE_PREFIX.sub("", error.message)
    if error.status == INVALID_ARGUMENT:
        return ApiError(422, message, error.status)
    if error.status == NOT_FOUND:
        return ApiError(404, message, error.status)
    if error.status == DEADLINE_EXCEEDED:
        return ApiError(
            504,
            f"the detection server did not answer within {settings.triton_timeout_s:g} s; retry later",
            error.status,
            True,
        )
    if error.retryable:
        return ApiError(
            503, f"the detection server is unavailable or overloaded ({message}); retry in a moment", error.status, True
        )
    if error.status == PERMISSION_DENIED:
        return ApiError(502, f"the detection server refused this page's credentials: {message}", error.status)
    return ApiError(502, f"the detection server failed: {message}", error.status)


def _frames_field(form_fields: dict[str, str], default: int) -> int:
    text = form_fields.get(FRAMES_FIELD, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise FormError(400, f"'{FRAMES_FIELD}' must be a positive whole number, got '{text[:40]}'")
    return int(text)


def _flag_field(form_fields: dict[str, str], name: str) -> bool:
    text = form_fields.get(name, "").lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise FormError(400, f"'{name}' must be true or false, got '{text[:40]}'")


def version_of_form(form_fields: dict[str, str]) -> int | None:
    """The classifier version the form asks for (None: the latest served).

    Raises:
        FormError: 400, not a positive whole number.
    """
    text = form_fields.get(MODEL_VERSION_FIELD, "")
    if not text:
        return None
    try:
        return check_version(int(text) if text.isdigit() else text)
    except ValueError:
        raise FormError(
            400, f"'{MODEL_VERSION_FIELD}' must be a positive whole number (a served version), got '{text[:40]}'"
        ) from None


def mode_of_form(form_fields: dict[str, str]) -> Mode:
    """The score mode the form's choices make (its fields spelled as the form names them).

    Raises:
        FormError: 400, a choice that is not true or false.
        ApiError: 422 INVALID_ARGUMENT, choices that do not combine.
    """
    verdict_only, all_faces, original, temporal = (
        _flag_field(form_fields, name) for name in (VERDICT_ONLY_FIELD, ALL_FACES_FIELD, ORIGINAL_FIELD, TEMPORAL_FIELD)
    )
    try:
        return Mode.from_choices(verdict_only, all_faces, original, temporal=temporal)
    except ModeError as error:
        raise ApiError(422, str(error), INVALID_ARGUMENT) from None


def _classifier_entry(info: dict | None, frames: int, mode: Mode, version: int) -> dict | None:
    """model_info's entry of the version that answered, without the keys left out of a result."""
    entry = version_entry(info, frames, mode, version)
    if entry is None:
        return None
    return {key: value for key, value in entry.items() if key not in ENTRY_KEYS_LEFT_OUT}


def score_payload(result: ScoreResult, frames: int, model: str, info: dict | None, mode: Mode = Mode.SCORE) -> dict:
    """The JSON answer: ``client score --json``'s record plus per-frame values and boxes."""
    record = result_record(result)
    entry = _classifier_entry(info, frames, mode, result.model_version)
    record.update(
        {
            "frames": frames,
            MODEL_KEY: model,
            "logits": [float(v) for v in result.logits],
            "frame_prob_fake": None if result.frame_prob_fake is None else [float(v) for v in result.frame_prob_fake],
            "face_boxes": [[float(v) for v in row] for row in result.face_boxes],
            "face_found": [bool(v) for v in result.face_found],
            "frame_times": [float(v) for v in result.frame_times],
            "checkpoint": entry,
            "demo": None if entry is None else bool(entry.get("demo")),
            "decision_text": describe(result.decision, result.operating_point),
        }
    )
    return record


class _State:
    """What the handlers share: the gRPC client (made inside the server's loop), limits, caches."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.client: AsyncDeepfakeClient | None = None
        self.slots = asyncio.Semaphore(settings.max_concurrent)
        self.info: dict | None = None
        self.info_at = -MODEL_INFO_TTL_S

    def grpc(self) -> AsyncDeepfakeClient:
        if self.client is None:
            raise ApiError(503, "the page is starting or stopping", UNAVAILABLE, True)
        return self.client

    async def model_info(self, fresh: bool = False) -> dict | None:
        """model_info's document (cached unless ``fresh``), or None when the server has no model_info."""
        now = time.monotonic()
        if not fresh and now - self.info_at < MODEL_INFO_TTL_S:
            return self.info
        try:
            self.info = await self.grpc().model_info(timeout_s=PROBE_TIMEOUT_S)
        except ClientError as error:
            if error.status != NOT_FOUND:
                raise
            self.info = None
        self.info_at = now
        return self.info


class SecurityHeaders:
    """Adds the security headers to every answer (pure ASGI: the upload stream is left alone)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith("/api/") or scope["path"] == "/healthz"

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if is_api:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ----------------------------------------------------------------------------- the application


def create_app(settings: WebSettings, bank: str | None = None) -> FastAPI:
    """The web page and its API for one Triton server.

    Args:
        settings: what it serves and where it sends the work.
        bank: the database of the case history (the bank's, :mod:`client.web.cases`); None:
            ``$DEEPFAKE_BANK``, and no history when that is unset.
    """
    state = _State(settings)
    cases = Cases(settings.token, bank or history_setting())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.client = AsyncDeepfakeClient(settings.connection)
        try:
            yield
        finally:
            client, state.client = state.client, None
            await client.close()

    app = FastAPI(
        title="Deepfake detector",
        version=API_VERSION,
        description="Upload a video or a still image; get the N-frame ResNeXt-LSTM model's verdict, per-frame "
        "scores, face boxes, frame times and heatmaps. Served beside Triton, talking to it over gRPC.",
        # The interactive docs pages load their scripts from a CDN: only the schema is served.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    async def check_token(request: Request) -> Identity:
        """Who is asking (the shared token, a reviewer's own token, or nobody on an open page); 401 when
        the page has a token and none that opens it was sent."""
        return await cases.access.identify(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        response = error_response(error.status_code, error.message, error.status, error.retry)
        if error.status_code == 401:
            response.headers["www-authenticate"] = "Bearer"
        return response

    @app.exception_handler(FormError)
    async def form_error(request: Request, error: FormError) -> JSONResponse:
        reasons = {400: "BAD_REQUEST", 408: "REQUEST_TIMEOUT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
        return error_response(error.status_code, error.message, reasons.get(error.status_code, "BAD_REQUEST"))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX_FILE, media_type="text/html; charset=utf-8")

    @app.get(
        "/healthz",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse}},
        summary="ready when Triton is live and ready",
    )
    async def healthz() -> JSONResponse:
        try:
            live, ready = await state.grpc().server_ready(timeout_s=PROBE_TIMEOUT_S)
        except ClientError as error:
            return JSONResponse(
                {"status": "unavailable", "live": False, "ready": False, "error": error.message}, status_code=503
            )
        body = {"status": "ok" if live and ready else "unavailable", "live": live, "ready": ready, "error": None}
        return JSONResponse(body, status_code=200 if live and ready else 503)

    @app.get(
        "/api/models",
        response_model=ModelsResponse,
        responses=_ERRORS,
        summary="the lengths served, the upload limit and what the checkpoints are",
    )
    async def models(request: Request) -> JSONResponse:
        await check_token(request)
        try:
            ready = await state.grpc().ready_lengths(settings.lengths, timeout_s=PROBE_TIMEOUT_S)
            info = await state.model_info()
        except ClientError as error:
            raise _from_client_error(error, settings) from None
        lengths = ready["score"]
        default = settings.default_frames if settings.default_frames in lengths else (lengths[0] if lengths else None)
        return JSONResponse(
            {
                "lengths": lengths,
                "verdict_lengths": ready["verdict"],
                "explain_lengths": ready["explain"],
                "temporal_lengths": ready["temporal"],
                "versions": describe_versions(info),
                "default_frames": default,
                "max_upload_bytes": settings.max_upload_bytes,
                "max_upload": format_bytes(settings.max_upload_bytes),
                "accept": UPLOAD_KINDS,
                "model_info": info,
                "demo": bool(info and info.get("demo")),
                "warning": None if info is None else demo_warning(info),
                "triton_url": settings.triton_url,
            }
        )

    async def upload(request: Request, text_fields: frozenset[str], reviewer_only: bool = False):
        """(who is asking, the form read into memory); a slot is held until the caller releases it."""
        identity = await check_token(request)
        if reviewer_only:
            require_reviewer(identity)
        if state.slots.locked():
            raise ApiError(
                503, f"the page is busy with {settings.max_concurrent} uploads; retry in a moment", UNAVAILABLE, True
            )
        await state.slots.acquire()
        try:
            form = await read_form(
                request.headers, request.stream(), settings.max_upload_bytes, text_fields, settings.upload_timeout_s
            )
            return identity, form
        except ClientDisconnect:
            state.slots.release()
            raise FormError(400, "the upload was interrupted before it was complete") from None
        except BaseException:
            state.slots.release()
            raise

    async def run(call, *args, **kwargs):
        try:
            return await call(*args, **kwargs)
        except ClientError as error:
            raise _from_client_error(error, settings) from None

    async def check_choice(frames: int, mode: Mode, version: int | None) -> None:
        """Refuses a version (or a temporal model) model_info says is not served, before the upload goes on.

        A refusal by the cached document is checked again on a fresh one: a version loaded since
        is taken.
        """
        for fresh in (False, True):
            info = await _info_or_none(state, fresh)
            try:
                check_served(info, frames, mode, version)
                return
            except ClientError as error:
                if fresh:
                    raise _from_client_error(error, settings) from None

    @app.post(
        "/api/score",
        response_model=ScoreResponse,
        responses=_ERRORS,
        openapi_extra=_multipart_body(with_verdict_only=True),
        summary="score one upload (the keys of `client score --json`, plus per-frame values)",
    )
    async def score(request: Request) -> JSONResponse:
        identity, form = await upload(
            request,
            frozenset(
                {FRAMES_FIELD, VERDICT_ONLY_FIELD, ALL_FACES_FIELD, ORIGINAL_FIELD, TEMPORAL_FIELD, MODEL_VERSION_FIELD}
            ),
        )
        try:
            frames = _frames_field(form.fields, settings.default_frames)
            mode = mode_of_form(form.fields)
            version = version_of_form(form.fields)
            await check_choice(frames, mode, version)
            name = form.filename or "upload"
            data, form.data = form.data, b""
            digest = await content_sha256(data)
            result = await run(state.grpc().score, data, frames, name=name, mode=mode, version=version)
            del data
        finally:
            state.slots.release()
        info = await _info_or_none(state)
        payload = score_payload(result, frames, mode.model(frames), info, mode)
        payload["case"] = await cases.record(identity, digest, result, frames, payload[MODEL_KEY])
        return JSONResponse(payload)

    @app.post(
        "/api/explain",
        response_model=ExplainResponse,
        responses=_ERRORS,
        openapi_extra=_multipart_body(with_verdict_only=False),
        summary="score one upload and return each frame's face crop and heatmap as PNG",
    )
    async def explain(request: Request) -> JSONResponse:
        identity, form = await upload(request, frozenset({FRAMES_FIELD, MODEL_VERSION_FIELD}))
        try:
            frames = _frames_field(form.fields, settings.default_frames)
            version = version_of_form(form.fields)
            await check_choice(frames, Mode.SCORE, version)
            name = form.filename or "upload"
            data, form.data = form.data, b""
            digest = await content_sha256(data)
            result: ExplainResult = await run(state.grpc().explain, data, frames, name=name, version=version)
            del data
        finally:
            state.slots.release()
        faces, overlays = await asyncio.to_thread(explanation_pngs, result)
        info = await _info_or_none(state)
        payload = score_payload(result, frames, model_name(Kind.EXPLAIN, frames), info)
        payload["case"] = await cases.record(identity, digest, result, frames, payload[MODEL_KEY])
        payload["face_png"] = as_base64(faces)
        payload["heatmap_png"] = as_base64(overlays)
        return JSONResponse(payload)

    async def content_sha256(data: bytes) -> str | None:
        """sha256 of the uploaded bytes when the page keeps a case history (hashing a large upload
        takes a moment: in a worker thread)."""
        if not cases.enabled:
            return None
        return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())

    async def fingerprint_upload(request: Request) -> tuple[Identity, str, ScoreResult]:
        """An upload to search the case history with: its sha256 and the server's verdict answer,
        which carries its fingerprint and what the bank says of it. Reviewers only."""
        identity, form = await upload(request, frozenset({FRAMES_FIELD}), reviewer_only=True)
        try:
            frames = _frames_field(form.fields, settings.default_frames)
            await check_choice(frames, Mode.VERDICT, None)
            data, form.data = form.data, b""
            digest = await content_sha256(data)
            result = await run(state.grpc().score, data, frames, name=form.filename or "upload", mode=Mode.VERDICT)
            del data
        finally:
            state.slots.release()
        return identity, digest, result

    cases.mount(app, fingerprint_upload)
    app.state.web = state
    app.state.cases = cases
    return app


async def _info_or_none(state: _State, fresh: bool = False) -> dict | None:
    """model_info for a result card; a failure to ask leaves the card without it rather than failing the score."""
    try:
        return await state.model_info(fresh)
    except ClientError:
        return None
