"""Published checkpoint files: naming, best-per-length choice, and safe strict loading."""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from contract import DEMO_CHECKPOINT_TAG
from export.model import OriginalModel

# model_<accuracy>_acc_<frames>_frames_<tag>.pt, e.g. model_84_acc_10_frames_final_data.pt
CHECKPOINT_PATTERN = re.compile(
    r"^model_(?P<accuracy>\d+(?:\.\d+)?)_acc_(?P<frames>\d+)_frames_(?P<tag>[A-Za-z0-9_.-]+)\.pt$"
)
DATA_PARALLEL_PREFIX = "module."
MAX_KEYS_LISTED = 8


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one sentence naming the problem."""


@dataclass(frozen=True)
class CheckpointName:
    path: Path
    accuracy: float
    frames: int
    tag: str


def parse_checkpoint_name(path: Path) -> CheckpointName | None:
    """Parses a published checkpoint file name; None when the name does not follow the pattern."""
    match = CHECKPOINT_PATTERN.match(path.name)
    if match is None:
        return None
    return CheckpointName(
        path=path,
        accuracy=float(match["accuracy"]),
        frames=int(match["frames"]),
        tag=match["tag"],
    )


def find_checkpoints(directory: Path) -> list[CheckpointName]:
    """Every checkpoint in ``directory`` whose name follows the published pattern."""
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    found = (parse_checkpoint_name(p) for p in sorted(directory.iterdir()) if p.is_file())
    return [c for c in found if c is not None]


def best_checkpoint(candidates: Iterable[CheckpointName], frames: int) -> CheckpointName:
    """The highest-accuracy checkpoint for ``frames``, as the original app chooses.

    Ties go to the lexicographically first file name so the choice is deterministic.
    """
    matching = [c for c in candidates if c.frames == frames]
    if not matching:
        raise CheckpointError(
            f"no checkpoint for {frames} frames (expected a file named model_<acc>_acc_{frames}_frames_<tag>.pt)"
        )
    return sorted(matching, key=lambda c: (-c.accuracy, c.path.name))[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_KEYS_LISTED])
    more = len(keys) - MAX_KEYS_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Loads a plain state_dict with ``weights_only=True``; never unpickles arbitrary objects."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not allow: that is an object, maybe code.
        # Anything else it cannot parse is a damaged file.
        if "unsupported global" not in str(exc).lower():
            raise CheckpointError(
                f"checkpoint {path} is not a readable PyTorch file (truncated or corrupt?): {_first_line(exc)}"
            ) from exc
        raise CheckpointError(
            f"checkpoint {path} holds Python objects other than tensors and was refused "
            "(only plain state_dicts are loaded, with weights_only=True)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file (truncated or corrupt?): {_first_line(exc)}"
        ) from exc
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(loaded).__name__}, not a state_dict (a mapping of names to tensors)"
        )
    not_tensors = [str(k) for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"checkpoint {path} is not a plain state_dict: entries that are not tensors: {_listed(not_tensors)}"
        )
    state = dict(loaded)
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return state


def load_original_model(path: Path) -> OriginalModel:
    """Builds ``OriginalModel`` from a published checkpoint with strict key and shape checks."""
    state = read_state_dict(path)
    model = OriginalModel()
    expected = model.state_dict()
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listed(unexpected)}")
        raise CheckpointError(f"checkpoint {path} does not match the ResNeXt50-LSTM architecture ({'; '.join(parts)})")
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"checkpoint {path} has tensors of the wrong shape: {_listed(wrong)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def demo_state_dict(seed: int, calibration_images: int = 16) -> dict[str, torch.Tensor]:
    """Random weights in the published format, with batch-norm statistics calibrated.

    Untrained batch-norm layers (running mean 0, variance 1) let activations grow through the
    50 layers of the trunk; one pass in training mode over random images sets running statistics
    that keep the logits in a realistic range. The weights still mean nothing.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = OriginalModel()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one pass sets the statistics
    images = torch.rand(1, calibration_images, 3, 112, 112, generator=generator)
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()
    return model.state_dict()


def write_demo_checkpoints(
    out_dir: Path, frames: Iterable[int], accuracy: int = 50, tag: str = DEMO_CHECKPOINT_TAG
) -> list[Path]:
    """Writes seeded random-weight checkpoints named like the published ones."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for n in frames:
        path = out_dir / f"model_{accuracy}_acc_{n}_frames_{tag}.pt"
        torch.save(demo_state_dict(seed=n), path)
        written.append(path)
    return written
