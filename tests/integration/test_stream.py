"""Live streams against the session's real server: the ``stream`` model over gRPC streaming.

* a generated clip streamed: every frame score is the classifier's own on the crop the stream
  reports, and the windows follow from the frame scores exactly;
* the same clip streamed and uploaded: frames with the same crop score the same; how far the
  online boxes are from the offline ones is printed (``-s``);
* two streams interleaved on the server at once: each gets what it gets alone;
* bad input (garbage packets, a refused codec, END without START), a client that vanishes, a
  stream that stops sending, more streams than the model's cap, a killed stub: each gets a clear
  error, the model frees the stream (the live-stream gauge returns to 0), the others go on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from client import ClientError, DeepfakeClient
from client.stream_client import Packet, StreamSession, open_source, play, settings_for
from contract import EXPORT_METADATA_FILE, STREAM_IDLE_US, Kind, classifier_file, model_name
from export.configs import CPU_MAX_STREAMS
from preprocessing.crop import _normalize, sample_region
from preprocessing.decode import decode_frames
from serve.distribution import PROJECT_ROOT
from tests import media

pytestmark = pytest.mark.integration

STREAM_NAME = model_name(Kind.STREAM)

FRAMES = 10
HOP = 5
CLIP_FRAMES = 24
SCORE_ATOL = 1e-5
BOX_ATOL = 1e-3
IDLE_S = STREAM_IDLE_US / 1e6
# The model's timer looks every second; Triton's reaper at its own pace.
IDLE_BOUND_S = IDLE_S + 10.0
RECOVERY_BOUND_S = 120.0
ANSWER_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 180.0
LIVE_GAUGE = re.compile(rf'^deepfake_stream_live\{{[^}}]*model="{STREAM_NAME}"[^}}]*\}} (\S+)$', re.M)


def clip_file(tmp_path: Path, name: str, **kwargs) -> Path:
    path = tmp_path / name
    path.write_bytes(media.face_clip(**kwargs))
    return path


def stream_events(url: str, path: Path, score_every: int = 1, hop: int = HOP) -> list[dict]:
    """Every event of ``path`` streamed alone, as fast as the server takes it."""
    source = open_source(str(path))
    events: list[dict] = []
    with StreamSession(
        url, settings_for(source, FRAMES, hop, score_every), source.extradata, timeout_s=ANSWER_TIMEOUT_S
    ) as session:
        play(session, source.packets, realtime=False, on_event=events.append)
    source.closer()
    return events


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [event for event in events if event["type"] == kind]


def live_streams(server) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    match = LIVE_GAUGE.search(text)
    assert match is not None, "the stream model publishes no deepfake_stream_live gauge"
    return float(match[1])


def wait_for_no_live_streams(server, bound_s: float) -> float:
    started = time.monotonic()
    while live_streams(server) != 0:
        assert time.monotonic() - started < bound_s, f"streams still live after {bound_s:g} s"
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def classifier_session(classifier_repository):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(classifier_file(classifier_repository, FRAMES)),
        options,
        providers=["CPUExecutionProvider"],
    )


def own_scores(session: ort.InferenceSession, frames: list[np.ndarray], boxes: list[list[float]]) -> np.ndarray:
    """The classifier's scores of the reported crops, one frame at a time."""
    crops = np.stack([sample_region(frame, box) for frame, box in zip(frames, boxes)])
    faces = _normalize(crops)[:, None]
    return np.concatenate(
        [session.run(["PROB_FAKE"], {"FACES": faces[i : i + 1]})[0].reshape(-1) for i in range(len(faces))]
    )


def test_frame_scores_are_the_classifiers_own_and_windows_follow(triton_server, classifier_session, tmp_path):
    path = clip_file(tmp_path, "clip.mp4", frames=CLIP_FRAMES, seed=3)
    events = stream_events(triton_server.grpc_url, path)
    frames = of_type(events, "frame")
    assert [f["frame"] for f in frames] == list(range(CLIP_FRAMES))
    assert all(f["face_found"] for f in frames)
    decoded = decode_frames(path.read_bytes(), CLIP_FRAMES).frames
    expected = own_scores(classifier_session, decoded, [f["face_box"] for f in frames])
    got = np.array([f["frame_prob_fake"] for f in frames], np.float32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=SCORE_ATOL)

    windows = of_type(events, "window")
    assert [w["start_frame"] for w in windows] == list(range(0, CLIP_FRAMES - FRAMES + 1, HOP))
    for window in windows:
        inside = got[window["start_frame"] : window["start_frame"] + FRAMES]
        assert window["end_frame"] == window["start_frame"] + FRAMES - 1
        assert window["prob_fake"] == got[window["end_frame"]]
        assert window["frame_prob_fake_mean"] == float(np.float32(np.mean(inside, dtype=np.float64)))
        assert window["frames_scored"] == FRAMES
    # The stream names the classifier version that scored it (the latest: 1) and its checkpoint.
    export = json.loads(classifier_file(PROJECT_ROOT / "model_repository", FRAMES, EXPORT_METADATA_FILE).read_text())
    facts = {"model_version": 1, "checkpoint_sha256": export["sha256"]}
    assert all({key: window[key] for key in facts} == facts for window in windows)
    (summary,) = of_type(events, "summary")
    assert summary == {
        "type": "summary",
        "frames_received": CLIP_FRAMES,
        "frames_decoded": CLIP_FRAMES,
        "frames_scored": CLIP_FRAMES,
        "frames_skipped": 0,
        **facts,
    }


def _iou(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_streamed_and_uploaded_agree_where_the_crops_agree(triton_server, tmp_path, capsys):
    path = clip_file(tmp_path, "clip.mp4", frames=FRAMES, seed=4)
    frames = of_type(stream_events(triton_server.grpc_url, path), "frame")
    with DeepfakeClient(triton_server.grpc_url, timeout_s=ANSWER_TIMEOUT_S) as detector:
        uploaded = detector.score(path, frames=FRAMES)
    same = [
        i
        for i, frame in enumerate(frames)
        if np.allclose(frame["face_box"], uploaded.face_boxes[i], atol=BOX_ATOL, rtol=0)
    ]
    # Frame 0 is searched whole both ways, frame 1 in the same window: the same crops.
    assert {0, 1} <= set(same)
    for i in same:
        assert frames[i]["frame_prob_fake"] == pytest.approx(float(uploaded.frame_prob_fake[i]), abs=SCORE_ATOL)
    ious = [_iou(frame["face_box"], uploaded.face_boxes[i]) for i, frame in enumerate(frames)]
    with capsys.disabled():
        print(
            f"\nonline vs offline crops, {FRAMES} frames: same crop in {len(same)}, IoU mean {np.mean(ious):.3f}, "
            f"min {np.min(ious):.3f}"
        )
    assert min(ious) > 0.5


def test_two_streams_at_once_each_get_what_they_get_alone(triton_server, tmp_path):
    paths = [clip_file(tmp_path, f"clip_{seed}.mp4", frames=CLIP_FRAMES, seed=seed) for seed in (11, 12)]
    alone = [of_type(stream_events(triton_server.grpc_url, path), "frame") for path in paths]
    assert alone[0][0]["face_box"] != alone[1][0]["face_box"], "the two clips must differ"
    sources = [open_source(str(path)) for path in paths]
    sessions = [
        StreamSession(triton_server.grpc_url, settings_for(s, FRAMES, HOP, 1), s.extradata, timeout_s=ANSWER_TIMEOUT_S)
        for s in sources
    ]
    events: list[list[dict]] = [[], []]
    try:
        packets = [list(s.packets) for s in sources]
        # Both streams' requests are in flight together, so that the model meets them in one call.
        for start in range(0, CLIP_FRAMES, 4):
            for session, own in zip(sessions, packets):
                session.send(own[start : start + 4])
        for session in sessions:
            session.send([], end=True)
        for session, got in zip(sessions, events):
            got += session.drain(0)
    finally:
        for session, source in zip(sessions, sources):
            session.close()
            source.closer()
    for together, single in zip(events, alone):
        frames = of_type(together, "frame")
        assert [f["frame"] for f in frames] == [f["frame"] for f in single]
        np.testing.assert_allclose(
            [f["face_box"] for f in frames], [f["face_box"] for f in single], rtol=0, atol=BOX_ATOL
        )
        np.testing.assert_allclose(
            [f["frame_prob_fake"] for f in frames], [f["frame_prob_fake"] for f in single], rtol=0, atol=SCORE_ATOL
        )


def _refused(url: str, settings: dict, extradata: bytes, packets: list[Packet]) -> ClientError:
    with (
        StreamSession(url, settings, extradata, timeout_s=ANSWER_TIMEOUT_S) as session,
        pytest.raises(ClientError) as caught,
    ):
        play(session, iter(packets), realtime=False, on_event=lambda event: None)
    return caught.value


def test_bad_streams_are_refused_and_the_others_go_on(triton_server, tmp_path):
    url = triton_server.grpc_url
    good_path = clip_file(tmp_path, "good.mp4", frames=CLIP_FRAMES, seed=21)
    reference = of_type(stream_events(url, good_path), "frame")
    source = open_source(str(good_path))
    good = StreamSession(url, settings_for(source, FRAMES, HOP, 1), source.extradata, timeout_s=ANSWER_TIMEOUT_S)
    packets = list(source.packets)
    events = []
    try:
        good.send(packets[: CLIP_FRAMES // 2])
        events += good.drain(0)

        rng = np.random.default_rng(5)
        h264 = settings_for(source, FRAMES, HOP, 1)
        garbage = _refused(url, h264, source.extradata, [Packet(rng.bytes(400), i, 0.0) for i in range(40)])
        assert garbage.status == "INVALID_ARGUMENT" and "no picture" in garbage.message

        mpeg4 = open_source(str(clip_file(tmp_path, "mpeg4.avi", frames=4, codec="mpeg4", container="avi")))
        codec = _refused(url, settings_for(mpeg4, FRAMES, HOP, 1), mpeg4.extradata, list(mpeg4.packets))
        assert codec.status == "INVALID_ARGUMENT" and "'mpeg4' is not accepted" in codec.message

        unserved = _refused(url, {**h264, "frames": 7}, source.extradata, packets[:2])
        assert unserved.status == "INVALID_ARGUMENT" and "frames=7 is not served" in unserved.message

        version = _refused(url, {**h264, "model_version": 9}, source.extradata, packets[:2])
        assert version.status == "INVALID_ARGUMENT" and "model_version 9" in version.message
        assert "serves version(s) 1" in version.message

        with StreamSession(url, h264, source.extradata, timeout_s=ANSWER_TIMEOUT_S) as orphan:
            orphan.started = True  # its first request carries END and no START
            with pytest.raises(ClientError) as caught:
                orphan.send(packets[:2], end=True)
                orphan.drain(0)
        assert caught.value.status == "INVALID_ARGUMENT" and "START" in caught.value.message

        good.send(packets[CLIP_FRAMES // 2 :])
        good.send([], end=True)
        events += good.drain(0)
    finally:
        good.close()
        source.closer()
    frames = of_type(events, "frame")
    np.testing.assert_allclose(
        [f["frame_prob_fake"] for f in frames], [f["frame_prob_fake"] for f in reference], rtol=0, atol=SCORE_ATOL
    )
    assert of_type(events, "summary")[0]["frames_scored"] == CLIP_FRAMES
    assert wait_for_no_live_streams(triton_server, 5.0) < 5.0


def test_more_streams_than_the_cap_are_told_unavailable(triton_server, tmp_path):
    url = triton_server.grpc_url
    source = open_source(str(clip_file(tmp_path, "clip.mp4", frames=4, seed=31)))
    settings = settings_for(source, FRAMES, HOP, 1)
    sessions = [
        StreamSession(url, settings, source.extradata, timeout_s=ANSWER_TIMEOUT_S) for _ in range(CPU_MAX_STREAMS + 1)
    ]
    try:
        for session in sessions[:CPU_MAX_STREAMS]:
            session.send([])
            session.drain(0)
        assert live_streams(triton_server) == CPU_MAX_STREAMS
        extra = sessions[-1]
        with pytest.raises(ClientError) as caught:
            extra.send([])
            extra.drain(0)
        assert caught.value.status == "UNAVAILABLE" and f"maximum of {CPU_MAX_STREAMS}" in caught.value.message
        extra.release()
        # One ends: a new stream is taken.
        sessions[0].send([], end=True)
        sessions[0].drain(0)
        late = StreamSession(url, settings, source.extradata, timeout_s=ANSWER_TIMEOUT_S)
        sessions.append(late)
        late.send(list(source.packets), end=True)
        assert of_type(late.drain(0), "summary")[0]["frames_scored"] == 4
        for session in sessions[1:CPU_MAX_STREAMS]:
            session.send([], end=True)
            session.drain(0)
    finally:
        for session in sessions:
            session.close()
        source.closer()
    assert live_streams(triton_server) == 0


def test_vanished_and_silent_clients_are_freed_after_the_idle_timeout(triton_server, tmp_path, capsys):
    url = triton_server.grpc_url
    source = open_source(str(clip_file(tmp_path, "clip.mp4", frames=8, seed=41)))
    packets = list(source.packets)
    settings = settings_for(source, FRAMES, HOP, 1)
    vanished = StreamSession(url, settings, source.extradata, timeout_s=ANSWER_TIMEOUT_S)
    silent = StreamSession(url, settings, source.extradata, timeout_s=ANSWER_TIMEOUT_S)
    try:
        for session in (vanished, silent):
            session.send(packets[:4])
            session.drain(0)
        vanished.send(packets[4:])  # in flight when the client goes
        vanished.close()
        assert live_streams(triton_server) >= 1
        freed_after = wait_for_no_live_streams(triton_server, IDLE_BOUND_S)
        with pytest.raises(ClientError) as caught:
            silent.send(packets[4:])
            silent.drain(0)
        assert caught.value.status == "INVALID_ARGUMENT"
    finally:
        silent.close()
        source.closer()
    with capsys.disabled():
        print(f"\nstreams freed {freed_after:.1f} s after their clients went (idle timeout {IDLE_S:g} s)")
    # The server is fine: a new stream is scored.
    assert (
        of_type(stream_events(url, clip_file(tmp_path, "after.mp4", frames=6, seed=42)), "summary")[0]["frames_scored"]
        == 6
    )


def test_cli_streams_a_file_in_real_time(triton_server, tmp_path):
    path = clip_file(tmp_path, "clip.mp4", frames=FRAMES + 2, seed=51)
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "stream",
            str(path),
            "--url",
            triton_server.grpc_url,
            "--frames",
            str(FRAMES),
            "--hop",
            "2",
            "--realtime",
            "--json",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert time.monotonic() - started >= (FRAMES + 1) / 25.0, "--realtime sends at the clip's own rate"
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    kinds = {line["type"] for line in lines}
    assert {"frame", "window", "summary"} <= kinds
    frame = of_type(lines, "frame")[0]
    assert {"frame", "pts", "frame_prob_fake", "face_box", "face_found"} <= set(frame)
    window = of_type(lines, "window")[0]
    assert {"end_frame", "prob_fake", "frame_prob_fake_mean"} <= set(window)
    assert set(of_type(lines, "summary")[0]) >= {"frames_received", "frames_decoded", "frames_scored", "frames_skipped"}
    assert [w["start_frame"] for w in of_type(lines, "window")] == [0, 2]

    health = subprocess.run(
        [sys.executable, "-m", "client", "health", "--url", triton_server.grpc_url],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert re.search(rf"^\s+{STREAM_NAME}\s+ready", health.stdout, re.M), health.stdout
    assert re.search(rf"^\s+resnext_frame_{FRAMES}\s+ready", health.stdout, re.M), health.stdout


def test_stub_killed_mid_stream_fails_clearly_and_is_restored(triton_server, tmp_path):
    url = triton_server.grpc_url
    source = open_source(str(clip_file(tmp_path, "clip.mp4", frames=CLIP_FRAMES, seed=61)))
    packets = list(source.packets)
    recoveries_before = len(triton_server.recoveries)
    session = StreamSession(url, settings_for(source, FRAMES, HOP, 1), source.extradata, timeout_s=ANSWER_TIMEOUT_S)
    try:
        session.send(packets[:4])
        session.drain(0)
        (victim,) = triton_server.stub_pids()[STREAM_NAME]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(ClientError) as caught:
            session.send(packets[4:8])
            session.drain(0)
        assert caught.value.status in ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"), caught.value
    finally:
        session.close()
        source.closer()
    while not any(r.model == STREAM_NAME for r in triton_server.recoveries[recoveries_before:]):
        assert time.monotonic() - killed_at < RECOVERY_BOUND_S, "the watchdog did not restore the stream model"
        time.sleep(0.5)
    summary = of_type(stream_events(url, clip_file(tmp_path, "after.mp4", frames=6, seed=62)), "summary")[0]
    assert summary["frames_scored"] == 6
