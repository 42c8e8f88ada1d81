"""What is trained, how it scores, and the checkpoint it becomes.

``published`` (:class:`PublishedTrainee`): the published architecture itself, on single frames. The
served model scores each frame with one bias-free LSTM step from a zero state and ``linear1``
(:meth:`export.model.ServedModel.head`); with a zero cell state the forget gate multiplies zero, so
only the input, cell and output gate rows of ``lstm.weight_ih_l0`` act. Those three row blocks and
``linear1`` train (and the last trunk stages with ``--unfreeze``); the forget rows and
``lstm.weight_hh_l0`` (never used at inference) are written back unchanged. The frame's logits are
computed with the same equations as ``ServedModel.head`` (a test holds them equal). Batch norm
layers of unfrozen stages keep their published statistics (eval mode): batches of one person's
frames would give statistics of that person, not of faces. The checkpoint is the published
state_dict with those tensors replaced: ``model_<acc>_acc_<N>_frames_trained_<run>.pt``, loaded by
``export.checkpoints.load_original_model`` with ``strict=True``.

``temporal`` (:class:`TemporalTrainee`): :class:`export.temporal.TemporalHead` over the N frames'
pooled features of the starting checkpoint's frozen trunk. The features are standardised with the
training split's mean and standard deviation per feature (the demo trunk's pooled features reach a
few hundred; standardised, the head learned in a few epochs what it barely learned raw), and the
standardisation is folded into the head's first linear layer when the checkpoint is written, so
the served graph reads raw features. The checkpoint is the :class:`export.temporal.TemporalModel`
state_dict (the starting trunk's ``model.*`` and the head's ``temporal.*``):
``temporal_<acc>_acc_<N>_frames_trained_<run>.pt``, loaded by ``export.temporal.build_temporal_model``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from contract import FAKE_INDEX, REAL_INDEX, TEMPORAL_CHECKPOINT_PREFIX, TRAINED_CHECKPOINT_TAG
from export.model import OriginalModel
from export.temporal import TemporalHead

from .features import pooled, split_trunk
from .settings import TEMPORAL, TrainSettings

#: File names of published checkpoints start with it (``export.checkpoints.CHECKPOINT_PATTERN``).
PUBLISHED_CHECKPOINT_PREFIX = "model"
TRUNK_PREFIX = "model."
TEMPORAL_PREFIX = "temporal."
LSTM_INPUT_KEY = "lstm.weight_ih_l0"
LINEAR_PREFIX = "linear1."
#: PyTorch packs an LSTM's input weights as the input, forget, cell and output gates' rows.
GATES = 4
#: Per-feature standard deviations below this share of their median are raised to it: a feature
#: (nearly) constant over the training split must not be magnified into noise elsewhere.
STD_FLOOR_SHARE = 0.01


def class_index(truth: int) -> int:
    """The softmax index of a video's class: FAKE (0) for truth 1, REAL (1) for truth 0."""
    return FAKE_INDEX if truth else REAL_INDEX


def prob_fake(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probability of FAKE along the last axis."""
    return torch.softmax(logits, dim=-1)[..., FAKE_INDEX]


class PublishedTrainee(nn.Module):
    """The trained part of the published model (see the module's docstring), from a starting model.

    Args:
        original: the starting model (its weights are copied, not shared).
        unfreeze: trunk stages that train (0, 1 or 2).
    """

    def __init__(self, original: OriginalModel, unfreeze: int) -> None:
        super().__init__()
        self.unfreeze = unfreeze
        _, tail = split_trunk(original.model, unfreeze)
        # Slicing an nn.Sequential keeps the children's names ("7"), so the tail's keys are the trunk's.
        self.tail = copy.deepcopy(tail)
        gate_i, _gate_f, gate_g, gate_o = original.lstm.weight_ih_l0.detach().chunk(GATES, dim=0)
        self.gate_i = nn.Parameter(gate_i.clone())
        self.gate_g = nn.Parameter(gate_g.clone())
        self.gate_o = nn.Parameter(gate_o.clone())
        self.linear1 = copy.deepcopy(original.linear1)

    def train(self, mode: bool = True) -> PublishedTrainee:
        super().train(mode)
        self.tail.eval()  # batch norm keeps the published statistics
        return self

    def parameter_groups(self, settings: TrainSettings) -> list[dict]:
        return [
            {
                "params": [self.gate_i, self.gate_g, self.gate_o, *self.tail.parameters()],
                "lr": settings.backbone_lr,
                "weight_decay": 0.0,
            },
            {"params": list(self.linear1.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay},
        ]

    def frame_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``[k, 2]`` from boundary features ``[k, ...]``, as ``ServedModel.head`` computes them."""
        if self.unfreeze:
            features = pooled(self.tail(features))
        cell = torch.sigmoid(features @ self.gate_i.t()) * torch.tanh(features @ self.gate_g.t())
        hidden = torch.sigmoid(features @ self.gate_o.t()) * torch.tanh(cell)
        return self.linear1(hidden)

    def samples(self, features: Sequence[torch.Tensor], truth: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every frame a sample with its video's class: ``(features [S, ...], classes [S])``."""
        inputs = torch.cat(list(features))
        classes = torch.cat([torch.full((len(f),), class_index(t), dtype=torch.long) for f, t in zip(features, truth)])
        return inputs, classes

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.frame_logits(batch)

    def video_scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(PROB_FAKE, FRAME_PROB_FAKE)`` of one video's features ``[N, ...]``: the last frame's, every frame's."""
        frames = prob_fake(self.frame_logits(features))
        return frames[-1], frames

    def checkpoint_state(self, parent: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The published state_dict of the trained model: ``parent`` with the trained tensors replaced."""
        state = {key: value.detach().cpu().clone() for key, value in parent.items()}
        _, gate_f, _, _ = state[LSTM_INPUT_KEY].chunk(GATES, dim=0)
        gates = [gate.detach().cpu() for gate in (self.gate_i, self.gate_g, self.gate_o)]
        state[LSTM_INPUT_KEY] = torch.cat([gates[0], gate_f, gates[1], gates[2]])
        for key, value in self.linear1.state_dict().items():
            state[LINEAR_PREFIX + key] = value.detach().cpu().clone()
        for key, value in self.tail.state_dict().items():
            state[TRUNK_PREFIX + key] = value.detach().cpu().clone()
        return state


class TemporalTrainee(nn.Module):
    """A :class:`TemporalHead` on standardised pooled features (see the module's docstring).

    Args:
        frames: N.
        mean: per-feature mean of the training split's frames ``[2048]``.
        std: their standard deviation ``[2048]`` (floored, see :data:`STD_FLOOR_SHARE`).
    """

    def __init__(self, frames: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.head = TemporalHead(frames)
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    @staticmethod
    def standardisation(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` per feature over every frame of ``features`` (each ``[N, 2048]``)."""
        frames = torch.cat(list(features)).double()
        mean, std = frames.mean(dim=0), frames.std(dim=0)
        std = torch.clamp(std, min=float(std.median()) * STD_FLOOR_SHARE)
        if not float(std.max()) > 0.0:
            std = torch.ones_like(std)
        return mean.float(), std.float()

    def parameter_groups(self, settings: TrainSettings) -> list[dict]:
        return [{"params": list(self.head.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay}]

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head((features - self.mean) / self.std)

    def samples(self, features: Sequence[torch.Tensor], truth: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every video a sample: ``(features [V, N, 2048], classes [V])``."""
        return torch.stack(list(features)), torch.tensor([class_index(t) for t in truth], dtype=torch.long)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self(batch)[0]

    def video_scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(PROB_FAKE, FRAME_PROB_FAKE)`` of one video's pooled features ``[N, 2048]``."""
        logits, frame_logits, _ = self(features.unsqueeze(0))
        return prob_fake(logits)[0], prob_fake(frame_logits)[0]

    def folded_head(self) -> TemporalHead:
        """A copy of the head that reads raw features: the standardisation folded into ``project``.

        ``W ((x - m) / s) + b = (W / s) x + (b - (W / s) m)``, computed in float64.
        """
        head = copy.deepcopy(self.head)
        weight = self.head.project.weight.detach().double() / self.std.double()
        bias = self.head.project.bias.detach().double() - weight @ self.mean.double()
        with torch.no_grad():
            head.project.weight.copy_(weight.float())
            head.project.bias.copy_(bias.float())
        return head.eval()

    def checkpoint_state(self, parent: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ``TemporalModel`` state_dict: the starting trunk's ``model.*`` and the folded head's ``temporal.*``."""
        state = {key: value.detach().cpu().clone() for key, value in parent.items() if key.startswith(TRUNK_PREFIX)}
        for key, value in self.folded_head().state_dict().items():
            state[TEMPORAL_PREFIX + key] = value.detach().cpu().clone()
        return state


class TemporalScorer(nn.Module):
    """Scores videos with a finished temporal head on raw pooled features (the checkpoint's own head)."""

    def __init__(self, head: TemporalHead) -> None:
        super().__init__()
        self.head = head.eval()

    def video_scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, frame_logits, _ = self.head(features.unsqueeze(0))
        return prob_fake(logits)[0], prob_fake(frame_logits)[0]


def checkpoint_name(head: str, accuracy_percent: int, frames: int, run_id: str) -> str:
    """``model_<acc>_acc_<N>_frames_trained_<run>.pt`` or ``temporal_<acc>_acc_<N>_frames_trained_<run>.pt``."""
    prefix = TEMPORAL_CHECKPOINT_PREFIX if head == TEMPORAL else PUBLISHED_CHECKPOINT_PREFIX
    return f"{prefix}_{accuracy_percent}_acc_{frames}_frames_{TRAINED_CHECKPOINT_TAG}_{run_id}.pt"


def weighted_loss(logits: torch.Tensor, classes: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with each class weighted (inverse frequency, see :func:`class_weights`)."""
    return F.cross_entropy(logits, classes, weight=class_weights)


def class_weights(classes: torch.Tensor) -> torch.Tensor:
    """Inverse class frequency over the training samples, ``n / (2 n_class)``: both classes weigh the same."""
    counts = torch.bincount(classes, minlength=2).double()
    return (counts.sum() / (len(counts) * counts.clamp(min=1))).float()
