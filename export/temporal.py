"""A temporal model over the published trunk: every frame's features, then attention over the N frames.

The published "LSTM" never sees two frames together (see the README: each frame is one LSTM step
from a zero state). ``TemporalHead`` does: it projects each frame's pooled trunk features
(2048) to a small width, adds a learned position per frame, runs one pre-norm self-attention
encoder layer over the N frames (each frame sees the others), and pools them with learned
attention weights into the clip's logits. The same classifier applied to each frame's encoded
token gives per-frame scores, and the pooling weights (``FRAME_WEIGHT``, summing to 1) say which
frames mattered.

Why this shape and not a deeper transformer or a recurrent net: a team's labelled set is a few
hundred videos, so the head must be small (about 0.4 M parameters at width 128) to train on cached
features in minutes on a CPU without overfitting, and attention pooling is what makes the answer
explainable frame by frame. The encoder is written with plain matrix products (no fused attention
kernel), so that the ONNX export is the same graph on every runtime.

``TemporalModel`` is what is served and exported: the trunk (keys ``model.*``, the published
checkpoint's own) and the head (keys ``temporal.*``), in one state_dict saved as
``temporal_<acc>_acc_<N>_frames_<tag>.pt``. The graph carries its own copy of the trunk rather
than reading features from the classifier: a temporal model is tied to the trunk its head was
trained on, so keeping them in one file keeps that pair together when the classifier gains a new
version; the cost is one more trunk in memory (about 100 MB at fp32) per served length.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from contract import FACE_SIZE, FAKE_INDEX, NUM_CLASSES, TEMPORAL_CHECKPOINT_PREFIX, TEMPORAL_CLASSIFIER_OUTPUTS
from export.model import FEATURE_DIM

#: Width of the encoded frame tokens, attention heads, encoder layers (the defaults ``train`` uses).
WIDTH = 128
HEADS = 4
LAYERS = 1
FEEDFORWARD_FACTOR = 2
DROPOUT = 0.1
LAYER_NORM_EPS = 1e-5
OUTPUT_NAMES = TEMPORAL_CLASSIFIER_OUTPUTS

# temporal_<accuracy>_acc_<frames>_frames_<tag>.pt
TEMPORAL_CHECKPOINT_PATTERN = re.compile(
    rf"^{TEMPORAL_CHECKPOINT_PREFIX}_(?P<accuracy>\d+(?:\.\d+)?)_acc_(?P<frames>\d+)_frames_(?P<tag>[A-Za-z0-9_.-]+)\.pt$"
)
_LAYER_KEY = re.compile(r"^temporal\.layers\.(\d+)\.")


class EncoderLayer(nn.Module):
    """Pre-norm self-attention over the frames, then a feed-forward block, each with a residual."""

    def __init__(self, width: int, heads: int, dropout: float, frames: int) -> None:
        super().__init__()
        self.frames = frames
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of {heads} heads")
        self.heads = heads
        self.head_width = width // heads
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.ff1 = nn.Linear(width, FEEDFORWARD_FACTOR * width)
        self.ff2 = nn.Linear(FEEDFORWARD_FACTOR * width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sizes as Python ints where the model fixes them, so that the exported graph's frame axis is N.
        frames, width = self.frames, self.heads * self.head_width
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=2)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, frames, self.heads, self.head_width).transpose(1, 2)

        scores = split(q) @ split(k).transpose(2, 3) * (1.0 / math.sqrt(self.head_width))
        attended = (self.dropout(torch.softmax(scores, dim=3)) @ split(v)).transpose(1, 2).reshape(-1, frames, width)
        x = x + self.dropout(self.out(attended))
        return x + self.dropout(self.ff2(self.dropout(F.gelu(self.ff1(self.norm2(x))))))


class TemporalHead(nn.Module):
    """Frame features [batch, N, 2048] -> (logits [batch, 2], frame logits [batch, N, 2], frame weights [batch, N])."""

    def __init__(
        self,
        frames: int,
        width: int = WIDTH,
        heads: int = HEADS,
        layers: int = LAYERS,
        dropout: float = DROPOUT,
        feature_dim: int = FEATURE_DIM,
    ) -> None:
        super().__init__()
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        self.frames = frames
        self.project = nn.Linear(feature_dim, width)
        self.position = nn.Parameter(torch.zeros(frames, width))
        self.layers = nn.ModuleList(EncoderLayer(width, heads, dropout, frames) for _ in range(layers))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attention = nn.Linear(width, 1)
        self.classifier = nn.Linear(width, NUM_CLASSES)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.project(features) + self.position  # features of exactly N frames
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        weights = torch.softmax(self.attention(x).squeeze(2), dim=1)
        pooled = (weights.unsqueeze(2) * x).sum(dim=1)
        return self.classifier(pooled), self.classifier(x), weights


class TemporalModel(nn.Module):
    """The served temporal model: faces [batch, N, 3, 112, 112] -> ``TEMPORAL_CLASSIFIER_OUTPUTS``.

    Outputs ``LOGITS`` [batch, 2], ``PROB_FAKE`` [batch, 1], ``FRAME_PROB_FAKE`` [batch, N] (each
    frame's token through the same classifier) and ``FRAME_WEIGHT`` [batch, N].
    """

    def __init__(self, frames: int, width: int = WIDTH, heads: int = HEADS, layers: int = LAYERS) -> None:
        super().__init__()
        trunk = models.resnext50_32x4d(weights=None)
        # The same name and keys as the published OriginalModel's trunk, so its weights load as they are.
        self.model = nn.Sequential(*list(trunk.children())[:-2])
        self.temporal = TemporalHead(frames, width=width, heads=heads, layers=layers)

    @property
    def frames(self) -> int:
        return self.temporal.frames

    def features(self, faces: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features [batch, N, 2048] of faces [batch, N, 3, 112, 112]."""
        fmap = self.model(faces.reshape(-1, 3, FACE_SIZE, FACE_SIZE))
        return fmap.mean(dim=(2, 3)).reshape(-1, self.frames, FEATURE_DIM)

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, frame_logits, weights = self.temporal(self.features(faces))
        prob_fake = torch.softmax(logits, dim=1)[:, FAKE_INDEX : FAKE_INDEX + 1]
        frame_prob_fake = torch.softmax(frame_logits, dim=2)[:, :, FAKE_INDEX]
        return logits, prob_fake, frame_prob_fake, weights


def head_shape(state: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(frames, width, layers) of a temporal state_dict, read from its tensors' shapes.

    Raises:
        ValueError: the state_dict has no temporal head.
    """
    position = state.get("temporal.position")
    if position is None or position.dim() != 2:
        raise ValueError("no temporal.position tensor: not a temporal model's state_dict")
    layers = {int(m.group(1)) for key in state if (m := _LAYER_KEY.match(key))}
    return int(position.shape[0]), int(position.shape[1]), len(layers)


def build_temporal_model(state: dict[str, torch.Tensor]) -> TemporalModel:
    """A ``TemporalModel`` shaped like ``state`` with it loaded (``strict=True``), in eval mode.

    Raises:
        ValueError: the state_dict is not a temporal model's, or its keys or shapes do not match.
    """
    frames, width, layers = head_shape(state)
    model = TemporalModel(frames, width=width, layers=layers)
    expected = model.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        raise ValueError(
            f"keys do not match the temporal model: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
        )
    wrong = [key for key, value in expected.items() if state[key].shape != value.shape]
    if wrong:
        raise ValueError(f"tensors of the wrong shape: {wrong[:5]}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def is_temporal_checkpoint(path: Path) -> bool:
    """Whether a file name follows ``temporal_<acc>_acc_<N>_frames_<tag>.pt``."""
    return TEMPORAL_CHECKPOINT_PATTERN.match(Path(path).name) is not None


# --------------------------------------------------------------------------------------------
# ONNX: written and checked against the PyTorch model, as the published classifier's export is.

#: Max abs difference allowed between the ONNX graph and PyTorch, per output (fp32 only).
TOLERANCES = {"LOGITS": 1e-4, "PROB_FAKE": 1e-4, "FRAME_PROB_FAKE": 1e-4, "FRAME_WEIGHT": 1e-5}
#: Rows of a batch against the same videos one at a time, and the weights' sum against 1.
BATCH_TOLERANCE = 1e-5
WEIGHT_SUM_TOLERANCE = 1e-5


def write_temporal_onnx(model: TemporalModel, path: Path, opset: int) -> None:
    """Exports the temporal model traced with N-frame videos; the batch axis is dynamic, the frame axis fixed."""
    import warnings

    from contract import CLASSIFIER_INPUTS

    (input_name,) = CLASSIFIER_INPUTS
    example = torch.zeros(1, model.frames, 3, FACE_SIZE, FACE_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (input_name, *OUTPUT_NAMES)},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def verify_temporal_onnx(path: Path, model: TemporalModel, seed: int = 0):
    """Checks the graph against PyTorch: its signature, each output on random and real face crops
    (batch 1), a batch of four against the same videos one at a time, and weights summing to 1.

    Returns:
        an ``export.onnx_export.Verification``.
    """
    import numpy as np

    from contract import CLASSIFIER_INPUTS, TENSORS
    from export.onnx_export import BATCH_CHECK_SIZE, Verification, onnx_session
    from export.samples import random_faces, real_face_videos

    (input_name,) = CLASSIFIER_INPUTS
    frames = model.frames
    result = Verification(precision="fp32")
    session = onnx_session(path)
    want_outputs = [(name, ["batch", *TENSORS[name].dims(frames)]) for name in OUTPUT_NAMES]
    got_outputs = [(t.name, list(t.shape)) for t in session.get_outputs()]
    if got_outputs != want_outputs:
        result.failures.append(f"signature: graph outputs are {got_outputs}, expected {want_outputs}")
        return result
    cases = {
        "random": random_faces(BATCH_CHECK_SIZE, frames, seed=seed),
        "real_faces": real_face_videos(BATCH_CHECK_SIZE, frames, seed=seed),
    }
    for case, videos in cases.items():
        with torch.inference_mode():
            want = [torch.cat(parts) for parts in zip(*(model(videos[i : i + 1]) for i in range(len(videos))))]
        batched = session.run(list(OUTPUT_NAMES), {input_name: videos.numpy()})
        singles = [session.run(list(OUTPUT_NAMES), {input_name: videos[i : i + 1].numpy()}) for i in range(len(videos))]
        for index, name in enumerate(OUTPUT_NAMES):
            single = np.concatenate([s[index] for s in singles])
            result.record(f"{case}/batch1", name, single, want[index].numpy(), TOLERANCES[name])
            result.record(f"{case}/batch4_vs_singles", name, batched[index], single, BATCH_TOLERANCE)
        weight_sums = batched[OUTPUT_NAMES.index("FRAME_WEIGHT")].sum(axis=1)
        result.record(
            f"{case}/weights_sum", "FRAME_WEIGHT", weight_sums, np.ones_like(weight_sums), WEIGHT_SUM_TOLERANCE
        )
    return result
