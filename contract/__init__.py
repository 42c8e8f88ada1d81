"""The serving contract: every fact that crosses a process boundary, defined once.

Model kinds and the one function that names every served model, the tensors of every model and
stream event, the served lengths, face size and batch limit, the upload and stream limits, the
codecs, the score modes and what combines with what, the JSON keys of an answer and the exit codes
of every command. The config renderer (``export/configs.py``), the python-backend adapters
(``triton_models/``), the preprocessing library, the embedded server (``serve/``), the clients and
the web page (``client/``) import it; tests check the rendered configs against it.

Why here, in a package of its own: it is the one thing both sides of the wire share. The plain
client installs with numpy and tritonclient only, so the contract cannot live in ``export/`` (torch,
onnx); the python-backend stubs and the container's entrypoint import it too, so it cannot live in
``client/`` (whose package loads tritonclient's gRPC stack). Standard library only, Python >= 3.10
(the NGC image's Python: no ``StrEnum``), no import of any other package of the project.

To add a tensor: one :class:`Tensor` in :data:`TENSORS`, and its name in the tuples of the models
that carry it (the configs, the ensembles' mappings and the checks follow). To add a fact that
every answer carries (which version answered, a decision, a match): one :class:`AnswerFact` in
:data:`ANSWER_FACTS`.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Sizes the model fixes.

#: Side of the square face crops the classifier takes (pixels).
FACE_SIZE = 112
#: Largest batch every model accepts (``max_batch_size``).
MAX_BATCH = 8
#: The sequence lengths committed to the repository, exported and health-checked by default.
SERVED_LENGTHS = (10, 20, 30)
#: The length a client asks for when it names none.
DEFAULT_FRAMES = 20
BOX_COORDINATES = 4
NUM_CLASSES = 2
#: The published head's class order: softmax index 0 is FAKE, 1 is REAL.
FAKE_INDEX = 0
REAL_INDEX = 1
LABEL_FAKE = "FAKE"
LABEL_REAL = "REAL"

# --------------------------------------------------------------------------------------------
# Served models: one kind per role, one function for every name.


class Kind(Enum):
    """A served model's role; its value is the name (shared models) or the prefix before ``_<N>``."""

    SCORE = "deepfake"
    EXPLAIN = "explain"
    VERDICT = "verdict"
    FACES = "faces"
    ORIGINAL = "original"
    PREPROCESS = "preprocess"
    ORIGINAL_PREPROCESS = "preprocess_original"
    CLASSIFIER = "resnext_lstm"
    #: The classifier with one frame per row (live streams), on the classifier's ONNX file.
    FRAME_CLASSIFIER = "resnext_frame"
    #: Live streams, one model for every N.
    STREAM = "stream"
    #: What the served classifiers were exported from, one model for every N.
    MODEL_INFO = "model_info"
    #: Calls the classifier version a request names (the latest served by default) and says which
    #: version and checkpoint answered: the step every scoring ensemble runs instead of calling
    #: resnext_lstm_<N> itself (an ensemble fixes its steps' versions).
    SELECT = "classify"
    #: The version-choosing step of original_<N>: the same classifier as classify_<N>, on the
    #: original app's crops, so its scores have their own calibration (:class:`Score`).
    ORIGINAL_SELECT = "classify_original"
    #: A trained temporal model (the trunk on every frame, then attention over the N frames); its
    #: folders are written by ``export`` when one is exported, never committed.
    TEMPORAL_CLASSIFIER = "resnext_temporal"
    #: The version-choosing step of the temporal models.
    TEMPORAL_SELECT = "classify_temporal"
    #: The client-facing temporal ensemble: video bytes -> faces -> the temporal model's scores.
    TEMPORAL = "temporal"

    @property
    def per_length(self) -> bool:
        """Whether one model of this kind serves each sequence length N."""
        return self not in SHARED_KINDS

    @property
    def prefix(self) -> str:
        """``<kind>_`` for a kind served per length (a folder or name starts with it)."""
        if not self.per_length:
            raise ValueError(f"{self.value} is one model for every length: it has no prefix")
        return f"{self.value}_"


#: In the order of :class:`Kind` (clients list models in this order).
SHARED_KINDS = (Kind.STREAM, Kind.MODEL_INFO)
PER_LENGTH_KINDS = tuple(kind for kind in Kind if kind not in SHARED_KINDS)
#: The per-length kinds that exist only once a temporal model was trained and exported.
TEMPORAL_KINDS = (Kind.TEMPORAL_CLASSIFIER, Kind.TEMPORAL_SELECT, Kind.TEMPORAL)
#: The per-length kinds every length is served with (committed for the served lengths).
BASE_KINDS = tuple(kind for kind in PER_LENGTH_KINDS if kind not in TEMPORAL_KINDS)
#: Models that serve several versions at once (``version_policy: all``), one per export: the
#: classifiers, and the per-frame classifier that serves the classifier's files.
VERSIONED_KINDS = (Kind.CLASSIFIER, Kind.FRAME_CLASSIFIER, Kind.TEMPORAL_CLASSIFIER)
#: model_info's document: the section of each versioned kind it reports (see triton_models/model_info.py).
MODEL_INFO_SECTIONS = {Kind.CLASSIFIER: "classifiers", Kind.TEMPORAL_CLASSIFIER: "temporal"}
#: The model each version-choosing step calls.
SELECTED_KINDS = {
    Kind.SELECT: Kind.CLASSIFIER,
    Kind.ORIGINAL_SELECT: Kind.CLASSIFIER,
    Kind.TEMPORAL_SELECT: Kind.TEMPORAL_CLASSIFIER,
}
_PER_LENGTH_NAME = re.compile(r"^(?P<kind>[a-z_]+?)_(?P<frames>[1-9]\d*)$")


def model_name(kind: Kind, frames: int | None = None) -> str:
    """The served name of a model: ``deepfake_20``, ``resnext_frame_10``, ``stream``, ...

    Raises:
        ValueError: ``frames`` missing for a per-length kind, given for a shared one, or not >= 1.
    """
    if not kind.per_length:
        if frames is not None:
            raise ValueError(f"{kind.value} serves every length: no frames, got {frames!r}")
        return kind.value
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"{kind.value}_<N> needs a positive integer N, got {frames!r}")
    return f"{kind.prefix}{frames}"


def parse_model_name(name: str) -> tuple[Kind, int | None] | None:
    """``(kind, N)`` of a served name (``N`` None for shared models), or None for a name not ours."""
    for kind in SHARED_KINDS:
        if name == kind.value:
            return kind, None
    match = _PER_LENGTH_NAME.fullmatch(name)
    if match is None:
        return None
    for kind in PER_LENGTH_KINDS:
        if match["kind"] == kind.value:
            return kind, int(match["frames"])
    return None


def lengths_of(kind: Kind, names) -> list[int]:
    """The sequence lengths N for which ``names`` (model or folder names) hold a model of ``kind``, sorted."""
    lengths = set()
    for name in names:
        parsed = parse_model_name(name)
        if parsed is not None and parsed[0] is kind:
            lengths.add(parsed[1])
    return sorted(lengths)


#: The version folder every committed model is served from, and the published checkpoint's.
DEFAULT_VERSION = "1"
#: The tag that starts the file name of a checkpoint ``train`` wrote
#: (``model_<acc>_acc_<N>_frames_trained_<run>.pt``): ``export`` serves one only as the version it
#: is told (``--checkpoint FILE --version V``), never as the published version 1.
TRAINED_CHECKPOINT_TAG = "trained"
#: File names of a temporal model's checkpoint: ``temporal_<acc>_acc_<N>_frames_<tag>.pt``.
TEMPORAL_CHECKPOINT_PREFIX = "temporal"
#: The classifier's files in its version folder: the exported graph everywhere, a TensorRT plan
#: where one was built on the node's GPU.
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
#: What ``export`` writes beside each classifier it exports (source checkpoint, sha256, parity
#: figures); ``model_info`` answers with them and the embedded server checks for them.
EXPORT_METADATA_FILE = "export.json"
#: The tag in the file name of a demo checkpoint (random weights: ``model_<acc>_acc_<N>_frames_<tag>.pt``),
#: written by ``export demo-checkpoints``; clients warn when the served classifiers come from one.
DEMO_CHECKPOINT_TAG = "demo_random"


def classifier_file(
    repository: str | os.PathLike,
    frames: int,
    file: str = ONNX_FILE,
    version: str | int = DEFAULT_VERSION,
    kind: Kind = Kind.CLASSIFIER,
) -> Path:
    """``<repository>/resnext_lstm_<N>/<version>/<file>``: where ``export`` writes a classifier, the server reads it."""
    return Path(repository) / model_name(kind, frames) / str(version) / file


def version_folders(model_dir: str | os.PathLike) -> list[int]:
    """The version numbers of a model folder (its subfolders named by a positive integer), ascending."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return []
    return sorted(int(child.name) for child in folder.iterdir() if child.is_dir() and _VERSION.fullmatch(child.name))


_VERSION = re.compile(r"[1-9]\d*")


#: Loading new versions into a running server goes through Triton's model-control API, restricted
#: to callers sending this HTTP header (gRPC: ``triton-grpc-protocol-<header>``) with the admin key;
#: deployments read the key from this environment variable (a Kubernetes secret, a compose variable).
ADMIN_KEY_HEADER = "admin-key"
ADMIN_KEY_ENV = "DEEPFAKE_ADMIN_KEY"
#: Containers and pods mount the key as a secret file, named by this variable (default path below).
ADMIN_KEY_FILE_ENV = "TRITON_ADMIN_KEY_FILE"
ADMIN_KEY_FILE_DEFAULT = "/run/secrets/triton_admin_key"
#: What an admin key may be: hex or URL-safe base64 of at least 16 characters (it goes into a
#: tritonserver flag that is split on ',' ':' '=').
ADMIN_KEY_PATTERN = r"[A-Za-z0-9_-]{16,512}"

# --------------------------------------------------------------------------------------------
# Tensors.

#: Stands for the sequence length in a shape.
FRAMES = "N"
#: Any size (a byte string's length, the faces found).
ANY = -1


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

    @property
    def datatype(self) -> str:
        """The wire name of the data type (``FP32``, ``BYTES``), as tritonclient spells it."""
        return _WIRE_TYPES.get(self.data_type, self.data_type.removeprefix("TYPE_"))

    def dims(self, frames: int) -> tuple[int, ...]:
        """The shape for a model of ``frames`` frames."""
        return tuple(frames if axis == FRAMES else int(axis) for axis in self.shape)


_WIRE_TYPES = {"TYPE_STRING": "BYTES"}

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
        # model_info: one JSON document, no inputs, no batch axis.
        Tensor("INFO", "TYPE_STRING", (1,)),
        # The classifier version a request asks for (optional; absent: the latest served), and the
        # version and checkpoint (sha256 of the .pt file) that answered.
        Tensor("MODEL_VERSION", "TYPE_INT64", (1,)),
        Tensor("CLASSIFIER_VERSION", "TYPE_INT64", (1,)),
        Tensor("CHECKPOINT_SHA256", "TYPE_STRING", (1,)),
        # A temporal model's attention over the frames: how much each frame counted (sums to 1).
        Tensor("FRAME_WEIGHT", "TYPE_FP32", (FRAMES,)),
        # The decision at the served operating point: PROB_FAKE through the calibration fitted for
        # the version that answered, FAKE / REAL / UNCERTAIN, and the operating point in force as
        # one JSON document (:data:`OPERATING_POINT_KEYS`).
        Tensor("PROB_FAKE_CALIBRATED", "TYPE_FP32", (1,)),
        Tensor("DECISION", "TYPE_STRING", (1,)),
        Tensor("OPERATING_POINT", "TYPE_STRING", (1,)),
        # The video's vPDQ fingerprint (preprocess_<N>: JSON, preprocessing/fingerprint.py), and what
        # the bank of confirmed fakes says of it (JSON: null for no match, see KNOWN_MATCH_KEYS).
        Tensor("FINGERPRINT", "TYPE_STRING", (1,)),
        Tensor("KNOWN_MATCH", "TYPE_STRING", (1,)),
        # preprocess_<N>: why the video was refused (empty when it was not). Refusals travel as data,
        # not as error answers: Triton 2.51 stores an error answer of a cached model as an empty
        # success, so the same bytes would come back with no outputs at all.
        Tensor("REFUSAL", "TYPE_STRING", (1,)),
    )
}

# preprocess_<N> and preprocess_original_<N>: video bytes -> faces and what was seen.
VIDEO_INPUT = "VIDEO"
PREPROCESS_INPUTS = (VIDEO_INPUT,)
PREPROCESS_OUTPUTS = ("FACES", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED", "FRAME_TIMES", "FINGERPRINT", "REFUSAL")
#: The preprocessing step's refusal, which the version-choosing step turns into INVALID_ARGUMENT.
REFUSAL_INPUT = "REFUSAL"
# resnext_lstm_<N> and resnext_frame_<N>: faces -> scores (the ONNX graph's names, in its order).
CLASSIFIER_INPUTS = ("FACES",)
CLASSIFIER_OUTPUTS = ("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE", "HEATMAP")
#: Classifier outputs with one value per frame: they need the trunk on every frame, the others
#: on the last frame only (the published weights score from it).
PER_FRAME_OUTPUTS = frozenset(name for name in CLASSIFIER_OUTPUTS if TENSORS[name].per_frame)
LAST_FRAME_OUTPUTS = tuple(name for name in CLASSIFIER_OUTPUTS if name not in PER_FRAME_OUTPUTS)
#: The version a request may name, and what says which version and checkpoint answered.
VERSION_INPUT = "MODEL_VERSION"
VERSION_OUTPUTS = ("CLASSIFIER_VERSION", "CHECKPOINT_SHA256")
#: The fingerprint a version-choosing step matches against the bank, and what it found.
FINGERPRINT_INPUT = "FINGERPRINT"
MATCH_OUTPUTS = ("KNOWN_MATCH",)
#: Inputs a request may leave out.
OPTIONAL_INPUTS = frozenset({VERSION_INPUT, FINGERPRINT_INPUT, REFUSAL_INPUT, "STREAM", "EXTRADATA"})
#: The decision made at the served operating point (beside the raw outputs, which stay as they were).
DECISION_OUTPUTS = ("PROB_FAKE_CALIBRATED", "DECISION", "OPERATING_POINT")
# classify_<N>: the classifier's inputs and outputs, plus the version asked for and the one that
# answered, and the decision.
SELECT_INPUTS = (*CLASSIFIER_INPUTS, VERSION_INPUT, FINGERPRINT_INPUT, REFUSAL_INPUT)
SELECT_OUTPUTS = (*CLASSIFIER_OUTPUTS, *VERSION_OUTPUTS, *DECISION_OUTPUTS, *MATCH_OUTPUTS)
# resnext_temporal_<N>: faces -> the clip's score from all N frames, each frame's own score through
# the same head, and how much each frame counted.
TEMPORAL_CLASSIFIER_OUTPUTS = ("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE", "FRAME_WEIGHT")
TEMPORAL_SELECT_OUTPUTS = (*TEMPORAL_CLASSIFIER_OUTPUTS, *VERSION_OUTPUTS, *DECISION_OUTPUTS, *MATCH_OUTPUTS)
# The client-facing ensembles take the video and, optionally, the classifier version.
ENSEMBLE_INPUTS = (VIDEO_INPUT, VERSION_INPUT)
# The client-facing ensembles: deepfake_<N> (scores), explain_<N> (+ crops and heatmaps),
# verdict_<N> (the clip's score alone: no per-frame scores, the last frame's trunk only). Every
# answer names the classifier version and checkpoint that produced it.
SCORE_OUTPUTS = (
    "LOGITS",
    "PROB_FAKE",
    "FRAME_PROB_FAKE",
    "FACE_BOXES",
    "FACE_FOUND",
    "FRAMES_DECODED",
    "FRAME_TIMES",
    *VERSION_OUTPUTS,
    *DECISION_OUTPUTS,
    *MATCH_OUTPUTS,
    "FINGERPRINT",
)
EXPLAIN_OUTPUTS = (*SCORE_OUTPUTS, "FACES", "HEATMAP")
VERDICT_OUTPUTS = tuple(name for name in SCORE_OUTPUTS if name != "FRAME_PROB_FAKE")
# faces_<N>: PROB_FAKE is the main face's faithful score (as deepfake_<N>'s); MAX_PROB_FAKE: "is any
# face fake", the largest over the faces of each face's mean frame score where it was detected. The
# outputs of deepfake_<N> describe the main face, so every client of deepfake_<N> reads faces_<N> too.
FACES_OUTPUTS = (
    *SCORE_OUTPUTS,
    "MAX_PROB_FAKE",
    "TRACK_PROB_FAKE",
    "TRACK_FRAME_PROB_FAKE",
    "TRACK_BOXES",
    "TRACK_FOUND",
    "TRACK_PROMINENCE",
    "FACES_SEEN",
)
#: faces_<N>'s outputs with one row per face (their first axis).
FACE_ROW_OUTPUTS = tuple(name for name in FACES_OUTPUTS if TENSORS[name].shape[:1] == (ANY,))
# model_info: no inputs, one JSON string out.
MODEL_INFO_OUTPUTS = ("INFO",)
# stream: STREAM and EXTRADATA come with a stream's first request only. Events: "frame" (FRAME_INDEX,
# FRAME_PTS, FRAME_PROB_FAKE, FACE_BOXES, FACE_FOUND), "window" (FRAME_INDEX and FRAME_PTS of its last
# scored frame, WINDOW_START, PROB_FAKE: the faithful score, WINDOW_PROB_FAKE_MEAN, FRAMES_SCORED),
# "skipped" (SKIPPED_FRAMES) and, at the end, "summary" (FRAMES_RECEIVED, FRAMES_DECODED, FRAMES_SCORED,
# FRAMES_SKIPPED).
STREAM_INPUTS = ("STREAM", "EXTRADATA", "PACKETS", "PACKET_SIZES", "PACKET_PTS")
STREAM_OPTIONAL_INPUTS = tuple(name for name in STREAM_INPUTS if name in OPTIONAL_INPUTS)
STREAM_OUTPUTS = (
    "EVENT",
    "FRAME_INDEX",
    "FRAME_PTS",
    "FRAME_PROB_FAKE",
    "FACE_BOXES",
    "FACE_FOUND",
    "WINDOW_START",
    "PROB_FAKE",
    "WINDOW_PROB_FAKE_MEAN",
    "FRAMES_SCORED",
    "SKIPPED_FRAMES",
    "FRAMES_RECEIVED",
    "FRAMES_DECODED",
    "FRAMES_SKIPPED",
    *VERSION_OUTPUTS,
)
STREAM_EVENTS = {
    "frame": ("FRAME_INDEX", "FRAME_PTS", "FRAME_PROB_FAKE", "FACE_BOXES", "FACE_FOUND"),
    "window": (
        "FRAME_INDEX",
        "FRAME_PTS",
        "WINDOW_START",
        "PROB_FAKE",
        "WINDOW_PROB_FAKE_MEAN",
        "FRAMES_SCORED",
        *VERSION_OUTPUTS,
    ),
    "skipped": ("SKIPPED_FRAMES",),
    "summary": ("FRAMES_RECEIVED", "FRAMES_DECODED", "FRAMES_SCORED", "FRAMES_SKIPPED", *VERSION_OUTPUTS),
}
#: Keys of the JSON object a stream declares in ``STREAM`` at its start.
STREAM_SETTINGS_KEYS = ("codec", "time_base", "frames", "hop", "score_every", "model_version")

# temporal_<N>: the temporal model's scores, and what the preprocessing saw.
TEMPORAL_OUTPUTS = (
    *TEMPORAL_CLASSIFIER_OUTPUTS,
    "FACE_BOXES",
    "FACE_FOUND",
    "FRAMES_DECODED",
    "FRAME_TIMES",
    *VERSION_OUTPUTS,
    *DECISION_OUTPUTS,
    *MATCH_OUTPUTS,
    "FINGERPRINT",
)

#: Inputs and outputs of each kind, as the configs declare them.
MODEL_INPUTS: dict[Kind, tuple[str, ...]] = {
    **dict.fromkeys(
        (Kind.SCORE, Kind.EXPLAIN, Kind.VERDICT, Kind.FACES, Kind.ORIGINAL, Kind.TEMPORAL), ENSEMBLE_INPUTS
    ),
    **dict.fromkeys((Kind.PREPROCESS, Kind.ORIGINAL_PREPROCESS), PREPROCESS_INPUTS),
    Kind.CLASSIFIER: CLASSIFIER_INPUTS,
    Kind.FRAME_CLASSIFIER: CLASSIFIER_INPUTS,
    Kind.TEMPORAL_CLASSIFIER: CLASSIFIER_INPUTS,
    Kind.SELECT: SELECT_INPUTS,
    Kind.ORIGINAL_SELECT: SELECT_INPUTS,
    Kind.TEMPORAL_SELECT: SELECT_INPUTS,
    Kind.STREAM: STREAM_INPUTS,
    Kind.MODEL_INFO: (),
}
MODEL_OUTPUTS: dict[Kind, tuple[str, ...]] = {
    Kind.SCORE: SCORE_OUTPUTS,
    Kind.EXPLAIN: EXPLAIN_OUTPUTS,
    Kind.VERDICT: VERDICT_OUTPUTS,
    Kind.FACES: FACES_OUTPUTS,
    Kind.ORIGINAL: SCORE_OUTPUTS,
    Kind.PREPROCESS: PREPROCESS_OUTPUTS,
    Kind.ORIGINAL_PREPROCESS: PREPROCESS_OUTPUTS,
    Kind.CLASSIFIER: CLASSIFIER_OUTPUTS,
    Kind.FRAME_CLASSIFIER: CLASSIFIER_OUTPUTS,
    Kind.TEMPORAL_CLASSIFIER: TEMPORAL_CLASSIFIER_OUTPUTS,
    Kind.SELECT: SELECT_OUTPUTS,
    Kind.ORIGINAL_SELECT: SELECT_OUTPUTS,
    Kind.TEMPORAL_SELECT: TEMPORAL_SELECT_OUTPUTS,
    Kind.TEMPORAL: TEMPORAL_OUTPUTS,
    Kind.STREAM: STREAM_OUTPUTS,
    Kind.MODEL_INFO: MODEL_INFO_OUTPUTS,
}


def optional_inputs(kind: Kind) -> frozenset[str]:
    """The inputs of ``kind`` a request may leave out: :data:`OPTIONAL_INPUTS`, and for the
    version-choosing steps their FACES too (an answer Triton's response cache gives back empty must
    reach the step, which names it, instead of a refusal by Triton that names nothing)."""
    names = set(MODEL_INPUTS[kind]) & OPTIONAL_INPUTS
    if kind in SELECTED_KINDS:
        names |= set(CLASSIFIER_INPUTS)
    return frozenset(names)


# --------------------------------------------------------------------------------------------
# Limits.

MIB = 1 << 20
#: One upload, in bytes: the preprocessing models refuse more, the web page refuses it first.
MAX_UPLOAD_BYTES = 256 * MIB
#: One frame's area in pixels (DCI 4K, 4096 x 2160); uploads and streams alike.
MAX_PIXELS = 4096 * 2160
#: Video packets read while looking for N decodable frames.
MAX_FRAMES_SCANNED = 3000
#: Seconds of demuxing and decoding one upload may take.
DECODE_TIMEOUT_S = 30.0
#: Codecs the stream model decodes (FFmpeg decoder names); other sources need ``--transcode``.
STREAM_CODECS = ("h264", "hevc", "vp8", "vp9")
#: ``score_every`` of a stream: 0 adapts the pace, 1..MAX scores every k-th frame.
MAX_SCORE_EVERY = 8
#: Per stream request: packets and bytes a client may send at once.
MAX_PACKETS_PER_REQUEST = 64
MAX_STREAM_REQUEST_BYTES = 16 * MIB
#: A stream that sends nothing for this long is dropped by Triton (its slot) and by the model.
STREAM_IDLE_US = 10_000_000

# --------------------------------------------------------------------------------------------
# Score modes: which model answers ``score``, and what combines with what.


class ModeError(ValueError):
    """Choices of a score request that do not combine; the message names them as the caller spells them."""


class Mode(Enum):
    """How a video is scored (``explain`` is a model and a command of its own).

    The CLI's flags, the JSON API's fields and the page's selector all end here: :meth:`from_choices`
    holds the one rule of what combines with what.
    """

    #: deepfake_<N>: the faithful score and every frame's score, of the main face.
    SCORE = "score"
    #: verdict_<N>: the clip's score alone (the trunk on the last frame only).
    VERDICT = "verdict"
    #: faces_<N>: every face followed, each scored.
    FACES = "faces"
    #: original_<N>: the original app's answer (its frames, dlib's detector, tight crops).
    ORIGINAL = "original"
    #: temporal_<N>: a trained temporal model's answer (all N frames together), where one is served.
    TEMPORAL = "temporal"

    @property
    def kind(self) -> Kind:
        return _MODE_KINDS[self]

    @property
    def outputs(self) -> tuple[str, ...]:
        return MODEL_OUTPUTS[self.kind]

    @property
    def score(self) -> Score:
        """The score this mode's PROB_FAKE is (the calibration its decision uses)."""
        return {Mode.ORIGINAL: Score.ORIGINAL, Mode.TEMPORAL: Score.TEMPORAL}.get(self, Score.DEEPFAKE)

    @property
    def frame_scores(self) -> bool:
        """Whether the answer holds every frame's score."""
        return self is not Mode.VERDICT

    def model(self, frames: int) -> str:
        return model_name(self.kind, frames)

    @classmethod
    def from_choices(
        cls,
        verdict_only: bool = False,
        all_faces: bool = False,
        original: bool = False,
        spell=None,
        temporal: bool = False,
    ) -> Mode:
        """The mode of the three choices users make (CLI flags, JSON API fields).

        Args:
            spell: how the caller names a choice in its messages (``"all_faces"`` ->
                ``"--all-faces"``); default: the names above.

        Raises:
            ModeError: choices that do not combine.
        """
        name = spell or (lambda choice: choice)
        if temporal:
            others = [
                choice
                for choice, chosen in (("all_faces", all_faces), ("verdict_only", verdict_only), ("original", original))
                if chosen
            ]
            if others:
                raise ModeError(
                    f"{name('temporal')} asks the trained temporal model; it cannot be combined with "
                    + " or ".join(name(choice) for choice in others)
                )
            return cls.TEMPORAL
        if all_faces and verdict_only:
            raise ModeError(
                f"{name('all_faces')} scores every frame of every face; it cannot be combined with "
                f"{name('verdict_only')}"
            )
        if original:
            if all_faces or verdict_only:
                raise ModeError(
                    f"{name('original')} gives the original app's answer (its first face, every frame "
                    f"scored); it cannot be combined with {name('all_faces')} or {name('verdict_only')}"
                )
            return cls.ORIGINAL
        if all_faces:
            return cls.FACES
        return cls.VERDICT if verdict_only else cls.SCORE


_MODE_KINDS = {
    Mode.SCORE: Kind.SCORE,
    Mode.VERDICT: Kind.VERDICT,
    Mode.FACES: Kind.FACES,
    Mode.ORIGINAL: Kind.ORIGINAL,
    Mode.TEMPORAL: Kind.TEMPORAL,
}

# --------------------------------------------------------------------------------------------
# Decisions: calibrations, operating points and what watches them (see calibration/).


class Score(Enum):
    """Which served score a calibration is fitted for: one per way a score is made.

    deepfake_<N>, verdict_<N>, explain_<N> and faces_<N>'s main face return the same PROB_FAKE (the
    faithful score of preprocess_<N>'s crops), so they share one; original_<N> scores the original
    app's crops and temporal_<N> another model, so each has its own. Each calibration also belongs
    to one classifier length and version (it sits in that version's folder).
    """

    DEEPFAKE = "deepfake"
    ORIGINAL = "original"
    TEMPORAL = "temporal"


#: The score each version-choosing step applies its calibration to.
SELECT_SCORES = {
    Kind.SELECT: Score.DEEPFAKE,
    Kind.ORIGINAL_SELECT: Score.ORIGINAL,
    Kind.TEMPORAL_SELECT: Score.TEMPORAL,
}
DECISION_FAKE = LABEL_FAKE
DECISION_REAL = LABEL_REAL
DECISION_UNCERTAIN = "UNCERTAIN"
DECISIONS = (DECISION_FAKE, DECISION_UNCERTAIN, DECISION_REAL)
#: Without a calibration the decision is the original app's rule: FAKE at PROB_FAKE >= 0.5
#: (argmax with a tie to FAKE), marked uncalibrated.
UNCALIBRATED_THRESHOLD = 0.5
#: Calibrations sit in the classifier version's folder they were fitted for, one per :class:`Score`.
CALIBRATION_PREFIX = "calibration_"
CALIBRATION_SUFFIX = ".json"
#: What ``calibrate`` (into its ``--out``) and ``train`` (beside its checkpoint) write, ready to install.
CALIBRATION_DOCUMENT = "calibration.json"
#: Each version folder's record of installs and rollbacks (JSON lines), and the installed files kept.
CALIBRATION_HISTORY_FILE = "calibration_history.jsonl"
CALIBRATION_ARCHIVE_DIR = "calibrations"


def calibration_file(score: Score) -> str:
    """The file name of ``score``'s calibration in a version folder: ``calibration_deepfake.json``."""
    return f"{CALIBRATION_PREFIX}{score.value}{CALIBRATION_SUFFIX}"


#: Keys of ``OPERATING_POINT``'s JSON document (and of the ``operating_point`` object of answers):
#: whether a calibration is in force, its two thresholds on PROB_FAKE (FAKE at or above
#: ``fake_threshold``, REAL below ``real_threshold``, UNCERTAIN between), the targets they were
#: chosen for, the FPR / TPR they gave on the set with 95 % intervals, the set, and the file's sha256.
OPERATING_POINT_KEYS = (
    "calibrated",
    "score",
    "fake_threshold",
    "real_threshold",
    "target_fpr",
    "target_fnr",
    "fpr",
    "tpr",
    "set",
    "real_videos",
    "fake_videos",
    "prior",
    "calibration_sha256",
)

#: Custom metrics of the python models (Triton's metrics port), for drift watching. Labels: ``model``
#: (the classifier, or the preprocessing model for videos), ``version``, ``score`` (:class:`Score`),
#: ``decision`` (:data:`DECISIONS`), ``calibrated`` (yes / no), ``faces`` (found / none).
METRIC_SCORE = "deepfake_score"
METRIC_DECISIONS = "deepfake_decisions_total"
METRIC_VIDEOS = "deepfake_videos_total"
METRIC_CALIBRATION_SHARE = "deepfake_calibration_decision_share"
METRIC_CALIBRATION_MEAN = "deepfake_calibration_score_mean"
METRIC_CALIBRATION_TARGET_FPR = "deepfake_calibration_target_fpr"
DRIFT_METRICS = (
    METRIC_SCORE,
    METRIC_DECISIONS,
    METRIC_VIDEOS,
    METRIC_CALIBRATION_SHARE,
    METRIC_CALIBRATION_MEAN,
    METRIC_CALIBRATION_TARGET_FPR,
)
#: The score histogram's upper bounds (Prometheus adds +Inf).
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# --------------------------------------------------------------------------------------------
# The bank of confirmed fakes (bank/) and what every answer says of it.

#: Triton's local response cache (``--cache-config local,size=``), which answers a repeat upload of
#: the same bytes from the preprocessing step: about 80 videos' crops at N = 20 (3 MiB each). Off
#: unless asked for (``deepfake-serve --response-cache``, ``TRITON_RESPONSE_CACHE_BYTES``): Triton
#: 2.51 stores an error answer of a cached model as an empty success, so a failure that is not the
#: bytes' fault (a stub killed mid-request, a decode timeout under load) would be repeated for those
#: bytes until the cache evicts them.
RESPONSE_CACHE_BYTES = 256 * (1 << 20)
#: Where the bank is: a SQLite file path or a ``postgresql://`` URL (unset: a SQLite file of the
#: user's, see ``bank.store.default_location``). Read by the server, the CLI and the page.
BANK_ENV = "DEEPFAKE_BANK"
#: vPDQ fingerprints (preprocessing/fingerprint.py): one PDQ hash per second of video (vPDQ's
#: default), over the first minute; the JSON document's format number.
SECONDS_PER_HASH = 1.0
FINGERPRINT_MAX_SECONDS = 60.0
FINGERPRINT_FORMAT = 1
#: PDQ's usual rule: two frames match within this Hamming distance of their 256-bit hashes.
PDQ_MATCH_DISTANCE = 31
#: Frames hashed with a PDQ quality below this are left out of matching (flat or blank frames).
PDQ_MIN_QUALITY = 50
#: A video matches an entry when at least this share of its own (the query's) usable frames match
#: a frame of the entry: a trimmed copy matches on the query side only, so the query side decides.
QUERY_MATCH_SHARE = 0.8
#: ``KNOWN_MATCH``'s ``status`` when the bank could not say (distinguishable from no match: null).
MATCH_UNAVAILABLE = "unavailable"
MATCH_FOUND = "match"
#: Keys of a match (``known_match`` when one was found).
KNOWN_MATCH_KEYS = ("status", "id", "label", "note", "similarity", "entry_similarity", "query_span", "entry_span")

# --------------------------------------------------------------------------------------------
# Answers as JSON: ``score --json`` lines, ``--output`` and ``evaluate``'s results files, the JSON API.

#: The key of the served model that answered, in every results line.
MODEL_KEY = "model"
#: The classifier version that answered and the sha256 of the checkpoint it was exported from.
MODEL_VERSION_KEY = "model_version"
CHECKPOINT_SHA256_KEY = "checkpoint_sha256"
#: The decision at the served operating point, the calibrated probability, and the point itself.
DECISION_KEY = "decision"
PROB_FAKE_CALIBRATED_KEY = "prob_fake_calibrated"
OPERATING_POINT_KEY = "operating_point"
#: What the bank of confirmed fakes says of the video.
KNOWN_MATCH_KEY = "known_match"

#: Keys of one JSON line, in this order, nothing else: what the answer says, then which classifier
#: version and checkpoint gave it (both null for a video the server refused).
SCORE_JSON_KEYS = (
    "video",
    "prob_fake",
    "frame_prob_fake_mean",
    "label",
    "confidence",
    "faces_found",
    "frames_decoded",
    "latency_ms",
    "error",
    MODEL_VERSION_KEY,
    CHECKPOINT_SHA256_KEY,
    DECISION_KEY,
    PROB_FAKE_CALIBRATED_KEY,
    OPERATING_POINT_KEY,
    KNOWN_MATCH_KEY,
)
#: Keys of a line of ``score --all-faces``: the same, then "is any face fake", the faces found in
#: all, and every face (one object per face with :data:`FACE_TRACK_JSON_KEYS`).
FACES_JSON_KEYS = (*SCORE_JSON_KEYS, "max_prob_fake", "faces_seen", "face_tracks")
FACE_TRACK_JSON_KEYS = ("prob_fake", "frame_prob_fake", "face_boxes", "face_found", "prominence")
#: Keys of a line of ``score --temporal``: the same, then how much each frame counted in the temporal
#: model's answer (``FRAME_WEIGHT``: one weight per frame, summing to 1).
TEMPORAL_JSON_KEYS = (*SCORE_JSON_KEYS, "frame_weight")
_MODE_JSON_KEYS = {Mode.FACES: FACES_JSON_KEYS, Mode.TEMPORAL: TEMPORAL_JSON_KEYS}


def json_keys(mode: Mode) -> tuple[str, ...]:
    """The keys of a JSON line of ``mode``'s answers, in order (a refused video's line has them too, null)."""
    return _MODE_JSON_KEYS.get(mode, SCORE_JSON_KEYS)


@dataclass(frozen=True)
class AnswerFact:
    """A fact an answer carries beyond the graph's outputs: who answered, and later how it was decided.

    Attributes:
        key: its JSON key wherever answers are written (results files, the JSON API).
        description: what it says, for the reference docs.
    """

    key: str
    description: str


#: The facts every answer carries, by key. Results files are resumed only with the same facts.
ANSWER_FACTS: dict[str, AnswerFact] = {
    fact.key: fact
    for fact in (
        AnswerFact(MODEL_KEY, "the served model that answered, e.g. deepfake_20 (a results file holds one model's)"),
        AnswerFact(
            MODEL_VERSION_KEY,
            "the classifier version that answered (an integer; the latest served unless the request named one)",
        ),
        AnswerFact(
            CHECKPOINT_SHA256_KEY,
            "sha256 of the checkpoint file that version was exported from, to trace and reproduce the answer",
        ),
        AnswerFact(
            DECISION_KEY,
            "FAKE, REAL or UNCERTAIN at the operating point served for that version (not `label`, the "
            "original app's argmax): without a calibration, FAKE at prob_fake >= 0.5, marked uncalibrated",
        ),
        AnswerFact(
            PROB_FAKE_CALIBRATED_KEY,
            "prob_fake through the version's calibration (the share of fakes among videos so scored, at the "
            "calibration set's share of fakes or the prior given); equal to prob_fake when uncalibrated",
        ),
        AnswerFact(
            OPERATING_POINT_KEY,
            "the operating point the decision was made at: its thresholds, the false-positive rate it was "
            "chosen for, the rates it gave on the calibration set with 95 % intervals, and that set",
        ),
        AnswerFact(
            KNOWN_MATCH_KEY,
            "what the bank of confirmed fakes says of the video's fingerprint: null when no entry matches; the "
            "entry (id, label, note, similarity: the share of the video's frames that matched, the matched time "
            "spans) when one does; status unavailable with the reason when the bank could not be asked",
        ),
    )
}
#: The tensor each answer fact is read from (the model key is the name the client called).
ANSWER_FACT_TENSORS = {
    MODEL_VERSION_KEY: "CLASSIFIER_VERSION",
    CHECKPOINT_SHA256_KEY: "CHECKPOINT_SHA256",
    DECISION_KEY: "DECISION",
    PROB_FAKE_CALIBRATED_KEY: "PROB_FAKE_CALIBRATED",
    OPERATING_POINT_KEY: "OPERATING_POINT",
    KNOWN_MATCH_KEY: "KNOWN_MATCH",
}

# --------------------------------------------------------------------------------------------
# Console commands (``[project.scripts]`` in pyproject.toml) and the module each also runs as.

CONSOLE_COMMANDS = {
    "deepfake": "client",
    "deepfake-serve": "serve",
    "deepfake-export": "export",
    "deepfake-train": "train",
}


def program_name(module: str) -> str:
    """How the running command was started, for its usage lines: ``deepfake ...`` or ``python -m client ...``."""
    started_as = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if CONSOLE_COMMANDS.get(started_as) == module:
        return started_as
    return f"python -m {module}"


# --------------------------------------------------------------------------------------------
# Exit codes of every command (the clients, the server-side commands, the container's entrypoint).


class Exit(IntEnum):
    """Exit statuses; several meanings share a number where the commands agree on it."""

    OK = 0
    #: Some video could not be scored, a model is not ready, the server failed, an evaluation is
    #: unfinished, the deployment is unhealthy.
    FAILED = 1
    #: Bad arguments, a bad setup or configuration, an unusable results file.
    USAGE = 2
    #: The export tool lacks what a step needs (TensorRT on a machine without it).
    UNAVAILABLE = 2
    #: The container's entrypoint: a python-backend stub died and was not restarted.
    STUB_DIED = 3
    #: Interrupted (Ctrl-C): 128 + SIGINT.
    INTERRUPTED = 130
