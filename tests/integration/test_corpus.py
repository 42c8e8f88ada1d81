"""The bad-input corpus (``tests/corpus.py``) and malformed gRPC requests against the served ensemble.

Every upload gets either a score or INVALID_ARGUMENT naming the problem, within the decode time
limit; no python stub dies on the way, and afterwards the server is ready and a good video scores
exactly as before. Figures (answer and latency per case) are printed with ``-s`` or on failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from preprocessing.decode import DEFAULT_DECODE_TIMEOUT_S
from tests import corpus, media

pytestmark = pytest.mark.integration

FRAMES = 10
MODEL = f"deepfake_{FRAMES}"
SCORE_OUTPUTS = ("PROB_FAKE", "LOGITS", "FRAME_PROB_FAKE", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED")
# An answer may take the decode limit plus face detection on a loaded 2-core machine; past that
# the request counts as hung.
ANSWER_BOUND_S = DEFAULT_DECODE_TIMEOUT_S + 30.0
INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
MAX_BATCH = 8
SAME_SCORE_ATOL = 1e-6


@dataclass(frozen=True)
class Answer:
    """What the server made of one corpus case."""

    case: corpus.Case
    seconds: float
    outputs: dict[str, np.ndarray] | None = None
    status: str = ""
    message: str = ""

    @property
    def scored(self) -> bool:
        return self.outputs is not None

    def problem(self) -> str:
        """Why this answer breaks the case's expectation; empty when it does not."""
        case = self.case
        if self.seconds > ANSWER_BOUND_S:
            return f"took {self.seconds:.1f} s (bound {ANSWER_BOUND_S:g} s)"
        if case.expect == corpus.SCORE:
            if not self.scored:
                return f"expected a score, got {self.status}: {self.message}"
            return _score_problem(self.outputs, case.frames_decoded)
        if self.scored:
            return f"expected INVALID_ARGUMENT naming {case.phrase!r}, got a score"
        if self.status != INVALID_ARGUMENT:
            return f"expected INVALID_ARGUMENT, got {self.status}: {self.message}"
        if f"in ensemble '{MODEL}'" not in self.message or case.phrase not in self.message.lower():
            return f"message does not name {case.phrase!r}: {self.message}"
        return ""

    def row(self) -> str:
        outcome = (
            f"score {float(self.outputs['PROB_FAKE'][0, 0]):.4f}"
            if self.scored
            else self.status.removeprefix("StatusCode.")
        )
        detail = "" if self.scored else self.message.split(": ", 1)[-1][:90]
        return f"{self.case.name:34s} {len(self.case.data):>10d} B {self.seconds:6.2f} s  {outcome:18s} {detail}"


def _score_problem(outputs: dict[str, np.ndarray], frames_decoded: int | None) -> str:
    shapes = {name: array.shape for name, array in outputs.items()}
    expected = {
        "PROB_FAKE": (1, 1),
        "LOGITS": (1, 2),
        "FRAME_PROB_FAKE": (1, FRAMES),
        "FACE_BOXES": (1, FRAMES, 4),
        "FACE_FOUND": (1, FRAMES),
        "FRAMES_DECODED": (1, 1),
    }
    if shapes != expected:
        return f"output shapes {shapes}, expected {expected}"
    for name in ("PROB_FAKE", "LOGITS", "FRAME_PROB_FAKE", "FACE_BOXES"):
        if not np.all(np.isfinite(outputs[name])):
            return f"{name} holds non-finite values"
    if not 0.0 <= float(outputs["PROB_FAKE"][0, 0]) <= 1.0:
        return f"PROB_FAKE {outputs['PROB_FAKE']} outside 0..1"
    decoded = int(outputs["FRAMES_DECODED"][0, 0])
    if not 1 <= decoded <= FRAMES or (frames_decoded is not None and decoded != frames_decoded):
        return f"FRAMES_DECODED {decoded}, expected {frames_decoded or f'1..{FRAMES}'}"
    return ""


def video_input(data: bytes) -> grpcclient.InferInput:
    array = np.frombuffer(data, dtype=np.uint8)[None, :]
    tensor = grpcclient.InferInput("VIDEO", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return tensor


def ask(client: grpcclient.InferenceServerClient, case: corpus.Case) -> Answer:
    requested = [grpcclient.InferRequestedOutput(name) for name in SCORE_OUTPUTS]
    started = time.monotonic()
    try:
        # The client's own deadline sits past the bound, so a hang shows as a slow answer.
        result = client.infer(MODEL, [video_input(case.data)], outputs=requested, client_timeout=2 * ANSWER_BOUND_S)
    except InferenceServerException as error:
        return Answer(case, time.monotonic() - started, status=str(error.status()), message=error.message() or "")
    return Answer(case, time.monotonic() - started, outputs={name: result.as_numpy(name) for name in SCORE_OUTPUTS})


@pytest.fixture(scope="module")
def client(triton_server):
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def good_clip() -> bytes:
    return media.face_clip(frames=FRAMES + 2, seed=11)


@pytest.fixture(scope="module")
def corpus_run(triton_server, client, good_clip, tmp_path_factory):
    """Sends every case once; returns the answers, the good clip's score before and the stubs before."""
    scratch = tmp_path_factory.mktemp("corpus")
    cases = corpus.build(scratch, frames=FRAMES)
    stubs_before = triton_server.stub_pids()
    recoveries_before = len(triton_server.recoveries)
    before = ask(client, corpus.Case("good_before", good_clip, corpus.SCORE))
    answers = [ask(client, case) for case in cases]
    table = "\n".join(answer.row() for answer in answers)
    print(f"\n[corpus] {len(answers)} cases against {MODEL}:\n{table}")
    return {
        "answers": answers,
        "before": before,
        "stubs": stubs_before,
        "recoveries": recoveries_before,
        "target": scratch / "local_target.mp4",
    }


def test_corpus_has_at_least_thirty_cases_of_both_kinds(tmp_path):
    cases = corpus.build(tmp_path, frames=FRAMES)
    kinds = {case.expect for case in cases}
    assert len(cases) >= 30
    assert kinds == {corpus.SCORE, corpus.REFUSE}


def test_every_case_gets_a_score_or_a_clear_refusal_in_time(corpus_run):
    problems = [f"{answer.case.name}: {answer.problem()}" for answer in corpus_run["answers"] if answer.problem()]
    assert problems == []


def test_server_is_unharmed_by_the_corpus(triton_server, client, good_clip, corpus_run):
    after = ask(client, corpus.Case("good_after", good_clip, corpus.SCORE))
    before = corpus_run["before"]
    assert before.scored and after.scored, (before.message, after.message)
    for name in SCORE_OUTPUTS:
        np.testing.assert_allclose(
            after.outputs[name], before.outputs[name], atol=SAME_SCORE_ATOL, rtol=0, err_msg=name
        )
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    # Nothing crashed: the same stubs serve, and the watchdog had nothing to repair.
    assert triton_server.stub_pids() == corpus_run["stubs"]
    assert len(triton_server.recoveries) == corpus_run["recoveries"]


def test_files_named_by_playlists_are_never_read(corpus_run):
    target: Path = corpus_run["target"]
    # The target was written before the playlists were sent: a read would have moved its access
    # time (relatime updates it when it is older than the last change) or shown as a score.
    answers = {answer.case.name: answer for answer in corpus_run["answers"]}
    for name in ("hls_playlist", "ffconcat_script", "dash_manifest"):
        assert not answers[name].scored, name
    stat = target.stat()
    assert stat.st_atime_ns <= stat.st_mtime_ns, "the file a playlist names was read"


# ----------------------------------------------------------------------------- raw gRPC requests


@pytest.fixture(scope="module")
def raw_stub(triton_server):
    channel = grpc.insecure_channel(triton_server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _raw_request(
    inputs: list[tuple[str, str, list[int], bytes]], model: str = MODEL, outputs: tuple[str, ...] = ("PROB_FAKE",)
) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in inputs:
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
        request.raw_input_contents.append(raw)
    for name in outputs:
        request.outputs.add().name = name
    return request


def _good_video() -> bytes:
    return media.face_clip(frames=FRAMES, seed=4)


RAW_CASES = {
    "wrong_dtype": (
        lambda v: _raw_request([("VIDEO", "FP32", [1, 4], np.zeros(4, np.float32).tobytes())]),
        "data-type",
    ),
    "wrong_rank": (lambda v: _raw_request([("VIDEO", "UINT8", [1, 2, len(v) // 2], v[: len(v) // 2 * 2])]), "shape"),
    # Without the batch dimension the byte count is read as a batch size.
    "no_batch_dimension": (lambda v: _raw_request([("VIDEO", "UINT8", [len(v)], v)]), "batch-size"),
    "missing_input": (lambda v: _raw_request([]), "input"),
    "unknown_input": (
        lambda v: _raw_request([("VIDEO", "UINT8", [1, len(v)], v), ("AUDIO", "UINT8", [1, 4], b"\0" * 4)]),
        "audio",
    ),
    "unknown_output": (lambda v: _raw_request([("VIDEO", "UINT8", [1, len(v)], v)], outputs=("HEATMAP",)), "heatmap"),
    "batch_over_max": (
        lambda v: _raw_request([("VIDEO", "UINT8", [MAX_BATCH + 1, 4], b"\0" * 4 * (MAX_BATCH + 1))]),
        "batch",
    ),
    "fewer_bytes_than_shape": (lambda v: _raw_request([("VIDEO", "UINT8", [1, len(v)], v[:-100])]), "byte"),
    "more_bytes_than_shape": (lambda v: _raw_request([("VIDEO", "UINT8", [1, 100], v)]), "byte"),
    "negative_dimension": (lambda v: _raw_request([("VIDEO", "UINT8", [1, -5], b"")]), "byte size"),
    "zero_batch": (lambda v: _raw_request([("VIDEO", "UINT8", [0, 4], b"")]), "byte size"),
}


@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_malformed_grpc_requests_are_invalid_argument(raw_stub, client, name):
    make, phrase = RAW_CASES[name]
    with pytest.raises(grpc.RpcError) as caught:
        raw_stub.ModelInfer(make(_good_video()), timeout=ANSWER_BOUND_S)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {error.code()} {error.details()}"
    assert phrase in error.details().lower(), f"{name}: {error.details()}"
    assert client.is_model_ready(MODEL)


def test_batch_with_one_bad_row_is_refused_and_a_good_batch_scores_each_row_alone(client):
    video = _good_video()
    alone = client.infer(MODEL, [video_input(video)]).as_numpy("LOGITS")
    good = np.stack([np.frombuffer(video, np.uint8)] * 2)
    bad = good.copy()
    bad[1] = np.frombuffer(b"x" * len(video), np.uint8)
    for rows, expect_ok in ((good, True), (bad, False)):
        tensor = grpcclient.InferInput("VIDEO", list(rows.shape), "UINT8")
        tensor.set_data_from_numpy(rows)
        if expect_ok:
            logits = client.infer(MODEL, [tensor]).as_numpy("LOGITS")
            np.testing.assert_allclose(logits, np.repeat(alone, 2, axis=0), atol=1e-5, rtol=0)
        else:
            with pytest.raises(InferenceServerException) as caught:
                client.infer(MODEL, [tensor])
            assert caught.value.status() == INVALID_ARGUMENT
            assert "unsupported input" in caught.value.message()


def test_unknown_model_is_named(client):
    with pytest.raises(InferenceServerException) as caught:
        client.infer("deepfake_7", [video_input(_good_video())])
    assert "deepfake_7" in caught.value.message()
