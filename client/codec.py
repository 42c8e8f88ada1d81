"""The wire format of a request and its answer, as the serving contract states it.

Video bytes in (read and checked here), the requested outputs, each output checked against
:data:`contract.TENSORS` and unpacked to one video's tensors, and the ``model_info`` document.
Both flavours of tritonclient (sync and asyncio) build their requests from these helpers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from contract import ANY, FRAMES, MODEL_INFO_OUTPUTS, TENSORS, VERSION_INPUT, VIDEO_INPUT, Kind, Mode, model_name

from .connection import MAX_GRPC_MESSAGE_BYTES
from .errors import INTERNAL, INVALID_ARGUMENT, ClientError
from .versions import CLASSIFIERS_SECTION, check_version, length_entry, version_entry

# Room left for the protobuf framing around the raw video bytes.
REQUEST_OVERHEAD_BYTES = 1 << 20
MAX_VIDEO_BYTES = MAX_GRPC_MESSAGE_BYTES - REQUEST_OVERHEAD_BYTES
#: The wire type of ``VIDEO`` (the file's bytes) and the numpy type that holds it.
VIDEO_DATATYPE = TENSORS[VIDEO_INPUT].datatype
VIDEO_DTYPE = np.dtype(VIDEO_DATATYPE.lower())
#: The wire type of ``MODEL_VERSION`` and the numpy type that holds it.
VERSION_DATATYPE = TENSORS[VERSION_INPUT].datatype
VERSION_DTYPE = np.dtype(VERSION_DATATYPE.lower())
MODEL_INFO_MODEL = model_name(Kind.MODEL_INFO)
(MODEL_INFO_OUTPUT,) = MODEL_INFO_OUTPUTS
DEMO_WARNING = (
    "WARNING: the server's classifiers come from demo checkpoints (random weights: {checkpoints}); "
    "their scores mean nothing. Export the published checkpoints to get real scores."
)

VideoSource = str | os.PathLike | bytes | bytearray | memoryview


def check_frames(frames) -> int:
    """Returns ``frames`` as a positive int or raises ValueError."""
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)):
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames}")
    return int(frames)


def check_mode(mode) -> Mode:
    """Returns ``mode`` when it is a :class:`contract.Mode`, else raises TypeError."""
    if not isinstance(mode, Mode):
        raise TypeError(f"mode must be a client.Mode ({', '.join(m.name for m in Mode)}), got {mode!r}")
    return mode


def load_video(video: VideoSource, name: str | None = None) -> tuple[str, np.ndarray]:
    """Reads a video file (or takes its bytes) as the request's ``VIDEO`` tensor.

    Args:
        video: path of the video file, or its raw bytes.
        name: name to report; defaults to the path, or ``"<N bytes>"``.

    Returns:
        ``(name, array of shape [1, nbytes])``.

    Raises:
        ClientError: INVALID_ARGUMENT when the file cannot be read, is empty or exceeds the gRPC
            message limit.
    """
    if isinstance(video, (bytes, bytearray, memoryview)):
        data = bytes(video)
        label = name if name is not None else f"<{len(data)} bytes>"
    elif isinstance(video, (str, os.PathLike)):
        label = name if name is not None else os.fspath(video)
        path = Path(video)
        try:
            # Refuse an oversized file before reading it into memory.
            _check_size(label, path.stat().st_size)
            data = path.read_bytes()
        except IsADirectoryError:
            raise ClientError(INVALID_ARGUMENT, f"video '{label}' is a directory") from None
        except OSError as error:
            raise ClientError(INVALID_ARGUMENT, f"cannot read video '{label}': {error.strerror or error}") from None
    else:
        raise TypeError(f"video must be a path or bytes, got {type(video).__name__}")
    _check_size(label, len(data))
    return label, np.frombuffer(data, dtype=VIDEO_DTYPE).reshape(1, -1)


def _check_size(label: str, size: int) -> None:
    if size == 0:
        raise ClientError(INVALID_ARGUMENT, f"video '{label}' is empty (0 bytes)")
    if size > MAX_VIDEO_BYTES:
        raise ClientError(
            INVALID_ARGUMENT,
            f"video '{label}' is {size} bytes, more than the {MAX_VIDEO_BYTES} bytes one gRPC request can carry",
        )


def video_inputs(payload: np.ndarray, outputs: Sequence[str], version: int | None = None):
    """The inputs and the requested ``outputs`` of one request (both tritonclient flavours take them).

    Args:
        payload: the ``VIDEO`` tensor of :func:`load_video`.
        outputs: the outputs to ask for.
        version: the classifier version to ask for, sent as ``MODEL_VERSION`` [1, 1]; None sends no
            such input, and the server answers with its latest version.

    Raises:
        ValueError: ``version`` is not a positive integer.
    """
    version = check_version(version)
    video_input = grpcclient.InferInput(VIDEO_INPUT, list(payload.shape), VIDEO_DATATYPE)
    video_input.set_data_from_numpy(payload)
    inputs = [video_input]
    if version is not None:
        version_input = grpcclient.InferInput(VERSION_INPUT, [1, 1], VERSION_DATATYPE)
        version_input.set_data_from_numpy(np.array([[version]], dtype=VERSION_DTYPE))
        inputs.append(version_input)
    return inputs, [grpcclient.InferRequestedOutput(name) for name in outputs]


def unpack_outputs(model: str, result, outputs: Sequence[str], frames: int) -> dict[str, np.ndarray]:
    """One video's tensors of an answer, each checked against the contract's shape for N = ``frames``.

    An axis of any length (:data:`contract.ANY`: one row per face of ``faces_<N>``) takes its length
    from the first output that has one, and must be at least 1 and the same in every other.

    Raises:
        ClientError: INTERNAL when an output is missing or has the wrong shape.
    """
    tensors = {}
    faces: int | None = None
    for output in outputs:
        shape = TENSORS[output].shape
        array = result.as_numpy(output)
        if array is None:
            raise ClientError(INTERNAL, f"'{model}' returned no {output} output")
        if ANY in shape and faces is None and array.ndim == len(shape) + 1:
            faces = array.shape[1 + shape.index(ANY)]
            if faces < 1:
                raise ClientError(INTERNAL, f"'{model}' returned {output} without any face")
        expected = (1, *(frames if axis == FRAMES else faces if axis == ANY else axis for axis in shape))
        if array.shape != expected:
            raise ClientError(
                INTERNAL, f"'{model}' returned {output} with shape {list(array.shape)}, expected {list(expected)}"
            )
        tensors[output] = array[0]
    return tensors


def model_info_outputs() -> list:
    """The requested outputs of a ``model_info`` call (it has no inputs)."""
    return [grpcclient.InferRequestedOutput(MODEL_INFO_OUTPUT)]


def parse_model_info(result) -> dict:
    """The JSON document of a ``model_info`` answer.

    Raises:
        ClientError: INTERNAL when the answer is not the expected JSON object.
    """
    array = result.as_numpy(MODEL_INFO_OUTPUT)
    if array is None or array.size != 1:
        raise ClientError(INTERNAL, f"'{MODEL_INFO_MODEL}' returned no single {MODEL_INFO_OUTPUT} string")
    raw = array.reshape(-1)[0]
    try:
        info = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ClientError(INTERNAL, f"'{MODEL_INFO_MODEL}' returned unreadable JSON: {error}") from None
    if not isinstance(info, dict) or not isinstance(info.get("classifiers"), dict):
        raise ClientError(INTERNAL, f"'{MODEL_INFO_MODEL}' returned no \"classifiers\" object")
    return info


def demo_warning(
    info: Mapping, frames: int | None = None, mode: Mode = Mode.SCORE, version: int | None = None
) -> str | None:
    """The warning to show when ``model_info`` says the checkpoints are demo ones, else None.

    Args:
        info: model_info's document.
        frames: the length a run asks; None: every length's latest classifier.
        mode: the run's mode (its section of the document: the classifiers, or the temporal models).
        version: the version the run asks (default: the latest served).
    """
    if frames is None:
        entries = [entry for entry in (info.get(CLASSIFIERS_SECTION) or {}).values() if isinstance(entry, Mapping)]
    else:
        entry = version_entry(info, frames, mode, version) or length_entry(info, frames, mode)
        entries = [] if entry is None else [entry]
    demo = sorted(str(entry.get("checkpoint")) for entry in entries if entry.get("demo"))
    if not demo:
        return None
    return DEMO_WARNING.format(checkpoints=", ".join(demo))
