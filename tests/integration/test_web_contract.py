"""What the page needs from the server, served for real: FRAME_TIMES and model_info.

FRAME_TIMES says when each used frame is shown (seconds from the video stream's start), so that a
player can draw FACE_BOXES over the right moment; model_info says which checkpoints the
classifiers come from, so that clients can warn when they are the demo ones.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from client import DeepfakeClient, Mode
from client.cli import main as cli_main
from client.codec import DEMO_WARNING, demo_warning
from client.versions import latest_version, served_versions
from tests import media
from tests.integration.conftest import REPOSITORY

pytestmark = pytest.mark.integration

FRAMES = 20
FPS = 25
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def detector(triton_server) -> DeepfakeClient:
    with DeepfakeClient(triton_server.grpc_url, timeout_s=TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def clip() -> bytes:
    return media.face_clip(frames=30, fps=FPS)


def test_every_ensemble_gives_the_display_time_of_each_used_frame(detector, clip):
    expected = np.arange(FRAMES, dtype=np.float32) / FPS

    scored = detector.score(clip, FRAMES)
    verdict = detector.score(clip, FRAMES, mode=Mode.VERDICT)
    explained = detector.explain(clip, FRAMES)

    assert scored.frame_times.dtype == np.float32 and scored.frame_times.shape == (FRAMES,)
    np.testing.assert_allclose(scored.frame_times, expected, atol=1e-6)
    np.testing.assert_array_equal(verdict.frame_times, scored.frame_times)
    np.testing.assert_array_equal(explained.frame_times, scored.frame_times)
    # The other outputs stay as they were.
    assert scored.frame_prob_fake.shape == (FRAMES,) and scored.face_boxes.shape == (FRAMES, 4)


def test_variable_frame_rate_times_are_the_streams_own(detector):
    pts, time_base = media._vfr_timestamps(FRAMES, seed=0)

    result = detector.score(media.face_clip(frames=FRAMES, vfr=True), FRAMES)

    expected = (np.array(pts) - pts[0]) * float(time_base)
    np.testing.assert_allclose(result.frame_times, expected, atol=1e-4)
    assert len(set(np.diff(expected).round(3))) > 1  # really irregular


def test_a_short_clip_repeats_its_last_frames_time_and_a_still_is_at_zero(detector):
    short = detector.score(media.face_clip(frames=8, fps=FPS), FRAMES)
    still = detector.score(media.still_image("PNG"), FRAMES)

    np.testing.assert_allclose(short.frame_times[:8], np.arange(8) / FPS, atol=1e-6)
    assert (short.frame_times[8:] == short.frame_times[7]).all() and short.frames_decoded == 8
    assert (still.frame_times == 0).all()


def test_model_info_answers_the_served_export_files(detector):
    info = detector.model_info()

    assert set(info["classifiers"]) == {"10", "20", "30"}
    for frames, entry in info["classifiers"].items():
        export = json.loads((REPOSITORY / f"resnext_lstm_{frames}" / "1" / "export.json").read_text())
        assert entry["export"] == export
        assert entry["sha256"] == export["sha256"] and entry["frames"] == int(frames)
        assert entry["checkpoint"] == Path(export["checkpoint"]).name
        assert entry["demo"] is entry["checkpoint"].endswith("_demo_random.pt")
    assert info["demo"] is any(entry["demo"] for entry in info["classifiers"].values())
    assert demo_warning(info) == DEMO_WARNING.format(
        checkpoints=", ".join(sorted(e["checkpoint"] for e in info["classifiers"].values() if e["demo"]))
    )


def test_the_cli_warns_on_stderr_and_keeps_its_json_lines(triton_server, tmp_path, clip):
    video = tmp_path / "clip.mp4"
    video.write_bytes(clip)
    out, err = io.StringIO(), io.StringIO()

    status = cli_main(["score", str(video), "--json", "--url", triton_server.grpc_url], out=out, err=err)

    assert status == 0
    [line] = out.getvalue().splitlines()
    assert "WARNING" not in line and json.loads(line)["error"] is None
    assert err.getvalue().startswith("WARNING: the server's classifiers come from demo checkpoints")


def test_no_warning_when_the_server_cannot_say(tmp_path):
    # A closed port: model_info fails, the CLI says nothing about checkpoints and reports the score's failure.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    out, err = io.StringIO(), io.StringIO()

    status = cli_main(["score", str(video), "--url", f"127.0.0.1:{port}", "--retries", "0"], out=out, err=err)

    assert status == 1 and "WARNING" not in err.getvalue() and "UNAVAILABLE" in err.getvalue()


def test_model_info_lists_every_version_of_each_length(detector, clip):
    info = detector.model_info()

    for frames, entry in info["classifiers"].items():
        export = json.loads((REPOSITORY / f"resnext_lstm_{frames}" / "1" / "export.json").read_text())
        assert entry["version"] == 1 and entry["ready"] is True and entry["lineage"] is None
        assert set(entry["versions"]) == {"1"}
        assert entry["versions"]["1"]["sha256"] == entry["sha256"] == export["sha256"]
        assert served_versions(info, int(frames)) == [1] and latest_version(info, int(frames)) == 1
    # The answer names the version and checkpoint model_info lists as the latest.
    scored = detector.score(clip, FRAMES)
    assert (scored.model_version, scored.checkpoint_sha256) == (1, info["classifiers"][str(FRAMES)]["sha256"])
    # The demo warning of the version that answers is the one of every length's latest.
    assert demo_warning(info, FRAMES, version=1) == DEMO_WARNING.format(
        checkpoints=info["classifiers"][str(FRAMES)]["checkpoint"]
    )
