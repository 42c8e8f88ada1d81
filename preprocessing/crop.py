"""Face crops and the classifier's input normalisation.

Crop geometry. The published weights were trained on tight dlib HOG boxes
(``face_recognition.face_locations``): square, about as wide as the face,
from the eyebrows to the chin. MTCNN boxes are taller (they include the
forehead). Measured here on real faces (``skimage.data.astronaut()`` and two
portrait photographs, dlib 20.0 HOG against facenet-pytorch MTCNN), a dlib box
is a square whose side is 0.95-1.04 x the MTCNN box width, centred
0.04-0.10 x the MTCNN box height lower. The defaults reproduce that:

* ``square=True``: a square of side = MTCNN box width;
* ``shift_y=0.06``: centre moved down by 6 % of the MTCNN box height;
* ``margin=0.0``: no margin (the training boxes had none).

With these defaults the crop overlaps the dlib box with IoU 0.81-0.85 on those
faces (the raw MTCNN box: 0.59-0.75). On small faces (30-70 px wide, a crowd
at 1080p) dlib boxes are relatively wider (about 1.15 x the MTCNN width) and
both choices overlap them equally (IoU 0.53-0.81); deepfake inputs are mostly
large faces, which the defaults favour.

Normalisation. The training frames came from OpenCV and reached ``ToTensor``
unchanged, so the tensor is BGR: channel 0 is blue. ``Normalize`` then used
the ImageNet (RGB) constants by channel index, i.e. blue is normalised with
the red mean/std. :func:`normalize_faces` does exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from contract import FACE_SIZE

#: ImageNet mean, applied by channel index to BGR data (as in training).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet standard deviation, applied by channel index to BGR data.
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Default fraction of the crop side added on every side of the face box.
DEFAULT_MARGIN = 0.0
#: Default: crop a square of side = face box width (dlib-like).
DEFAULT_SQUARE = True
#: Default downward shift of the crop centre, as a fraction of the face box height.
DEFAULT_SHIFT_Y = 0.06

_MAX_PIXEL = 255.0


def crop_box(
    box: Sequence[float],
    frame_size: tuple[int, int],
    margin: float = DEFAULT_MARGIN,
    square: bool = DEFAULT_SQUARE,
    shift_y: float = DEFAULT_SHIFT_Y,
) -> np.ndarray:
    """The region actually cropped for a detected face box.

    A continuous function of the box: no rounding to whole pixels, so that the arithmetic noise
    in a detector's box (a different thread count, instruction set or device) moves the crop by
    as little as it moves the box.

    Args:
        box: Face box (x1, y1, x2, y2) in frame pixels.
        frame_size: Frame (width, height).
        margin: Fraction of the crop's side added on each side (negative
            values tighten the crop; must stay above -0.5).
        square: Crop a square of side = box width; else keep the box's shape.
        shift_y: Move the crop centre down by this fraction of the box height.

    Returns:
        ``float64 [4]``: (x1, y1, x2, y2) in frame pixels (pixel ``i`` spans
        ``[i, i + 1)``), clipped to the frame.

    Raises:
        ValueError: The box is empty or lies outside the frame.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = x2 - x1, y2 - y1
    if not (width > 0 and height > 0):
        raise ValueError(f"face box {tuple(box)} is empty")
    if margin <= -0.5:
        raise ValueError(f"margin must be > -0.5, got {margin}")
    center_x = (x1 + x2) / 2.0
    center_y = (y1 + y2) / 2.0 + shift_y * height
    crop_w = width * (1.0 + 2.0 * margin)
    crop_h = (width if square else height) * (1.0 + 2.0 * margin)
    frame_w, frame_h = frame_size
    left = min(max(center_x - crop_w / 2.0, 0.0), float(frame_w))
    right = min(max(center_x + crop_w / 2.0, 0.0), float(frame_w))
    top = min(max(center_y - crop_h / 2.0, 0.0), float(frame_h))
    bottom = min(max(center_y + crop_h / 2.0, 0.0), float(frame_h))
    if right <= left or bottom <= top:
        raise ValueError(f"face box {tuple(box)} lies outside the {frame_w}x{frame_h} frame")
    return np.array([left, top, right, bottom], dtype=np.float64)


def sample_region(frame: np.ndarray, region: Sequence[float], size: int = FACE_SIZE) -> np.ndarray:
    """Bilinear samples of a sub-pixel region of an image on a ``size`` x ``size`` grid.

    Output pixel ``j`` takes the image at ``x1 + (j + 0.5) * (x2 - x1) / size`` (pixel centres,
    as ``cv2.resize`` with ``INTER_LINEAR`` places them), interpolated between the two nearest
    pixel centres and clamped at the image edge. For a region on whole pixels this is
    ``cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)`` without its
    8-bit rounding (a difference below one grey level, away from the region's edge). Every step
    is a continuous function of the region and runs in float32 element-wise arithmetic, so the
    result does not depend on the CPU.

    Args:
        frame: ``uint8 [H, W, C]`` image.
        region: (x1, y1, x2, y2) in pixels, inside the image.
        size: Side of the output grid.

    Returns:
        ``float32 [size, size, C]`` on the image's 0..255 scale.
    """
    x1, y1, x2, y2 = (float(v) for v in region)
    height, width = frame.shape[:2]
    rows, row_weights = _taps(y1, y2, size, height)
    cols, col_weights = _taps(x1, x2, size, width)
    # Only the pixels the taps reach are converted to float: the size rows first, then their columns.
    left = int(cols.min())
    patch = frame[:, left : int(cols.max()) + 1]
    cols = cols - left
    along_y = (
        patch[rows[:, 0]].astype(np.float32) * row_weights[:, 0, None, None]
        + patch[rows[:, 1]].astype(np.float32) * row_weights[:, 1, None, None]
    )
    return (
        along_y[:, cols[:, 0]] * col_weights[None, :, 0, None] + along_y[:, cols[:, 1]] * col_weights[None, :, 1, None]
    )


def _taps(start: float, stop: float, size: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The two pixels and their weights for each of ``size`` samples spread over ``[start, stop)``."""
    centres = start + (np.arange(size, dtype=np.float64) + 0.5) * ((stop - start) / size) - 0.5
    centres = np.clip(centres, 0.0, limit - 1.0)
    low = np.minimum(np.floor(centres), limit - 1.0)
    fraction = centres - low
    high = np.minimum(low + 1.0, limit - 1.0)
    taps = np.stack([low, high], axis=1).astype(np.int64)
    weights = np.stack([1.0 - fraction, fraction], axis=1).astype(np.float32)
    return taps, weights


def crop_faces(
    frames_rgb: Sequence[np.ndarray],
    boxes: np.ndarray,
    margin: float = DEFAULT_MARGIN,
    square: bool = DEFAULT_SQUARE,
    shift_y: float = DEFAULT_SHIFT_Y,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop one face per frame straight to 112 x 112 (sub-pixel bilinear) and normalise.

    Args:
        frames_rgb: N upright RGB ``uint8`` frames (height, width, 3).
        boxes: ``[N, 4]`` face boxes (x1, y1, x2, y2) in frame pixels.
        margin: See :func:`crop_box`.
        square: See :func:`crop_box`.
        shift_y: See :func:`crop_box`.

    Returns:
        ``(faces, cropped)``: faces ``float32 [N, 3, 112, 112]`` (BGR,
        normalised, see :func:`normalize_faces`) and the regions actually cropped,
        ``float32 [N, 4]`` in frame pixels (fractional).

    Raises:
        ValueError: Mismatched lengths, a bad box or a frame that is not RGB uint8.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {boxes.shape}")
    if len(frames_rgb) != len(boxes):
        raise ValueError(f"{len(frames_rgb)} frames but {len(boxes)} boxes")
    crops = np.empty((len(boxes), FACE_SIZE, FACE_SIZE, 3), dtype=np.float32)
    cropped = np.empty((len(boxes), 4), dtype=np.float32)
    for i, (frame, box) in enumerate(zip(frames_rgb, boxes)):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i} must be RGB uint8 (height, width, 3), got {frame.dtype} {frame.shape}")
        region = crop_box(box, (frame.shape[1], frame.shape[0]), margin, square, shift_y)
        crops[i] = sample_region(frame, region)
        cropped[i] = region
    return _normalize(crops), cropped


def normalize_faces(crops_rgb: np.ndarray) -> np.ndarray:
    """RGB ``uint8 [N, 112, 112, 3]`` crops to the classifier's input.

    Channel order becomes BGR (channel 0 = blue); values are scaled to 0..1
    and normalised with ``IMAGENET_MEAN``/``IMAGENET_STD`` by channel index,
    exactly as in training.

    Returns:
        ``float32 [N, 3, 112, 112]``, C-contiguous.

    Raises:
        ValueError: The input is not ``uint8 [N, H, W, 3]``.
    """
    crops_rgb = np.asarray(crops_rgb)
    if crops_rgb.ndim != 4 or crops_rgb.shape[3] != 3 or crops_rgb.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 [N, H, W, 3], got {crops_rgb.dtype} {crops_rgb.shape}")
    return _normalize(crops_rgb.astype(np.float32))


def _normalize(crops_rgb: np.ndarray) -> np.ndarray:
    """:func:`normalize_faces` on ``float32 [N, H, W, 3]`` crops on the 0..255 scale."""
    out = np.empty((crops_rgb.shape[0], 3, *crops_rgb.shape[1:3]), dtype=np.float32)
    for channel in range(3):
        # Output channel 0 is blue (RGB channel 2), normalised with the first mean and std.
        plane = out[:, channel]
        np.divide(crops_rgb[..., 2 - channel], np.float32(_MAX_PIXEL), out=plane)
        np.subtract(plane, np.float32(IMAGENET_MEAN[channel]), out=plane)
        np.divide(plane, np.float32(IMAGENET_STD[channel]), out=plane)
    return out
