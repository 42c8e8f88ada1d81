"""The frozen part of the trunk, run once per crop, its output cached at the frozen boundary.

Everything before the trained layers is fixed for the whole run, so it runs once per video (its N
frames in one batch) and its output is kept: epochs then cost only the trained layers. Where the
boundary lies depends on what trains (the published trunk is ``model.0`` ... ``model.7``, layer4
being ``model.7``):

===========  =====================================  ================================  ==============
unfreeze     trained                                cached per frame                  size per frame
===========  =====================================  ================================  ==============
0            LSTM input weights, ``linear1``         pooled features ``[2048]``         8 KiB
1            + layer4 (``model.7``)                  layer3's output ``[1024, 7, 7]``   196 KiB
2            + layer3 (``model.6``)                  layer2's output ``[512, 14, 14]``  392 KiB
===========  =====================================  ================================  ==============

The temporal head always reads the pooled features of the starting checkpoint's trunk (unfreeze 0).
The cache is ``<cache>/features/<checkpoint sha256[:16]>-<boundary>/<crop key>.npy``: a function of
the starting checkpoint and of the crops, computed on this machine (another thread count or CPU
gives values that differ in the last bits; a run reads the values its cache holds, so the same
command run twice on one machine reads the same features).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .crops import CropCache
from .files import write_atomic

FEATURES_FOLDER = "features"
KEY_CHARS = 16
BOUNDARIES = {0: "pooled", 1: "layer4-input", 2: "layer3-input"}


def split_trunk(trunk: nn.Sequential, unfreeze: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(frozen front, trained tail)``: the tail is the last ``unfreeze`` stages (empty for 0)."""
    cut = len(trunk) - unfreeze
    return trunk[:cut], trunk[cut:]


def pooled(fmap: torch.Tensor) -> torch.Tensor:
    """Feature maps ``[k, 2048, h, w]`` -> ``[k, 2048]``: the mean ``ServedModel.head`` and ``TemporalModel`` take."""
    return fmap.mean(dim=(2, 3))


class FeatureCache:
    """``<root>/features/<checkpoint>-<boundary>/``: one ``.npy`` of ``[N, ...]`` per crop key."""

    def __init__(self, root: Path, checkpoint_sha256: str, unfreeze: int) -> None:
        self.folder = Path(root) / FEATURES_FOLDER / f"{checkpoint_sha256[:KEY_CHARS]}-{BOUNDARIES[unfreeze]}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, crop_key: str) -> Path:
        return self.folder / f"{crop_key}.npy"

    def load(self, crop_key: str) -> np.ndarray | None:
        path = self.path(crop_key)
        return np.load(path, allow_pickle=False) if path.is_file() else None

    def store(self, crop_key: str, features: np.ndarray) -> None:
        def write(handle) -> None:
            buffer = io.BytesIO()
            np.save(buffer, features, allow_pickle=False)
            handle.write(buffer.getvalue())

        write_atomic(self.path(crop_key), write)


def front_features(front: nn.Sequential, faces: np.ndarray, unfreeze: int, device: torch.device) -> np.ndarray:
    """The frozen front's output for one video's crops ``[N, 3, 112, 112]`` (pooled when no trunk stage trains)."""
    with torch.inference_mode():
        out = front(torch.from_numpy(np.ascontiguousarray(faces)).to(device))
        if unfreeze == 0:
            out = pooled(out)
    return out.float().cpu().numpy()


def compute_features(
    sha256s: Sequence[str],
    crops: CropCache,
    cache: FeatureCache,
    front: nn.Sequential,
    unfreeze: int,
    device: torch.device,
    on_done: Callable[[bool], None] | None = None,
) -> dict[str, torch.Tensor]:
    """The features of every content among ``sha256s`` (their crops must be cached), from the cache or computed.

    Args:
        on_done: told after each video whether its features were computed (False: read from the cache).

    Returns:
        sha256 -> float32 tensor ``[N, ...]`` on the CPU.
    """
    front = front.eval().to(device)
    features: dict[str, torch.Tensor] = {}
    for sha256 in sha256s:
        if sha256 in features:
            continue
        key = crops.key(sha256)
        stored = cache.load(key)
        computed = stored is None
        if computed:
            faces, _ = crops.load(sha256)
            stored = front_features(front, faces, unfreeze, device)
            cache.store(key, stored)
        features[sha256] = torch.from_numpy(stored)
        if on_done is not None:
            on_done(computed)
    return features
