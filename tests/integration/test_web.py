"""The web page against the real tritonserver: its JSON API with httpx, the page in a real browser.

The page runs as ``python -m client web`` in its own process against the session's server; the
browser is Debian's chromium, headless, driven by selenium through Debian's chromedriver (its
path given, so that Selenium Manager never downloads one), kept off the network by its flags.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from bank.store import Bank
from benchmarks.web_process import PROJECT_ROOT, WebProcess
from calibration.point import describe
from client import DeepfakeClient
from contract import BANK_ENV, SCORE_JSON_KEYS
from tests import media

pytestmark = pytest.mark.integration

FRAMES = 20
CLIP_FRAMES = 24
FPS = 25
TIMEOUT_S = 120.0
SHARED_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
ARTIFACTS = PROJECT_ROOT / "logs" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Keep the browser off the network: no QUIC, no background requests, updates or sync.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,2000",
)
# "Same values as the CLI": every key but these.
VARYING_KEYS = {"video", "latency_ms"}


@pytest.fixture(scope="module")
def web(triton_server, tmp_path_factory) -> WebProcess:
    process = WebProcess(triton_server.grpc_url, tmp_path_factory.mktemp("web"), env={"DEEPFAKE_WEB_TOKEN": ""}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Generated media written where the browser's file picker can reach them."""
    folder = tmp_path_factory.mktemp("clips")
    files = {
        "face.mp4": media.face_clip(frames=CLIP_FRAMES, fps=FPS),
        "other.mp4": media.face_clip(frames=CLIP_FRAMES, fps=FPS, seed=3),
        "hidden.mp4": media.face_clip(frames=CLIP_FRAMES, fps=FPS, hide_face=range(5, 9)),
        "face.avi": media.face_clip(frames=CLIP_FRAMES, fps=FPS, codec="mpeg4", container="avi"),
        "face.jpg": media.still_image("JPEG"),
        "two.mp4": media.two_face_clip(frames=CLIP_FRAMES),
        "garbage.mp4": b"this is not a video, only words\n" * 20,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def grpc_client(triton_server) -> DeepfakeClient:
    with DeepfakeClient(triton_server.grpc_url, timeout_s=TIMEOUT_S) as detector:
        yield detector


def upload(web: WebProcess, path: str, data: bytes, name: str = "clip.mp4", **fields) -> httpx.Response:
    form = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in fields.items()}
    return httpx.post(
        web.url + path.lstrip("/"), files={"file": (name, data, "video/mp4")}, data=form, timeout=TIMEOUT_S
    )


def cli_json(triton_server, path: Path, *extra: str) -> tuple[dict, str]:
    """``python -m client score --json`` on one file: (its record, its stderr)."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "score",
            str(path),
            "--json",
            "--frames",
            str(FRAMES),
            "--url",
            triton_server.grpc_url,
            "--timeout",
            str(TIMEOUT_S),
            *extra,
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 2,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0]), completed.stderr


def same_as_cli(answer: dict, record: dict) -> None:
    assert list(record) == list(SCORE_JSON_KEYS)
    for key in SCORE_JSON_KEYS:
        if key not in VARYING_KEYS:
            assert answer[key] == record[key], key


# ----------------------------------------------------------------------------- the API


def test_score_gives_the_clis_values_plus_the_frames(web, triton_server, clips, grpc_client):
    data = clips["face.mp4"].read_bytes()

    response = upload(web, "/api/score", data, name="face.mp4", frames=FRAMES)
    record, stderr = cli_json(triton_server, clips["face.mp4"])

    assert response.status_code == 200, response.text
    answer = response.json()
    same_as_cli(answer, record)
    assert answer["video"] == "face.mp4" and answer["model"] == f"deepfake_{FRAMES}"
    direct = grpc_client.score(data, FRAMES)
    assert answer["frame_prob_fake"] == [float(v) for v in direct.frame_prob_fake]
    assert answer["face_boxes"] == [[float(v) for v in row] for row in direct.face_boxes]
    assert answer["face_found"] == [bool(v) for v in direct.face_found]
    np.testing.assert_allclose(answer["frame_times"], np.arange(FRAMES) / FPS, atol=1e-6)
    assert answer["checkpoint"]["checkpoint"] == f"model_50_acc_{FRAMES}_frames_demo_random.pt"
    assert answer["demo"] is True
    # The CLI says so on stderr, and its JSON line keeps its keys.
    assert "demo checkpoints (random weights" in stderr


def test_verdict_only_gives_the_clis_verdict_only_values(web, triton_server, clips):
    response = upload(web, "/api/score", clips["face.mp4"].read_bytes(), frames=FRAMES, verdict_only=True)
    record, _ = cli_json(triton_server, clips["face.mp4"], "--verdict-only")

    assert response.status_code == 200, response.text
    answer = response.json()
    same_as_cli(answer, record)
    assert answer["frame_prob_fake"] is None and answer["frame_prob_fake_mean"] is None
    assert answer["model"] == f"verdict_{FRAMES}" and len(answer["frame_times"]) == FRAMES


def test_all_faces_gives_every_face_as_the_cli_does(web, triton_server, clips):
    response = upload(web, "/api/score", clips["two.mp4"].read_bytes(), name="two.mp4", frames=FRAMES, all_faces=True)
    record, _ = cli_json(triton_server, clips["two.mp4"], "--all-faces")

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == f"faces_{FRAMES}" and len(answer["face_tracks"]) == 2 == answer["faces_seen"]
    for key in ("prob_fake", "max_prob_fake", "faces_seen", "face_tracks", "faces_found", "label"):
        assert answer[key] == record[key], key
    both = upload(web, "/api/score", clips["two.mp4"].read_bytes(), frames=FRAMES, all_faces=True, verdict_only=True)
    assert both.status_code == 422 and "verdict_only" in both.json()["error"]


def test_original_gives_the_clis_original_values(web, triton_server, clips):
    response = upload(web, "/api/score", clips["face.mp4"].read_bytes(), name="face.mp4", frames=FRAMES, original=True)
    record, _ = cli_json(triton_server, clips["face.mp4"], "--original")

    assert response.status_code == 200, response.text
    answer = response.json()
    same_as_cli(answer, record)
    assert answer["model"] == f"original_{FRAMES}" and len(answer["frame_prob_fake"]) == FRAMES
    for other in ({"all_faces": True}, {"verdict_only": True}):
        both = upload(web, "/api/score", clips["face.mp4"].read_bytes(), frames=FRAMES, original=True, **other)
        assert both.status_code == 422 and "original" in both.json()["error"]


def test_explain_gives_the_same_score_and_a_png_per_frame(web, clips):
    data = clips["face.mp4"].read_bytes()

    scored = upload(web, "/api/score", data, frames=FRAMES).json()
    response = upload(web, "/api/explain", data, frames=FRAMES)

    assert response.status_code == 200, response.text
    answer = response.json()
    for key in set(SCORE_JSON_KEYS) - VARYING_KEYS | {"frame_prob_fake", "face_boxes", "frame_times"}:
        assert answer[key] == scored[key], key
    assert len(answer["face_png"]) == len(answer["heatmap_png"]) == FRAMES
    import base64

    assert all(base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n") for png in answer["heatmap_png"])


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("empty.mp4", b"", "is empty"),
        ("garbage.mp4", b"this is not a video, only words\n" * 20, "unsupported input"),
    ],
)
def test_a_refused_upload_answers_422_with_the_servers_message(web, name, data, words):
    response = upload(web, "/api/score", data, name=name, frames=FRAMES)

    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "INVALID_ARGUMENT" and words in body["error"]
    assert not body["error"].startswith("in ensemble")


def test_a_video_without_a_face_is_refused_in_words(web):
    response = upload(web, "/api/score", media.no_face_clip(), frames=FRAMES)

    assert response.status_code == 422
    assert "face" in response.json()["error"]


def test_a_length_not_served_answers_404(web, clips):
    response = upload(web, "/api/score", clips["face.mp4"].read_bytes(), frames=7)

    assert response.status_code == 404
    assert "deepfake_7" in response.json()["error"]


def test_models_lists_the_served_lengths_and_the_demo_checkpoints(web):
    body = httpx.get(web.url + "api/models", timeout=TIMEOUT_S).json()

    assert body["lengths"] == body["verdict_lengths"] == body["explain_lengths"] == [10, 20, 30]
    assert body["default_frames"] == FRAMES and body["max_upload"] == "256 MiB"
    assert body["demo"] is True and "random weights" in body["warning"]
    assert set(body["model_info"]["classifiers"]) == {"10", "20", "30"}


def test_healthz_is_ready(web):
    response = httpx.get(web.url + "healthz", timeout=TIMEOUT_S)

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "live": True, "ready": True, "error": None}


def test_a_real_upload_never_touches_the_disk(web):
    before = len(web.audit_lines())
    # Without the shared sample, an intra-only (MJPEG) clip: large enough whatever the encoder's settings.
    data = (
        SHARED_SAMPLE.read_bytes()
        if SHARED_SAMPLE.is_file()
        else media.face_clip(frames=60, size=(1280, 720), codec="mjpeg", container="avi", pix_fmt="yuvj420p")
    )
    assert len(data) > 1_000_000  # over Starlette's spooling threshold

    response = upload(web, "/api/explain", data, frames=FRAMES)

    assert response.status_code == 200
    assert web.audit_lines()[before:] == []


# ----------------------------------------------------------------------------- the page in a browser


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            pytest.fail(
                f"{path} is missing: `make install` installs chromium and chromium-driver (apt-dev)", pytrace=False
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser, web):
    """The page, freshly loaded, with the model list in place."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(web.url)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "frames").is_enabled())
    return browser


def choose(page, *paths: Path) -> None:
    from selenium.webdriver.common.by import By

    page.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in paths))


def finished_cards(page, count: int):
    """Waits until ``count`` cards are done or failed; returns them, oldest first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(driver):
        cards = driver.find_elements(By.CSS_SELECTOR, "#queue .card")
        states = [card.get_attribute("data-status") for card in cards]
        return len(cards) == count and all(s in ("done", "error") for s in states) and cards

    return list(reversed(WebDriverWait(page, TIMEOUT_S).until(ready)))


def text(card, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return card.find_element(By.CSS_SELECTOR, selector).text


def count(card, selector: str) -> int:
    from selenium.webdriver.common.by import By

    return len(card.find_elements(By.CSS_SELECTOR, selector))


SEEK_AND_READ_BOX = """
const [seconds, done] = [arguments[0], arguments[arguments.length - 1]];
const card = document.querySelector('#queue .card');
const video = card.querySelector('.video');
const read = () => requestAnimationFrame(() => {
  const box = card.querySelector('.face-box');
  const v = video.getBoundingClientRect(), b = box.getBoundingClientRect();
  done({time: video.currentTime, frame: box.dataset.frame, box: box.dataset.box, hidden: box.hidden,
        found: box.dataset.found, video: [v.left, v.top, v.width, v.height], rect: [b.left, b.top, b.width, b.height],
        source: [video.videoWidth, video.videoHeight]});
});
const seek = () => { video.addEventListener('seeked', read, {once: true}); video.currentTime = seconds; };
if (video.readyState >= 1) seek(); else video.addEventListener('loadedmetadata', seek, {once: true});
"""


def test_the_page_shows_the_clis_verdict_the_timeline_the_strip_and_the_box(page, triton_server, clips, grpc_client):
    choose(page, clips["face.mp4"])
    [card] = finished_cards(page, 1)
    record, _ = cli_json(triton_server, clips["face.mp4"])
    direct = grpc_client.score(clips["face.mp4"], FRAMES)

    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    assert text(card, ".verdict-label") == record["label"]
    assert text(card, ".verdict-confidence") == f"{record['confidence']:.1f} %"
    # The server's decision, in words, apart from the original app's label.
    assert text(card, ".decision-label") == record["decision"] == card.get_attribute("data-decision")
    assert text(card, ".decision-text") == describe(record["decision"], record["operating_point"])
    assert "verdict_<N>" in text(card, ".decision-note")
    assert text(card, ".prob-fake") == f"{record['prob_fake']:.4f}"
    assert text(card, ".frame-mean") == f"{record['frame_prob_fake_mean']:.4f}"
    assert count(card, ".timeline .point") == FRAMES
    assert count(card, ".strip img.heatmap") == FRAMES
    assert "random weights" in page.find_element("id", "demo-banner").text
    assert text(card, ".checkpoint").startswith(f"model_50_acc_{FRAMES}_frames_demo_random.pt")

    known = 7
    seen = page.execute_async_script(SEEK_AND_READ_BOX, float(direct.frame_times[known]))

    assert card.get_attribute("data-playable") == "true"
    assert seen["hidden"] is False and seen["frame"] == str(known)
    assert [float(v) for v in seen["box"].split(",")] == [float(v) for v in direct.face_boxes[known]]
    # ... and it is drawn there: the box's rectangle is that row scaled to the displayed video.
    (vx, vy, vw, vh), (sw, sh) = seen["video"], seen["source"]
    scale = min(vw / sw, vh / sh)  # the picture is letterboxed inside the element
    x1, y1, x2, y2 = (float(v) for v in direct.face_boxes[known])
    left = vx + (vw - sw * scale) / 2 + x1 * scale
    top = vy + (vh - sh * scale) / 2 + y1 * scale
    np.testing.assert_allclose(seen["rect"], [left, top, (x2 - x1) * scale, (y2 - y1) * scale], atol=4.0)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    card.screenshot(str(ARTIFACTS / "web_result_card.png"))
    page.save_screenshot(str(ARTIFACTS / "web_result_page.png"))


def test_frames_without_a_detected_face_are_marked(page, clips):
    choose(page, clips["hidden.mp4"])
    [card] = finished_cards(page, 1)

    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    hollow = count(card, ".timeline .point.no-face")
    assert 1 <= hollow < FRAMES
    assert count(card, ".strip-item.no-face") == hollow


def test_garbage_shows_the_servers_message_then_a_good_file_still_scores(page, clips):
    choose(page, clips["garbage.mp4"])
    [bad] = finished_cards(page, 1)
    choose(page, clips["face.mp4"])
    bad, good = finished_cards(page, 2)

    assert bad.get_attribute("data-status") == "error"
    message = text(bad, ".error-message")
    assert message.startswith("The file was refused: unsupported input") and "accepted:" in message
    assert good.get_attribute("data-status") == "done" and text(good, ".verdict-label") in ("REAL", "FAKE")


def test_two_files_queued_give_two_result_cards(page, clips):
    choose(page, clips["face.mp4"], clips["other.mp4"])
    first, second = finished_cards(page, 2)

    assert [text(c, ".file-name") for c in (first, second)] == ["face.mp4", "other.mp4"]
    assert all(c.get_attribute("data-status") == "done" for c in (first, second))
    assert all(count(c, ".strip img.heatmap") == FRAMES for c in (first, second))


def test_a_container_the_browser_cannot_play_keeps_the_timeline_and_faces(page, clips):
    choose(page, clips["face.avi"])
    [card] = finished_cards(page, 1)

    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    assert card.get_attribute("data-playable") == "false"
    assert "cannot play this file" in text(card, ".player-note")
    assert count(card, ".timeline .point") == FRAMES and count(card, ".strip img.heatmap") == FRAMES


def test_verdict_only_and_a_still_image(page, triton_server, clips):
    from selenium.webdriver.common.by import By

    page.find_element(By.CSS_SELECTOR, "input[name=mode][value=verdict]").click()
    choose(page, clips["face.jpg"])
    [card] = finished_cards(page, 1)
    record, _ = cli_json(triton_server, clips["face.jpg"], "--verdict-only")

    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    assert text(card, ".prob-fake") == f"{record['prob_fake']:.4f}"
    assert text(card, ".model-name") == f"verdict_{FRAMES}"
    assert count(card, ".timeline .point") == 0 and count(card, ".strip img.heatmap") == 0
    box = card.find_element(By.CSS_SELECTOR, ".face-box")
    assert box.is_displayed() and box.get_attribute("data-frame") == "0"


def test_every_face_on_the_page(page, triton_server, clips):
    from selenium.webdriver.common.by import By

    page.find_element(By.CSS_SELECTOR, "input[name=mode][value=faces]").click()
    choose(page, clips["two.mp4"])
    [card] = finished_cards(page, 1)
    record, _ = cli_json(triton_server, clips["two.mp4"], "--all-faces")

    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    assert text(card, ".model-name") == f"faces_{FRAMES}"
    assert text(card, ".prob-fake") == f"{record['prob_fake']:.4f}"
    faces = card.find_elements(By.CSS_SELECTOR, ".faces-list .face-track")
    assert [float(face.get_attribute("data-prob-fake")) for face in faces] == [
        t["prob_fake"] for t in record["face_tracks"]
    ]
    assert f"{record['max_prob_fake']:.4f}" in text(card, ".faces-summary")
    # Sought to a frame, the second face's box is drawn over the video with that frame's box.
    seen = page.execute_async_script(SEEK_AND_READ_BOX, 4 / FPS + 0.001)
    frame = int(seen["frame"])
    other = card.find_element(By.CSS_SELECTOR, ".other-faces .face-box")
    box = [float(v) for v in other.get_attribute("data-box").split(",")]
    np.testing.assert_allclose(box, record["face_tracks"][1]["face_boxes"][frame], atol=0.01)


def test_the_original_apps_answer_on_the_page(page, triton_server, clips):
    from selenium.webdriver.common.by import By

    page.find_element(By.CSS_SELECTOR, "input[name=mode][value=original]").click()
    choose(page, clips["face.mp4"])
    [card] = finished_cards(page, 1)
    record, _ = cli_json(triton_server, clips["face.mp4"], "--original")

    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    assert text(card, ".model-name") == f"original_{FRAMES}"
    assert text(card, ".prob-fake") == f"{record['prob_fake']:.4f}"
    assert count(card, ".timeline .point") == FRAMES
    assert "as the original app found them" in text(card, ".explanation")


@pytest.mark.skipif(not SHARED_SAMPLE.is_file(), reason=f"the 1080p sample {SHARED_SAMPLE} is not here")
def test_the_1080p_sample_on_the_page(page, grpc_client):
    choose(page, SHARED_SAMPLE)
    [card] = finished_cards(page, 1)
    direct = grpc_client.score(SHARED_SAMPLE, FRAMES)

    assert text(card, ".prob-fake") == f"{direct.prob_fake:.4f}"
    seen = page.execute_async_script(SEEK_AND_READ_BOX, float(direct.frame_times[FRAMES - 1]))
    assert seen["frame"] == str(FRAMES - 1)
    assert [float(v) for v in seen["box"].split(",")] == [float(v) for v in direct.face_boxes[FRAMES - 1]]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.save_screenshot(str(ARTIFACTS / "web_result_page_1080p.png"))


def test_the_pages_zip_writer_makes_an_archive_zipfile_reads(page):
    import base64
    import io
    import zipfile

    encoded = page.execute_async_script("""
      const done = arguments[arguments.length - 1];
      const files = [{name: "frame_000_face.png", data: new Uint8Array([137, 80, 78, 71, 1, 2, 3])},
                     {name: "summary.json", data: new TextEncoder().encode('{"label": "REAL"}')}];
      const reader = new FileReader();
      reader.onload = () => done(reader.result.split(",")[1]);
      reader.readAsDataURL(window.makeZip(files));
    """)

    with zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded))) as archive:
        assert archive.testzip() is None  # every CRC matches
        assert archive.namelist() == ["frame_000_face.png", "summary.json"]
        assert archive.read("frame_000_face.png") == bytes([137, 80, 78, 71, 1, 2, 3])
        assert json.loads(archive.read("summary.json")) == {"label": "REAL"}


# ----------------------------------------------------------------------------- classifier versions


def test_the_api_names_the_version_that_answered_and_takes_a_chosen_one(web, triton_server, clips):
    data = clips["face.mp4"].read_bytes()

    latest = upload(web, "/api/score", data, name="face.mp4", frames=FRAMES)
    asked = upload(web, "/api/score", data, name="face.mp4", frames=FRAMES, model_version=1)
    explained = upload(web, "/api/explain", data, frames=FRAMES, model_version=1)
    record, _ = cli_json(triton_server, clips["face.mp4"], "--model-version", "1")

    for response in (latest, asked, explained):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model_version"] == 1 and answer["checkpoint"]["version"] == 1
        assert answer["checkpoint_sha256"] == answer["checkpoint"]["sha256"] == record["checkpoint_sha256"]
        assert "versions" not in answer["checkpoint"] and "export" not in answer["checkpoint"]
    same_as_cli(asked.json(), record)


def test_a_version_or_a_temporal_model_not_served_is_refused_in_words(web, clips):
    data = clips["face.mp4"].read_bytes()

    unserved = upload(web, "/api/score", data, frames=FRAMES, model_version=9)
    malformed = upload(web, "/api/explain", data, frames=FRAMES, model_version="latest")
    temporal = upload(web, "/api/score", data, frames=FRAMES, temporal=True)

    assert unserved.status_code == 422
    assert unserved.json() == {
        "error": f"version 9 of the {FRAMES}-frame classifier is not served; versions served: 1 (latest 1)",
        "status": "INVALID_ARGUMENT",
    }
    assert malformed.status_code == 400 and "'model_version' must be a positive whole number" in malformed.text
    assert temporal.status_code == 404 and temporal.json()["error"].startswith(
        f"no temporal model is served for {FRAMES} frames: train one with python -m train"
    )


def test_models_lists_each_lengths_versions(web):
    body = httpx.get(web.url + "api/models", timeout=TIMEOUT_S).json()

    assert body["temporal_lengths"] == [] and "temporal" not in body["versions"]
    [row] = body["versions"]["classifiers"][str(FRAMES)]
    entry = body["model_info"]["classifiers"][str(FRAMES)]
    assert (row["version"], row["latest"], row["ready"], row["demo"]) == (1, True, True, True)
    assert (row["checkpoint"], row["sha256"]) == (entry["checkpoint"], entry["sha256"])


def test_the_page_offers_the_versions_served_and_shows_which_answered(page, clips):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    selector = Select(page.find_element(By.ID, "model-version"))
    options = [option.text for option in selector.options]
    assert options[0] == "latest (version 1)"
    assert options[1:] == [f"version 1: model_50_acc_{FRAMES}_frames_demo_random.pt (demo weights)"]
    # No temporal model is served: its mode cannot be chosen.
    assert not page.find_element(By.CSS_SELECTOR, "input[name=mode][value=temporal]").is_enabled()

    selector.select_by_value("1")
    choose(page, clips["face.mp4"])
    [card] = finished_cards(page, 1)

    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    assert text(card, ".model-version") == "1 (the version asked for)"
    assert "sha256 " in text(card, ".checkpoint")


# ----------------------------------------------------------------------------- the case history and the bank

#: A clip long enough for several vPDQ hashes (one per second), and the copy's trim: one whole second,
#: so that the copy's hashed frames are the original's.
BANK_CLIP_FRAMES = 150
TRIM_FRAMES = FPS
#: How long a confirmed entry may take to reach every server (each polls the bank every 2 s).
BANK_PROPAGATION_S = 30.0


# The case list once it shows a search by content hash: [{id, text}] (read at once: the list is redrawn).
LISTED_CASES = """
const list = document.querySelector('#case-list');
if (list.dataset.listing !== 'sha256') return null;
return [...list.querySelectorAll('.case-item')].map((item) => ({id: item.dataset.caseId, text: item.textContent}));
"""


def reencoded(data: bytes, skip_frames: int, crf: str = "34", scale: float = 0.75) -> bytes:
    """``data`` trimmed by its first ``skip_frames`` frames, scaled and encoded again (H.264, PyAV)."""
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(out, "w", format="mp4") as target:
        decoded = source.streams.video[0]
        width = int(decoded.codec_context.width * scale) // 2 * 2
        height = int(decoded.codec_context.height * scale) // 2 * 2
        stream = target.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": crf}
        for index, frame in enumerate(source.decode(decoded)):
            if index < skip_frames:
                continue
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in stream.encode(picture.reformat(width=width, height=height)):
                target.mux(packet)
        for packet in stream.encode():
            target.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="module")
def history_web(triton_server, tmp_path_factory) -> tuple[WebProcess, str, str]:
    """The page keeping its case history in the server's own bank, and a reviewer made with the CLI:
    (the page, the bank, alice's token)."""
    bank = triton_server.env[BANK_ENV]
    completed = subprocess.run(
        [sys.executable, "-m", "client", "reviewers", "add", "alice", "--by", "test"],
        cwd=PROJECT_ROOT,
        env={**os.environ, BANK_ENV: bank},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    token = completed.stdout.strip()
    process = WebProcess(
        triton_server.grpc_url, tmp_path_factory.mktemp("web_history"), env={"DEEPFAKE_WEB_TOKEN": "", BANK_ENV: bank}
    ).start()
    yield process, bank, token
    process.stop()


def cli_record_with_bank(triton_server, path: Path, bank: str) -> dict:
    """``python -m client score PATH --json`` with ``DEEPFAKE_BANK`` naming the server's bank."""
    completed = subprocess.run(
        [sys.executable, "-m", "client", "score", str(path), "--json", "--frames", str(FRAMES)]
        + ["--url", triton_server.grpc_url, "--timeout", str(TIMEOUT_S)],
        cwd=PROJECT_ROOT,
        env={**os.environ, BANK_ENV: bank},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 2,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[0])


def test_a_fake_reviewed_and_confirmed_on_the_page_is_known_in_its_copies(
    browser, triton_server, history_web, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    web, bank, token = history_web
    original = tmp_path / "viral.mp4"
    original.write_bytes(media.face_clip(frames=BANK_CLIP_FRAMES, fps=FPS))
    copy = tmp_path / "copy.mp4"  # made now: re-encoded, scaled to 0.75 and its first second cut off
    copy.write_bytes(reencoded(original.read_bytes(), TRIM_FRAMES))
    unrelated = tmp_path / "unrelated.mp4"  # the same photo, moving otherwise: PDQ distances 70 and more
    unrelated.write_bytes(media.face_clip(frames=BANK_CLIP_FRAMES, fps=FPS, seed=3))

    # The reviewer signs in on the page with their own token.
    browser.get(web.url)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "frames").is_enabled())
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "reviewer-form").is_displayed())
    browser.find_element(By.ID, "reviewer-token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#reviewer-form button[type=submit]").click()
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "history").get_attribute("data-reviewer") == "alice"
    )
    assert "Signed in as alice" in browser.find_element(By.ID, "reviewer-status").text

    # The clip: scored, recorded as a case, no match in the bank yet.
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=verdict]").click()
    choose(browser, original)
    [card] = finished_cards(browser, 1)
    assert card.get_attribute("data-status") == "done", text(card, ".error-message")
    known = card.find_element(By.CSS_SELECTOR, ".known-match")
    assert known.get_attribute("data-status") == "none" and text(card, ".known-match-label") == "No match"
    case_id = card.get_attribute("data-case-id")
    assert case_id and f"Case {case_id}" in text(card, ".case-info")

    # Reviewed as fake, then confirmed into the bank, both under the reviewer's name.
    Select(card.find_element(By.CSS_SELECTOR, ".review-decision")).select_by_value("fake")
    card.find_element(By.CSS_SELECTOR, ".review-note").send_keys("face swapped onto the astronaut")
    card.find_element(By.CSS_SELECTOR, ".review-submit").click()
    WebDriverWait(browser, 30).until(
        lambda d: card.find_elements(By.CSS_SELECTOR, '.case-review[data-reviewer="alice"][data-decision="fake"]')
    )
    card.find_element(By.CSS_SELECTOR, ".confirm-fake").click()
    WebDriverWait(browser, 30).until(lambda d: card.get_attribute("data-bank-entry"))
    entry_id = int(card.get_attribute("data-bank-entry"))
    assert f"entry {entry_id}" in text(card, ".case-message")
    WebDriverWait(browser, 30).until(lambda d: card.find_elements(By.CSS_SELECTOR, ".case-review[data-bank-entry]"))
    [entry] = [e for e in Bank(bank).entries() if e.id == entry_id]
    assert (entry.label, entry.created_by, entry.note) == ("fake", "alice", "face swapped onto the astronaut")

    # Through the CLI, sharing the server's bank: the re-encoded, trimmed copy is the confirmed fake.
    deadline = time.monotonic() + BANK_PROPAGATION_S
    record = cli_record_with_bank(triton_server, copy, bank)
    while (record["known_match"] or {}).get("status") != "match" and time.monotonic() < deadline:
        time.sleep(1.0)
        record = cli_record_with_bank(triton_server, copy, bank)
    assert record["known_match"] is not None and record["known_match"]["status"] == "match", record
    assert record["known_match"]["id"] == entry_id and record["known_match"]["label"] == "fake"
    assert record["known_match"]["similarity"] >= 0.8
    assert cli_record_with_bank(triton_server, unrelated, bank)["known_match"] is None

    # On the page, the copy's card says so.
    choose(browser, copy)
    _, copied = finished_cards(browser, 2)
    assert copied.get_attribute("data-status") == "done", text(copied, ".error-message")
    known = copied.find_element(By.CSS_SELECTOR, ".known-match")
    assert known.get_attribute("data-status") == "match" and known.get_attribute("data-entry") == str(entry_id)
    assert text(copied, ".known-match-label") == "KNOWN FAKE"
    assert f"Bank entry {entry_id}: “face swapped onto the astronaut”" in text(copied, ".known-match-text")

    # The history panel finds the original by its content hash, confirmed, with the review.
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    browser.find_element(By.ID, "case-sha256").send_keys(digest)
    browser.find_element(By.CSS_SELECTOR, "#case-search button[type=submit]").click()
    listed = WebDriverWait(browser, 30).until(lambda d: d.execute_script(LISTED_CASES))
    assert [item["id"] for item in listed] == [case_id]
    assert f"in the bank as entry {entry_id}" in listed[0]["text"] and "alice: fake" in listed[0]["text"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web_case_history.png"))
