"""Augmentations that model what re-uploading does to a video, made as new video files.

The crops must stay the served crops, so nothing here touches a crop. Each training video is
decoded (the frames the served preprocessing takes: :func:`preprocessing.decode_frames` with the
served ``frames``, ``selection`` and limits), changed as a platform changes an upload, encoded again
with H.264 into a new MP4, and that file goes through the server's ``preprocess_<N>`` like any video:

=============  =======================================================================================
name           what is done to the frames before they are encoded again
=============  =======================================================================================
``recompress`` nothing: encoded at CRF 38, a heavy re-compression (blocking, lost fine texture)
``downscale``  scaled to 60 % of each side (area interpolation), encoded at CRF 23: a smaller rendition
``blur``       Gaussian blur of sigma 1.2 px, encoded at CRF 23: a soft re-encode or a filter
=============  =======================================================================================

The variant holds just the frames the served preprocessing takes from the original (the first N,
or N spread over the clip for ``uniform``: the variant's N frames are then exactly those), so it
is cheap to make. The encoder runs on one thread without x264's macroblock tree, which makes its
bytes a function of the frames (the same variant, the same cache key, in every run). A variant is
made once: ``<cache>/augmented/<recipe>/<video sha256>.<name>.json`` remembers the sha256 of its
bytes, whose crops are in the crop cache.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from preprocessing import InputError, PipelineConfig, decode_frames

from .errors import TrainError
from .files import canonical_json, read_json, sha256_text, write_json_atomic

#: Bump when a recipe changes: the variants' cache keys change with it.
RECIPE_VERSION = 1
AUGMENTED_FOLDER = "augmented"
RECIPE_KEY_CHARS = 16
CODEC = "libx264"
CONTAINER = "mp4"
PIXEL_FORMAT = "yuv420p"
FRAME_RATE = 25
#: The colour matrix the served decoder reads frames with (BT.601, like OpenCV): the same one writes them.
COLORSPACE = "ITU601"
#: x264 without its macroblock tree: the same frames give the same bytes on every run.
X264_PARAMS = "no-mbtree=1"
NONE = "none"


@dataclass(frozen=True)
class Augmentation:
    """One re-encoding recipe.

    Attributes:
        name: how ``--augment`` names it.
        description: what it models.
        scale: factor on each side of the frame (1: unchanged).
        blur_sigma: Gaussian blur in pixels (0: none).
        crf: x264's constant rate factor (higher: fewer bits, more loss).
    """

    name: str
    description: str
    scale: float = 1.0
    blur_sigma: float = 0.0
    crf: int = 23


AUGMENTATIONS = {
    augmentation.name: augmentation
    for augmentation in (
        Augmentation("recompress", "re-encoded with H.264 at CRF 38: a heavy re-compression", crf=38),
        Augmentation("downscale", "scaled to 60% of each side, re-encoded at CRF 23: a smaller rendition", scale=0.6),
        Augmentation("blur", "Gaussian blur of sigma 1.2 px, re-encoded at CRF 23: a soft re-encode", blur_sigma=1.2),
    )
}
DEFAULT_AUGMENT = tuple(AUGMENTATIONS)


def parse_augment(text: str) -> tuple[str, ...]:
    """``--augment``: ``none`` or comma-separated names of :data:`AUGMENTATIONS`, each once.

    Raises:
        TrainError: an unknown or repeated name.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if names == (NONE,):
        return ()
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown or not names:
        raise TrainError(
            f"--augment: unknown augmentation(s) {', '.join(unknown) or repr(text)}; "
            f"give '{NONE}' or some of {', '.join(AUGMENTATIONS)}"
        )
    if len(set(names)) != len(names):
        raise TrainError(f"--augment names an augmentation twice: {text}")
    return names


def decode_settings(parameters: dict[str, str], frames: int) -> PipelineConfig:
    """The served preprocessing's frame choice and limits, from its config's parameters."""
    known = {field.name for field in dataclasses.fields(PipelineConfig)}
    return PipelineConfig.from_parameters(
        parameters, frames=frames, ignore=[key for key in parameters if key not in known]
    )


def _even(value: float) -> int:
    return max(2, round(value / 2.0) * 2)


def _changed(frame: np.ndarray, augmentation: Augmentation) -> np.ndarray:
    height, width = frame.shape[:2]
    size = (_even(width * augmentation.scale), _even(height * augmentation.scale))
    if size != (width, height):
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    if augmentation.blur_sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), augmentation.blur_sigma)
    return np.ascontiguousarray(frame)


def augment(data: bytes, augmentation: Augmentation, config: PipelineConfig) -> bytes:
    """The variant of one video: the served frames, changed, encoded again (MP4, H.264).

    Raises:
        InputError: the video cannot be decoded with the served settings.
    """
    clip = decode_frames(
        data,
        config.frames,
        config.selection,
        max_bytes=config.max_bytes,
        max_pixels=config.max_pixels,
        max_frames_scanned=config.max_frames_scanned,
        decode_timeout_s=config.decode_timeout_s,
        threads=config.decode_threads,
    )
    frames = [_changed(frame, augmentation) for frame in clip.frames[: max(1, clip.frames_decoded)]]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=CONTAINER) as out:
        stream = out.add_stream(
            CODEC, rate=FRAME_RATE, options={"crf": str(augmentation.crf), "x264-params": X264_PARAMS}
        )
        stream.codec_context.thread_count = 1
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = PIXEL_FORMAT
        stream.codec_context.time_base = Fraction(1, FRAME_RATE)
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format=PIXEL_FORMAT, dst_colorspace=COLORSPACE
            )
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


class AugmentCache:
    """``<root>/augmented/<recipe>/``: which bytes (sha256) each video's variant has."""

    def __init__(self, root: Path, config: PipelineConfig) -> None:
        self.root = Path(root) / AUGMENTED_FOLDER
        self.config = config

    def recipe_key(self, augmentation: Augmentation) -> str:
        recipe = {
            "version": RECIPE_VERSION,
            "augmentation": dataclasses.asdict(augmentation),
            "frames": self.config.frames,
            "selection": self.config.selection,
            "codec": CODEC,
            "x264_params": X264_PARAMS,
        }
        return sha256_text(canonical_json(recipe))[:RECIPE_KEY_CHARS]

    def _path(self, sha256: str, augmentation: Augmentation) -> Path:
        return self.root / self.recipe_key(augmentation) / f"{sha256}.{augmentation.name}.json"

    def lookup(self, sha256: str, augmentation: Augmentation) -> str | None:
        """The sha256 of the variant's bytes when it was made before, else None."""
        path = self._path(sha256, augmentation)
        return str(read_json(path)["sha256"]) if path.is_file() else None

    def remember(self, sha256: str, augmentation: Augmentation, variant_sha256: str) -> None:
        write_json_atomic(self._path(sha256, augmentation), {"sha256": variant_sha256})


def make_variant(data: bytes, augmentation: Augmentation, config: PipelineConfig) -> tuple[bytes | None, str | None]:
    """``(variant bytes, None)``, or ``(None, reason)`` when the video cannot be re-encoded."""
    try:
        return augment(data, augmentation, config), None
    except InputError as error:
        return None, f"cannot make the {augmentation.name} variant: {error}"
