"""Every Triton config of the model repository, built as a ``ModelConfig`` message from the contract.

Each config is a ``tritonclient.grpc.model_config_pb2.ModelConfig``: built from a plain dict with
``json_format.ParseDict`` (as PyTriton's config generator does, so Triton's own schema refuses a
misspelt field, a wrong enum or two scheduling choices at once) and written with
``text_format.MessageToString``. Every model name, tensor, upload limit and stream limit comes from
:mod:`contract`; every deployment choice (queue policies, instance counts, faces per video, stream
slots and caps, detection, the TensorRT accelerator) is a named constant below. A text-format
message holds no comments, so each file's explanation is its :attr:`Config.comment`, written as a
``#`` header above the message; the reasons behind the constants are comments here. Values equal
to protobuf's defaults are not written (``timeout_action: REJECT``, a delay of 0, model_info's
``max_batch_size: 0``): Triton reads them the same way.

Three configuration worlds share one repository (:class:`ConfigFile`):

- ``config.pbtxt``: GPU nodes running the NGC ``tritonserver:24.10-py3`` image; the classifier
  runs on Triton's onnxruntime backend with the TensorRT execution accelerator in FP16.
- ``configs/cpu.pbtxt``: the embedded CPU server (``--model-config-name=cpu``); the classifier
  runs in a python-backend model on ONNX Runtime, since the pip server bundles only that backend.
- ``configs/tensorrt.pbtxt``: GPU nodes serving TensorRT plans built on the target GPU
  (``--model-config-name=tensorrt``).

A model without a file for the selected name falls back to its ``config.pbtxt`` (the ensembles,
and the preprocessing models on GPU nodes).

``resnext_frame_<N>`` serves the file of ``resnext_lstm_<N>`` with a frame axis of 1: the exported
graph's frame axis is open, and the published weights score every frame on its own, so one frame
per row is a frame's score, and a batch of rows is several frames (of one stream or of several) at
once. Its config is the classifier's message for one frame, renamed.

``stream`` is one model for every N: what a stream costs (decoding, one MTCNN search and one trunk
pass per scored frame) does not depend on N, which only picks the classifier and the window
length. One model gives one cap on live streams for the node, one stub and one MTCNN, instead of
one set per length that would each claim the same cores.

Standard library, protobuf and tritonclient only: rendering needs neither PyAV, Pillow nor torch.
The files themselves are written by ``export/repository.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

import contract
from contract import ONNX_FILE, PLAN_FILE, Kind, model_name

ModelConfig = model_config_pb2.ModelConfig

# --------------------------------------------------------------------------------------------
# Deployment choices.


#: Faces scored per video by faces_<N> on the CPU server and on GPU nodes.
CPU_MAX_FACES = 4
GPU_MAX_FACES = contract.MAX_BATCH


@dataclass(frozen=True)
class QueuePolicy:
    """A dynamic batcher's bound on its backlog: overload is answered quickly with UNAVAILABLE
    instead of a queue that grows without bound."""

    max_queue_size: int
    timeout_us: int

    def as_dict(self) -> dict:
        return {
            "max_queue_size": self.max_queue_size,
            "timeout_action": "REJECT",
            "default_timeout_microseconds": self.timeout_us,
            "allow_timeout_override": True,
        }


CLASSIFIER_QUEUE = QueuePolicy(max_queue_size=64, timeout_us=30_000_000)
PREPROCESS_QUEUE = QueuePolicy(max_queue_size=32, timeout_us=60_000_000)
# The original app's preprocessing (preprocessing/original.py): dlib's HOG detector on each whole
# frame, as the app ran it. About 0.7 s of one core per 1080p frame, 14 s for a 20-frame video, so
# its frames are spread over threads (dlib releases the GIL) and its queue is short with room to
# wait: 8 videos of 30 frames queued behind one another take about 2 minutes on 2 cores.
ORIGINAL_QUEUE = QueuePolicy(max_queue_size=8, timeout_us=300_000_000)

# The classifier's batcher: one instance per GPU, which the dynamic batcher fills (a second
# instance only splits batches).
CLASSIFIER_INSTANCES = 1
PREFERRED_BATCH_SIZES = (4, contract.MAX_BATCH)
CLASSIFIER_QUEUE_DELAY_US = 2000
# The CPU classifier: one instance, one session. Each call's frames are split into one chunk per
# core (0 chunks: one per available core), run at once on single-threaded session runs.
CPU_FRAME_CHUNKS = 0
CPU_INTRA_OP_THREADS = 1
# Every version folder of a classifier is served at once (Triton's default serves the latest only):
# a new export goes live beside the published model, and a request names the one it wants.
VERSION_POLICY_ALL = {"all": {}}
# classify_<N>: the step that picks the classifier version. It batches like the classifier and
# makes one call per version (and set of outputs) asked for in a batch; two instances let one
# batch be gathered while the other waits on the classifier.
SELECT_INSTANCES = 2
# classify_original_<N> serves original_<N>, whose dlib preprocessing takes seconds per video: one
# instance never waits on the other.
ORIGINAL_SELECT_INSTANCES = 1
SELECT_QUEUE_DELAY_US = 1000

#: ONNX Runtime's TensorRT execution accelerator on GPU nodes (engines cached across restarts).
TENSORRT_ACCELERATOR = {
    "precision_mode": "FP16",
    "max_workspace_size_bytes": 4 << 30,
    "trt_engine_cache_enable": 1,
    "trt_engine_cache_path": "/tmp/triton_trt_cache",
}

# Instances and torch threads of the python models that take a video.
GPU_PREPROCESS_INSTANCES = 2
CPU_PREPROCESS_INSTANCES = 2
GPU_TORCH_THREADS = 2
CPU_TORCH_THREADS = 1
FACES_INSTANCES = 1
#: Frames used: the first N decodable ones.
FRAME_SELECTION = "first"
# The original app's preprocessing runs dlib on the CPU on every node: GPU nodes take two videos at
# a time over 8 cores each, the CPU server one video over both cores.
GPU_ORIGINAL_INSTANCES, GPU_ORIGINAL_DETECT_THREADS = 2, 8
CPU_ORIGINAL_INSTANCES, CPU_ORIGINAL_DETECT_THREADS = 1, 2

# CPU face detection: the whole frame is searched on the first and the last frame (and every 20th
# in longer clips), with faces from about 120 px (1080p) up; in between, the two most prominent
# faces are followed in small windows around them, searched in every other frame (and in the
# frame after a face is first seen), with boxes interpolated in the frames between. On the 20
# frames of the 1080p crowd sample, against full-resolution detection on every frame: IoU 0.83 on
# average and 0.90 on the last frame (the one the faithful score uses), where searching every
# frame gave 0.81 and 0.78 for 140 ms more of one core per video.
# FFmpeg's own choice of threads decoded no faster here and cost 1.13 s of CPU per video
# against 0.88 s with one decoder thread.
CPU_DECODE_THREADS = 1
CPU_DETECT_EVERY = 20
CPU_MAX_FOLLOWED = 2
CPU_WINDOW_EVERY = 2
CPU_MIN_FACE_SIZE = 40
#: GPU nodes search every scored frame of a live stream whole.
GPU_STREAM_DETECT_EVERY = 1

#: Sequence slots of the stream model's batcher (CPU server, GPU nodes).
CPU_STREAM_SLOTS = 8
GPU_STREAM_SLOTS = 16
#: The model's own cap on live streams, below the slots: a stream it refuses (UNAVAILABLE) may keep
#: its slot until it ends or times out, and a stream past the slots would wait where the model
#: cannot refuse it.
CPU_MAX_STREAMS = 4
GPU_MAX_STREAMS = 12
STREAM_INSTANCES = 1
MODEL_INFO_INSTANCES = 1
#: The oldest strategy hands the model what is ready at once.
STREAM_QUEUE_DELAY_US = 0

# --------------------------------------------------------------------------------------------
# The comments written above the files.

_REQUESTS = (
    "Requests are handled one video at a time (videos differ in size); the batcher's queue policy\n"
    "still bounds the backlog."
)
_LIMITS = (
    "Limits per upload: size in bytes (256 MiB), frame area in pixels (DCI 4K, 4096 x 2160),\n"
    "video packets read while looking for N decodable frames, seconds of demuxing and decoding."
)
_CLASSIFIER_GPU = (
    "GPU node (NGC tritonserver 24.10): ONNX Runtime with the TensorRT accelerator in FP16.\n"
    "One instance per GPU: the dynamic batcher fills it, a second instance only splits batches."
)
_CLASSIFIER_CPU = (
    "Embedded CPU server: ONNX Runtime inside a python-backend model (the pip server bundles only\n"
    "the python backend). One instance, one session. Each call's frames are split into one chunk per\n"
    "core, run at once on single-threaded session runs: the threads meet once per call instead of\n"
    "after every operator (20 frames on 2 cores: 250 ms and 495 ms of CPU per call, against 284 ms and\n"
    "549 ms with two intra-op threads; the same numbers to the bit). A second instance would only add\n"
    "a copy of the weights."
)
_SELECT = (
    "Picks the version of {target} a request names in MODEL_VERSION (the latest ready one when it\n"
    "names none), calls it through BLS with the outputs asked for, and answers with them plus\n"
    "CLASSIFIER_VERSION and CHECKPOINT_SHA256 (from that version's export.json). An ensemble fixes its\n"
    "steps' versions, and on GPU nodes the classifier runs no Python: this step is what lets a client\n"
    "choose a version and what names the one that answered (see triton_models/select.py). A version\n"
    "that is not served is refused with INVALID_ARGUMENT naming the served ones.\n"
    "It also decides: PROB_FAKE_CALIBRATED, DECISION and OPERATING_POINT from the version's\n"
    "calibration_{score}.json (none: FAKE at 0.5, marked uncalibrated), and counts what it served\n"
    "in the drift metrics."
)
_STREAM = (
    "One slot per live stream; the oldest strategy hands the model one request of each of several\n"
    "streams at once, and their ready frames are scored in one classifier call.\n"
    "Zero or more responses per request (one per event), then the final flag."
)


# --------------------------------------------------------------------------------------------
# Building blocks.


class ConfigFile(Enum):
    """A model's config files, by path in its folder: one per configuration world."""

    #: GPU nodes, and every node for a model without a file of the selected name.
    DEFAULT = "config.pbtxt"
    #: The embedded CPU server (``--model-config-name=cpu``).
    CPU = "configs/cpu.pbtxt"
    #: GPU nodes serving TensorRT plans (``--model-config-name=tensorrt``).
    TENSORRT = "configs/tensorrt.pbtxt"


@dataclass(frozen=True)
class Config:
    """One config file: its message and the explanation written above it.

    Attributes:
        message: the config as Triton parses it.
        comment: plain lines, written as a ``#`` header (text_format keeps no comments).
    """

    message: ModelConfig
    comment: str

    def text(self) -> str:
        header = "".join(f"# {line}\n" for line in self.comment.splitlines())
        return header + text_format.MessageToString(self.message, use_short_repeated_primitives=True)


def _config(comment: str, **fields) -> Config:
    return Config(json_format.ParseDict(fields, ModelConfig()), comment)


def _tensors(frames: int, names: tuple[str, ...]) -> list[dict]:
    """The contract's tensors for a model of ``frames`` frames."""
    specs = []
    for name in names:
        tensor = contract.TENSORS[name]
        specs.append({"name": name, "data_type": tensor.data_type, "dims": list(tensor.dims(frames))})
    return specs


def _inputs(frames: int, names: tuple[str, ...], optional: frozenset[str] | None = None) -> list[dict]:
    """The contract's tensors as inputs: those a request may leave out (``optional``, by default the
    contract's :data:`~contract.OPTIONAL_INPUTS`) are marked optional."""
    specs = _tensors(frames, names)
    for spec in specs:
        if spec["name"] in (contract.OPTIONAL_INPUTS if optional is None else optional):
            spec["optional"] = True
    return specs


def _instances(count: int, kind: str) -> list[dict]:
    return [{"count": count, "kind": kind}]


def _parameters(**values: object) -> dict:
    """String parameters of a python model (floats written as ``30``, not ``30.0``)."""
    return {
        key: {"string_value": f"{value:g}" if isinstance(value, float) else str(value)} for key, value in values.items()
    }


def _upload_limits(*, scanned: bool = True) -> dict:
    """What one upload may cost; an upload past a limit is refused with INVALID_ARGUMENT naming it."""
    limits = {"max_bytes": contract.MAX_UPLOAD_BYTES, "max_pixels": contract.MAX_PIXELS}
    if scanned:
        limits["max_frames_scanned"] = contract.MAX_FRAMES_SCANNED
    limits["decode_timeout_s"] = contract.DECODE_TIMEOUT_S
    return limits


def _cpu_detection(max_followed: int) -> dict:
    return {
        "decode_threads": CPU_DECODE_THREADS,
        "detect_every": CPU_DETECT_EVERY,
        "max_followed": max_followed,
        "window_every": CPU_WINDOW_EVERY,
        "min_face_size": CPU_MIN_FACE_SIZE,
    }


# --------------------------------------------------------------------------------------------
# The classifiers: resnext_lstm_<N>, resnext_frame_<N> on its files, resnext_temporal_<N>.


def _classifier(frames: int, comment: str, kind: Kind = Kind.CLASSIFIER, **fields) -> Config:
    return _config(
        comment,
        name=model_name(kind, frames),
        max_batch_size=contract.MAX_BATCH,
        input=_inputs(frames, contract.MODEL_INPUTS[kind]),
        output=_tensors(frames, contract.MODEL_OUTPUTS[kind]),
        version_policy=VERSION_POLICY_ALL,
        **fields,
    )


def _gpu_classifier_scheduling() -> dict:
    return {
        "instance_group": _instances(CLASSIFIER_INSTANCES, "KIND_GPU"),
        "dynamic_batching": {
            "preferred_batch_size": list(PREFERRED_BATCH_SIZES),
            "max_queue_delay_microseconds": CLASSIFIER_QUEUE_DELAY_US,
            "default_queue_policy": CLASSIFIER_QUEUE.as_dict(),
        },
    }


def classifier_gpu_config(frames: int, kind: Kind = Kind.CLASSIFIER, comment: str = "") -> Config:
    accelerator = {"name": "tensorrt", "parameters": {key: str(value) for key, value in TENSORRT_ACCELERATOR.items()}}
    return _classifier(
        frames,
        comment or _CLASSIFIER_GPU,
        kind,
        platform="onnxruntime_onnx",
        **_gpu_classifier_scheduling(),
        optimization={"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}},
    )


def classifier_tensorrt_config(frames: int) -> Config:
    return _classifier(
        frames,
        "GPU node serving the TensorRT plan built on this GPU by `python -m export tensorrt`.",
        platform="tensorrt_plan",
        default_model_filename=PLAN_FILE,
        **_gpu_classifier_scheduling(),
    )


def classifier_cpu_config(frames: int, kind: Kind = Kind.CLASSIFIER, comment: str = "") -> Config:
    # The published weights score every frame on its own, so a call's frames may be split over
    # threads and the score taken from the last frame alone; a temporal model's frames meet.
    independent = kind is not Kind.TEMPORAL_CLASSIFIER
    return _classifier(
        frames,
        comment or _CLASSIFIER_CPU,
        kind,
        backend="python",
        instance_group=_instances(CLASSIFIER_INSTANCES, "KIND_CPU"),
        dynamic_batching={
            "max_queue_delay_microseconds": CLASSIFIER_QUEUE_DELAY_US,
            "default_queue_policy": CLASSIFIER_QUEUE.as_dict(),
        },
        parameters=_parameters(
            onnx_file=ONNX_FILE,
            frame_chunks=CPU_FRAME_CHUNKS,
            intra_op_threads=CPU_INTRA_OP_THREADS,
            frames_independent=int(independent),
        ),
    )


def _frame_classifier(classifier: Config, frames: int) -> Config:
    """A classifier config of one frame per row, named ``resnext_frame_<N>``."""
    message = ModelConfig()
    message.CopyFrom(classifier.message)
    message.name = model_name(Kind.FRAME_CLASSIFIER, frames)
    comment = (
        f"The frames of live streams, one per row, scored with {model_name(Kind.CLASSIFIER, frames)}'s files "
        f"(each <version>/{ONNX_FILE} links to that version's).\n{classifier.comment}"
    )
    return Config(message, comment)


def frame_classifier_gpu_config(frames: int) -> Config:
    return _frame_classifier(classifier_gpu_config(1), frames)


def frame_classifier_cpu_config(frames: int) -> Config:
    return _frame_classifier(classifier_cpu_config(1), frames)


_TEMPORAL_COMMENT = (
    "A trained temporal model: the trunk on every frame, then attention over the N frames (see\n"
    "export/temporal.py). Written by `python -m export onnx --checkpoint temporal_...pt --version V`."
)


def temporal_classifier_gpu_config(frames: int) -> Config:
    return classifier_gpu_config(
        frames, Kind.TEMPORAL_CLASSIFIER, f"{_TEMPORAL_COMMENT}\nGPU node: {_CLASSIFIER_GPU.split(': ', 1)[1]}"
    )


def temporal_classifier_cpu_config(frames: int) -> Config:
    return classifier_cpu_config(
        frames,
        Kind.TEMPORAL_CLASSIFIER,
        f"{_TEMPORAL_COMMENT}\nEmbedded CPU server: ONNX Runtime inside a python-backend model; the frames of\n"
        "a video meet in the attention, so calls are split by video only.",
    )


def _select(kind: Kind, frames: int, instances: int = SELECT_INSTANCES) -> Config:
    target = model_name(contract.SELECTED_KINDS[kind], frames)
    score = contract.SELECT_SCORES[kind].value
    return _config(
        _SELECT.format(target=target, score=score),
        name=model_name(kind, frames),
        backend="python",
        max_batch_size=contract.MAX_BATCH,
        input=_inputs(frames, contract.MODEL_INPUTS[kind], optional=contract.optional_inputs(kind)),
        output=_tensors(frames, contract.MODEL_OUTPUTS[kind]),
        instance_group=_instances(instances, "KIND_CPU"),
        dynamic_batching={
            "max_queue_delay_microseconds": SELECT_QUEUE_DELAY_US,
            "default_queue_policy": CLASSIFIER_QUEUE.as_dict(),
        },
        parameters=_parameters(classifier=target, score=score),
    )


def select_config(frames: int) -> Config:
    return _select(Kind.SELECT, frames)


def original_select_config(frames: int) -> Config:
    return _select(Kind.ORIGINAL_SELECT, frames, ORIGINAL_SELECT_INSTANCES)


def temporal_select_config(frames: int) -> Config:
    return _select(Kind.TEMPORAL_SELECT, frames)


# --------------------------------------------------------------------------------------------
# The python models that take a video: preprocess_<N>, faces_<N>, preprocess_original_<N>.


# The response cache: only the preprocessing models, whose answers depend on the bytes and their own
# version alone. Never the ensembles (their steps follow the latest classifier version), the
# version-choosing steps (a calibration or a bank entry added later changes their answer) or
# faces_<N> (it calls the latest classifier itself).
CACHED_KINDS = (Kind.PREPROCESS, Kind.ORIGINAL_PREPROCESS)


def _video_model(
    kind: Kind, frames: int, comment: str, device: str, count: int, queue: QueuePolicy, parameters: dict
) -> Config:
    fields = {"response_cache": {"enable": True}} if kind in CACHED_KINDS else {}
    return _config(
        comment + ("\nIts answers are cached by the server (the same bytes are decoded once)." if fields else ""),
        name=model_name(kind, frames),
        backend="python",
        max_batch_size=contract.MAX_BATCH,
        input=_inputs(frames, contract.MODEL_INPUTS[kind]),
        output=_tensors(frames, contract.MODEL_OUTPUTS[kind]),
        instance_group=_instances(count, device),
        dynamic_batching={"default_queue_policy": queue.as_dict()},
        parameters=_parameters(**parameters),
        **fields,
    )


def preprocess_gpu_config(frames: int) -> Config:
    comment = (
        "GPU node: MTCNN on the instance's GPU; two instances overlap one video's decoding with\n"
        f"another's detection.\n{_REQUESTS}\n{_LIMITS}"
    )
    return _video_model(
        Kind.PREPROCESS,
        frames,
        comment,
        "KIND_GPU",
        GPU_PREPROCESS_INSTANCES,
        PREPROCESS_QUEUE,
        {"frames": frames, "selection": FRAME_SELECTION, "torch_threads": GPU_TORCH_THREADS, **_upload_limits()},
    )


def preprocess_cpu_config(frames: int) -> Config:
    comment = (
        "Embedded CPU server: two single-threaded instances keep both cores busy on two videos;\n"
        f"MTCNN's small convolutions gain little from intra-op threads.\n{_REQUESTS}\n{_LIMITS}"
    )
    return _video_model(
        Kind.PREPROCESS,
        frames,
        comment,
        "KIND_CPU",
        CPU_PREPROCESS_INSTANCES,
        PREPROCESS_QUEUE,
        {
            "frames": frames,
            "selection": FRAME_SELECTION,
            "torch_threads": CPU_TORCH_THREADS,
            **_cpu_detection(CPU_MAX_FOLLOWED),
            **_upload_limits(),
        },
    )


def _faces_parameters(frames: int, threads: int, max_faces: int) -> dict:
    return {
        "frames": frames,
        "selection": FRAME_SELECTION,
        "torch_threads": threads,
        "classifier": model_name(Kind.SELECT, frames),
        "max_faces": max_faces,
    }


def faces_gpu_config(frames: int) -> Config:
    comment = (
        "Every face of a video, each scored (see triton_models/faces.py): preprocessing with max_faces,\n"
        f"then classify_{frames} (the version asked for) through BLS with one row per face. Every frame is\n"
        "searched whole.\n"
        f"{_REQUESTS}\n{_LIMITS}"
    )
    return _video_model(
        Kind.FACES,
        frames,
        comment,
        "KIND_GPU",
        FACES_INSTANCES,
        PREPROCESS_QUEUE,
        {**_faces_parameters(frames, GPU_TORCH_THREADS, GPU_MAX_FACES), **_upload_limits()},
    )


def faces_cpu_config(frames: int) -> Config:
    comment = (
        "Every face of a video, each scored (see triton_models/faces.py). Key-frame detection as\n"
        f"preprocess_<N>'s, every scored face followed in its window in every searched frame.\n"
        f"{_REQUESTS}\n{_LIMITS}"
    )
    return _video_model(
        Kind.FACES,
        frames,
        comment,
        "KIND_CPU",
        FACES_INSTANCES,
        PREPROCESS_QUEUE,
        {
            **_faces_parameters(frames, CPU_TORCH_THREADS, CPU_MAX_FACES),
            **_cpu_detection(CPU_MAX_FACES),
            **_upload_limits(),
        },
    )


def _original_preprocess(frames: int, comment: str, count: int, detect_threads: int) -> Config:
    # dlib runs on the CPU on every node; it reads the video whole, so no packet budget.
    return _video_model(
        Kind.ORIGINAL_PREPROCESS,
        frames,
        f"{comment}\n{_REQUESTS}",
        "KIND_CPU",
        count,
        ORIGINAL_QUEUE,
        {"frames": frames, "detect_threads": detect_threads, **_upload_limits(scanned=False)},
    )


def original_preprocess_gpu_config(frames: int) -> Config:
    return _original_preprocess(
        frames,
        "GPU node: two videos at a time, each over 8 cores.",
        GPU_ORIGINAL_INSTANCES,
        GPU_ORIGINAL_DETECT_THREADS,
    )


def original_preprocess_cpu_config(frames: int) -> Config:
    return _original_preprocess(
        frames,
        "Embedded CPU server: one video at a time over both cores.",
        CPU_ORIGINAL_INSTANCES,
        CPU_ORIGINAL_DETECT_THREADS,
    )


# --------------------------------------------------------------------------------------------
# The ensembles: deepfake_<N>, explain_<N>, verdict_<N>, original_<N>, temporal_<N>.


def _map(names) -> dict[str, str]:
    return {name: name for name in names}


def _ensemble(
    kind: Kind, frames: int, comment: str, preprocess: Kind = Kind.PREPROCESS, select: Kind = Kind.SELECT
) -> Config:
    outputs = contract.MODEL_OUTPUTS[kind]
    # The classifier is asked (through the version-choosing step) for the outputs the ensemble
    # returns, and only those: it computes the trunk on the last frame alone when that is all they need.
    asked = [name for name in contract.MODEL_OUTPUTS[select] if name in outputs]
    steps = [
        {
            "model_name": model_name(preprocess, frames),
            "model_version": -1,
            "input_map": _map(contract.MODEL_INPUTS[preprocess]),
            "output_map": _map(contract.MODEL_OUTPUTS[preprocess]),
        },
        {
            "model_name": model_name(select, frames),
            "model_version": -1,
            "input_map": _map(contract.MODEL_INPUTS[select]),
            "output_map": _map(asked),
        },
    ]
    return _config(
        comment,
        name=model_name(kind, frames),
        platform="ensemble",
        max_batch_size=contract.MAX_BATCH,
        input=_inputs(frames, contract.MODEL_INPUTS[kind]),
        output=_tensors(frames, outputs),
        ensemble_scheduling={"step": steps},
    )


def score_config(frames: int) -> Config:
    return _ensemble(Kind.SCORE, frames, "Scoring: video bytes -> faces -> scores. Heatmaps are not requested here.")


def explain_config(frames: int) -> Config:
    return _ensemble(Kind.EXPLAIN, frames, "Scoring plus the face crops and per-frame heatmaps the client draws.")


def verdict_config(frames: int) -> Config:
    return _ensemble(
        Kind.VERDICT,
        frames,
        "The clip's score alone, without per-frame scores: the classifier runs its trunk on the last\n"
        "frame only, the one the published weights score from.",
    )


def original_config(frames: int) -> Config:
    return _ensemble(
        Kind.ORIGINAL,
        frames,
        "The original app's answer: its frames, dlib's face detector and crops (preprocess_original_<N>),\n"
        "then the same classifier as deepfake_<N>, with the same outputs.",
        preprocess=Kind.ORIGINAL_PREPROCESS,
        select=Kind.ORIGINAL_SELECT,
    )


def temporal_config(frames: int) -> Config:
    return _ensemble(
        Kind.TEMPORAL,
        frames,
        "A trained temporal model's answer: the faces of preprocess_<N>, then all N frames together\n"
        "(FRAME_WEIGHT says how much each counted).",
        select=Kind.TEMPORAL_SELECT,
    )


# --------------------------------------------------------------------------------------------
# The models for every length: stream and model_info.


_CONTROLS = (
    ("START", "CONTROL_SEQUENCE_START"),
    ("END", "CONTROL_SEQUENCE_END"),
    ("CORRID", "CONTROL_SEQUENCE_CORRID"),
)


def _control(name: str, kind: str) -> dict:
    if kind == "CONTROL_SEQUENCE_CORRID":
        return {"name": name, "control": [{"kind": kind, "data_type": "TYPE_UINT64"}]}
    return {"name": name, "control": [{"kind": kind, "bool_false_true": [False, True]}]}


def _stream_inputs() -> list[dict]:
    inputs = []
    for spec in _inputs(1, contract.MODEL_INPUTS[Kind.STREAM]):
        if spec["name"] != "STREAM":
            # Each request has its own packet count and sizes: requests of several streams still
            # meet in one call (the model reads each request on its own).
            spec["allow_ragged_batch"] = True
        inputs.append(spec)
    return inputs


def _stream(comment: str, device: str, slots: int, max_streams: int, threads: int, detection: dict) -> Config:
    return _config(
        f"{comment}\n{_STREAM}",
        name=model_name(Kind.STREAM),
        backend="python",
        max_batch_size=contract.MAX_BATCH,
        input=_stream_inputs(),
        # Each response is one event: its outputs are rendered with one frame.
        output=_tensors(1, contract.MODEL_OUTPUTS[Kind.STREAM]),
        instance_group=_instances(STREAM_INSTANCES, device),
        sequence_batching={
            # A stream that sends nothing this long loses its slot; the model drops its decoder and
            # tracker on its own timer, read from this same setting.
            "max_sequence_idle_microseconds": contract.STREAM_IDLE_US,
            "oldest": {"max_candidate_sequences": slots, "max_queue_delay_microseconds": STREAM_QUEUE_DELAY_US},
            "control_input": [_control(name, kind) for name, kind in _CONTROLS],
        },
        model_transaction_policy={"decoupled": True},
        # The model finds its classifiers by the contract's kind (resnext_frame_<N>): no prefix here.
        parameters=_parameters(
            max_streams=max_streams,
            max_packets=contract.MAX_PACKETS_PER_REQUEST,
            max_request_bytes=contract.MAX_STREAM_REQUEST_BYTES,
            torch_threads=threads,
            **detection,
        ),
    )


def stream_gpu_config() -> Config:
    return _stream(
        "GPU node: live streams, MTCNN on the instance's GPU, every scored frame searched whole.",
        "KIND_GPU",
        GPU_STREAM_SLOTS,
        GPU_MAX_STREAMS,
        GPU_TORCH_THREADS,
        {"detect_every": GPU_STREAM_DETECT_EVERY},
    )


def stream_cpu_config() -> Config:
    return _stream(
        "Embedded CPU server: live streams. The CPU detection settings of preprocess_<N>, searched online:\n"
        "the followed faces in their windows in every scored frame, the whole frame every 20th.",
        "KIND_CPU",
        CPU_STREAM_SLOTS,
        CPU_MAX_STREAMS,
        CPU_TORCH_THREADS,
        {"detect_every": CPU_DETECT_EVERY, "max_followed": CPU_MAX_FOLLOWED, "min_face_size": CPU_MIN_FACE_SIZE},
    )


def model_info_config() -> Config:
    # One small model for every length: clients ask it which checkpoints are served. It answers one
    # document per request: no batch axis (max_batch_size 0).
    return _config(
        "What the served classifiers were exported from: the export.json of every version of every\n"
        "resnext_lstm_<N> and resnext_temporal_<N>, read at each request and answered as one JSON string\n"
        "(see triton_models/model_info.py). Clients warn when the checkpoints are the demo ones (random\n"
        "weights). No inputs; no batching.",
        name=model_name(Kind.MODEL_INFO),
        backend="python",
        max_batch_size=0,
        output=_tensors(1, contract.MODEL_OUTPUTS[Kind.MODEL_INFO]),
        instance_group=_instances(MODEL_INFO_INSTANCES, "KIND_CPU"),
    )


# --------------------------------------------------------------------------------------------
# Every model's config files.

_BUILDERS: dict[Kind, dict[ConfigFile, Callable[..., Config]]] = {
    Kind.SCORE: {ConfigFile.DEFAULT: score_config},
    Kind.EXPLAIN: {ConfigFile.DEFAULT: explain_config},
    Kind.VERDICT: {ConfigFile.DEFAULT: verdict_config},
    Kind.FACES: {ConfigFile.DEFAULT: faces_gpu_config, ConfigFile.CPU: faces_cpu_config},
    Kind.ORIGINAL: {ConfigFile.DEFAULT: original_config},
    Kind.PREPROCESS: {ConfigFile.DEFAULT: preprocess_gpu_config, ConfigFile.CPU: preprocess_cpu_config},
    Kind.ORIGINAL_PREPROCESS: {
        ConfigFile.DEFAULT: original_preprocess_gpu_config,
        ConfigFile.CPU: original_preprocess_cpu_config,
    },
    Kind.CLASSIFIER: {
        ConfigFile.DEFAULT: classifier_gpu_config,
        ConfigFile.CPU: classifier_cpu_config,
        ConfigFile.TENSORRT: classifier_tensorrt_config,
    },
    Kind.FRAME_CLASSIFIER: {
        ConfigFile.DEFAULT: frame_classifier_gpu_config,
        ConfigFile.CPU: frame_classifier_cpu_config,
    },
    Kind.SELECT: {ConfigFile.DEFAULT: select_config},
    Kind.ORIGINAL_SELECT: {ConfigFile.DEFAULT: original_select_config},
    Kind.TEMPORAL_CLASSIFIER: {
        ConfigFile.DEFAULT: temporal_classifier_gpu_config,
        ConfigFile.CPU: temporal_classifier_cpu_config,
    },
    Kind.TEMPORAL_SELECT: {ConfigFile.DEFAULT: temporal_select_config},
    Kind.TEMPORAL: {ConfigFile.DEFAULT: temporal_config},
    Kind.STREAM: {ConfigFile.DEFAULT: stream_gpu_config, ConfigFile.CPU: stream_cpu_config},
    Kind.MODEL_INFO: {ConfigFile.DEFAULT: model_info_config},
}


def model_configs(kind: Kind, frames: int | None = None) -> dict[ConfigFile, Config]:
    """Every config file of one model (``frames`` only for a kind served per length).

    Raises:
        ValueError: ``frames`` missing for a per-length kind, given for a shared one, or not >= 1.
    """
    model_name(kind, frames)  # the contract's checks of kind and frames
    arguments = (frames,) if kind.per_length else ()
    return {file: build(*arguments) for file, build in _BUILDERS[kind].items()}
