"""The serving contract, defined once: what the served models take and return.

Tensor names, Triton data types, one video's shape (``FRAMES`` standing for the model's sequence
length), which classifier outputs are per frame, the face size, the batch size and the lengths
served by default. Everything else derives from here: the configs ``export/repository.py``
renders, the ONNX graph ``export/model.py`` names and ``export/onnx_export.py`` checks, the
classifier adapter (``triton_models/``) and the benchmarks. The client keeps its own light copy
(``client/api.py``: it installs without ``export/``), held equal to the rendered configs by
``tests/test_contract.py``. Standard library only: the python-backend stubs import it.

To add a tensor: one :class:`Tensor` in ``TENSORS``, and its name in the tuples of the models that
carry it (the configs, the ensembles' mappings and the checks follow).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Side of the square face crops the classifier takes (pixels).
FACE_SIZE = 112
#: Largest batch every model accepts (``max_batch_size``).
MAX_BATCH = 8
#: The sequence lengths committed to the repository and exported by default.
SERVED_LENGTHS = (10, 20, 30)
#: Stands for the sequence length in a shape.
FRAMES = "N"
#: Any size (a byte string's length).
ANY = -1
BOX_COORDINATES = 4
NUM_CLASSES = 2


@dataclass(frozen=True)
class Tensor:
    """One tensor of the serving API.

    Attributes:
        name: the name every config, graph and client uses.
        data_type: Triton's ``TYPE_*`` name.
        shape: one video's shape, without the batch axis; :data:`FRAMES` for the sequence length.
    """

    name: str
    data_type: str
    shape: tuple[int | str, ...]

    @property
    def per_frame(self) -> bool:
        """Whether the first axis runs over the video's frames."""
        return bool(self.shape) and self.shape[0] == FRAMES

    def dims(self, frames: int) -> tuple[int, ...]:
        """The shape for a model of ``frames`` frames."""
        return tuple(frames if axis == FRAMES else int(axis) for axis in self.shape)


TENSORS: dict[str, Tensor] = {
    tensor.name: tensor
    for tensor in (
        Tensor("VIDEO", "TYPE_UINT8", (ANY,)),
        Tensor("FACES", "TYPE_FP32", (FRAMES, 3, FACE_SIZE, FACE_SIZE)),
        Tensor("FACE_BOXES", "TYPE_FP32", (FRAMES, BOX_COORDINATES)),
        Tensor("FACE_FOUND", "TYPE_BOOL", (FRAMES,)),
        Tensor("FRAMES_DECODED", "TYPE_INT32", (1,)),
        # When each used frame is shown, in seconds from the video stream's start (0 for a
        # still), so that a player can draw FACE_BOXES over the right moment.
        Tensor("FRAME_TIMES", "TYPE_FP32", (FRAMES,)),
        Tensor("LOGITS", "TYPE_FP32", (NUM_CLASSES,)),
        Tensor("PROB_FAKE", "TYPE_FP32", (1,)),
        Tensor("FRAME_PROB_FAKE", "TYPE_FP32", (FRAMES,)),
        Tensor("HEATMAP", "TYPE_FP32", (FRAMES, FACE_SIZE, FACE_SIZE)),
        # faces_<N>: one row per face found (the first axis, at most max_faces), the main face first.
        Tensor("MAX_PROB_FAKE", "TYPE_FP32", (1,)),
        Tensor("TRACK_PROB_FAKE", "TYPE_FP32", (ANY,)),
        Tensor("TRACK_FRAME_PROB_FAKE", "TYPE_FP32", (ANY, FRAMES)),
        Tensor("TRACK_BOXES", "TYPE_FP32", (ANY, FRAMES, BOX_COORDINATES)),
        Tensor("TRACK_FOUND", "TYPE_BOOL", (ANY, FRAMES)),
        Tensor("TRACK_PROMINENCE", "TYPE_FP32", (ANY,)),
        Tensor("FACES_SEEN", "TYPE_INT32", (1,)),
        # stream: a live stream's codec parameters (at its start) and encoded packets in; events out,
        # each response one event (its outputs rendered with FRAMES = 1: one frame per event).
        Tensor("STREAM", "TYPE_STRING", (1,)),
        Tensor("EXTRADATA", "TYPE_UINT8", (ANY,)),
        Tensor("PACKETS", "TYPE_UINT8", (ANY,)),
        Tensor("PACKET_SIZES", "TYPE_INT32", (ANY,)),
        Tensor("PACKET_PTS", "TYPE_INT64", (ANY,)),
        Tensor("EVENT", "TYPE_STRING", (1,)),
        Tensor("FRAME_INDEX", "TYPE_INT64", (1,)),
        Tensor("FRAME_PTS", "TYPE_INT64", (1,)),
        Tensor("WINDOW_START", "TYPE_INT64", (1,)),
        Tensor("WINDOW_PROB_FAKE_MEAN", "TYPE_FP32", (1,)),
        Tensor("SKIPPED_FRAMES", "TYPE_INT64", (ANY,)),
        Tensor("FRAMES_RECEIVED", "TYPE_INT32", (1,)),
        Tensor("FRAMES_SCORED", "TYPE_INT32", (1,)),
        Tensor("FRAMES_SKIPPED", "TYPE_INT32", (1,)),
    )
}

# preprocess_<N>: video bytes -> faces and what was seen.
PREPROCESS_INPUTS = ("VIDEO",)
PREPROCESS_OUTPUTS = ("FACES", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED", "FRAME_TIMES")
# resnext_lstm_<N>: faces -> scores (the ONNX graph's names, in its order).
CLASSIFIER_INPUTS = ("FACES",)
CLASSIFIER_OUTPUTS = ("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE", "HEATMAP")
#: Classifier outputs with one value per frame: they need the trunk on every frame, the others
#: on the last frame only (the published weights score from it).
PER_FRAME_OUTPUTS = frozenset(name for name in CLASSIFIER_OUTPUTS if TENSORS[name].per_frame)
LAST_FRAME_OUTPUTS = tuple(name for name in CLASSIFIER_OUTPUTS if name not in PER_FRAME_OUTPUTS)
# The client-facing ensembles: deepfake_<N> (scores), explain_<N> (+ crops and heatmaps),
# verdict_<N> (the clip's score alone: no per-frame scores, the last frame's trunk only).
SCORE_OUTPUTS = ("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED", "FRAME_TIMES")
EXPLAIN_OUTPUTS = (*SCORE_OUTPUTS, "FACES", "HEATMAP")
VERDICT_OUTPUTS = tuple(name for name in SCORE_OUTPUTS if name != "FRAME_PROB_FAKE")
# faces_<N>: PROB_FAKE is the main face's faithful score (as deepfake_<N>'s); MAX_PROB_FAKE: "is any face fake",
# the largest over the faces of each face's mean frame score where it was detected.
# The outputs of deepfake_<N> describe the main face, so every client of deepfake_<N> reads faces_<N> too.
FACES_OUTPUTS = (*SCORE_OUTPUTS, "MAX_PROB_FAKE", "TRACK_PROB_FAKE", "TRACK_FRAME_PROB_FAKE", "TRACK_BOXES", "TRACK_FOUND",
                 "TRACK_PROMINENCE", "FACES_SEEN")
# stream: STREAM and EXTRADATA come with a stream's first request only. Events: "frame" (FRAME_INDEX,
# FRAME_PTS, FRAME_PROB_FAKE, FACE_BOXES, FACE_FOUND), "window" (FRAME_INDEX and FRAME_PTS of its last
# scored frame, WINDOW_START, PROB_FAKE: the faithful score, WINDOW_PROB_FAKE_MEAN, FRAMES_SCORED),
# "skipped" (SKIPPED_FRAMES) and, at the end, "summary" (FRAMES_RECEIVED, FRAMES_DECODED, FRAMES_SCORED,
# FRAMES_SKIPPED).
STREAM_INPUTS = ("STREAM", "EXTRADATA", "PACKETS", "PACKET_SIZES", "PACKET_PTS")
STREAM_OPTIONAL_INPUTS = ("STREAM", "EXTRADATA")
STREAM_OUTPUTS = ("EVENT", "FRAME_INDEX", "FRAME_PTS", "FRAME_PROB_FAKE", "FACE_BOXES", "FACE_FOUND", "WINDOW_START",
                  "PROB_FAKE", "WINDOW_PROB_FAKE_MEAN", "FRAMES_SCORED", "SKIPPED_FRAMES", "FRAMES_RECEIVED",
                  "FRAMES_DECODED", "FRAMES_SKIPPED")
STREAM_EVENTS = {
    "frame": ("FRAME_INDEX", "FRAME_PTS", "FRAME_PROB_FAKE", "FACE_BOXES", "FACE_FOUND"),
    "window": ("FRAME_INDEX", "FRAME_PTS", "WINDOW_START", "PROB_FAKE", "WINDOW_PROB_FAKE_MEAN", "FRAMES_SCORED"),
    "skipped": ("SKIPPED_FRAMES",),
    "summary": ("FRAMES_RECEIVED", "FRAMES_DECODED", "FRAMES_SCORED", "FRAMES_SKIPPED"),
}
