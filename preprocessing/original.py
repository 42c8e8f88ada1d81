"""The original app's preprocessing, served: its frames, its face detector, its crops.

Where :class:`~preprocessing.FacePipeline` is built for speed and crowds (MTCNN on a downscaled
frame, faces followed through the clip, sub-pixel crops with a margin), :class:`OriginalPipeline`
reproduces the scoring path of the app the published weights come from (../shared/REFERENCE.md,
"The original scoring path"), step by step:

* frames: the first N frames OpenCV's ``VideoCapture`` returns, BGR ``uint8`` as it returns them
  (OpenCV's own FFmpeg reads them, from memory: its pixel conversion, its rotation handling);
* detector: dlib's HOG frontal face detector, upsampling once, on the BGR frame, as
  ``face_recognition.face_locations`` calls it; boxes clipped to the frame the same way;
* face: the first box dlib returns, cropped tight on whole pixels, no margin;
* no face in a frame: the whole frame;
* resize: PIL bilinear to 112 x 112 (torchvision's ``Resize`` on a PIL image), then the
  ``ToTensor`` / ``Normalize`` arithmetic of :func:`~preprocessing.crop.normalize_faces`.

It differs from the app where the app was broken, and says so: a clip shorter than N frames has
its last frame repeated (the app crashed; the score, which comes from the last frame, is the one
the app would have given), and no face in any frame is refused with :class:`NoFaceError` (the app
showed a "no faces" page). The app ran the detector a second time on each frame for its
thumbnails; this runs it once, and spreads the frames over ``detect_threads`` threads (dlib's
detector releases the GIL).

The input is checked as by :func:`~preprocessing.decode.decode_frames` before OpenCV sees it: the
size limit, and the same allow-list of formats by magic bytes (no playlists or scripts that open
other files).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import dlib
import numpy as np
from PIL import Image

from contract import FACE_SIZE
from preprocessing.crop import normalize_faces
from preprocessing.decode import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, sniff_container
from preprocessing.errors import ConfigError, InputError, LimitError, NoFaceError
from preprocessing.result import FaceTrackResult, PreprocessResult

#: ``face_recognition.face_locations``' default: the image is upsampled once before the search.
UPSAMPLE = 1
#: Most detector threads one pipeline may use.
MAX_DETECT_THREADS = 64


@dataclass(frozen=True)
class OriginalConfig:
    """Settings of an :class:`OriginalPipeline`. None of them changes a score.

    Attributes:
        frames: N, the number of frames (the model's sequence length).
        detect_threads: Frames searched for faces at the same time (one dlib detector each).
        max_bytes: Largest accepted input, in bytes.
        max_pixels: Largest accepted frame area, width x height.
        decode_timeout_s: Wall-time limit for reading the N frames, in seconds (checked between
            frames).
    """

    frames: int
    detect_threads: int = 1
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S

    def __post_init__(self) -> None:
        for name, least in (("frames", 1), ("detect_threads", 1), ("max_bytes", 1), ("max_pixels", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.detect_threads > MAX_DETECT_THREADS:
            raise ConfigError(f"detect_threads must be at most {MAX_DETECT_THREADS}, got {self.detect_threads}")
        if not isinstance(self.decode_timeout_s, (int, float)) or not self.decode_timeout_s > 0:
            raise ConfigError(f"decode_timeout_s must be a positive number of seconds, got {self.decode_timeout_s!r}")

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> OriginalConfig:
        """Builds the settings from string parameters (a Triton model config's ``parameters``).

        Raises:
            ConfigError: A parameter is unknown, missing or out of range (the message names it).
        """
        kinds = {"frames": int, "detect_threads": int, "max_bytes": int, "max_pixels": int, "decode_timeout_s": float}
        unknown = sorted(set(params) - set(kinds))
        if unknown:
            raise ConfigError(f"unknown parameters {unknown}; known: {sorted(kinds)}")
        if "frames" not in params:
            raise ConfigError("the 'frames' parameter is required")
        values = {}
        for key, text in params.items():
            try:
                values[key] = kinds[key](text)
            except ValueError as exc:
                raise ConfigError(f"{key} must be {kinds[key].__name__}, got {text!r}") from exc
        return cls(**values)


@dataclass(frozen=True)
class OriginalFrames:
    """What OpenCV read: the first frames of the input, as the app had them."""

    frames: list[np.ndarray]
    times: list[float]

    @property
    def source_size(self) -> tuple[int, int]:
        """(width, height) of the first frame."""
        return self.frames[0].shape[1], self.frames[0].shape[0]


def read_frames(data: bytes, config: OriginalConfig) -> OriginalFrames:
    """The first ``config.frames`` frames of ``data``, read by OpenCV's ``VideoCapture`` from memory.

    Raises:
        InputError: The input is refused by the allow-list or a limit, or OpenCV reads no frame
            from it (the message says which).
    """
    if len(data) > config.max_bytes:
        raise LimitError("max_bytes", len(data), config.max_bytes, "bytes uploaded")
    label = sniff_container(data)
    started = time.monotonic()
    # OpenCV's wrapper does not hold the stream: this name keeps it alive until release().
    stream = io.BytesIO(data)
    capture = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    try:
        if not capture.isOpened():
            raise InputError(f"unreadable {label} file: OpenCV's video reader cannot open it")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > config.max_pixels:
            raise LimitError("max_pixels", width * height, config.max_pixels, f"frame of {width}x{height}")
        frames: list[np.ndarray] = []
        times: list[float] = []
        while len(frames) < config.frames:
            elapsed = time.monotonic() - started
            if elapsed > config.decode_timeout_s:
                raise LimitError("decode_timeout_s", elapsed, config.decode_timeout_s, "seconds spent decoding")
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise InputError(f"unusable {label} file: OpenCV returned a {frame.dtype} frame of shape {frame.shape}")
            if frame.shape[0] * frame.shape[1] > config.max_pixels:
                raise LimitError(
                    "max_pixels",
                    frame.shape[0] * frame.shape[1],
                    config.max_pixels,
                    f"frame of {frame.shape[1]}x{frame.shape[0]}",
                )
            frames.append(frame)
            times.append(max(capture.get(cv2.CAP_PROP_POS_MSEC), 0.0) / 1000.0)
    finally:
        capture.release()
        stream.close()
    if not frames:
        raise InputError(f"no decodable video frame: OpenCV's video reader returned no frame from this {label} file")
    return OriginalFrames(frames=frames, times=times)


def first_face(detector, frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The app's face box in ``frame``: dlib's first detection, clipped to the frame, or None.

    Returns:
        ``(left, top, right, bottom)`` in whole pixels, the slice ``frame[top:bottom, left:right]``.
    """
    found = detector(frame, UPSAMPLE)
    if len(found) == 0:
        return None
    rect = found[0]
    height, width = frame.shape[:2]
    # face_recognition's _trim_css_to_bounds, on (top, right, bottom, left).
    left, top = max(rect.left(), 0), max(rect.top(), 0)
    right, bottom = min(rect.right(), width), min(rect.bottom(), height)
    if right <= left or bottom <= top:
        # A box wholly outside the frame (dlib's windows lie inside it, so this is not seen in
        # practice): the app's crop would have been empty and its transform would have crashed.
        return None
    return left, top, right, bottom


def resize_crop(crop_bgr: np.ndarray) -> np.ndarray:
    """torchvision's ``ToPILImage`` then ``Resize((112, 112))``: PIL's bilinear resize, ``uint8 [112, 112, 3]``."""
    image = Image.fromarray(np.ascontiguousarray(crop_bgr), mode="RGB")
    return np.asarray(image.resize((FACE_SIZE, FACE_SIZE), Image.BILINEAR))


class OriginalPipeline:
    """Bytes in, the original app's face tensor out (see the module's documentation).

    Returns the same :class:`~preprocessing.PreprocessResult` as :class:`~preprocessing.FacePipeline`,
    so the same model adapter and clients serve it. ``found`` is True where dlib found a face;
    ``boxes`` are the whole-pixel regions cropped (the whole frame where no face was found).

    Example::

        pipeline = OriginalPipeline(OriginalConfig(frames=20, detect_threads=2))
        result = pipeline(open("clip.mp4", "rb").read())
    """

    def __init__(self, config: OriginalConfig) -> None:
        self.config = config
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=config.detect_threads, thread_name_prefix="dlib")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _detect(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        # One detector per thread: dlib's detector keeps scratch buffers of its own.
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = dlib.get_frontal_face_detector()
        return first_face(detector, frame)

    def __call__(self, data: bytes | bytearray | memoryview | np.ndarray) -> PreprocessResult:
        """Run the original scoring path's preprocessing on one uploaded file.

        Raises:
            InputError: The input cannot be used (the message says why); :class:`NoFaceError`
                when dlib finds no face in any of the frames.
        """
        cfg = self.config
        started = time.perf_counter()
        raw = data if isinstance(data, bytes) else bytes(data)
        decoded = read_frames(raw, cfg)
        read_at = time.perf_counter()
        # Searched on the pool while the caller waits; OpenCV has already handed every frame over.
        pending: list[Future] = [self._pool.submit(self._detect, frame) for frame in decoded.frames]
        found_boxes = [future.result() for future in pending]
        detected_at = time.perf_counter()
        if all(box is None for box in found_boxes):
            raise NoFaceError(
                f"no face found in any of the {len(decoded.frames)} decoded frames (dlib's HOG detector found no face)"
            )
        crops, regions, found = [], [], []
        for frame, box in zip(decoded.frames, found_boxes):
            height, width = frame.shape[:2]
            left, top, right, bottom = box if box is not None else (0, 0, width, height)
            crops.append(resize_crop(frame[top:bottom, left:right]))
            regions.append((left, top, right, bottom))
            found.append(box is not None)
        count = len(decoded.frames)
        # A short clip repeats its last frame: the score, taken from the last frame, is unchanged.
        position = np.minimum(np.arange(cfg.frames), count - 1)
        # normalize_faces takes RGB and makes channel 0 its blue; these crops are BGR already.
        faces = normalize_faces(np.stack(crops)[..., ::-1])[position]
        boxes = np.asarray(regions, np.float32)[position]
        found_flags = np.asarray(found, np.bool_)[position]
        finished = time.perf_counter()
        main = FaceTrackResult(faces=faces, boxes=boxes, found=found_flags, prominence=float(np.sum(found_flags)))
        return PreprocessResult(
            faces=faces,
            boxes=boxes,
            found=found_flags,
            frames_decoded=count,
            frame_indices=position.astype(np.int64),
            frame_times=np.asarray(decoded.times, np.float64)[position],
            timings={"decode": read_at - started, "detect": detected_at - read_at, "crop": finished - detected_at},
            source_size=decoded.source_size,
            wall_seconds=finished - started,
            tracks=(main,),
            faces_seen=int(any(found)),
        )
