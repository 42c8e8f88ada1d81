"""The web page's API without Triton: the real app in its own process, Triton on a closed port.

Limits, content types, missing fields, access control, security headers and the OpenAPI schema;
with Triton unreachable every call that needs it answers 503. The form parser and the payload are
also checked in this process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.web_process import PROJECT_ROOT, WebProcess
from client.web.app import CONTENT_SECURITY_POLICY, score_payload
from client.web.form import FORM_OVERHEAD_BYTES, FormError, read_form
from client.web.settings import WebSettings, read_token
from contract import MAX_UPLOAD_BYTES, SCORE_JSON_KEYS, Mode
from tests.test_client import SERVER_ONLY_MODULES, make_score

LIMIT_MIB = 1
LIMIT = LIMIT_MIB << 20
BOUNDARY = "testboundary7MA4YWxkTrZu0gW"
TIMEOUT_S = 30.0
VERSION_REFUSAL = "'model_version' must be a positive whole number (a served version)"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> WebProcess:
    """The page against a Triton address nobody listens on, with a 1 MiB upload limit."""
    process = WebProcess(
        f"127.0.0.1:{closed_port()}",
        tmp_path_factory.mktemp("web"),
        args=["--max-upload-mib", str(LIMIT_MIB)],
        env={"DEEPFAKE_WEB_TOKEN": ""},
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def web_with_token(tmp_path_factory) -> WebProcess:
    scratch = tmp_path_factory.mktemp("web_token")
    token_file = scratch / "token"
    token_file.write_text("s3cret-token\n")
    process = WebProcess(f"127.0.0.1:{closed_port()}", scratch, args=["--token-file", str(token_file)]).start()
    yield process
    process.stop()


def multipart(fields: dict[str, str], file: bytes | None = None, filename: str = "clip.mp4") -> bytes:
    parts = []
    for name, value in fields.items():
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if file is not None:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: video/mp4\r\n\r\n".encode()
            + file
            + b"\r\n"
        )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def post(web: WebProcess, path: str, body: bytes, content_type: str | None = None, **headers) -> httpx.Response:
    headers = {"content-type": content_type or f"multipart/form-data; boundary={BOUNDARY}", **headers}
    return httpx.post(web.url + path.lstrip("/"), content=body, headers=headers, timeout=TIMEOUT_S)


def raw_request(web: WebProcess, head: str, chunks: list[bytes] = ()) -> str:
    """Sends a request head (and body chunks) on a raw socket; returns what the server answered."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer.decode("latin-1")


# ----------------------------------------------------------------------------- limits and form


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(web):
    # Only the head is sent: the answer comes without waiting for a byte of the body.
    head = (
        f"POST /api/score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {LIMIT + FORM_OVERHEAD_BYTES + 1}\r\n\r\n"
    )

    answer = raw_request(web, head)

    assert answer.startswith("HTTP/1.1 413 ")
    assert json.loads(answer.split("\r\n\r\n", 1)[1]) == {
        "error": "the upload is larger than the limit of 1 MiB",
        "status": "PAYLOAD_TOO_LARGE",
    }


def test_a_chunked_body_is_refused_at_the_limit_without_reading_the_rest(web):
    # The body never ends (no last chunk): the server must answer once it has passed the limit.
    head = (
        f"POST /api/score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    start = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n').encode()
    piece = b"\x00" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(start), start)]
    chunks += [b"%x\r\n%s\r\n" % (len(piece), piece)] * (LIMIT // len(piece) + 2)

    answer = raw_request(web, head, chunks)

    assert answer.startswith("HTTP/1.1 413 ")
    assert "larger than the limit of 1 MiB" in answer


def test_a_file_just_under_the_limit_is_read_and_sent_on(web):
    # Read whole and forwarded: Triton is down here, so the answer is 503, not 413.
    response = post(web, "/api/score", multipart({}, b"\x00" * (LIMIT - 1)))

    assert response.status_code == 503, response.text


def test_the_upload_never_touches_the_disk(web):
    # Starlette's form parsing would spool this 3/4 MiB body to a temporary file (over 1 MB it
    # does so in any case); the page keeps it in memory.
    before = len(web.audit_lines())

    response = post(web, "/api/score", multipart({"frames": "20"}, np.random.default_rng(0).bytes(LIMIT * 3 // 4)))

    assert response.status_code == 503
    assert web.audit_lines()[before:] == []


@pytest.mark.parametrize(
    "content_type, status",
    [
        ("application/json", 415),
        ("application/x-www-form-urlencoded", 415),
        ("text/plain", 415),
        ("multipart/form-data", 400),  # no boundary
    ],
)
def test_wrong_content_types_are_refused(web, content_type, status):
    response = post(web, "/api/score", b"file=abc", content_type=content_type)

    assert response.status_code == status
    assert "multipart/form-data" in response.json()["error"]


def test_no_body_at_all_is_refused_as_unsupported(web):
    response = httpx.post(web.url + "api/score", timeout=TIMEOUT_S)

    assert response.status_code == 415
    assert response.json()["error"] == "send the upload as multipart/form-data (the content type was none)"


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"frames": "20"}, "the form has no 'file' field"),
        ({"frames": "twenty", "file!": "x"}, "unknown form field 'file!'"),
    ],
)
def test_missing_and_unknown_fields_are_named(web, fields, error):
    response = post(web, "/api/score", multipart(fields))

    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"frames": "twenty"}, "'frames' must be a positive whole number, got 'twenty'"),
        ({"frames": "0"}, "'frames' must be a positive whole number, got '0'"),
        ({"verdict_only": "maybe"}, "'verdict_only' must be true or false, got 'maybe'"),
        ({"temporal": "maybe"}, "'temporal' must be true or false, got 'maybe'"),
        *(
            ({"model_version": text}, f"{VERSION_REFUSAL}, got '{text}'")
            for text in ("latest", "0", "-1", "1.5", "99999999999999999999")
        ),
    ],
)
def test_bad_field_values_are_named(web, fields, error):
    response = post(web, "/api/score", multipart(fields, b"\x00\x00\x00\x18ftypmp42"))

    assert response.status_code == 400
    assert response.json() == {"error": error, "status": "BAD_REQUEST"}


def test_a_cut_off_form_is_refused(web):
    body = multipart({}, b"\x00" * 1000)[:-40]

    response = post(web, "/api/score", body)

    assert response.status_code == 400
    assert response.json()["error"] == "the multipart form ended early: the upload was cut off"


def test_explain_takes_no_verdict_only_field(web):
    response = post(web, "/api/explain", multipart({"verdict_only": "true"}, b"x"))

    assert response.status_code == 400
    assert response.json()["error"] == "unknown form field 'verdict_only' (fields: file, frames, model_version)"


# ----------------------------------------------------------------------------- Triton unavailable


def test_health_says_503_when_triton_is_unreachable(web):
    response = httpx.get(web.url + "healthz", timeout=TIMEOUT_S)

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and response.json()["ready"] is False


@pytest.mark.parametrize("path", ["/api/score", "/api/explain"])
def test_uploads_get_503_with_retry_after_when_triton_is_unreachable(web, path):
    response = post(web, path, multipart({"frames": "20"}, b"\x00\x00\x00\x18ftypmp42 pretend"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["status"] == "UNAVAILABLE" and "retry in a moment" in body["error"]


def test_models_gets_503_when_triton_is_unreachable(web):
    response = httpx.get(web.url + "api/models", timeout=TIMEOUT_S)

    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]


# ----------------------------------------------------------------------------- page, headers, schema


def test_every_answer_carries_the_security_headers(web):
    for response in (
        httpx.get(web.url, timeout=TIMEOUT_S),
        httpx.get(web.url + "static/app.js", timeout=TIMEOUT_S),
        httpx.get(web.url + "api/models", timeout=TIMEOUT_S),
    ):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    csp = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert csp["frame-ancestors"] == "'none'" and csp["script-src"] == "'self'"
    assert not any("http" in value or "unsafe" in value for value in csp.values())


def test_the_page_loads_only_its_own_assets(web):
    page = httpx.get(web.url, timeout=TIMEOUT_S).text
    sources = [line for line in page.splitlines() if "src=" in line or "href=" in line]

    assert "<script>" not in page and " style=" not in page
    assert all("http:" not in line and "https:" not in line and "//" not in line.split("=", 1)[1] for line in sources)
    for asset in ("static/app.js", "static/app.css", "static/zip.js", "static/favicon.svg"):
        assert httpx.get(web.url + asset, timeout=TIMEOUT_S).status_code == 200


def test_the_openapi_schema_names_the_api(web):
    schema = httpx.get(web.url + "api/openapi.json", timeout=TIMEOUT_S).json()

    assert {"/api/score", "/api/explain", "/api/models", "/healthz"} <= set(schema["paths"])
    form = schema["paths"]["/api/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {
        "file",
        "frames",
        "verdict_only",
        "all_faces",
        "original",
        "temporal",
        "model_version",
    } and form["required"] == ["file"]
    explain = schema["paths"]["/api/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(explain["properties"]) == {"file", "frames", "model_version"}
    score = schema["components"]["schemas"]["ScoreResponse"]["properties"]
    assert set(SCORE_JSON_KEYS) | {"frame_prob_fake", "face_boxes", "face_found", "frame_times"} <= set(score)
    assert {"max_prob_fake", "faces_seen", "face_tracks", "frame_weight"} <= set(score)
    models = schema["components"]["schemas"]["ModelsResponse"]["properties"]
    assert {"versions", "temporal_lengths"} <= set(models)
    # The interactive docs would load scripts from a CDN: not served.
    assert httpx.get(web.url + "docs", timeout=TIMEOUT_S).status_code == 404


def test_a_token_is_required_when_one_is_set(web_with_token):
    url = web_with_token.url + "api/models"

    missing = httpx.get(url, timeout=TIMEOUT_S)
    wrong = httpx.get(url, headers={"authorization": "Bearer nope"}, timeout=TIMEOUT_S)
    right = httpx.get(url, headers={"authorization": "Bearer s3cret-token"}, timeout=TIMEOUT_S)
    upload = post(web_with_token, "/api/score", multipart({}, b"x" * 100))

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 503  # past the check, then Triton is down
    assert upload.status_code == 401
    # The page and its assets stay public: they hold no data.
    assert httpx.get(web_with_token.url, timeout=TIMEOUT_S).status_code == 200


def test_the_page_binds_to_loopback_by_default(web):
    assert web.url.startswith("http://127.0.0.1:")


def test_a_busy_port_is_reported(web, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "client", "web", "--url", "127.0.0.1:1", "--port", str(web.port)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )

    assert completed.returncode == 1
    assert f"cannot listen on 127.0.0.1:{web.port}" in completed.stderr


# ----------------------------------------------------------------------------- in process


async def _chunks(body: bytes, size: int, consumed: list[int]):
    for start in range(0, len(body), size):
        consumed.append(start)
        yield body[start : start + size]


def _read(body: bytes, limit: int, headers: dict | None = None, size: int = 4096) -> tuple[object, int]:
    consumed: list[int] = []
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})}
    try:
        form = asyncio.run(read_form(headers, _chunks(body, size, consumed), limit, frozenset({"frames"}), 10.0))
    except FormError as error:
        return error, len(consumed)
    return form, len(consumed)


def test_the_form_is_parsed_into_memory():
    data = np.random.default_rng(1).bytes(50_000)

    form, _ = _read(multipart({"frames": " 30 "}, data, filename="my clip.mov"), limit=100_000)

    assert (form.data, form.filename, form.fields) == (data, "my clip.mov", {"frames": "30"})


def test_the_parser_stops_reading_at_the_limit():
    body = multipart({}, b"\x00" * 200_000)

    error, consumed = _read(body, limit=50_000)

    assert isinstance(error, FormError) and error.status_code == 413
    assert consumed * 4096 < 50_000 + 2 * 4096 < len(body)


def test_a_declared_length_over_the_limit_reads_nothing():
    error, consumed = _read(
        multipart({}, b"x"), limit=1000, headers={"content-length": str(1000 + FORM_OVERHEAD_BYTES + 1)}
    )

    assert (error.status_code, consumed) == (413, 0)


def test_two_files_are_refused():
    body = multipart({}, b"a")[: -len(f"--{BOUNDARY}--\r\n")] + multipart({}, b"b")

    error, _ = _read(body, limit=1000)

    assert (error.status_code, error.message) == (
        400,
        "the form has more than one 'file' field: send one file per request",
    )


def test_the_default_limit_is_the_servers_max_bytes():
    assert WebSettings().max_upload_bytes == MAX_UPLOAD_BYTES


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_upload_bytes"):
        WebSettings(max_upload_bytes=0)
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        WebSettings(lengths=(20, -1))
    assert WebSettings(lengths=(30, 10, 30)).lengths == (10, 30)


def test_the_token_comes_from_a_file_or_the_environment(tmp_path):
    path = tmp_path / "token"
    path.write_text("  abc \n")
    empty = tmp_path / "empty"
    empty.write_text("\n")

    assert read_token(str(path), {}) == "abc"
    assert read_token(None, {"DEEPFAKE_WEB_TOKEN": "xyz"}) == "xyz"
    assert read_token(None, {}) is None
    with pytest.raises(ValueError, match="is empty"):
        read_token(str(empty), {})
    with pytest.raises(ValueError, match="cannot read the token file"):
        read_token(str(tmp_path / "missing"), {})


def test_the_payload_holds_the_cli_record_and_the_per_frame_values():
    result = make_score(frames=4)

    payload = score_payload(
        result, 4, "deepfake_4", {"classifiers": {"4": {"checkpoint": "c.pt", "demo": True, "export": {}}}}
    )
    versions = {
        "1": {"version": 1, "checkpoint": "c.pt", "demo": True, "export": {}},
        "2": {"version": 2, "checkpoint": "t.pt", "demo": False, "lineage": {"parent_sha256": "ab"}, "export": {}},
    }
    info = {"classifiers": {"4": {**versions["2"], "versions": versions}}}
    # The card names the entry of the version that answered, not the latest's.
    answered_by_1 = score_payload(result, 4, "deepfake_4", info)
    answered_by_2 = score_payload(make_score(frames=4, version=2), 4, "deepfake_4", info)

    assert {key: payload[key] for key in SCORE_JSON_KEYS} == {
        "video": "v.mp4",
        "prob_fake": result.prob_fake,
        "frame_prob_fake_mean": result.frame_prob_fake_mean,
        "label": "FAKE",
        "confidence": result.confidence,
        "faces_found": 2,
        "frames_decoded": 4,
        "latency_ms": 12.346,
        "error": None,
        "model_version": 1,
        "checkpoint_sha256": result.checkpoint_sha256,
        "decision": result.decision,
        "prob_fake_calibrated": result.prob_fake_calibrated,
        "operating_point": result.operating_point,
        "known_match": result.known_match,
    }
    # The decision in a reviewer's words, apart from the original app's label.
    assert payload["decision_text"].startswith(f"{result.decision}: uncalibrated")
    assert answered_by_1["checkpoint"] == {"version": 1, "checkpoint": "c.pt", "demo": True}
    assert answered_by_1["demo"] is True and answered_by_2["demo"] is False
    assert answered_by_2["checkpoint"]["lineage"] == {"parent_sha256": "ab"} and answered_by_2["model_version"] == 2
    assert payload["frame_times"] == [float(t) for t in np.arange(4, dtype=np.float32) / 25]
    assert payload["face_found"] == [True, False, True, False]
    assert len(payload["face_boxes"]) == 4 and len(payload["frame_prob_fake"]) == 4
    assert payload["checkpoint"] == {"checkpoint": "c.pt", "demo": True} and payload["demo"] is True
    json.dumps(payload, allow_nan=False)


def test_the_web_page_loads_no_server_side_package():
    code = textwrap.dedent(
        f"""
        import json, sys
        import client.aio, client.cli, client.web.app, client.web.server, client.web.form, client.web.images
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_ONLY_MODULES!r})))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(PROJECT_ROOT), capture_output=True, text=True, check=True
    )

    assert json.loads(completed.stdout) == []


def test_malloc_is_tuned_unless_the_environment_says_otherwise():
    from client.web.server import tune_malloc

    assert tune_malloc({"MALLOC_ARENA_MAX": "4"}) is False
    assert tune_malloc({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}) is False
    assert tune_malloc({}) is True  # glibc (Debian): every mallopt call accepted


def test_the_forms_choices_make_one_mode_or_a_422():
    from client.web.app import ApiError, mode_of_form

    assert mode_of_form({}) is Mode.SCORE and mode_of_form({"verdict_only": "true"}) is Mode.VERDICT
    assert (
        mode_of_form({"all_faces": "on", "original": "0"}) is Mode.FACES
        and mode_of_form({"original": "1"}) is Mode.ORIGINAL
    )
    with pytest.raises(ApiError) as refused:
        mode_of_form({"verdict_only": "yes", "all_faces": "true"})
    assert (refused.value.status_code, refused.value.status) == (422, "INVALID_ARGUMENT")
    assert (
        refused.value.message == "all_faces scores every frame of every face; it cannot be combined with verdict_only"
    )
    with pytest.raises(FormError):
        mode_of_form({"original": "maybe"})


def test_the_form_names_a_version_or_the_latest():
    from client.web.app import ApiError, mode_of_form, version_of_form

    assert version_of_form({}) is None and version_of_form({"model_version": ""}) is None
    assert version_of_form({"model_version": "2"}) == 2
    for text in ("0", "-1", "two", "1.5", "²"):
        with pytest.raises(FormError, match="'model_version' must be a positive whole number"):
            version_of_form({"model_version": text})
    assert mode_of_form({"temporal": "true"}) is Mode.TEMPORAL
    with pytest.raises(ApiError) as refused:
        mode_of_form({"temporal": "true", "all_faces": "true"})
    assert refused.value.status_code == 422 and "cannot be combined with all_faces" in refused.value.message
