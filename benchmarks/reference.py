"""The original app's pipeline, in process: the baseline every served figure is compared with.

What it does, after ../shared/REFERENCE.md: read every frame of the file into memory with OpenCV;
detect faces in each of the first N frames at full resolution, one frame at a time (MTCNN here,
where the app used dlib), keep the first (largest) face with its tight box, or the whole frame when
none is found; crop, then torchvision ``ToPILImage`` / ``Resize((112, 112))`` / ``ToTensor`` /
``Normalize`` on the BGR crop; one PyTorch eager forward of the original model; one video at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from torchvision import transforms

from export.checkpoints import load_original_model
from export.model import FAKE_INDEX, REAL_INDEX, OriginalModel
from preprocessing.crop import FACE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from preprocessing.track import Detections

STAGES = ("decode", "detect", "crop", "classify")


class ReferenceError(Exception):
    """The reference pipeline cannot run on this input; the message says why."""


@dataclass(frozen=True)
class ReferenceResult:
    """One video through the reference pipeline.

    Attributes:
        logits: ``float32 [2]`` of the original forward (index 0 = FAKE).
        label: ``"REAL"`` or ``"FAKE"``, as the app printed it.
        confidence: Softmax probability of the predicted class, in percent.
        frames_read: Frames OpenCV read (the whole file).
        detections: All faces MTCNN found at full resolution in each of the first N frames.
        timings: Seconds per stage (:data:`STAGES`).
    """

    logits: np.ndarray
    label: str
    confidence: float
    frames_read: int
    detections: list[Detections]
    timings: dict[str, float]


class ReferencePipeline:
    """The original app's pipeline for one sequence length.

    Args:
        model: The original model (eval mode), e.g. from :meth:`from_checkpoint`.
        frames: N, the model's sequence length.
    """

    def __init__(self, model: OriginalModel, frames: int) -> None:
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        self.model = model.eval()
        self.frames = frames
        # The app kept every face and took the first; facenet-pytorch sorts the largest first.
        self.mtcnn = MTCNN(keep_all=True, post_process=False, device="cpu")
        self.transform = transforms.Compose([
            transforms.ToPILImage(),
            transforms.Resize((FACE_SIZE, FACE_SIZE)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    @classmethod
    def from_checkpoint(cls, checkpoint: Path, frames: int) -> ReferencePipeline:
        return cls(load_original_model(checkpoint), frames)

    def __call__(self, path: Path) -> ReferenceResult:
        """Score the video at ``path``.

        Raises:
            ReferenceError: OpenCV cannot read it, or it has fewer than N frames (the app
                crashed on those; the served pipeline pads them).
        """
        started = time.perf_counter()
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ReferenceError(f"OpenCV cannot open {path}")
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
            raise ReferenceError(f"{path} has {len(frames_bgr)} frames, the reference needs at least {self.frames}")
        decoded = time.perf_counter()

        detections = []
        for frame in frames_bgr[: self.frames]:
            boxes, probs = self.mtcnn.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if boxes is None:
                detections.append(Detections.empty())
            else:
                detections.append(Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                                             np.asarray(probs, np.float32).reshape(-1)))
        detected = time.perf_counter()

        tensors = []
        for frame, found in zip(frames_bgr, detections):
            crop = frame
            if len(found.boxes):
                height, width = frame.shape[:2]
                x1, y1, x2, y2 = np.rint(found.boxes[0]).astype(int)
                x1, x2 = np.clip([x1, x2], 0, width)
                y1, y2 = np.clip([y1, y2], 0, height)
                if x2 > x1 and y2 > y1:
                    crop = frame[y1:y2, x1:x2]
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
            label="REAL" if predicted == REAL_INDEX else "FAKE",
            confidence=float(probs[predicted]) * 100.0,
            frames_read=len(frames_bgr),
            detections=detections,
            timings={"decode": decoded - started, "detect": detected - decoded,
                     "crop": cropped - detected, "classify": classified - cropped},
        )
