"""What a face pipeline returns (:class:`~preprocessing.FacePipeline` and
:class:`~preprocessing.original.OriginalPipeline`): plain numpy, no detector imports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaceTrackResult:
    """One face through the clip (see :attr:`PreprocessResult.tracks`).

    Attributes:
        faces: ``float32 [N, 3, 112, 112]``: its crops, as :attr:`PreprocessResult.faces`.
        boxes: ``float32 [N, 4]``: the regions cropped.
        found: ``bool [N]``: frames it was detected (or placed) in; elsewhere the nearest frame's box.
        prominence: Sum over the frames it was found in of ``sqrt(box area) * confidence``: the
            order of the tracks, and what chose the main face.
    """

    faces: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    prominence: float


@dataclass(frozen=True)
class PreprocessResult:
    """What the pipeline made of one input.

    Attributes:
        faces: ``float32 [N, 3, 112, 112]``: BGR, ImageNet-normalised face crops.
        boxes: ``float32 [N, 4]``: (x1, y1, x2, y2) of the region actually
            cropped, in pixels of the displayed (upright) frame.
        found: ``bool [N]``: whether the followed face was detected in that
            frame, or placed there between two detections (``window_every``);
            False: the nearest frame's box was reused.
        frames_decoded: Distinct real frames used (< N when the clip was short
            and its last frame was repeated).
        frame_indices: ``int64 [N]``: display-order index of each frame in the clip.
        frame_times: ``float64 [N]``: when each frame is shown, in seconds from the start of
            the video (see :class:`~preprocessing.decode.DecodedClip`); 0 for a still image.
        timings: Seconds spent in ``"decode"``, ``"detect"`` (including
            downscaling and face tracking, not counting waits for frames) and
            ``"crop"`` (crop, resize, normalise). Decoding and detection run at
            the same time, so the sum exceeds the wall time.
        source_size: Displayed frame size (width, height).
        wall_seconds: Wall time of the whole call.
        tracks: The faces of the clip, most prominent first, at most ``config.max_faces``: the
            first is the main face (the same arrays as ``faces``, ``boxes`` and ``found``).
        faces_seen: Face tracks found in the clip, those beyond ``max_faces`` included.
    """

    faces: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    frames_decoded: int
    frame_indices: np.ndarray
    frame_times: np.ndarray
    timings: dict[str, float]
    source_size: tuple[int, int]
    wall_seconds: float = 0.0
    tracks: tuple[FaceTrackResult, ...] = ()
    faces_seen: int = 0
