"""The baselines every served figure is compared with, in process, one video at a time.

:class:`OriginalAppPipeline` is the reference: the original app's pipeline as it ran, after
../shared/REFERENCE.md. It reads every frame of the file into memory with OpenCV; on each of the
first N frames it runs dlib's HOG detector twice, once on the BGR frame for scoring (first face,
tight box, the whole frame when none) and once on the RGB frame for the page's face thumbnails
(crops padded by 40 px); then torchvision ``ToPILImage`` / ``Resize((112, 112))`` / ``ToTensor`` /
``Normalize`` on the BGR crops and one PyTorch eager forward of the original model.

:class:`ReferencePipeline` is the second baseline, what a DFDC-style pipeline does: the same, with
MTCNN at full resolution (once per frame, largest face first) in place of dlib.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np
import torch
from facenet_pytorch import MTCNN
from torchvision import transforms

from contract import FACE_SIZE, FAKE_INDEX, LABEL_FAKE, LABEL_REAL, REAL_INDEX
from export.checkpoints import load_original_model
from export.model import OriginalModel
from preprocessing.crop import IMAGENET_MEAN, IMAGENET_STD
from preprocessing.track import Detections

STAGES = ("decode", "detect", "crop", "classify")
#: dlib's image upsampling in ``face_recognition.face_locations``' default call.
DLIB_UPSAMPLE = 1
#: Padding of the app's face thumbnails, in pixels.
THUMBNAIL_PADDING = 40


class ReferenceRunError(Exception):
    """The reference pipeline cannot run on this input; the message says why."""


@dataclass(frozen=True)
class ReferenceResult:
    """One video through a baseline pipeline.

    Attributes:
        logits: ``float32 [2]`` of the original forward (index 0 = FAKE).
        prob_fake: Softmax probability of FAKE.
        label: ``"REAL"`` or ``"FAKE"``, as the app printed it.
        confidence: Softmax probability of the predicted class, in percent.
        frames_read: Frames OpenCV read (the whole file).
        detections: The faces found in each of the first N frames (boxes x1, y1, x2, y2).
        timings: Seconds per stage (:data:`STAGES`).
    """

    logits: np.ndarray
    prob_fake: float
    label: str
    confidence: float
    frames_read: int
    detections: list[Detections]
    timings: dict[str, float]


class _AppPipeline:
    """Read everything, detect in the first N frames, crop the first face, transform, classify."""

    def __init__(self, model: OriginalModel, frames: int) -> None:
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        self.model = model.eval()
        self.frames = frames
        self.transform = transforms.Compose(
            [
                transforms.ToPILImage(),
                transforms.Resize((FACE_SIZE, FACE_SIZE)),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Path, frames: int):
        return cls(load_original_model(checkpoint), frames)

    def warm_up(self) -> None:
        """One detection and one forward on blank input, so that the timed runs start warm."""
        self._detect(np.zeros((64, 64, 3), np.uint8))
        with torch.inference_mode():
            self.model(torch.zeros(1, self.frames, 3, FACE_SIZE, FACE_SIZE))

    def _detect(self, frame_bgr: np.ndarray) -> Detections:
        raise NotImplementedError

    @staticmethod
    def _crop_box(found: Detections, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        """The first face's box rounded to whole pixels and clipped to the frame, or None for the whole frame."""
        if not len(found.boxes):
            return None
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = np.rint(found.boxes[0]).astype(int)
        x1, x2 = np.clip([x1, x2], 0, width)
        y1, y2 = np.clip([y1, y2], 0, height)
        return (int(x1), int(y1), int(x2), int(y2)) if x2 > x1 and y2 > y1 else None

    def __call__(self, path: Path) -> ReferenceResult:
        """Score the video at ``path``.

        Raises:
            ReferenceRunError: OpenCV cannot read it, or it has fewer than N frames (the app
                crashed on those; the served pipelines pad them).
        """
        started = time.perf_counter()
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ReferenceRunError(f"OpenCV cannot open {path}")
        frames_bgr = []
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                frames_bgr.append(frame)
        finally:
            capture.release()
        if len(frames_bgr) < self.frames:
            raise ReferenceRunError(f"{path} has {len(frames_bgr)} frames, the reference needs at least {self.frames}")
        decoded = time.perf_counter()

        detections = [self._detect(frame) for frame in frames_bgr[: self.frames]]
        detected = time.perf_counter()

        tensors = []
        for frame, found in zip(frames_bgr, detections):
            box = self._crop_box(found, frame)
            crop = frame if box is None else frame[box[1] : box[3], box[0] : box[2]]
            tensors.append(self.transform(np.ascontiguousarray(crop)))
        batch = torch.stack(tensors)[None]
        cropped = time.perf_counter()

        with torch.inference_mode():
            logits = self.model(batch)[1][0]
        probs = torch.softmax(logits, dim=0)
        classified = time.perf_counter()
        predicted = REAL_INDEX if logits[REAL_INDEX] > logits[FAKE_INDEX] else FAKE_INDEX
        return ReferenceResult(
            logits=logits.numpy().astype(np.float32),
            prob_fake=float(probs[FAKE_INDEX]),
            label=LABEL_REAL if predicted == REAL_INDEX else LABEL_FAKE,
            confidence=float(probs[predicted]) * 100.0,
            frames_read=len(frames_bgr),
            detections=detections,
            timings={
                "decode": decoded - started,
                "detect": detected - decoded,
                "crop": cropped - detected,
                "classify": classified - cropped,
            },
        )


def _dlib_boxes(detector, image: np.ndarray) -> np.ndarray:
    """``face_recognition.face_locations``' boxes (clipped to the image) as x1, y1, x2, y2 rows."""
    height, width = image.shape[:2]
    rects = detector(image, DLIB_UPSAMPLE)
    return np.array(
        [[max(r.left(), 0), max(r.top(), 0), min(r.right(), width), min(r.bottom(), height)] for r in rects], np.float32
    ).reshape(-1, 4)


class OriginalAppPipeline(_AppPipeline):
    """The original app as it ran: dlib's HOG detector twice per frame (scoring, then thumbnails).

    Args:
        model: The original model (eval mode), e.g. from :meth:`from_checkpoint`.
        frames: N, the model's sequence length.
    """

    label = "original app (OpenCV, dlib HOG twice per frame, PyTorch eager)"

    def __init__(self, model: OriginalModel, frames: int) -> None:
        super().__init__(model, frames)
        self.detector = dlib.get_frontal_face_detector()
        self.thumbnails: list[np.ndarray] = []

    def _detect(self, frame_bgr: np.ndarray) -> Detections:
        boxes = _dlib_boxes(self.detector, frame_bgr)
        # The page's previews: a second search, on the RGB frame, crops padded by 40 px.
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        for x1, y1, x2, y2 in _dlib_boxes(self.detector, rgb).astype(int):
            self.thumbnails.append(
                rgb[
                    max(y1 - THUMBNAIL_PADDING, 0) : min(y2 + THUMBNAIL_PADDING, height),
                    max(x1 - THUMBNAIL_PADDING, 0) : min(x2 + THUMBNAIL_PADDING, width),
                ]
            )
        return Detections(boxes, np.ones(len(boxes), np.float32))

    def __call__(self, path: Path) -> ReferenceResult:
        self.thumbnails = []
        return super().__call__(path)


class ReferencePipeline(_AppPipeline):
    """The DFDC-style baseline: the app's pipeline with MTCNN at full resolution in place of dlib.

    Args:
        model: The original model (eval mode), e.g. from :meth:`from_checkpoint`.
        frames: N, the model's sequence length.
    """

    label = "MTCNN at full resolution (OpenCV, PyTorch eager)"

    def __init__(self, model: OriginalModel, frames: int) -> None:
        super().__init__(model, frames)
        # Every face is kept and the first taken; facenet-pytorch sorts the largest first.
        self.mtcnn = MTCNN(keep_all=True, post_process=False, device="cpu")

    def _detect(self, frame_bgr: np.ndarray) -> Detections:
        boxes, probs = self.mtcnn.detect(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        if boxes is None:
            return Detections.empty()
        return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(probs, np.float32).reshape(-1))
