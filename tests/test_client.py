"""The gRPC client without a server: parsing, records, resume, retries, images.

Requests that need an answer go to a closed local port, where real gRPC
fails with UNAVAILABLE; nothing here needs tritonserver.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

import client
from calibration.point import decide_uncalibrated, uncalibrated_point
from client import (
    ClientError,
    Connection,
    DeepfakeClient,
    ExplainResult,
    FaceTrack,
    Mode,
    ModeError,
    ScoreResult,
    label_and_confidence,
)
from client.batch import (
    ResultsFile,
    backoff_delays,
    call_with_retries,
    error_record,
    jittered,
    read_results,
    result_record,
    run_batch,
    unique_videos,
)
from client.cli import build_parser, main
from client.codec import MAX_VIDEO_BYTES, demo_warning, load_video, unpack_outputs, video_inputs
from client.commands import score as score_command
from client.commands.args import connection_from_args
from client.commands.health import all_ready, format_health, format_versions
from client.commands.score import format_result_line
from client.explain import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    blend_heatmap,
    jet_colormap,
    unnormalise_faces,
    write_explanation,
)
from client.progress import CLEAR_LINE, Console, render_bar
from client.results import score_result
from client.versions import (
    VersionKeeper,
    batch_version,
    check_answered,
    check_served,
    describe_versions,
    latest_version,
    no_longer_served,
    other_versions,
    served_versions,
    version_entry,
)
from contract import (
    ANSWER_FACTS,
    ANY,
    FACE_SIZE,
    FACE_TRACK_JSON_KEYS,
    FACES_JSON_KEYS,
    SCORE_JSON_KEYS,
    SCORE_OUTPUTS,
    TEMPORAL_JSON_KEYS,
    TENSORS,
    Exit,
    Score,
    json_keys,
)

CLIENT_ROOT = Path(client.__file__).resolve().parents[1]
LONG_WAIT_S = 60.0
#: The checkpoint digest the made-up answers name.
DIGEST = "0123456789abcdef" * 4
# Modules the client must never load: the server side's heavy dependencies.
SERVER_ONLY_MODULES = (
    "torch",
    "torchvision",
    "cv2",
    "av",
    "onnxruntime",
    "facenet_pytorch",
    "preprocessing",
    "export",
    # The python models' package: neither the page's image nor a plain client install carries it.
    "triton_models",
)
# The eval extra's report libraries: only `evaluate` imports them, once it has scored.
EVAL_ONLY_MODULES = ("sklearn", "matplotlib")


@pytest.fixture
def closed_url() -> str:
    """A local gRPC address nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 pretend video bytes")
    return path


def run(*argv: str) -> tuple[int, str, str]:
    """Runs the CLI in this process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def make_score(video: str = "v.mp4", logits=(2.0, -1.0), frames: int = 4, version: int = 1) -> ScoreResult:
    label, confidence = label_and_confidence(logits)
    frame_prob = np.linspace(0.2, 0.8, frames, dtype=np.float32)
    found = np.arange(frames) % 2 == 0
    return ScoreResult(
        video=video,
        prob_fake=1.0 / (1.0 + math.exp(logits[1] - logits[0])),
        logits=tuple(logits),
        frame_prob_fake=frame_prob,
        frame_prob_fake_mean=float(frame_prob.mean()),
        label=label,
        confidence=confidence,
        face_boxes=np.zeros((frames, 4), np.float32),
        face_found=found,
        frame_times=np.arange(frames, dtype=np.float32) / 25,
        faces_found=int(found.sum()),
        frames_decoded=frames,
        latency_ms=12.3456,
        model_version=version,
        checkpoint_sha256=DIGEST,
        **decided(1.0 / (1.0 + math.exp(logits[1] - logits[0]))),
    )


def decided(prob_fake: float) -> dict:
    """An uncalibrated server's decision fields for a raw score."""
    calibrated, decision = decide_uncalibrated(prob_fake)
    return {
        "decision": decision,
        "prob_fake_calibrated": calibrated,
        "operating_point": uncalibrated_point(Score.DEEPFAKE),
    }


def normalise_like_training(rgb: np.ndarray) -> np.ndarray:
    """[N,H,W,3] uint8 RGB -> [N,3,H,W] FACES, written from the contract's words."""
    bgr = rgb[..., ::-1].astype(np.float64) / 255.0
    normalised = (bgr - IMAGENET_MEAN.astype(np.float64)) / IMAGENET_STD.astype(np.float64)
    return normalised.transpose(0, 3, 1, 2).astype(np.float32)


# ----------------------------------------------------------------------------- arguments


def test_score_defaults():
    args = build_parser().parse_args(["score", "a.mp4"])

    assert args.videos == ["a.mp4"]
    assert (args.frames, args.url, args.concurrency, args.retries) == (20, "localhost:8001", 1, 6)
    assert (args.json, args.output, args.timeout, args.ssl) == (False, None, None, False)
    assert args.verdict_only is False
    assert build_parser().parse_args(["score", "a.mp4", "--verdict-only"]).verdict_only is True


def test_score_every_flag():
    args = build_parser().parse_args(
        [
            "score",
            "a.mp4",
            "b.mp4",
            "--frames",
            "30",
            "--url",
            "h:9",
            "--json",
            "--concurrency",
            "4",
            "--timeout",
            "2.5",
            "--output",
            "r.jsonl",
            "--retries",
            "3",
            "--ssl",
            "--root-cert",
            "ca.pem",
            "--client-cert",
            "c.pem",
            "--client-key",
            "k.pem",
        ]
    )

    assert args.videos == ["a.mp4", "b.mp4"]
    assert (args.frames, args.url, args.json, args.concurrency, args.timeout) == (30, "h:9", True, 4, 2.5)
    assert (args.output, args.retries, args.ssl) == ("r.jsonl", 3, True)
    assert (args.root_cert, args.client_cert, args.client_key) == ("ca.pem", "c.pem", "k.pem")


def test_headers_and_health_lengths_parse():
    args = build_parser().parse_args(
        ["health", "--header", "triton-grpc-protocol-k=v=1", "--header", "x-trace=abc", "--frames", "10", "40"]
    )
    defaults = build_parser().parse_args(["health"])

    assert args.headers == [("triton-grpc-protocol-k", "v=1"), ("x-trace", "abc")]
    assert args.frames == [10, 40] and defaults.frames == [10, 20, 30]


def test_bad_header_names_are_refused(capsys):
    with pytest.raises(ValueError, match="lowercase"):
        DeepfakeClient("localhost:8001", headers={"Triton-Key": "v"})
    with pytest.raises(ValueError, match="non-empty"):
        DeepfakeClient("localhost:8001", headers={"k": ""})
    with pytest.raises(SystemExit) as exited:
        main(["health", "--header", "Bad Key=v"])
    assert exited.value.code == Exit.USAGE and "lowercase" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["score", "a.mp4", "--frames", "0"], "--frames"),
        (["score", "a.mp4", "--frames", "ten"], "--frames"),
        (["score", "a.mp4", "--concurrency", "0"], "--concurrency"),
        (["score", "a.mp4", "--retries", "-1"], "--retries"),
        (["score", "a.mp4", "--timeout", "0"], "--timeout"),
        (["score", "a.mp4", "--timeout", "nan"], "--timeout"),
        (["score"], "VIDEO"),
        (["explain", "a.mp4"], "--out"),
        (["score", "a.mp4", "--root-cert", "ca.pem"], "--ssl"),
        (["score", "a.mp4", "--ssl", "--client-cert", "c.pem"], "--client-key"),
        (["score", "a.mp4", "--header", "novalue"], "--header"),
        (["health", "--frames", "0"], "--frames"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(argv, named, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == Exit.USAGE
    assert named in capsys.readouterr().err


def test_missing_certificate_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(SystemExit) as exited:
        main(["health", "--ssl", "--root-cert", str(missing)])

    assert exited.value.code == Exit.USAGE
    assert str(missing) in capsys.readouterr().err


def test_client_constructor_checks_its_arguments():
    with pytest.raises(ValueError, match="scheme"):
        DeepfakeClient("grpc://localhost:8001")
    with pytest.raises(ValueError, match="timeout_s"):
        DeepfakeClient("localhost:8001", timeout_s=0)
    with pytest.raises(ValueError, match="ssl=True"):
        DeepfakeClient("localhost:8001", root_certificates="ca.pem")
    with pytest.raises(ValueError, match="together"):
        DeepfakeClient("localhost:8001", ssl=True, private_key="k.pem")


def test_one_connection_serves_the_clients_and_the_command_line():
    connection = Connection("h:1", timeout_s=2.5, headers=[("x-b", "2"), ("x-a", "1"), ("x-b", "3")])
    args = build_parser().parse_args(
        ["health", "--url", "h:1", "--timeout", "2.5", "--header", "x-a=1", "--header", "x-b=3"]
    )

    assert connection.metadata == {"x-a": "1", "x-b": "3"} and Connection().metadata is None
    assert connection_from_args(args) == connection
    assert dict(connection.client_options()["channel_args"])["grpc.max_send_message_length"] == 2**31 - 1
    with DeepfakeClient(connection) as api:
        assert api.connection is connection and (api.url, api.timeout_s) == ("h:1", 2.5)
    with pytest.raises(TypeError, match="timeout_s"):
        DeepfakeClient(connection, timeout_s=1)


# ----------------------------------------------------------------------------- label, records


# Logits closer than this round to equal float32 probabilities in the app.
FLOAT32_TIE = 1e-5


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(st.floats(-60, 60, width=32), st.floats(-60, 60, width=32)).filter(
        lambda pair: abs(pair[0] - pair[1]) > FLOAT32_TIE
    )
)
def test_label_and_confidence_match_the_original_app(logits):
    import torch

    # The original app on the model's float32 logits: softmax, torch.max over
    # the classes, prediction 1 printed REAL, confidence = that probability * 100.
    probabilities = torch.nn.Softmax(dim=1)(torch.tensor([logits], dtype=torch.float32))
    _, prediction = torch.max(probabilities, 1)
    expected_label = "REAL" if int(prediction.item()) == 1 else "FAKE"
    expected_confidence = probabilities[:, int(prediction.item())].item() * 100

    label, confidence = label_and_confidence(logits)

    assert label == expected_label
    assert confidence == pytest.approx(expected_confidence, abs=1e-4)


def test_label_extremes_and_ties_follow_the_contract():
    assert label_and_confidence((1000.0, -1000.0)) == ("FAKE", 100.0)
    assert label_and_confidence((-1000.0, 1000.0)) == ("REAL", 100.0)
    # torch.max picks the first of equal values: a tie is FAKE.
    assert label_and_confidence((0.3, 0.3)) == ("FAKE", 50.0)
    # Below float32 resolution the contract's rule (REAL iff real > fake) decides.
    assert label_and_confidence((0.0, 1e-12))[0] == "REAL"


def test_json_records_have_exactly_the_contract_keys():
    scored = result_record(make_score("a.mp4", logits=(0.0, 2.0)))
    failed = error_record("b.mp4", "in ensemble 'deepfake_20', cannot decode VIDEO")

    assert (
        tuple(scored)
        == SCORE_JSON_KEYS
        == (
            "video",
            "prob_fake",
            "frame_prob_fake_mean",
            "label",
            "confidence",
            "faces_found",
            "frames_decoded",
            "latency_ms",
            "error",
            "model_version",
            "checkpoint_sha256",
            "decision",
            "prob_fake_calibrated",
            "operating_point",
            "known_match",
        )
    )
    assert tuple(failed) == SCORE_JSON_KEYS
    assert scored["decision"] == "REAL" and scored["operating_point"]["calibrated"] is False
    assert (scored["model_version"], scored["checkpoint_sha256"]) == (1, DIGEST)
    assert scored["error"] is None and scored["label"] == "REAL"
    assert scored["confidence"] == pytest.approx(100 / (1 + math.exp(-2.0)))
    assert failed["error"] == "in ensemble 'deepfake_20', cannot decode VIDEO"
    assert all(failed[key] is None for key in SCORE_JSON_KEYS if key not in ("video", "error"))
    assert json.loads(json.dumps(scored)) == scored


def test_all_faces_records_add_every_face_after_the_usual_keys():
    frames = 4
    tracks = tuple(
        FaceTrack(
            prob_fake=p,
            frame_prob_fake=np.full(frames, p, np.float32),
            face_boxes=np.full((frames, 4), 10.123, np.float32),
            face_found=np.array([True, False, True, True]),
            prominence=prominence,
        )
        for p, prominence in ((0.25, 300.0), (0.75, 120.0))
    )
    result = dataclasses.replace(make_score(frames=frames), face_tracks=tracks, max_prob_fake=0.75, faces_seen=5)
    record = result_record(result)
    assert tuple(record) == FACES_JSON_KEYS == (*SCORE_JSON_KEYS, "max_prob_fake", "faces_seen", "face_tracks")
    assert [tuple(track) for track in record["face_tracks"]] == [FACE_TRACK_JSON_KEYS] * 2
    assert record["face_tracks"][1]["frame_prob_fake"] == [0.75] * frames
    assert record["face_tracks"][0]["face_boxes"][0] == [10.12] * 4
    assert record["faces_seen"] == 5 and record["max_prob_fake"] == 0.75
    assert json.loads(json.dumps(record)) == record
    # Without the flag nothing changes; a refused video under the flag has the same keys, null.
    assert tuple(result_record(make_score())) == SCORE_JSON_KEYS
    assert tuple(error_record("b.mp4", "refused", mode=Mode.FACES)) == FACES_JSON_KEYS
    line = format_result_line(record, frames)
    assert "any face fake 0.7500" in line and "2 of 5 seen" in line


def test_all_faces_cannot_be_combined_with_verdict_only(closed_url, video, capsys):
    # The Python API takes one Mode, so the two cannot be asked together; the choices that make a
    # mode refuse them.
    with pytest.raises(ModeError, match="verdict_only"):
        Mode.from_choices(verdict_only=True, all_faces=True)
    with DeepfakeClient(closed_url) as api, pytest.raises(TypeError, match="mode"):
        api.score(video, 10, mode="faces")
    with pytest.raises(SystemExit) as caught:
        main(["score", str(video), "--all-faces", "--verdict-only", "--url", closed_url])
    assert caught.value.code == Exit.USAGE and "--verdict-only" in capsys.readouterr().err


def test_human_line_shows_label_as_the_app_did():
    record = result_record(make_score("clip.mp4", logits=(1.0, -0.92)))

    line = format_result_line(record, frames=4)

    assert line.startswith("clip.mp4: prob_fake 0.8721")
    assert "FAKE 87.2%" in line
    assert "frame mean 0.5000" in line
    assert "faces 2/4" in line and "frames decoded 4" in line and "12 ms" in line


# ----------------------------------------------------------------------------- errors, input


def test_client_error_from_triton_keeps_status_and_message():
    error = ClientError.from_triton(
        InferenceServerException("in ensemble 'deepfake_20', bad video", status="StatusCode.INVALID_ARGUMENT")
    )
    gone = ClientError.from_triton(InferenceServerException("Socket closed", status="StatusCode.UNAVAILABLE"))

    assert (error.status, error.message, error.retryable) == (
        "INVALID_ARGUMENT",
        "in ensemble 'deepfake_20', bad video",
        False,
    )
    assert (gone.status, gone.retryable) == ("UNAVAILABLE", True)
    assert ClientError.from_triton(InferenceServerException("odd")).status == "UNKNOWN"


def test_restricted_protocol_is_permission_denied_and_not_retried():
    message = "This protocol is restricted, expecting header 'triton-grpc-protocol-serve-control-key'"
    error = ClientError.from_triton(InferenceServerException(message, status="StatusCode.UNAVAILABLE"))

    assert (error.status, error.message, error.retryable) == ("PERMISSION_DENIED", message, False)


def test_load_video_refuses_bad_input_clearly(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")

    with pytest.raises(ClientError, match="empty") as caught:
        load_video(empty)
    assert caught.value.status == "INVALID_ARGUMENT"
    with pytest.raises(ClientError, match="No such file"):
        load_video(tmp_path / "missing.mp4")
    with pytest.raises(ClientError, match="directory"):
        load_video(tmp_path)
    with pytest.raises(ClientError, match="empty"):
        load_video(b"")
    with pytest.raises(TypeError):
        load_video(12)
    name, tensor = load_video(b"abc")
    assert name == "<3 bytes>" and tensor.shape == (1, 3) and tensor.dtype == np.uint8
    assert MAX_VIDEO_BYTES < 2**31 - 1


class FakeAnswer:
    """A tritonclient answer holding the given outputs (one video, batch axis first)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def as_numpy(self, name: str):
        return self.arrays.get(name)


def contract_answer(mode: Mode, frames: int, faces: int = 2, version: int = 1) -> dict[str, np.ndarray]:
    """Outputs of ``mode``'s model with the contract's shapes (``faces`` rows per face)."""
    answer = {}
    for name in mode.outputs:
        shape = [faces if axis == ANY else axis for axis in TENSORS[name].dims(frames)]
        answer[name] = np.full([1, *shape], 0.25, np.float32)
    # Which version and checkpoint answered; every frame counted the same.
    answer["CLASSIFIER_VERSION"] = np.array([[version]], np.int64)
    answer["CHECKPOINT_SHA256"] = np.array([[DIGEST.encode()]], dtype=object)
    # Decided by an uncalibrated server: 0.25 is REAL at 0.5.
    answer["DECISION"] = np.array([[b"REAL"]], dtype=object)
    answer["OPERATING_POINT"] = np.array([[json.dumps(uncalibrated_point(Score.DEEPFAKE)).encode()]], dtype=object)
    # No entry of the bank matched.
    answer["KNOWN_MATCH"] = np.array([[b"null"]], dtype=object)
    answer["FINGERPRINT"] = np.array([[b""]], dtype=object)
    if "FRAME_WEIGHT" in answer:
        answer["FRAME_WEIGHT"] = np.full([1, frames], 1.0 / frames, np.float32)
    return answer


def test_answers_are_checked_against_the_contracts_shapes():
    frames = 4
    tensors = unpack_outputs("faces_4", FakeAnswer(contract_answer(Mode.FACES, frames)), Mode.FACES.outputs, frames)
    result = score_result(Mode.FACES, "v.mp4", tensors, 1.0)
    assert len(result.face_tracks) == 2 and result.face_tracks[0].face_boxes.shape == (frames, 4)
    assert result.max_prob_fake == 0.25 and result.frame_prob_fake.shape == (frames,)
    verdict = score_result(
        Mode.VERDICT,
        "v.mp4",
        unpack_outputs("verdict_4", FakeAnswer(contract_answer(Mode.VERDICT, frames)), Mode.VERDICT.outputs, frames),
        1.0,
    )
    assert verdict.frame_prob_fake is None and verdict.face_tracks is None

    def refused(answer: dict, mode: Mode = Mode.FACES) -> str:
        with pytest.raises(ClientError) as caught:
            unpack_outputs("m", FakeAnswer(answer), mode.outputs, frames)
        assert caught.value.status == "INTERNAL"
        return caught.value.message

    uneven = contract_answer(Mode.FACES, frames)
    uneven["TRACK_BOXES"] = np.zeros((1, 3, frames, 4), np.float32)
    assert "TRACK_BOXES with shape [1, 3, 4, 4], expected [1, 2, 4, 4]" in refused(uneven)
    assert "without any face" in refused(contract_answer(Mode.FACES, frames, faces=0))
    longer = contract_answer(Mode.SCORE, frames) | {"FRAME_PROB_FAKE": np.zeros((1, frames + 1), np.float32)}
    assert "FRAME_PROB_FAKE with shape [1, 5], expected [1, 4]" in refused(longer, Mode.SCORE)
    assert "returned no LOGITS output" in refused({}, Mode.SCORE)


def test_frames_must_be_a_positive_integer(closed_url, video):
    with DeepfakeClient(closed_url) as api:
        for frames in (0, -3, 2.5, "20", True):
            with pytest.raises(ValueError, match="frames"):
                api.score(video, frames=frames)


def test_unreachable_server_is_unavailable_for_api_and_health(closed_url, video):
    with DeepfakeClient(closed_url, timeout_s=5) as api:
        with pytest.raises(ClientError) as caught:
            api.score(video, frames=10)
        report = api.health()

    assert caught.value.status == "UNAVAILABLE" and caught.value.retryable
    assert report["live"] is False and report["ready"] is False and report["models"] == {}
    assert "connect" in report["error"]
    assert not all_ready(report)


# ----------------------------------------------------------------------------- exit codes


def test_score_unreachable_exits_1_with_json_error_and_stops_early(closed_url, tmp_path):
    videos = []
    for index in range(3):
        path = tmp_path / f"v{index}.mp4"
        path.write_bytes(b"SECRET-VIDEO-BYTES-%d" % index)
        videos.append(str(path))

    status, out, err = run("score", *videos, "--url", closed_url, "--json", "--retries", "0")

    assert status == Exit.FAILED
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1 and tuple(lines[0]) == SCORE_JSON_KEYS
    assert lines[0]["video"] == videos[0] and "connect" in lines[0]["error"]
    assert "2 video(s) not attempted" in err
    assert "SECRET-VIDEO-BYTES" not in out + err


def test_missing_file_is_reported_and_other_videos_still_run(closed_url, tmp_path):
    missing = str(tmp_path / "missing.mp4")

    status, out, err = run("score", missing, "--url", closed_url, "--retries", "0")

    assert status == Exit.FAILED
    assert out == ""
    assert f"{missing}: error INVALID_ARGUMENT: cannot read video" in err


def test_health_and_explain_exit_1_when_unreachable(closed_url, video, tmp_path):
    health_status, health_out, _ = run("health", "--url", closed_url)
    explain_status, _, explain_err = run(
        "explain", str(video), "--out", str(tmp_path / "x"), "--url", closed_url, "--retries", "0"
    )

    assert health_status == Exit.FAILED and "live no" in health_out
    assert explain_status == Exit.FAILED and "UNAVAILABLE" in explain_err
    assert not (tmp_path / "x").exists()


def test_all_ready_needs_every_model_ready():
    ready = {"ready": True, "versions": {"1": "READY"}, "reason": ""}
    loading = {"ready": False, "versions": {"1": "LOADING"}, "reason": ""}
    base = {"url": "u", "live": True, "ready": True, "error": None}

    assert all_ready({**base, "models": {"deepfake_20": ready, "preprocess_20": ready}})
    assert not all_ready({**base, "models": {"deepfake_20": ready, "preprocess_20": loading}})
    assert not all_ready({**base, "models": {}})
    assert not all_ready({**base, "ready": False, "models": {"deepfake_20": ready}})


# ----------------------------------------------------------------------------- resume


def write_lines(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + tail)


def test_read_results_handles_absent_partial_and_corrupt_files(tmp_path):
    results = tmp_path / "results.jsonl"
    assert read_results(results) == {}

    write_lines(results, [result_record(make_score("a.mp4")), error_record("./b.mp4", "bad")], tail='{"video": "c.m')
    records = read_results(results)
    assert sorted(records) == ["a.mp4", "b.mp4"]
    assert records["b.mp4"]["error"] == "bad"

    results.write_text('{"video": "a.mp4"}\nnot json\n{"video": "b.mp4"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_results(results)
    results.write_text('{"name": "a.mp4"}\n')
    with pytest.raises(ValueError, match="line 1 has no 'video'"):
        read_results(results)


def test_results_file_cuts_a_partial_line_before_appending(tmp_path):
    results = tmp_path / "results.jsonl"
    write_lines(results, [result_record(make_score("a.mp4"))], tail='{"video": "b.mp4", "prob')

    with ResultsFile(results) as sink:
        assert sink.cut_bytes == len('{"video": "b.mp4", "prob')
        sink.append(result_record(make_score("b.mp4")))

    lines = results.read_text().splitlines()
    assert [json.loads(line)["video"] for line in lines] == ["a.mp4", "b.mp4"]


@pytest.mark.parametrize(
    "content, kept",
    [
        (b"", b""),
        (b'{"video": "a"}\n', b'{"video": "a"}\n'),
        (b'{"video": "a"}\n{"vid', b'{"video": "a"}\n'),
        (b'{"vid', b""),
        (b'{"video": "a"}\n' + b"x" * 200_000, b'{"video": "a"}\n'),
    ],
)
def test_partial_last_lines_are_cut_back_to_the_last_newline(tmp_path, content, kept):
    results = tmp_path / "results.jsonl"
    results.write_bytes(content)

    with ResultsFile(results) as sink:
        assert sink.cut_bytes == len(content) - len(kept)
    assert results.read_bytes() == kept


def test_unique_videos_drops_repeats_in_order():
    assert unique_videos(["a.mp4", "./a.mp4", "b.mp4", "dir/../a.mp4", "b.mp4"]) == ["a.mp4", "b.mp4"]


def file_line(record: dict, model: str = "deepfake_20") -> dict:
    """A line of a ``score --output`` file: the JSON line and the model that scored it."""
    return {**record, "model": model}


def test_resume_skips_recorded_videos_and_records_nothing_twice(closed_url, tmp_path):
    results = tmp_path / "results.jsonl"
    write_lines(results, [file_line(result_record(make_score("done.mp4")))])
    pending = tmp_path / "pending.mp4"
    pending.write_bytes(b"video")
    before = results.read_text()

    # pending.mp4 fails with UNAVAILABLE: it is retryable, so it stays out of
    # the file for the next run; done.mp4 is not asked for again.
    status, out, err = run(
        "score",
        "done.mp4",
        "./done.mp4",
        str(pending),
        "--url",
        closed_url,
        "--output",
        str(results),
        "--json",
        "--retries",
        "0",
    )

    assert status == Exit.FAILED
    assert "skipping 1 video(s)" in err
    assert [json.loads(line)["video"] for line in out.splitlines()] == [str(pending)]
    assert results.read_text() == before


def test_nothing_left_exits_by_the_recorded_outcomes(closed_url, tmp_path):
    results = tmp_path / "results.jsonl"
    write_lines(results, [file_line(result_record(make_score("a.mp4")))])

    ok_status, ok_out, ok_err = run("score", "a.mp4", "--url", closed_url, "--output", str(results))
    write_lines(
        results, [file_line(result_record(make_score("a.mp4"))), file_line(error_record("b.mp4", "not a video"))]
    )
    bad_status, _, bad_err = run("score", "a.mp4", "b.mp4", "--url", closed_url, "--output", str(results))

    assert (ok_status, ok_out) == (Exit.OK, "")
    assert "nothing left to score" in ok_err
    assert bad_status == Exit.FAILED and "1 recorded as failed" in bad_err


@pytest.mark.parametrize(
    ("recorded", "options"),
    [
        ("deepfake_20", ("--original",)),
        ("original_20", ()),
        ("original_20", ("--original", "--frames", "10")),
        ("faces_20", ("--original",)),
        (None, ()),
    ],
)
def test_resume_refuses_a_results_file_of_another_mode_or_length(closed_url, tmp_path, recorded, options):
    results = tmp_path / "results.jsonl"
    record = result_record(make_score("a.mp4"))
    write_lines(results, [record if recorded is None else file_line(record, recorded)])
    before = results.read_text()

    status, _, err = run("score", "a.mp4", "b.mp4", "--url", closed_url, "--output", str(results), *options)

    assert status == Exit.USAGE
    assert ("without the model's name" if recorded is None else f"written by {recorded}") in err
    assert results.read_text() == before


def test_resume_continues_a_results_file_of_the_same_original_model(closed_url, tmp_path):
    results = tmp_path / "results.jsonl"
    write_lines(results, [file_line(result_record(make_score("a.mp4")), "original_10")])

    status, out, err = run(
        "score", "a.mp4", "--url", closed_url, "--output", str(results), "--original", "--frames", "10"
    )

    assert (status, out) == (Exit.OK, "") and "nothing left to score" in err


@pytest.mark.parametrize("other", ["--all-faces", "--verdict-only"])
def test_original_is_refused_with_all_faces_or_verdict_only(closed_url, other, capsys):
    with pytest.raises(SystemExit) as exited:
        run("score", "a.mp4", "--url", closed_url, "--original", other)

    assert exited.value.code == Exit.USAGE
    err = capsys.readouterr().err
    assert "--original" in err and "cannot be combined" in err


def test_the_original_mode_names_the_original_model():
    mode = Mode.from_choices(original=True)
    assert mode is Mode.ORIGINAL and mode.model(20) == "original_20" and mode.outputs == SCORE_OUTPUTS
    for verdict_only, all_faces in ((True, False), (False, True)):
        with pytest.raises(ValueError, match="original"):
            Mode.from_choices(verdict_only, all_faces, original=True)


def test_corrupt_results_file_exits_2(closed_url, tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("garbage\n")

    status, _, err = run("score", "a.mp4", "--url", closed_url, "--output", str(results))

    assert status == Exit.USAGE and "line 1 is not valid JSON" in err


def test_batch_scores_each_video_once_and_records_only_final_outcomes():
    calls: dict[str, int] = {}
    unavailable_left = {"flaky.mp4": 2}

    def score(video: str) -> ScoreResult:
        calls[video] = calls.get(video, 0) + 1
        if video == "broken.mp4":
            raise ClientError("INVALID_ARGUMENT", "in ensemble 'deepfake_20', cannot decode VIDEO")
        if video == "down.mp4":
            raise ClientError("UNAVAILABLE", "Socket closed")
        if unavailable_left.get(video, 0) > 0:
            unavailable_left[video] -= 1
            raise ClientError("UNAVAILABLE", "Server is stopping")
        return make_score(video)

    videos = ["a.mp4", "flaky.mp4", "broken.mp4", "down.mp4", "b.mp4", "c.mp4"]
    waits: list[float] = []
    outcomes = list(run_batch(score, videos, concurrency=3, delays=[0.1, 0.2, 0.4], sleep=waits.append))

    by_video = {outcome.video: outcome for outcome in outcomes}
    assert sorted(by_video) == sorted(videos) and len(outcomes) == len(videos)
    assert calls == {"a.mp4": 1, "flaky.mp4": 3, "broken.mp4": 1, "down.mp4": 4, "b.mp4": 1, "c.mp4": 1}
    assert by_video["flaky.mp4"].ok and by_video["flaky.mp4"].final
    assert not by_video["broken.mp4"].ok and by_video["broken.mp4"].final
    assert not by_video["down.mp4"].final and by_video["down.mp4"].server_gone
    assert sorted(waits) == sorted([0.1, 0.2] + [0.1, 0.2, 0.4])


def test_leaving_a_batch_early_wakes_workers_waiting_to_retry():
    calls: dict[str, int] = {}
    waiting = threading.Event()

    def score(video: str) -> ScoreResult:
        calls[video] = calls.get(video, 0) + 1
        if video == "slow.mp4":
            raise ClientError("UNAVAILABLE", "Server is stopping")
        return make_score(video)

    batch = run_batch(
        score,
        ["fast.mp4", "slow.mp4", "never.mp4"],
        concurrency=2,
        delays=[LONG_WAIT_S],
        on_retry=lambda *_: waiting.set(),
    )
    first = next(batch)
    assert waiting.wait(timeout=10), "slow.mp4 should be waiting to retry"
    started = time.monotonic()
    batch.close()
    while any(thread.name.startswith("score") for thread in threading.enumerate()):
        assert time.monotonic() - started < 2.0, "a worker kept waiting after the batch was left"
        time.sleep(0.01)

    assert first.video == "fast.mp4" and first.ok
    assert calls == {"fast.mp4": 1, "slow.mp4": 1}


# ----------------------------------------------------------------------------- backoff


def test_backoff_schedule_doubles_up_to_the_cap():
    assert backoff_delays(0) == []
    assert backoff_delays(6) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert backoff_delays(8)[-2:] == [30.0, 30.0]
    assert backoff_delays(3, base_s=0.5, factor=3.0, max_s=100.0) == [0.5, 1.5, 4.5]
    with pytest.raises(ValueError):
        backoff_delays(-1)


def test_jitter_stays_within_half_to_full_delay():
    rng = random.Random(7)
    draws = [jittered(8.0, rng) for _ in range(1000)]

    assert all(4.0 <= draw <= 8.0 for draw in draws)
    assert max(draws) - min(draws) > 3.0


def test_retries_follow_the_schedule_then_give_up():
    waits: list[float] = []
    attempts = []

    def always_unavailable():
        attempts.append(1)
        raise ClientError("DEADLINE_EXCEEDED", "Deadline Exceeded")

    with pytest.raises(ClientError, match="Deadline"):
        call_with_retries(always_unavailable, backoff_delays(4), sleep=waits.append)

    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert len(attempts) == 5


def test_invalid_argument_is_never_retried():
    waits: list[float] = []
    attempts = []

    def rejected():
        attempts.append(1)
        raise ClientError("INVALID_ARGUMENT", "not a video")

    with pytest.raises(ClientError, match="not a video"):
        call_with_retries(rejected, backoff_delays(5), sleep=waits.append)

    assert (waits, len(attempts)) == ([], 1)


# ----------------------------------------------------------------------------- imports


def test_importing_the_client_loads_no_server_side_package():
    server_side = SERVER_ONLY_MODULES + ("PIL",) + EVAL_ONLY_MODULES
    code = textwrap.dedent(
        f"""
        import json, sys
        import client, client.aio, client.cli, client.batch, client.explain, client.progress, client.__main__
        import client.evaluate, client.evaluate.command, client.evaluate.layouts, client.evaluate.scores
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {server_side!r})))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=CLIENT_ROOT, capture_output=True, text=True, check=True
    )

    assert json.loads(completed.stdout) == []


def test_cli_runs_with_server_packages_and_pillow_unimportable(tmp_path, video):
    blocked = SERVER_ONLY_MODULES + ("PIL",)
    code = textwrap.dedent(
        f"""
        import importlib.abc, runpy, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {blocked!r}:
                    raise ImportError(f"{{name}} is blocked")
                return None

        sys.meta_path.insert(0, Block())
        sys.argv = ["client"] + sys.argv[1:]
        runpy.run_module("client", run_name="__main__")
        """
    )

    def run_blocked(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *argv], cwd=CLIENT_ROOT, capture_output=True, text=True)

    helped = run_blocked("score", "--help")
    explain = run_blocked("explain", str(video), "--out", str(tmp_path / "out"))

    assert helped.returncode == 0 and "--concurrency" in helped.stdout
    assert explain.returncode == Exit.USAGE
    assert "pillow, which is not installed" in explain.stderr and "pip install pillow" in explain.stderr


# ----------------------------------------------------------------------------- images


def test_unnormalise_inverts_the_bgr_training_normalisation():
    rgb = np.random.default_rng(3).integers(0, 256, size=(3, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)

    np.testing.assert_array_equal(unnormalise_faces(normalise_like_training(rgb)), rgb)


def test_channel_zero_of_faces_is_blue():
    blue = np.zeros((1, 2, 2, 3), np.uint8)
    blue[..., 2] = 255
    faces = normalise_like_training(blue)

    assert faces[0, 0].max() == pytest.approx((1 - 0.485) / 0.229, rel=1e-6)
    np.testing.assert_array_equal(unnormalise_faces(faces), blue)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        unnormalise_faces(np.zeros((2, FACE_SIZE, FACE_SIZE), np.float32))


@pytest.mark.parametrize(
    "value, rgb",
    [
        (0.0, (0.0, 0.0, 0.5)),
        (0.125, (0.0, 0.0, 1.0)),
        (0.375, (0.0, 1.0, 1.0)),
        (0.5, (0.5, 1.0, 0.5)),
        (0.625, (1.0, 1.0, 0.0)),
        (0.875, (1.0, 0.0, 0.0)),
        (1.0, (0.5, 0.0, 0.0)),
        (-3.0, (0.0, 0.0, 0.5)),
        (7.0, (0.5, 0.0, 0.0)),
    ],
)
def test_jet_colormap_anchor_colours(value, rgb):
    np.testing.assert_allclose(jet_colormap(np.array([value]))[0], rgb, atol=1e-6)


def test_blend_mixes_face_and_colour_by_alpha():
    face = np.full((2, 3, 3), 100, np.uint8)
    cold = np.zeros((2, 3))
    hot = np.full((2, 3), 0.875)

    np.testing.assert_array_equal(blend_heatmap(face, cold, 0.5), np.broadcast_to([50, 50, 114], (2, 3, 3)))
    np.testing.assert_array_equal(blend_heatmap(face, hot, 0.25), np.broadcast_to([139, 75, 75], (2, 3, 3)))
    np.testing.assert_array_equal(blend_heatmap(face, hot, 0.0), face)
    np.testing.assert_array_equal(blend_heatmap(face, hot, 1.0), np.broadcast_to([255, 0, 0], (2, 3, 3)))
    with pytest.raises(ValueError, match="alpha"):
        blend_heatmap(face, cold, 1.5)
    with pytest.raises(ValueError, match="match"):
        blend_heatmap(face, np.zeros((3, 2)), 0.5)


def test_write_explanation_writes_pngs_and_summary(tmp_path):
    from PIL import Image

    frames = 3
    rgb = np.random.default_rng(5).integers(0, 256, size=(frames, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    heatmap = np.tile(np.linspace(0, 1, FACE_SIZE, dtype=np.float32), (frames, FACE_SIZE, 1))
    base = make_score("clip.mp4", frames=frames)
    result = ExplainResult(**vars(base), faces=normalise_like_training(rgb), heatmap=heatmap)

    summary = write_explanation(result, tmp_path / "out", model="explain_3")

    out = tmp_path / "out"
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [f"frame_{i:03d}_face.png" for i in range(frames)]
        + [f"frame_{i:03d}_heatmap.png" for i in range(frames)]
        + ["summary.json"]
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["label"] == base.label and summary["model"] == "explain_3"
    assert [frame["face_found"] for frame in summary["per_frame"]] == [True, False, True]
    for index in range(frames):
        with Image.open(out / f"frame_{index:03d}_face.png") as face:
            np.testing.assert_array_equal(np.asarray(face), rgb[index])
        with Image.open(out / f"frame_{index:03d}_heatmap.png") as overlay:
            np.testing.assert_array_equal(np.asarray(overlay), blend_heatmap(rgb[index], heatmap[index]))


# ----------------------------------------------------------------------------- progress


def test_progress_bar_text():
    assert render_bar(5, 10, 1, 12.0, width=10) == "[#####.....] 5/10 videos, 1 failed, 12s, ETA 12s"
    assert render_bar(10, 10, 0, 75.0, width=4) == "[####] 10/10 videos, 1m15s"
    assert render_bar(0, 3, 0, 0.0, width=3) == "[...] 0/3 videos, 0s"


def test_console_keeps_result_lines_clean_around_the_bar():
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err, total=2, show_bar=True)

    console.result("first")
    console.advance(failed=False)
    console.note("a note")
    console.result("second")
    console.advance(failed=True)
    console.close()

    assert out.getvalue() == "first\nsecond\n"
    assert "a note\n" in err.getvalue()
    assert err.getvalue().count(CLEAR_LINE) >= 3
    assert err.getvalue().endswith("2/2 videos, 1 failed, 0s\n")


def test_no_bar_when_not_asked():
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err, total=5, show_bar=False)
    console.result("line")
    console.advance(failed=False)
    console.close()

    assert (out.getvalue(), err.getvalue()) == ("line\n", "")


def test_package_all_is_importable():
    for name in client.__all__:
        assert hasattr(client, name), name
    assert os.path.isfile(CLIENT_ROOT / "client" / "__main__.py")


# ----------------------------------------------------------------------------- classifier versions


def versioned_info(frames: int = 20, temporal: bool = False) -> dict:
    """model_info's document with versions 1 (demo, published) and 2 (trained from it), the latest."""
    first = {"version": 1, "checkpoint": "model_50_acc_20_frames_demo_random.pt", "sha256": "a" * 64, "demo": True}
    second = {
        "version": 2,
        "checkpoint": "model_91_acc_20_frames_trained_run1.pt",
        "sha256": "b" * 64,
        "demo": False,
        "ready": True,
        "lineage": {"parent_sha256": "a" * 64, "manifest_sha256": "c" * 64, "metrics": {"video_auc": 0.91}},
    }
    section = {str(frames): {**second, "versions": {"1": {**first, "ready": True}, "2": second}}}
    info = {"classifiers": section, "demo": True}
    if temporal:
        info["temporal"] = {str(frames): {**first, "version": 1, "demo": False}}
    return info


class StandInDetector:
    """Answers like DeepfakeClient: model_info's document and a score from the version asked (or ``latest``)."""

    def __init__(self, info: dict | None, latest: int | list[int] = 2) -> None:
        self.info = info
        # The version each answer without a version named comes from, in turn (a version loaded mid-run).
        self.latest = list(latest) if isinstance(latest, list) else [latest]
        self.asked: list[tuple[str, int | None]] = []

    def __call__(self, connection):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def model_info(self):
        if self.info is None:
            raise ClientError("NOT_FOUND", "no model_info")
        return self.info

    def score(self, video, frames, *, name=None, mode=Mode.SCORE, version=None):
        self.asked.append((Path(video).name, version))
        answered = version if version is not None else self.latest[min(len(self.asked), len(self.latest)) - 1]
        return dataclasses.replace(make_score(str(video), frames=frames, version=answered))


def test_a_version_must_be_a_positive_integer_before_anything_is_sent(closed_url, video, capsys):
    with DeepfakeClient(closed_url) as api:
        for version in (0, -1, True, 1.5, "2", 2**63):
            with pytest.raises(ValueError, match="model version must be a positive integer"):
                api.score(video, 20, version=version)
            with pytest.raises(ValueError, match="model version"):
                api.explain(video, 20, version=version)
    for text in ("0", "latest", "-2", "1.0"):
        with pytest.raises(SystemExit) as caught:
            main(["score", str(video), "--model-version", text, "--url", closed_url])
        assert caught.value.code == Exit.USAGE
        assert f"expected a classifier version (a positive integer, e.g. 1 for the published model), got '{text}'" in (
            capsys.readouterr().err
        )


def test_the_version_travels_as_one_int64_input_and_only_when_asked():
    payload = load_video(b"abc")[1]

    asked, outputs = video_inputs(payload, SCORE_OUTPUTS, 3)
    latest, _ = video_inputs(payload, SCORE_OUTPUTS)

    assert [tensor.name() for tensor in latest] == ["VIDEO"]
    version = asked[1]
    assert (version.name(), version.datatype(), version.shape()) == ("MODEL_VERSION", "INT64", [1, 1])
    assert np.frombuffer(version._get_content(), np.int64).tolist() == [3]
    assert [output.name() for output in outputs][-7:] == [
        "CLASSIFIER_VERSION",
        "CHECKPOINT_SHA256",
        "PROB_FAKE_CALIBRATED",
        "DECISION",
        "OPERATING_POINT",
        "KNOWN_MATCH",
        "FINGERPRINT",
    ]


def test_every_answer_says_which_version_and_checkpoint_answered():
    frames = 4
    for mode in Mode:
        tensors = unpack_outputs("m", FakeAnswer(contract_answer(mode, frames, version=2)), mode.outputs, frames)
        result = score_result(mode, "v.mp4", tensors, 1.0)
        record = result_record(result)
        assert (result.model_version, result.checkpoint_sha256) == (2, DIGEST), mode
        assert tuple(record) == json_keys(mode), mode
        assert tuple(error_record("v.mp4", "refused", mode)) == json_keys(mode), mode
    assert (*SCORE_JSON_KEYS, "frame_weight") == TEMPORAL_JSON_KEYS
    assert (
        SCORE_JSON_KEYS[-6:]
        == tuple(ANSWER_FACTS)[1:]
        == ("model_version", "checkpoint_sha256", "decision", "prob_fake_calibrated", "operating_point", "known_match")
    )

    def refused(answer: dict, mode: Mode = Mode.SCORE) -> str:
        with pytest.raises(ClientError) as caught:
            score_result(mode, "v.mp4", unpack_outputs("m", FakeAnswer(answer), mode.outputs, frames), 1.0)
        assert caught.value.status == "INTERNAL"
        return caught.value.message

    assert "no usable classifier version" in refused(contract_answer(Mode.SCORE, frames, version=0))
    assert "no usable classifier version" in refused(
        contract_answer(Mode.SCORE, frames) | {"CHECKPOINT_SHA256": np.array([[b""]], dtype=object)}
    )
    lopsided = contract_answer(Mode.TEMPORAL, frames) | {"FRAME_WEIGHT": np.full((1, frames), 0.5, np.float32)}
    assert "not a distribution" in refused(lopsided, Mode.TEMPORAL)
    with pytest.raises(ClientError, match="asked for classifier version 2 and answered with 1"):
        check_answered("deepfake_4", 2, {"CLASSIFIER_VERSION": np.array([1], np.int64)})
    check_answered("deepfake_4", None, {"CLASSIFIER_VERSION": np.array([1], np.int64)})


def test_a_temporal_answer_shows_the_frames_that_counted_most():
    result = dataclasses.replace(
        make_score(frames=4, version=3), frame_weight=np.array([0.1, 0.5, 0.15, 0.25], np.float32)
    )

    record = result_record(result)
    line = format_result_line(record, 4)

    assert record["frame_weight"] == pytest.approx([0.1, 0.5, 0.15, 0.25]) and tuple(record) == TEMPORAL_JSON_KEYS
    assert "version 3" in line
    assert line.splitlines()[1].startswith("  decision FAKE: uncalibrated")
    assert line.splitlines()[2] == "  bank: no match among the confirmed fakes"
    assert line.splitlines()[3] == "  frames that counted most: #2 50.0%, #4 25.0%, #3 15.0%"
    assert "frames that counted" not in format_result_line(result_record(make_score()), 4)


def test_temporal_is_one_mode_of_its_own(closed_url, video, capsys):
    assert Mode.from_choices(temporal=True) is Mode.TEMPORAL and Mode.TEMPORAL.model(20) == "temporal_20"
    for other in ("--all-faces", "--verdict-only", "--original"):
        with pytest.raises(SystemExit) as caught:
            main(["score", str(video), "--temporal", other, "--url", closed_url])
        assert caught.value.code == Exit.USAGE and f"cannot be combined with {other}" in capsys.readouterr().err


def test_model_info_says_which_versions_are_served():
    info = versioned_info()
    old = {"classifiers": {"20": {"checkpoint": "model_97_acc_20_frames_FF_data.pt", "demo": False}}}

    assert served_versions(info, 20) == [1, 2] and latest_version(info, 20) == 2
    assert version_entry(info, 20)["checkpoint"].endswith("trained_run1.pt")
    assert version_entry(info, 20, version=1)["demo"] is True
    # A server that predates versions serves its one classifier as version 1.
    assert served_versions(old, 20) == [1] and latest_version(old, 20) == 1
    assert served_versions(info, 10) == [] and latest_version(None, 20) is None
    check_served(info, 20, Mode.SCORE, 1)
    check_served(info, 20, Mode.SCORE, None)
    check_served(info, 10, Mode.SCORE, 7)  # no entry for 10 frames: the request's NOT_FOUND names the lengths
    check_served(None, 20, Mode.TEMPORAL, 9)  # nothing known, nothing refused

    with pytest.raises(ClientError) as unserved:
        check_served(info, 20, Mode.SCORE, 9)
    assert (unserved.value.status, unserved.value.message) == (
        "INVALID_ARGUMENT",
        "version 9 of the 20-frame classifier is not served; versions served: 1, 2 (latest 2)",
    )
    unloaded = versioned_info()
    unloaded["classifiers"]["20"]["versions"]["1"]["ready"] = False
    with pytest.raises(ClientError, match="version 1 of the 20-frame classifier is listed but not loaded"):
        check_served(unloaded, 20, Mode.SCORE, 1)
    with pytest.raises(ClientError) as no_temporal:
        check_served(info, 20, Mode.TEMPORAL, None)
    assert no_temporal.value.status == "NOT_FOUND"
    assert no_temporal.value.message == (
        "no temporal model is served for 20 frames: train one with "
        "python -m train SET --frames 20 --out DIR --head temporal and export it"
    )
    check_served(versioned_info(temporal=True), 20, Mode.TEMPORAL, 1)


def test_the_demo_warning_follows_the_version_asked():
    info = versioned_info()

    assert demo_warning(info, 20) is None  # the latest, version 2, is trained
    assert "model_50_acc_20_frames_demo_random.pt" in demo_warning(info, 20, version=1)
    # Without a length: every length's latest, as before versions.
    assert demo_warning(info) is None
    assert demo_warning({"classifiers": {"20": {"checkpoint": "d.pt", "demo": True}}}).endswith(
        "Export the published checkpoints to get real scores."
    )


def test_a_batch_keeps_to_one_version():
    info = versioned_info()
    done = {"a.mp4": {"video": "a.mp4", "error": None, "model_version": 1}, "b.mp4": {"video": "b.mp4", "error": "x"}}

    assert batch_version(info, 20, Mode.SCORE, 1, done) == 1
    assert batch_version(info, 20, Mode.SCORE, None, done) == 2  # the latest served now
    assert batch_version(None, 20, Mode.SCORE, None, done) == 1  # the file's own, when the server cannot say
    assert batch_version(None, 20, Mode.SCORE, None, {}) is None
    # A refused video's line has no version: kept whatever the version.
    assert other_versions(done, 1) == [] and other_versions(done, 2) == [1] and other_versions(done, None) == []
    keeper = VersionKeeper(None)
    assert keeper.admit({"error": None, "model_version": 3}) is None and keeper.version == 3
    assert keeper.admit({"error": "refused", "model_version": None}) is None
    refusal = keeper.admit({"error": None, "model_version": 4})
    assert "answered with classifier version 4, but this run's lines come from version 3" in refusal
    assert "--model-version 3" in refusal


def test_resume_refuses_a_results_file_of_another_version(closed_url, tmp_path):
    results = tmp_path / "results.jsonl"
    write_lines(results, [file_line(result_record(make_score("a.mp4", version=1)))])
    before = results.read_text()

    refused = run("score", "a.mp4", "b.mp4", "--url", closed_url, "--output", str(results), "--model-version", "2")
    same = run("score", "a.mp4", "--url", closed_url, "--output", str(results), "--model-version", "1")

    assert refused[0] == Exit.USAGE
    assert "lines of it were scored by version 1 of the classifier, this run's by version 2" in refused[2]
    assert "resume with --model-version 1, or write to another file" in refused[2]
    assert same[0] == Exit.OK and "nothing left to score" in same[2]
    assert results.read_text() == before
    old = tmp_path / "old.jsonl"
    write_lines(old, [{**file_line(result_record(make_score("a.mp4"))), "model_version": None}])
    status, _, err = run("score", "a.mp4", "b.mp4", "--url", closed_url, "--output", str(old), "--model-version", "1")
    assert status == Exit.USAGE and "no version (written before answers named their version)" in err


def test_score_asks_the_version_given_and_checks_it_first(monkeypatch, tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"v")
    detector = StandInDetector(versioned_info())
    monkeypatch.setattr(score_command, "DeepfakeClient", detector)

    status, out, err = run("score", str(video), "--frames", "20", "--json", "--model-version", "1")

    assert status == Exit.OK and detector.asked == [("a.mp4", 1)]
    record = json.loads(out)
    assert (record["model_version"], record["checkpoint_sha256"]) == (1, DIGEST)
    assert "demo checkpoints" in err  # version 1 is the demo one
    status, out, err = run("score", str(video), "--frames", "20", "--model-version", "9")
    assert (status, out) == (Exit.USAGE, "") and detector.asked == [("a.mp4", 1)]
    assert "error: version 9 of the 20-frame classifier is not served; versions served: 1, 2 (latest 2)" in err
    status, _, err = run("score", str(video), "--frames", "20", "--temporal")
    assert status == Exit.FAILED and "no temporal model is served for 20 frames" in err
    assert len(detector.asked) == 1
    # The latest (version 2, trained): no warning, and the line names version 2.
    status, out, err = run("score", str(video), "--frames", "20", "--json")
    assert status == Exit.OK and json.loads(out)["model_version"] == 2 and "WARNING" not in err


def test_resume_of_a_latest_run_is_refused_once_another_version_is_the_latest(monkeypatch, tmp_path):
    results = tmp_path / "results.jsonl"
    write_lines(results, [file_line(result_record(make_score("a.mp4", version=1)))])
    monkeypatch.setattr(score_command, "DeepfakeClient", StandInDetector(versioned_info()))

    status, _, err = run("score", "a.mp4", "b.mp4", "--frames", "20", "--output", str(results))

    assert status == Exit.USAGE
    assert "scored by version 1 of the classifier, this run's by version 2; resume with --model-version 1" in err


def test_a_version_loaded_mid_run_stops_the_batch_before_its_answer_is_written(monkeypatch, tmp_path):
    results = tmp_path / "results.jsonl"
    videos = []
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        videos.append(str(tmp_path / name))
        Path(videos[-1]).write_bytes(b"v")
    # model_info cannot say; the first answer is version 1's, then version 2 goes live.
    monkeypatch.setattr(score_command, "DeepfakeClient", StandInDetector(None, latest=[1, 2, 2]))

    status, _, err = run("score", *videos, "--output", str(results))

    assert status == Exit.FAILED
    assert "answered with classifier version 2, but this run's lines come from version 1" in err
    assert [json.loads(line)["model_version"] for line in results.read_text().splitlines()] == [1]


def test_health_lists_every_version_with_its_checkpoint_and_lineage():
    described = describe_versions(versioned_info(temporal=True))
    lines = format_health(
        {
            "url": "u",
            "live": True,
            "ready": True,
            "error": None,
            "models": {},
            "models_from": "index",
            "classifier_versions": described,
        }
    )
    text = "\n".join(lines)

    assert [row["version"] for row in described["classifiers"]["20"]] == [1, 2]
    assert [row["latest"] for row in described["classifiers"]["20"]] == [False, True]
    assert described["temporal"]["20"][0]["model"] == "resnext_temporal_20"
    assert "resnext_lstm_20          v1   sha256 aaaaaaaaaaaa  model_50_acc_20_frames_demo_random.pt  (demo)" in text
    assert "resnext_lstm_20          v2   sha256 bbbbbbbbbbbb  model_91_acc_20_frames_trained_run1.pt  (latest)" in text
    assert "trained from aaaaaaaaaaaa, data cccccccccccc, video_auc 0.9100" in text
    assert format_versions(None) == [] and format_versions({}) == ["classifier versions: model_info lists none"]


def test_a_version_unloaded_mid_run_is_not_written_as_the_videos_refusal(monkeypatch, tmp_path):
    results = tmp_path / "results.jsonl"
    videos = [str(tmp_path / name) for name in ("a.mp4", "b.mp4")]
    for path in videos:
        Path(path).write_bytes(b"v")
    info = versioned_info()
    detector = StandInDetector(info)
    unload_after_first = detector.score

    def score(video, frames, **options):
        if detector.asked:
            # Version 1 is unloaded: the server refuses it like a bad video.
            info["classifiers"]["20"]["versions"]["1"]["ready"] = False
            raise ClientError("INVALID_ARGUMENT", "MODEL_VERSION 1: resnext_lstm_20 serves version(s) 2")
        return unload_after_first(video, frames, **options)

    detector.score = score
    monkeypatch.setattr(score_command, "DeepfakeClient", detector)

    status, _, err = run("score", *videos, "--frames", "20", "--model-version", "1", "--output", str(results))

    assert status == Exit.FAILED
    assert "classifier version 1 is no longer served (MODEL_VERSION 1: resnext_lstm_20 serves version(s) 2)" in err
    assert [json.loads(line)["video"] for line in results.read_text().splitlines()] == [videos[0]]
    assert no_longer_served(info, 20, Mode.SCORE, 1) and not no_longer_served(info, 20, Mode.SCORE, None)
    assert not no_longer_served(None, 20, Mode.SCORE, 1)


def test_health_by_name_lists_a_temporal_model_only_where_one_is_served(closed_url):
    class Channel:
        """Answers is_model_ready as a server with temporal_20 and none for 10 frames."""

        def is_model_ready(self, name, headers=None, client_timeout=None):
            return not name.startswith("resnext_temporal_10") and name not in ("temporal_10", "classify_temporal_10")

        def close(self):
            return None

    with DeepfakeClient(closed_url) as api:
        api._client.close()
        api._client = Channel()
        models = api._models_by_name([10, 20])

    assert "temporal_20" in models and "resnext_temporal_20" in models and "classify_temporal_20" in models
    assert not any("temporal_10" in name for name in models)
    assert all(model["ready"] for model in models.values()) and "deepfake_10" in models
