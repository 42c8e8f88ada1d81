"""Re-uploads of a confirmed fake caught on the real server, with the bank in SQLite and in a real
PostgreSQL (the same tests for both), and the response cache answering repeat bytes.

Each backend gets a server of its own over a private copy of the 10-frame models, started with
``DEEPFAKE_BANK`` naming the bank; the CLI adds to the same bank. Checked: a clip added through the
CLI (fingerprinted by the server) is reported as known on every way in (``deepfake_10``,
``verdict_10``, ``faces_10``, ``original_10``, the CLI's ``--json``) for copies made at test time:
re-encoded at a lower bitrate, trimmed at the start, cropped at the borders by 1 % and captioned;
an unrelated clip is not; a removal reaches the running server; repeat bytes are answered from the
cache, and what depends on the bank or the calibration is never stale for it; a bank that goes
away is said to be unavailable while scoring goes on, and matching resumes when it comes back.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.request

import av
import cv2
import numpy as np
import pytest

from bank.match import POLL_S
from benchmarks.server import private_repository, start_server
from client import DeepfakeClient, Mode
from contract import BANK_ENV, MATCH_UNAVAILABLE, RESPONSE_CACHE_BYTES
from serve.distribution import PROJECT_ROOT
from tests.training_set import _photo, clip

pytestmark = pytest.mark.integration

FRAMES = 10
SECONDS = 6
FPS = 25
TIMEOUT_S = 600
#: The border crop a copy survives here (1 % a side); larger crops: see the benchmark (PDQ is not made for them).
CROP = 0.01


def _encode(frames: list[np.ndarray], bit_rate: int | None = None) -> bytes:
    """H.264 mp4 of RGB frames at 25 fps (even sizes), on one thread."""
    height, width = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        if bit_rate:
            stream.bit_rate = bit_rate
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def _frames(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _cropped(frame: np.ndarray, share: float) -> np.ndarray:
    height, width = frame.shape[:2]
    dy, dx = round(height * share), round(width * share)
    return frame[dy : height - dy, dx : width - dx]


def _captioned(frame: np.ndarray) -> np.ndarray:
    """A caption burned in as platforms do: outlined white text over the picture."""
    out = frame.copy()
    height = out.shape[0]
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(out, "SHOCKING", (6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, thickness)
    return out


@pytest.fixture(scope="module")
def media() -> dict[str, bytes]:
    """The fake, its re-uploads, and an unrelated clip, made at test time."""
    original = clip(_photo(), seed=11, frames=SECONDS * FPS)
    frames = _frames(original)
    unrelated = _encode(
        [np.ascontiguousarray(np.flip(f, axis=1)) for f in _frames(clip(_photo(), seed=23, frames=SECONDS * FPS))]
    )
    return {
        "original": original,
        "reencoded": _encode(frames, bit_rate=150_000),
        "trimmed": _encode(frames[FPS:]),
        "cropped": _encode([_cropped(f, CROP) for f in frames]),
        "captioned": _encode([_captioned(f) for f in frames]),
        "unrelated": unrelated,
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def banked(request, tmp_path_factory, media):
    """A server of its own with ``DEEPFAKE_BANK`` set, and the original added to that bank by the CLI."""
    scratch = tmp_path_factory.mktemp(f"bank-{request.param}")
    if request.param == "sqlite":
        setting, database = str(scratch / "bank.sqlite3"), None
    else:
        database = request.getfixturevalue("postgres_server")
        setting = database.new_database()
    repository = private_repository(PROJECT_ROOT / "model_repository", FRAMES, scratch / "repository")
    # With the response cache (off by default: contract.RESPONSE_CACHE_BYTES says why).
    server = start_server(
        repository, scratch / "tritonserver.log", env={BANK_ENV: setting}, response_cache_bytes=RESPONSE_CACHE_BYTES
    )
    (scratch / "original.mp4").write_bytes(media["original"])
    added = _cli(
        setting, "bank", "add", str(scratch / "original.mp4"), "--note", "viral fake", "--url", server.grpc_url
    )
    assert added.returncode == 0, added.stderr
    entry = int(re.search(r"added entry (\d+)", added.stdout).group(1))
    time.sleep(POLL_S + 0.5)
    try:
        yield {"server": server, "setting": setting, "entry": entry, "database": database, "scratch": scratch}
    finally:
        server.stop()


def _cli(setting: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "client", *args]
    env = {**__import__("os").environ, BANK_ENV: setting, "DEEPFAKE_USER": "tester"}
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_a_confirmed_fakes_re_uploads_are_known_on_every_way_in(banked, media) -> None:
    client = DeepfakeClient(banked["server"].grpc_url)
    for name in ("original", "reencoded", "trimmed", "cropped", "captioned"):
        answer = client.score(media[name], FRAMES, name=name)
        known = answer.known_match
        assert known is not None and known["status"] == "match", (name, known)
        assert known["id"] == banked["entry"] and known["label"] == "fake" and known["note"] == "viral fake"
        assert known["similarity"] >= 0.8
    trimmed = client.score(media["trimmed"], FRAMES).known_match
    assert trimmed["entry_similarity"] < 1.0 and trimmed["query_span"][0] == 0.0
    for mode in (Mode.VERDICT, Mode.FACES, Mode.ORIGINAL):
        assert client.score(media["reencoded"], FRAMES, mode=mode).known_match["id"] == banked["entry"], mode
    assert client.score(media["unrelated"], FRAMES).known_match is None
    copy = banked["scratch"] / "copy.mp4"
    copy.write_bytes(media["cropped"])
    scored = _cli(
        banked["setting"], "score", str(copy), "--frames", str(FRAMES), "--json", "--url", banked["server"].grpc_url
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["known_match"]["id"] == banked["entry"]


def _cache(server) -> dict[str, float]:
    with urllib.request.urlopen(server.metrics_url, timeout=30) as response:
        text = response.read().decode()
    found = {}
    for name in ("nv_cache_num_hits_per_model", "nv_cache_num_misses_per_model"):
        match = re.search(rf'^{name}{{model="preprocess_{FRAMES}",version="1"}} (\S+)', text, re.M)
        found[name] = float(match.group(1)) if match else 0.0
    return found


def test_repeat_bytes_come_from_the_cache_and_the_bank_is_never_stale(banked, media) -> None:
    client = DeepfakeClient(banked["server"].grpc_url)
    fresh = _encode(_frames(clip(_photo(), seed=31, frames=3 * FPS)))
    before = _cache(banked["server"])
    first = client.score(fresh, FRAMES)
    middle = _cache(banked["server"])
    second = client.score(fresh, FRAMES)
    after = _cache(banked["server"])
    assert middle["nv_cache_num_misses_per_model"] == before["nv_cache_num_misses_per_model"] + 1
    assert after["nv_cache_num_hits_per_model"] == middle["nv_cache_num_hits_per_model"] + 1
    assert second.prob_fake == first.prob_fake and second.known_match is None
    # Added to the bank after it was first scored: the cached preprocessing does not hide it.
    path = banked["scratch"] / "fresh.mp4"
    path.write_bytes(fresh)
    added = _cli(banked["setting"], "bank", "add", str(path), "--url", banked["server"].grpc_url)
    assert added.returncode == 0, added.stderr
    entry = int(re.search(r"added entry (\d+)", added.stdout).group(1))
    time.sleep(POLL_S + 0.5)
    third = client.score(fresh, FRAMES)
    assert _cache(banked["server"])["nv_cache_num_hits_per_model"] >= after["nv_cache_num_hits_per_model"] + 1
    assert third.known_match["id"] == entry
    removed = _cli(banked["setting"], "bank", "remove", str(entry), "--why", "test done")
    assert removed.returncode == 0, removed.stderr
    time.sleep(POLL_S + 0.5)
    assert client.score(fresh, FRAMES).known_match is None


def test_the_bank_history_keeps_who_and_why(banked) -> None:
    listed = _cli(banked["setting"], "bank", "list", "--history", "--json")
    changes = [json.loads(line) for line in listed.stdout.splitlines()]
    assert changes[0]["action"] == "add" and changes[0]["by"] == "tester" and changes[0]["why"] == "viral fake"
    duplicate = _cli(
        banked["setting"], "bank", "add", str(banked["scratch"] / "original.mp4"), "--url", banked["server"].grpc_url
    )
    assert duplicate.returncode == 2 and f"already in the bank as entry {banked['entry']}" in duplicate.stderr
    unknown = _cli(banked["setting"], "bank", "remove", "9999", "--why", "typo")
    assert unknown.returncode == 2 and "no entry 9999" in unknown.stderr


def test_a_bank_that_goes_away_is_said_to_be_unavailable_and_scoring_goes_on(banked, media) -> None:
    database = banked["database"]
    if database is None:
        pytest.skip("the SQLite bank is a file: it cannot go away while the server runs")
    client = DeepfakeClient(banked["server"].grpc_url)
    database.stop()
    try:
        time.sleep(POLL_S + 0.5)
        answer = client.score(media["reencoded"], FRAMES)
        assert answer.known_match["status"] == MATCH_UNAVAILABLE and "bank" in answer.known_match["reason"]
        assert 0.0 <= answer.prob_fake <= 1.0
    finally:
        database.start()
    time.sleep(POLL_S + 0.5)
    assert client.score(media["reencoded"], FRAMES).known_match["id"] == banked["entry"]
