"""The Triton model repository layout, rendered for any sequence length.

The folders for 10, 20 and 30 frames are committed exactly as ``render_model_folders`` writes
them (a test keeps them in sync), and ``python -m export onnx --frames 40`` adds the folders
for a length nobody committed. Three configuration worlds share one repository:

- ``config.pbtxt``: GPU nodes running the NGC ``tritonserver:24.10-py3`` image; the classifier
  runs on Triton's onnxruntime backend with the TensorRT execution accelerator in FP16.
- ``configs/cpu.pbtxt``: the embedded CPU server (``--model-config-name=cpu``); the classifier
  runs in a python-backend model on ONNX Runtime, since the pip server bundles only that backend.
- ``configs/tensorrt.pbtxt``: GPU nodes serving TensorRT plans built on the target GPU
  (``--model-config-name=tensorrt``).

A model without a file for the selected name falls back to its ``config.pbtxt`` (ensembles
and the preprocessing model on GPU nodes).
"""

from __future__ import annotations

import re
from pathlib import Path

from preprocessing.decode import (
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FRAMES_SCANNED,
    DEFAULT_MAX_PIXELS,
)

from export.contract import (
    CLASSIFIER_OUTPUTS,
    EXPLAIN_OUTPUTS,
    FACES_OUTPUTS,
    MAX_BATCH,
    PREPROCESS_OUTPUTS,
    SCORE_OUTPUTS,
    SERVED_LENGTHS,
    TENSORS,
    VERDICT_OUTPUTS,
)
from export import stream_configs

VERSION = "1"


class RepositoryError(Exception):
    """The repository cannot hold the requested models; the message names the problem."""


def classifier_name(frames: int) -> str:
    return f"resnext_lstm_{frames}"


def preprocess_name(frames: int) -> str:
    return f"preprocess_{frames}"


def ensemble_name(frames: int) -> str:
    return f"deepfake_{frames}"


def explain_name(frames: int) -> str:
    return f"explain_{frames}"


def verdict_name(frames: int) -> str:
    return f"verdict_{frames}"


def faces_name(frames: int) -> str:
    return f"faces_{frames}"


def original_name(frames: int) -> str:
    return f"original_{frames}"


def original_preprocess_name(frames: int) -> str:
    return f"preprocess_original_{frames}"


def classifier_dir(repository: Path, frames: int) -> Path:
    return repository / classifier_name(frames)


def _tensor_specs(frames: int) -> dict[str, tuple[str, str]]:
    """Every tensor of the served models (export/contract.py): name -> (Triton data type, dims without the batch axis)."""
    return {name: (tensor.data_type, f"[ {', '.join(map(str, tensor.dims(frames)))} ]") for name, tensor in TENSORS.items()}


def _tensors(frames: int, names: tuple[str, ...]) -> str:
    specs = _tensor_specs(frames)
    return ",\n".join(
        f"  {{\n    name: \"{name}\"\n    data_type: {specs[name][0]}\n    dims: {specs[name][1]}\n  }}" for name in names
    )


#: Faces scored per video by faces_<N> on the CPU server and on GPU nodes.
CPU_MAX_FACES = 4
GPU_MAX_FACES = MAX_BATCH


def _classifier_io(frames: int) -> str:
    return f"""max_batch_size: {MAX_BATCH}
input [
{_tensors(frames, ("FACES",))}
]
output [
{_tensors(frames, CLASSIFIER_OUTPUTS)}
]
"""


# Overload is answered quickly with UNAVAILABLE instead of a queue that grows without bound.
def _queue_policy(max_queue: int, timeout_us: int) -> str:
    return f"""  default_queue_policy {{
    max_queue_size: {max_queue}
    timeout_action: REJECT
    default_timeout_microseconds: {timeout_us}
    allow_timeout_override: true
  }}"""


CLASSIFIER_QUEUE = _queue_policy(max_queue=64, timeout_us=30_000_000)
PREPROCESS_QUEUE = _queue_policy(max_queue=32, timeout_us=60_000_000)


# One instance per GPU: the dynamic batcher fills it, a second instance only splits batches.
GPU_CLASSIFIER_SCHEDULING = f"""instance_group [
  {{
    count: 1
    kind: KIND_GPU
  }}
]
dynamic_batching {{
  preferred_batch_size: [ 4, {MAX_BATCH} ]
  max_queue_delay_microseconds: 2000
{CLASSIFIER_QUEUE}
}}
"""


def classifier_gpu_config(frames: int) -> str:
    return f"""# GPU node (NGC tritonserver 24.10): ONNX Runtime with the TensorRT accelerator in FP16.
# One instance per GPU: the dynamic batcher fills it, a second instance only splits batches.
name: "{classifier_name(frames)}"
platform: "onnxruntime_onnx"
{_classifier_io(frames)}{GPU_CLASSIFIER_SCHEDULING}optimization {{
  execution_accelerators {{
    gpu_execution_accelerator : [
      {{
        name : "tensorrt"
        parameters {{ key: "precision_mode" value: "FP16" }}
        parameters {{ key: "max_workspace_size_bytes" value: "4294967296" }}
        parameters {{ key: "trt_engine_cache_enable" value: "1" }}
        parameters {{ key: "trt_engine_cache_path" value: "/tmp/triton_trt_cache" }}
      }}
    ]
  }}
}}
"""


def classifier_tensorrt_config(frames: int) -> str:
    return f"""# GPU node serving the TensorRT plan built on this GPU by `python -m export tensorrt`.
name: "{classifier_name(frames)}"
platform: "tensorrt_plan"
default_model_filename: "model.plan"
{_classifier_io(frames)}{GPU_CLASSIFIER_SCHEDULING}"""


def classifier_cpu_config(frames: int) -> str:
    return f"""# Embedded CPU server: ONNX Runtime inside a python-backend model (the pip server bundles only
# the python backend). One instance, one session. Each call's frames are split into one chunk per
# core, run at once on single-threaded session runs: the threads meet once per call instead of
# after every operator (20 frames on 2 cores: 250 ms and 495 ms of CPU per call, against 284 ms and
# 549 ms with two intra-op threads; the same numbers to the bit). A second instance would only add
# a copy of the weights.
name: "{classifier_name(frames)}"
backend: "python"
{_classifier_io(frames)}instance_group [
  {{
    count: 1
    kind: KIND_CPU
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
{CLASSIFIER_QUEUE}
}}
parameters {{ key: "onnx_file" value: {{ string_value: "model.onnx" }} }}
parameters {{ key: "frame_chunks" value: {{ string_value: "0" }} }}
parameters {{ key: "intra_op_threads" value: {{ string_value: "1" }} }}
"""


# What one upload may cost, written out so that operators see and tune them here; an upload past
# a limit is refused with INVALID_ARGUMENT naming the limit and the value seen.
def _parameters(parameters: tuple[tuple[str, object], ...]) -> str:
    return "".join(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n' for key, value in parameters)


MAX_BYTES, MAX_PIXELS, DECODE_TIMEOUT = (("max_bytes", DEFAULT_MAX_BYTES), ("max_pixels", DEFAULT_MAX_PIXELS),
                                         ("decode_timeout_s", f"{DEFAULT_DECODE_TIMEOUT_S:g}"))
PREPROCESS_LIMITS = ("# Limits per upload: size in bytes (256 MiB), frame area in pixels (DCI 4K, 4096 x 2160),\n"
                     "# video packets read while looking for N decodable frames, seconds of demuxing and decoding.\n"
                     + _parameters((MAX_BYTES, MAX_PIXELS, ("max_frames_scanned", DEFAULT_MAX_FRAMES_SCANNED),
                                    DECODE_TIMEOUT)))


# CPU face detection: the whole frame is searched on the first and the last frame (and every 20th
# in longer clips), with faces from about 120 px (1080p) up; in between, the two most prominent
# faces are followed in small windows around them, searched in every other frame (and in the
# frame after a face is first seen), with boxes interpolated in the frames between. On the 20
# frames of the 1080p crowd sample, against full-resolution detection on every frame: IoU 0.83 on
# average and 0.90 on the last frame (the one the faithful score uses), where searching every
# frame gave 0.81 and 0.78 for 140 ms more of one core per video.
# FFmpeg's own choice of threads decoded no faster here and cost 1.13 s of CPU per video
# against 0.88 s with one decoder thread.
def _cpu_detection(max_followed: int) -> str:
    return f"""parameters {{ key: "decode_threads" value: {{ string_value: "1" }} }}
parameters {{ key: "detect_every" value: {{ string_value: "20" }} }}
parameters {{ key: "max_followed" value: {{ string_value: "{max_followed}" }} }}
parameters {{ key: "window_every" value: {{ string_value: "2" }} }}
parameters {{ key: "min_face_size" value: {{ string_value: "40" }} }}
"""


CPU_DETECTION = _cpu_detection(max_followed=2)


def _video_model_head(name: str, frames: int, outputs: tuple[str, ...], kind: str, count: int, queue: str) -> str:
    """A python model that takes ``VIDEO``, up to its ``parameters``."""
    return f"""name: "{name}"
backend: "python"
max_batch_size: {MAX_BATCH}
input [
{_tensors(frames, ("VIDEO",))}
]
output [
{_tensors(frames, outputs)}
]
instance_group [
  {{
    count: {count}
    kind: {kind}
  }}
]
# Requests are handled one video at a time (videos differ in size); the batcher's queue policy
# still bounds the backlog.
dynamic_batching {{
{queue}
}}
"""


def _video_model_body(name: str, frames: int, outputs: tuple[str, ...], kind: str, count: int, threads: int,
                      detection: str = "", parameters: tuple[tuple[str, object], ...] = ()) -> str:
    """A python model that takes ``VIDEO`` and runs the preprocessing library (``preprocess_<N>``, ``faces_<N>``)."""
    return (_video_model_head(name, frames, outputs, kind, count, PREPROCESS_QUEUE)
            + _parameters((("frames", frames), ("selection", "first"), ("torch_threads", threads), *parameters))
            + detection + PREPROCESS_LIMITS)


def _preprocess_body(frames: int, kind: str, count: int, threads: int, detection: str = "") -> str:
    return _video_model_body(preprocess_name(frames), frames, PREPROCESS_OUTPUTS, kind, count, threads, detection)


def preprocess_gpu_config(frames: int) -> str:
    return (
        "# GPU node: MTCNN on the instance's GPU; two instances overlap one video's decoding with\n"
        "# another's detection.\n" + _preprocess_body(frames, "KIND_GPU", count=2, threads=2)
    )


def preprocess_cpu_config(frames: int) -> str:
    return (
        "# Embedded CPU server: two single-threaded instances keep both cores busy on two videos;\n"
        "# MTCNN's small convolutions gain little from intra-op threads.\n"
        + _preprocess_body(frames, "KIND_CPU", count=2, threads=1, detection=CPU_DETECTION)
    )


def _faces_body(frames: int, kind: str, threads: int, max_faces: int, detection: str = "") -> str:
    return _video_model_body(faces_name(frames), frames, FACES_OUTPUTS, kind, 1, threads, detection,
                             parameters=(("classifier", classifier_name(frames)), ("max_faces", max_faces)))


def faces_gpu_config(frames: int) -> str:
    return (
        "# Every face of a video, each scored (see triton_models/faces.py): preprocessing with max_faces,\n"
        "# then the classifier through BLS with one row per face. Every frame is searched whole.\n"
        + _faces_body(frames, "KIND_GPU", threads=2, max_faces=GPU_MAX_FACES)
    )


def faces_cpu_config(frames: int) -> str:
    return (
        "# Every face of a video, each scored (see triton_models/faces.py). Key-frame detection as\n"
        "# preprocess_<N>'s, every scored face followed in its window in every searched frame.\n"
        + _faces_body(frames, "KIND_CPU", threads=1, max_faces=CPU_MAX_FACES,
                      detection=_cpu_detection(max_followed=CPU_MAX_FACES))
    )


def _ensemble(name: str, frames: int, outputs: tuple[str, ...], preprocess: str = "") -> str:
    # The classifier is asked for the outputs the ensemble returns, and only those: it computes
    # the trunk on the last frame alone when that is all they need.
    classifier_maps = "".join(f"""
      output_map {{ key: "{output}" value: "{output}" }}""" for output in CLASSIFIER_OUTPUTS if output in outputs)
    preprocess_maps = "".join(f"""
      output_map {{ key: "{output}" value: "{output}" }}""" for output in PREPROCESS_OUTPUTS)
    return f"""name: "{name}"
platform: "ensemble"
max_batch_size: {MAX_BATCH}
input [
{_tensors(frames, ("VIDEO",))}
]
output [
{_tensors(frames, outputs)}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{preprocess or preprocess_name(frames)}"
      model_version: -1
      input_map {{ key: "VIDEO" value: "VIDEO" }}{preprocess_maps}
    }},
    {{
      model_name: "{classifier_name(frames)}"
      model_version: -1
      input_map {{ key: "FACES" value: "FACES" }}{classifier_maps}
    }}
  ]
}}
"""


def ensemble_config(frames: int) -> str:
    return "# Scoring: video bytes -> faces -> scores. Heatmaps are not requested here.\n" + _ensemble(ensemble_name(frames), frames, SCORE_OUTPUTS)


def explain_config(frames: int) -> str:
    return "# Scoring plus the face crops and per-frame heatmaps the client draws.\n" + _ensemble(explain_name(frames), frames, EXPLAIN_OUTPUTS)


def verdict_config(frames: int) -> str:
    return ("# The clip's score alone, without per-frame scores: the classifier runs its trunk on the last\n"
            "# frame only, the one the published weights score from.\n" + _ensemble(verdict_name(frames), frames, VERDICT_OUTPUTS))


# The original app's preprocessing (preprocessing/original.py): dlib's HOG detector on each whole
# frame, as the app ran it. About 0.7 s of one core per 1080p frame, 14 s for a 20-frame video, so
# its frames are spread over threads (dlib releases the GIL) and its queue is short with room to
# wait: 8 videos of 30 frames queued behind one another take about 2 minutes on 2 cores.
ORIGINAL_QUEUE = _queue_policy(max_queue=8, timeout_us=300_000_000)


def _original_preprocess_body(frames: int, count: int, detect_threads: int) -> str:
    # dlib runs on the CPU on every node.
    return (_video_model_head(original_preprocess_name(frames), frames, PREPROCESS_OUTPUTS, "KIND_CPU", count, ORIGINAL_QUEUE)
            + _parameters((("frames", frames), ("detect_threads", detect_threads), MAX_BYTES, MAX_PIXELS, DECODE_TIMEOUT)))


def original_preprocess_gpu_config(frames: int) -> str:
    return ("# GPU node: two videos at a time, each over 8 cores.\n"
            + _original_preprocess_body(frames, count=2, detect_threads=8))


def original_preprocess_cpu_config(frames: int) -> str:
    return ("# Embedded CPU server: one video at a time over both cores.\n"
            + _original_preprocess_body(frames, count=1, detect_threads=2))


def original_config(frames: int) -> str:
    return ("# The original app's answer: its frames, dlib's face detector and crops (preprocess_original_<N>),\n"
            "# then the same classifier as deepfake_<N>, with the same outputs.\n"
            + _ensemble(original_name(frames), frames, SCORE_OUTPUTS, preprocess=original_preprocess_name(frames)))


ORIGINAL_ENTRY = '''"""Triton entry point of preprocess_original_<N>: the original app's preprocessing."""

from triton_models.original import TritonPythonModel  # noqa: F401
'''


PREPROCESS_ENTRY = '''"""Triton entry point of a preprocessing model; the implementation is shared by every length."""

from triton_models.preprocess import TritonPythonModel  # noqa: F401
'''

FACES_ENTRY = '''"""Triton entry point of faces_<N>: every face of a video, each scored."""

from triton_models.faces import TritonPythonModel  # noqa: F401
'''

CLASSIFIER_ENTRY = '''"""Triton entry point of a classifier on the embedded CPU server (ONNX Runtime in python)."""

from triton_models.classifier import TritonPythonModel  # noqa: F401
'''


MODEL_INFO_NAME = "model_info"
MODEL_INFO_OUTPUT = "INFO"

# One small model for every length: clients ask it which checkpoints are served.
MODEL_INFO_CONFIG = f"""# What the served classifiers were exported from: every resnext_lstm_<N>/1/export.json, read when
# this model loads and answered as one JSON string (see triton_models/model_info.py). Clients
# warn when the checkpoints are the demo ones (random weights). No inputs; no batching.
name: "{MODEL_INFO_NAME}"
backend: "python"
max_batch_size: 0
output [
  {{
    name: "{MODEL_INFO_OUTPUT}"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }}
]
instance_group [
  {{
    count: 1
    kind: KIND_CPU
  }}
]
"""

MODEL_INFO_ENTRY = '''"""Triton entry point of model_info: the served checkpoints' export.json files, for clients."""

from triton_models.model_info import TritonPythonModel  # noqa: F401
'''


def render_shared_folders() -> dict[str, str]:
    """Every committed file of the models that serve all lengths, by path relative to the repository."""
    return {
        f"{MODEL_INFO_NAME}/config.pbtxt": MODEL_INFO_CONFIG,
        f"{MODEL_INFO_NAME}/{VERSION}/model.py": MODEL_INFO_ENTRY,
        **stream_configs.render_stream(),
    }


def render_model_folders(frames: int) -> dict[str, str]:
    """Every committed file of the models for one length, by path relative to the repository."""
    pre, cls, ens, exp = preprocess_name(frames), classifier_name(frames), ensemble_name(frames), explain_name(frames)
    ver = verdict_name(frames)
    return {
        f"{pre}/config.pbtxt": preprocess_gpu_config(frames),
        f"{pre}/configs/cpu.pbtxt": preprocess_cpu_config(frames),
        f"{pre}/{VERSION}/model.py": PREPROCESS_ENTRY,
        f"{cls}/config.pbtxt": classifier_gpu_config(frames),
        f"{cls}/configs/cpu.pbtxt": classifier_cpu_config(frames),
        f"{cls}/configs/tensorrt.pbtxt": classifier_tensorrt_config(frames),
        f"{cls}/{VERSION}/model.py": CLASSIFIER_ENTRY,
        f"{ens}/config.pbtxt": ensemble_config(frames),
        f"{ens}/{VERSION}/.gitkeep": "",
        f"{exp}/config.pbtxt": explain_config(frames),
        f"{exp}/{VERSION}/.gitkeep": "",
        f"{ver}/config.pbtxt": verdict_config(frames),
        f"{ver}/{VERSION}/.gitkeep": "",
        f"{faces_name(frames)}/config.pbtxt": faces_gpu_config(frames),
        f"{faces_name(frames)}/configs/cpu.pbtxt": faces_cpu_config(frames),
        f"{faces_name(frames)}/{VERSION}/model.py": FACES_ENTRY,
        f"{original_preprocess_name(frames)}/config.pbtxt": original_preprocess_gpu_config(frames),
        f"{original_preprocess_name(frames)}/configs/cpu.pbtxt": original_preprocess_cpu_config(frames),
        f"{original_preprocess_name(frames)}/{VERSION}/model.py": ORIGINAL_ENTRY,
        f"{original_name(frames)}/config.pbtxt": original_config(frames),
        f"{original_name(frames)}/{VERSION}/.gitkeep": "",
        **stream_configs.render_frame_classifier(frames),
    }


def ensure_model_folders(repository: Path, frames_list: list[int]) -> None:
    """Writes the folders of any length the repository does not have yet; leaves existing ones alone."""
    if repository.exists() and not repository.is_dir():
        raise RepositoryError(f"model repository {repository} is not a folder")
    rendered = [render_shared_folders(), *(render_model_folders(frames) for frames in frames_list)]
    for files in rendered:
        for relative, text in files.items():
            path = repository / relative
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    stream_configs.ensure_frame_links(repository, frames_list)


def served_lengths(repository: Path, prefix: str = "resnext_lstm_") -> list[int]:
    """Sequence lengths with a model folder ``<prefix><N>`` in the repository (default: the classifiers)."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    lengths = []
    for child in repository.iterdir() if repository.is_dir() else ():
        match = pattern.match(child.name)
        if match and child.is_dir():
            lengths.append(int(match[1]))
    return sorted(lengths)


def main() -> None:
    """Rewrites the committed folders for 10, 20 and 30 frames and model_info (``python -m export.repository``)."""
    root = Path(__file__).resolve().parent.parent / "model_repository"
    for files in (render_shared_folders(), *(render_model_folders(frames) for frames in SERVED_LENGTHS)):
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    stream_configs.ensure_frame_links(root, list(SERVED_LENGTHS))


if __name__ == "__main__":
    main()
