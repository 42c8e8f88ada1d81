"""The live-stream models' configs: ``stream`` and the per-frame classifiers ``resnext_frame_<N>``.

``resnext_frame_<N>`` serves the file of ``resnext_lstm_<N>`` (its ``1/model.onnx`` is a committed
link to ``../../resnext_lstm_<N>/1/model.onnx``) with a frame axis of 1: the exported graph's frame
axis is open, and the published weights score every frame on its own, so one frame per row is a
frame's score, and a batch of rows is several frames (of one stream or of several) at once.

``stream`` is one model for every N: what a stream costs (decoding, one MTCNN search and one trunk
pass per scored frame) does not depend on N, which only picks the classifier and the window
length. One model gives one cap on live streams for the node, one stub and one MTCNN, instead of
one set per length that would each claim the same cores.

Rendered through ``export/repository.py`` (its helpers are used at call time: that module imports
this one).
"""

from __future__ import annotations

import os
from pathlib import Path

from export import repository as _repository
from export.contract import (
    MAX_BATCH,
    STREAM_INPUTS,
    STREAM_OPTIONAL_INPUTS,
    STREAM_OUTPUTS,
)

STREAM_NAME = "stream"
FRAME_CLASSIFIER_PREFIX = "resnext_frame_"
#: Sequence slots of the stream model's batcher (CPU server, GPU nodes).
CPU_STREAM_SLOTS = 8
GPU_STREAM_SLOTS = 16
#: The model's own cap on live streams, below the slots: a stream it refuses (UNAVAILABLE) may keep
#: its slot until it ends or times out, and a stream past the slots would wait where the model
#: cannot refuse it.
CPU_MAX_STREAMS = 4
GPU_MAX_STREAMS = 12
#: A stream that sends nothing for this long is dropped by Triton (its slot) and by the model (its
#: decoder and tracker, on the model's own timer, read from this same setting).
STREAM_IDLE_US = 10_000_000
#: Per request: packets and bytes a client may send at once.
MAX_PACKETS_PER_REQUEST = 64
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def frame_classifier_name(frames: int) -> str:
    return f"{FRAME_CLASSIFIER_PREFIX}{frames}"


def frame_classifier_link(frames: int) -> tuple[str, str]:
    """The committed link of ``resnext_frame_<N>``: (path in the repository, its target)."""
    return (f"{frame_classifier_name(frames)}/{_repository.VERSION}/model.onnx",
            f"../../{_repository.classifier_name(frames)}/{_repository.VERSION}/model.onnx")


def _rename(config: str, frames: int) -> str:
    """A classifier config of one frame per row, renamed to ``resnext_frame_<N>`` (the body is the classifier's)."""
    one_frame = config.replace(f'name: "{_repository.classifier_name(1)}"', f'name: "{frame_classifier_name(frames)}"')
    if one_frame == config:
        raise ValueError("the classifier config template no longer names its model on one line")
    return one_frame


def frame_classifier_gpu_config(frames: int) -> str:
    return (f"# The frames of live streams, one per row, scored with resnext_lstm_{frames}'s file (1/model.onnx links to it).\n"
            + _rename(_repository.classifier_gpu_config(1), frames))


def frame_classifier_cpu_config(frames: int) -> str:
    return (f"# The frames of live streams, one per row, scored with resnext_lstm_{frames}'s file (1/model.onnx links to it).\n"
            + _rename(_repository.classifier_cpu_config(1), frames))


FRAME_CLASSIFIER_ENTRY = '''"""Triton entry point of resnext_frame_<N>: the classifier, one frame per row (live streams)."""

from triton_models.classifier import TritonPythonModel  # noqa: F401
'''

STREAM_ENTRY = '''"""Triton entry point of stream: live streams scored while they play."""

from triton_models.stream import TritonPythonModel  # noqa: F401
'''


def _stream_inputs() -> str:
    specs = _repository._tensors(1, STREAM_INPUTS).split("\n  },\n")
    blocks = []
    for name, block in zip(STREAM_INPUTS, specs):
        block = block.rstrip().removesuffix("}").rstrip()
        extra = []
        if name in STREAM_OPTIONAL_INPUTS:
            extra.append("    optional: true")
        if name != "STREAM":
            # Each request has its own packet count and sizes: requests of several streams still
            # meet in one call (the model reads each request on its own).
            extra.append("    allow_ragged_batch: true")
        blocks.append(block + "\n" + "\n".join(extra) + "\n  }")
    return ",\n".join(blocks)


def _control(name: str, kind: str) -> str:
    if kind == "CONTROL_SEQUENCE_CORRID":
        body = f"kind: {kind}\n          data_type: TYPE_UINT64"
    else:
        body = f"kind: {kind}\n          bool_false_true: [ false, true ]"
    return f"""    {{
      name: "{name}"
      control [
        {{
          {body}
        }}
      ]
    }}"""


def _stream_body(kind: str, slots: int, max_streams: int, threads: int, detection: str) -> str:
    controls = ",\n".join(_control(name, control) for name, control in (
        ("START", "CONTROL_SEQUENCE_START"), ("END", "CONTROL_SEQUENCE_END"), ("CORRID", "CONTROL_SEQUENCE_CORRID")))
    return f"""name: "{STREAM_NAME}"
backend: "python"
max_batch_size: {MAX_BATCH}
input [
{_stream_inputs()}
]
output [
{_repository._tensors(1, STREAM_OUTPUTS)}
]
instance_group [
  {{
    count: 1
    kind: {kind}
  }}
]
# One slot per live stream; the oldest strategy hands the model one request of each of several
# streams at once, and their ready frames are scored in one classifier call.
sequence_batching {{
  max_sequence_idle_microseconds: {STREAM_IDLE_US}
  oldest {{
    max_candidate_sequences: {slots}
    max_queue_delay_microseconds: 0
  }}
  control_input [
{controls}
  ]
}}
# Zero or more responses per request (one per event), then the final flag.
model_transaction_policy {{
  decoupled: true
}}
parameters {{ key: "max_streams" value: {{ string_value: "{max_streams}" }} }}
parameters {{ key: "classifier_prefix" value: {{ string_value: "{FRAME_CLASSIFIER_PREFIX}" }} }}
parameters {{ key: "max_packets" value: {{ string_value: "{MAX_PACKETS_PER_REQUEST}" }} }}
parameters {{ key: "max_request_bytes" value: {{ string_value: "{MAX_REQUEST_BYTES}" }} }}
parameters {{ key: "torch_threads" value: {{ string_value: "{threads}" }} }}
{detection}"""


def stream_gpu_config() -> str:
    return ("# GPU node: live streams, MTCNN on the instance's GPU, every scored frame searched whole.\n"
            + _stream_body("KIND_GPU", GPU_STREAM_SLOTS, GPU_MAX_STREAMS, threads=2, detection=_GPU_DETECTION))


def stream_cpu_config() -> str:
    return ("# Embedded CPU server: live streams. The CPU detection settings of preprocess_<N>, searched online:\n"
            "# the followed faces in their windows in every scored frame, the whole frame every 20th.\n"
            + _stream_body("KIND_CPU", CPU_STREAM_SLOTS, CPU_MAX_STREAMS, threads=1, detection=_CPU_DETECTION))


_GPU_DETECTION = """parameters { key: "detect_every" value: { string_value: "1" } }
"""
_CPU_DETECTION = """parameters { key: "detect_every" value: { string_value: "20" } }
parameters { key: "max_followed" value: { string_value: "2" } }
parameters { key: "min_face_size" value: { string_value: "40" } }
"""


def render_frame_classifier(frames: int) -> dict[str, str]:
    """The committed text files of ``resnext_frame_<N>`` (its model link: :func:`frame_classifier_link`)."""
    name = frame_classifier_name(frames)
    return {
        f"{name}/config.pbtxt": frame_classifier_gpu_config(frames),
        f"{name}/configs/cpu.pbtxt": frame_classifier_cpu_config(frames),
        f"{name}/{_repository.VERSION}/model.py": FRAME_CLASSIFIER_ENTRY,
    }


def render_stream() -> dict[str, str]:
    """The committed files of ``stream``."""
    return {
        f"{STREAM_NAME}/config.pbtxt": stream_gpu_config(),
        f"{STREAM_NAME}/configs/cpu.pbtxt": stream_cpu_config(),
        f"{STREAM_NAME}/{_repository.VERSION}/model.py": STREAM_ENTRY,
    }


def ensure_frame_links(repository: Path, frames_list: list[int]) -> None:
    """Writes the model link of each ``resnext_frame_<N>`` that lacks one."""
    for frames in frames_list:
        relative, target = frame_classifier_link(frames)
        path = repository / relative
        if not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)
