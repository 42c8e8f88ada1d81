"""The ResNeXt50-LSTM detector: the original definition and the batch-safe served form.

``OriginalModel`` reproduces the published architecture key for key, so the published
state_dicts load into it with ``strict=True``. Its forward keeps the original quirk: the LSTM
is built with ``batch_first=False`` but fed ``(batch, seq, features)``, so it steps over *videos*
and treats the frames of one video as its batch. With one video each frame gets a single LSTM
step from a zero state and the output keeps the last frame's step.

``ServedModel`` computes exactly that single step for every frame of every video on its own
(row ``i`` never depends on other rows), which is what the one-video forward computes, and adds
the per-frame scores and class activation maps the serving API exposes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from contract import CLASSIFIER_INPUTS, CLASSIFIER_OUTPUTS, FACE_SIZE, FAKE_INDEX, NUM_CLASSES

FEATURE_DIM = 2048
DROPOUT = 0.4

(INPUT_NAME,) = CLASSIFIER_INPUTS
OUTPUT_NAMES = CLASSIFIER_OUTPUTS


class OriginalModel(nn.Module):
    """The published architecture, with the original forward (quirk included)."""

    def __init__(self) -> None:
        super().__init__()
        trunk = models.resnext50_32x4d(weights=None)
        self.model = nn.Sequential(*list(trunk.children())[:-2])
        # The 4th positional argument of nn.LSTM is `bias`: the published LSTM has none.
        self.lstm = nn.LSTM(FEATURE_DIM, FEATURE_DIM, 1, False)
        self.relu = nn.LeakyReLU()
        self.dp = nn.Dropout(DROPOUT)
        self.linear1 = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (trunk feature maps [batch*seq, 2048, h, w], logits [batch, 2])."""
        batch_size, seq_length, c, h, w = x.shape
        x = x.view(batch_size * seq_length, c, h, w)
        fmap = self.model(x)
        x = self.avgpool(fmap)
        x = x.view(batch_size, seq_length, FEATURE_DIM)
        x_lstm, _ = self.lstm(x, None)
        return fmap, self.dp(self.linear1(x_lstm[:, -1, :]))


class ServedModel(nn.Module):
    """Batch-safe form of ``OriginalModel`` with per-frame outputs.

    Input ``FACES`` [batch, N, 3, 112, 112]. Outputs:
      - ``LOGITS`` [batch, 2]: the original one-video forward (the last frame's step).
      - ``PROB_FAKE`` [batch, 1]: softmax of ``LOGITS``, class 0 (FAKE).
      - ``FRAME_PROB_FAKE`` [batch, N]: each frame's own fake probability through the same path.
      - ``HEATMAP`` [batch, N, 112, 112]: per frame, the class activation map of the FAKE class
        (last trunk feature map weighted by ``linear1.weight[0]``), min-max normalised to 0..1 at
        feature-map resolution and upsampled bilinearly to the face size, as the original app drew it.
    """

    def __init__(self, original: OriginalModel) -> None:
        super().__init__()
        self.trunk = original.model
        self.weight_ih = nn.Parameter(original.lstm.weight_ih_l0.detach().clone(), requires_grad=False)
        self.linear1 = original.linear1

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Trunk feature maps for frames [k, 3, 112, 112] -> [k, 2048, h, w]."""
        return self.trunk(frames)

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Per-frame logits [k, 2] from feature maps: one bias-free LSTM step from zero state."""
        features = fmap.mean(dim=(2, 3))
        gates = features @ self.weight_ih.t()
        # PyTorch packs the gates as input, forget, cell, output; with c0 = 0 the forget gate
        # multiplies zero and drops out.
        gate_i, _gate_f, gate_g, gate_o = gates.chunk(4, dim=1)
        cell = torch.sigmoid(gate_i) * torch.tanh(gate_g)
        hidden = torch.sigmoid(gate_o) * torch.tanh(cell)
        return self.linear1(hidden)

    def heatmap(self, fmap: torch.Tensor) -> torch.Tensor:
        """FAKE-class activation maps [k, 112, 112] in 0..1 from feature maps [k, 2048, h, w]."""
        cam = torch.einsum("kchw,c->khw", fmap, self.linear1.weight[FAKE_INDEX])
        low = cam.amin(dim=(1, 2), keepdim=True)
        cam = cam - low
        high = cam.amax(dim=(1, 2), keepdim=True)
        # A constant map (all activations equal) has no hot spot: keep it at zero, not NaN.
        cam = cam / torch.clamp(high, min=torch.finfo(cam.dtype).tiny)
        up = F.interpolate(cam.unsqueeze(1), size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False)
        return up.squeeze(1)

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, frames = faces.shape[0], faces.shape[1]
        fmap = self.frame_features(faces.reshape(-1, 3, FACE_SIZE, FACE_SIZE))
        frame_logits = self.head(fmap).reshape(batch, frames, NUM_CLASSES)
        logits = frame_logits[:, -1, :]
        prob_fake = torch.softmax(logits, dim=1)[:, FAKE_INDEX : FAKE_INDEX + 1]
        frame_prob_fake = torch.softmax(frame_logits, dim=2)[:, :, FAKE_INDEX]
        heatmap = self.heatmap(fmap).reshape(batch, frames, FACE_SIZE, FACE_SIZE)
        return logits, prob_fake, frame_prob_fake, heatmap


def original_scores(model: OriginalModel, videos: torch.Tensor) -> torch.Tensor:
    """Runs the original forward on each video alone (batch 1), the faithful reference.

    Args:
        model: an ``OriginalModel`` in eval mode.
        videos: [batch, N, 3, 112, 112].

    Returns:
        logits [batch, 2], row i computed from video i alone.
    """
    with torch.inference_mode():
        return torch.cat([model(videos[i : i + 1])[1] for i in range(videos.shape[0])])
