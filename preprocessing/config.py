"""Settings of a face pipeline, with their defaults and checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from preprocessing.crop import DEFAULT_MARGIN, DEFAULT_SHIFT_Y, DEFAULT_SQUARE
from preprocessing.decode import (
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FRAMES_SCANNED,
    DEFAULT_MAX_PIXELS,
    SELECTIONS,
)
from preprocessing.detect import (
    DEFAULT_DETECT_SIZE,
    DEFAULT_MIN_FACE_SIZE,
    DEFAULT_THRESHOLDS,
    check_device_name,
    resolve_device,
)
from preprocessing.errors import ConfigError
from preprocessing.track import DEFAULT_IOU_THRESHOLD

#: Most faces one input may return: the classifier's largest batch, so that they are scored in one call.
MAX_FACES = 8

#: Default least MTCNN confidence for a detection to count as a face.
DEFAULT_MIN_FACE_PROB = 0.9

# MTCNN's first stage scans 12-pixel windows: smaller detection frames find nothing.
_MIN_DETECT_SIZE = 32
_MIN_MTCNN_FACE = 12

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a :class:`~preprocessing.FacePipeline` needs to know.

    Attributes:
        frames: N, the number of face crops per input (the model's sequence length).
        selection: ``"first"`` (the first N frames, what the published weights
            were trained on) or ``"uniform"`` (N frames spread over the clip).
        detect_size: Longest side, in pixels, of the frames MTCNN sees. 640 keeps
            MTCNN near 1.6 s for 20 frames of 1080p on 2 CPU cores (1920: 11.8 s)
            and still finds faces down to about 60 px in 1080p.
        detect_every: Key-frame interval of face detection. 1 searches every frame
            whole. k > 1 searches every k-th frame and the last one whole and follows
            the faces in between by searching small windows around them (see
            :meth:`~preprocessing.FaceDetector.detect_tracked`). Cheaper when few
            faces are in the picture (each costs one small MTCNN window per frame);
            a face entering between two key frames is found from the next key frame on.
        max_followed: With ``detect_every`` > 1, the most faces searched in windows at a
            time, the most prominent so far (0: every face). Each costs one small MTCNN
            pass per frame; the followed face is chosen among those searched.
        window_every: With ``detect_every`` > 1, the interval of the frames where the
            followed faces are searched in their windows (key frames always are). In
            the frames between, a face found on both sides gets boxes interpolated
            linearly between its two detections, and counts as found there.
        margin: Fraction of the crop side added on each side of the face box.
        square: Crop a square of side = face box width (like the dlib boxes of training).
        shift_y: Move the crop centre down by this fraction of the face box
            height (MTCNN boxes start higher on the forehead than dlib's).
        min_face_size: Smallest face MTCNN looks for, in detection-frame pixels.
        thresholds: MTCNN stage thresholds (P-Net, R-Net, O-Net).
        min_face_prob: Least MTCNN confidence for a detection to count as a face.
        iou_threshold: Least IoU that continues a face track into the next frame.
        max_faces: Faces cropped and returned per input, the most prominent tracks first
            (1: the followed face alone). At most :data:`MAX_FACES` (the classifier's
            batch). With ``detect_every`` > 1 every returned face must be followed in every
            frame, so ``max_followed`` must then be 0 (every face) or at least ``max_faces``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"`` for MTCNN.
        max_bytes: Largest accepted input, in bytes (default 256 MiB).
        max_pixels: Largest accepted frame area, width x height (default 4096 x 2160).
        max_frames_scanned: Most video frames (packets) read for one input while
            looking for N decodable frames (default 3000).
        decode_timeout_s: Wall-time limit for demuxing and decoding one input,
            in seconds (default 30).
        decode_threads: Decoder threads per input (default 1). Always a fixed count: left to
            FFmpeg (0), it follows the machine's core count, and which frames of a damaged
            file decode could then depend on the machine.
    """

    frames: int
    selection: str = "first"
    detect_size: int = DEFAULT_DETECT_SIZE
    detect_every: int = 1
    max_followed: int = 0
    window_every: int = 1
    margin: float = DEFAULT_MARGIN
    square: bool = DEFAULT_SQUARE
    shift_y: float = DEFAULT_SHIFT_Y
    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS
    min_face_prob: float = DEFAULT_MIN_FACE_PROB
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    device: str = "cpu"
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames_scanned: int = DEFAULT_MAX_FRAMES_SCANNED
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S
    decode_threads: int = 1
    max_faces: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", _thresholds(self.thresholds))
        _check_int("frames", self.frames, 1)
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        _check_int("detect_size", self.detect_size, _MIN_DETECT_SIZE)
        _check_int("detect_every", self.detect_every, 1)
        _check_int("max_followed", self.max_followed, 0)
        _check_int("window_every", self.window_every, 1)
        _check_float("margin", self.margin, -0.49, 2.0)
        if not isinstance(self.square, bool):
            raise ConfigError(f"square must be a bool, got {self.square!r}")
        _check_float("shift_y", self.shift_y, -1.0, 1.0)
        _check_int("min_face_size", self.min_face_size, _MIN_MTCNN_FACE)
        _check_float("min_face_prob", self.min_face_prob, 0.0, 1.0)
        _check_float("iou_threshold", self.iou_threshold, 0.0, 1.0)
        check_device_name(self.device)
        _check_int("max_bytes", self.max_bytes, 1)
        _check_int("max_pixels", self.max_pixels, 1)
        _check_int("max_frames_scanned", self.max_frames_scanned, self.frames)
        _check_float("decode_timeout_s", self.decode_timeout_s, 0.0, math.inf, low_open=True)
        _check_int("decode_threads", self.decode_threads, 1)
        _check_int("max_faces", self.max_faces, 1)
        if self.max_faces > MAX_FACES:
            raise ConfigError(f"max_faces must be <= {MAX_FACES} (the classifier's batch), got {self.max_faces}")
        if self.detect_every > 1 and 0 < self.max_followed < self.max_faces:
            raise ConfigError(
                f"max_followed={self.max_followed} follows fewer faces than max_faces={self.max_faces} "
                "returns: every returned face must be followed in every frame (make max_followed 0 or "
                f">= {self.max_faces})"
            )

    def check_device(self) -> None:
        """Raise :class:`ConfigError` unless ``device`` is usable on this machine."""
        resolve_device(self.device)

    @classmethod
    def from_parameters(
        cls, params: Mapping[str, object], *, frames: int | None = None, ignore: Iterable[str] = ()
    ) -> PipelineConfig:
        """Build a config from string values, e.g. a Triton model config's ``parameters``.

        Keys are the field names. Values are strings (``"0.06"``, ``"true"``,
        ``"0.6,0.7,0.7"`` for ``thresholds``) or Triton's
        ``{"string_value": "..."}`` objects. Missing keys keep their defaults.

        Args:
            params: Field name to value.
            frames: N, when the caller knows it from elsewhere (e.g. the model
                name); must agree with ``params["frames"]`` if both are given.
            ignore: Keys that belong to the caller and are skipped.

        Raises:
            ConfigError: An unknown key, a value that does not parse, or a
                value out of range (the message names the key).
        """
        skipped = set(ignore)
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for key, raw in params.items():
            if key in skipped:
                continue
            if key not in known:
                raise ConfigError(f"unknown pipeline parameter {key!r}; known: {', '.join(sorted(known))}")
            values[key] = _parse(key, _unwrap(key, raw))
        if frames is not None:
            if "frames" in values and values["frames"] != frames:
                raise ConfigError(f"parameter frames={values['frames']} contradicts frames={frames}")
            values["frames"] = frames
        if "frames" not in values:
            raise ConfigError("parameter 'frames' is required")
        return cls(**values)


def _unwrap(key: str, raw: object) -> str:
    if isinstance(raw, Mapping):
        if "string_value" not in raw:
            raise ConfigError(f"parameter {key!r} has no string_value: {raw!r}")
        raw = raw["string_value"]
    if not isinstance(raw, str):
        raise ConfigError(f"parameter {key!r} must be a string, got {type(raw).__name__}")
    return raw.strip()


_INT_FIELDS = frozenset(
    {
        "max_faces",
        "frames",
        "detect_size",
        "detect_every",
        "max_followed",
        "window_every",
        "min_face_size",
        "max_bytes",
        "max_pixels",
        "max_frames_scanned",
        "decode_threads",
    }
)
_FLOAT_FIELDS = frozenset({"margin", "shift_y", "min_face_prob", "iou_threshold", "decode_timeout_s"})


def _parse(key: str, text: str) -> object:
    try:
        if key in _INT_FIELDS:
            return int(text)
        if key in _FLOAT_FIELDS:
            return float(text)
    except ValueError:
        kind = "an integer" if key in _INT_FIELDS else "a number"
        raise ConfigError(f"parameter {key!r} must be {kind}, got {text!r}") from None
    if key == "square":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"parameter 'square' must be true or false, got {text!r}")
    if key == "thresholds":
        parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"parameter 'thresholds' must be three numbers like 0.6,0.7,0.7, got {text!r}") from None
    return text


def _thresholds(value: object) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"thresholds must be three numbers, got {value!r}") from None
    if len(numbers) != 3 or not all(0.0 < v < 1.0 for v in numbers):
        raise ConfigError(f"thresholds must be three numbers between 0 and 1, got {value!r}")
    return numbers  # type: ignore[return-value]


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _check_float(name: str, value: object, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bound = f"> {low}" if low_open else f">= {low}"
        upper = "" if math.isinf(high) else f" and <= {high}"
        raise ConfigError(f"{name} must be {bound}{upper}, got {value}")
