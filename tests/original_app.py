"""The original app's scoring path, stated on its own, for the parity test of ``original_<N>``.

Written from ../shared/REFERENCE.md ("The original scoring path" and "Architecture"), and imports
nothing of the project: OpenCV reads the file from disk, ``face_recognition`` finds the faces,
torchvision's PIL transforms make the tensor, and the original model class is restated here with
its forward, quirk included. Test-only: ``face_recognition`` is in ``[tool.deepfake] test-no-deps``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torchvision import models, transforms

with warnings.catch_warnings():
    # face_recognition_models imports pkg_resources, which warns that it is deprecated.
    warnings.simplefilter("ignore", UserWarning)
    import face_recognition


class AppModel(nn.Module):
    """The app's ``Model``: ResNeXt50 trunk, LSTM(2048, 2048, 1, bias=False), linear1."""

    def __init__(self) -> None:
        super().__init__()
        backbone = models.resnext50_32x4d(weights=None)
        self.model = nn.Sequential(*list(backbone.children())[:-2])
        self.lstm = nn.LSTM(2048, 2048, 1, False)
        self.relu = nn.LeakyReLU()
        self.dp = nn.Dropout(0.4)
        self.linear1 = nn.Linear(2048, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, seq_length, c, h, w = x.shape
        x = x.view(batch_size * seq_length, c, h, w)
        fmap = self.model(x)
        x = self.avgpool(fmap)
        x = x.view(batch_size, seq_length, 2048)
        x_lstm, _ = self.lstm(x, None)
        return self.dp(self.linear1(x_lstm[:, -1, :]))


def load_app_model(checkpoint: Path) -> AppModel:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model = AppModel()
    model.load_state_dict(state, strict=True)
    return model.eval()


TRANSFORM = transforms.Compose(
    [
        transforms.ToPILImage(),
        transforms.Resize((112, 112)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]
)


@dataclass(frozen=True)
class AppAnswer:
    """What the app computed for one video.

    Attributes:
        faces: ``float32 [n, 3, 112, 112]``, n = min(N, frames in the file).
        boxes: per frame ``(left, top, right, bottom)`` of the crop, None where the whole frame was used.
        prob_fake: softmax of the FAKE class (index 0).
    """

    faces: np.ndarray
    boxes: list[tuple[int, int, int, int] | None]
    prob_fake: float


def app_answer(path: Path, frames: int, model: AppModel) -> AppAnswer:
    """The app's ``validation_dataset`` item and ``predict`` for the video at ``path``."""
    capture = cv2.VideoCapture(str(path))
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    capture.release()
    tensors, boxes = [], []
    for frame in read[:frames]:
        faces = face_recognition.face_locations(frame)
        try:
            top, right, bottom, left = faces[0]
            crop = frame[top:bottom, left:right, :]
            boxes.append((left, top, right, bottom))
        except IndexError:
            crop = frame
            boxes.append(None)
        tensors.append(TRANSFORM(crop))
    batch = torch.stack(tensors)[:frames].unsqueeze(0)
    with torch.inference_mode():
        logits = model(batch)
    prob_fake = float(torch.softmax(logits, dim=1)[0, 0])
    return AppAnswer(faces=batch[0].numpy(), boxes=boxes, prob_fake=prob_fake)
