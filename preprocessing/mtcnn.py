"""MTCNN's three-stage cascade over facenet-pytorch's networks, without per-candidate Python loops.

facenet-pytorch's ``detect_face`` crops and resizes every candidate face with its own ``interpolate``
call before its second and third stages: on the small windows :mod:`preprocessing.detect` searches
between key frames, those calls and the loops around them cost more than the networks. This module
runs the same cascade (image pyramid, P-Net, non-maximum suppression, R-Net on 24 x 24 crops, O-Net
on 48 x 48 crops, box regression) with the same weights and the same arithmetic, and builds all the
crops of a stage at once from a summed-area table of the images.

The crops equal PyTorch's "area" interpolation (``adaptive_avg_pool2d``) exactly: the pixels are
integers, so every bin sum is exact in integer arithmetic, and the division is done in float32 the
way PyTorch's CPU kernel does it (by the bin height, then by its width). The networks see the same
tensors in the same memory layout, so the boxes are those of ``facenet_pytorch.MTCNN.detect``; the
tests compare the two on real frames.

Its ceil-mode max-pooling layers, a third of MTCNN's time in PyTorch's CPU kernel, are replaced by
:func:`exact_fast_pooling` with an equivalent that gives the same values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

#: Scale step between two levels of the image pyramid (MTCNN's and facenet-pytorch's default).
PYRAMID_FACTOR = 0.709
# P-Net sees 12 x 12 cells at a stride of 2.
_CELL = 12
_STRIDE = 2
# Overlap above which a weaker box is dropped: within one pyramid level, across levels and after
# R-Net (intersection over union), and after O-Net (intersection over the smaller box).
_NMS_LEVEL = 0.5
_NMS_MERGED = 0.7
_NMS_FINAL_MIN = 0.7
# facenet-pytorch runs R-Net and O-Net on at most this many crops per call; the same chunks keep
# the arithmetic (and so the scores) identical.
_CHUNK = 512


class Cascade:
    """Finds faces with MTCNN's P-Net, R-Net and O-Net.

    Args:
        pnet, rnet, onet: The three networks (e.g. a ``facenet_pytorch.MTCNN``'s attributes).
        min_face_size: Smallest face looked for, in pixels of the images given.
        thresholds: Least score to pass each of the three stages.
        factor: Scale step of the image pyramid.
    """

    def __init__(
        self,
        pnet: nn.Module,
        rnet: nn.Module,
        onet: nn.Module,
        min_face_size: int,
        thresholds: Sequence[float],
        factor: float = PYRAMID_FACTOR,
    ) -> None:
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must hold three values, got {list(thresholds)}")
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid: image scales at which P-Net's 12-pixel cell spans faces from the minimum size up."""
        scale = _CELL / self.min_face_size
        side = min(height, width) * scale
        scales = []
        while side >= _CELL:
            scales.append(scale)
            scale *= self.factor
            side *= self.factor
        return scales

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Faces in each image of a batch.

        Args:
            images: ``uint8 [B, H, W, 3]`` RGB images of one size.

        Returns:
            Per image, ``(boxes float32 [k, 4], probs float32 [k])`` with boxes as (x1, y1, x2, y2)
            in image pixels, largest box first (facenet-pytorch's order).
        """
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {images.shape}")
        batch, height, width = images.shape[:3]
        # A fresh copy has the natural strides; a view of a single image may carry a stride of 0 on its
        # batch axis, which sends the pyramid's resampling down another (float-different) kernel.
        pixels = torch.from_numpy(images.copy())
        # NCHW view of NHWC memory, as facenet-pytorch builds it: the convolutions see the same layout.
        frames = pixels.permute(0, 3, 1, 2).float()
        device = next(self.pnet.parameters()).device
        frames = frames.to(device)

        boxes, owners = self._proposals(frames)
        if len(boxes):
            table = _summed_area_table(pixels).to(device)
            boxes, owners = self._refine(table, boxes, owners, self.rnet, 24, self.thresholds[1], (height, width))
            keep = batched_nms(boxes[:, :4], boxes[:, 4], owners, _NMS_MERGED)
            boxes, owners = boxes[keep], owners[keep]
            boxes = _square(_regress(boxes[:, :5], boxes[:, 5:]))
            if len(boxes):
                boxes, owners = self._refine(table, boxes, owners, self.onet, 48, self.thresholds[2], (height, width))
                boxes = _regress(boxes[:, :5], boxes[:, 5:])
        boxes_np = boxes[:, :5].cpu().numpy()
        owners_np = owners.cpu().numpy()

        results = []
        for image in range(batch):
            mine = boxes_np[owners_np == image]
            mine = mine[_nms_min(mine[:, :4], mine[:, 4], _NMS_FINAL_MIN)]
            area = (mine[:, 2] - mine[:, 0]) * (mine[:, 3] - mine[:, 1])
            mine = mine[np.argsort(area)[::-1]]
            results.append((mine[:, :4].astype(np.float32), mine[:, 4].astype(np.float32)))
        return results

    def _proposals(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid: squared candidate boxes ``[n, 5]`` (x1, y1, x2, y2, score) and their images."""
        height, width = frames.shape[2:]
        found, owners = [], []
        for scale in self.scales(height, width):
            level = F.interpolate(frames, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
            regression, probs = self.pnet((level - 127.5) * 0.0078125)
            face = probs[:, 1]
            hits = (face >= self.thresholds[0]).nonzero()
            image, row, col = hits[:, 0], hits[:, 1], hits[:, 2]
            cells = torch.stack([col, row], dim=1).to(regression.dtype)
            boxes = torch.cat(
                [
                    ((_STRIDE * cells + 1) / scale).floor(),
                    ((_STRIDE * cells + _CELL) / scale).floor(),
                    face[image, row, col].unsqueeze(1),
                    regression[image, :, row, col],
                ],
                dim=1,
            )
            keep = batched_nms(boxes[:, :4], boxes[:, 4], image, _NMS_LEVEL)
            found.append(boxes[keep])
            owners.append(image[keep])
        if not found:
            return torch.zeros(0, 5, device=frames.device), torch.zeros(0, dtype=torch.long, device=frames.device)
        boxes, owner = torch.cat(found), torch.cat(owners)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], owner, _NMS_MERGED)
        boxes, owner = boxes[keep], owner[keep]
        # P-Net's regression is relative to the box side without the +1 the later stages use.
        side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, dim=1)
        moved = boxes[:, :4] + boxes[:, 5:9] * side
        return _square(torch.cat([moved, boxes[:, 4:5]], dim=1)), owner

    def _refine(
        self,
        table: torch.Tensor,
        boxes: torch.Tensor,
        owners: torch.Tensor,
        net: nn.Module,
        size: int,
        threshold: float,
        shape: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores the crops of ``boxes`` with ``net``; keeps those above ``threshold``.

        Returns ``[m, 9]`` boxes (x1, y1, x2, y2, score, 4 regression values) and their images.
        """
        top, bottom, left, right = _crop_bounds(boxes, shape)
        usable = ((bottom > top) & (right > left)).nonzero().squeeze(1)
        if not len(usable):
            return boxes.new_zeros(0, 9), owners[usable]
        crops = _area_crops(table, owners[usable], top[usable], bottom[usable], left[usable], right[usable], size)
        outputs = [net((chunk - 127.5) * 0.0078125) for chunk in crops.split(_CHUNK)]
        regression = torch.cat([out[0] for out in outputs])
        score = torch.cat([out[-1] for out in outputs])[:, 1]
        passed = score > threshold
        kept = usable[passed]
        refined = torch.cat([boxes[kept, :4], score[passed].unsqueeze(1), regression[passed]], dim=1)
        return refined, owners[kept]


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown to a square of its longer side about the same centre (score column kept)."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(width, height)
    left = boxes[:, 0] + width * 0.5 - side * 0.5
    top = boxes[:, 1] + height * 0.5 - side * 0.5
    return torch.cat([torch.stack([left, top, left + side, top + side], dim=1), boxes[:, 4:]], dim=1)


def _regress(boxes: torch.Tensor, regression: torch.Tensor) -> torch.Tensor:
    """R-Net/O-Net box regression: offsets in units of the inclusive box side (score column kept)."""
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    side = torch.stack([width, height, width, height], dim=1)
    return torch.cat([boxes[:, :4] + regression[:, :4] * side, boxes[:, 4:]], dim=1)


def _crop_bounds(boxes: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Half-open pixel rows and columns of each box's crop: its 1-based corners truncated and clipped."""
    height, width = shape
    corners = boxes[:, :4].trunc().long()
    left = corners[:, 0].clamp(min=1) - 1
    top = corners[:, 1].clamp(min=1) - 1
    right = corners[:, 2].clamp(max=width)
    bottom = corners[:, 3].clamp(max=height)
    return top, bottom, left, right


def _summed_area_table(pixels: torch.Tensor) -> torch.Tensor:
    """``int64 [B, H + 1, W + 1, C]``: sums of every top-left rectangle of the images (a zero border first)."""
    table = pixels.to(torch.int64).cumsum(1).cumsum(2)
    return F.pad(table, (0, 0, 1, 0, 1, 0))


def _area_crops(
    table: torch.Tensor,
    image: torch.Tensor,
    top: torch.Tensor,
    bottom: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Each crop resized to ``size`` x ``size`` by area averaging, as ``F.interpolate(mode="area")`` does.

    Output bin ``i`` of a span of ``n`` pixels averages pixels ``floor(i * n / size)`` to
    ``ceil((i + 1) * n / size)`` (exclusive), PyTorch's adaptive pooling bins.

    Returns:
        ``float32 [K, 3, size, size]``, contiguous (the layout facenet-pytorch's crops reach R-Net
        and O-Net in, so the convolutions pick the same algorithm).
    """
    steps = torch.arange(size, device=table.device)

    def bins(start: torch.Tensor, stop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        span = (stop - start).unsqueeze(1)
        return (start.unsqueeze(1) + steps * span // size, start.unsqueeze(1) + ((steps + 1) * span + size - 1) // size)

    row0, row1 = bins(top, bottom)
    col0, col1 = bins(left, right)
    rows_per_image, width = table.shape[1], table.shape[2]
    flat = table.reshape(-1, table.shape[3])
    base = (image * rows_per_image).view(-1, 1, 1)

    def corner(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        index = ((base + rows.unsqueeze(2)) * width + cols.unsqueeze(1)).reshape(-1)
        return flat.index_select(0, index)

    sums = corner(row1, col1) - corner(row0, col1) - corner(row1, col0) + corner(row0, col0)
    heights = (row1 - row0).unsqueeze(2).expand(-1, -1, size).reshape(-1, 1).to(torch.float32)
    widths = (col1 - col0).unsqueeze(1).expand(-1, size, -1).reshape(-1, 1).to(torch.float32)
    means = (sums.to(torch.float32) / heights / widths).view(len(image), size, size, -1)
    return means.permute(0, 3, 1, 2).contiguous()


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy suppression by intersection over the smaller box (pixel-inclusive areas), best score first."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size:
        best, rest = order[-1], order[:-1]
        keep.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = inter_w * inter_h / np.minimum(area[best], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


# ----------------------------------------------------------------- ceil-mode max pooling, made fast


def ceil_max_pool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """``F.max_pool2d(x, kernel, stride, ceil_mode=True)`` with the same result, several times faster.

    PyTorch's CPU kernel for NCHW ceil-mode pooling took ~37 % of MTCNN's time here. A max is exact
    whatever the order it is taken in: this pads the ragged edge with -inf and takes the maximum of
    strided row slices, then of strided column slices, so every output is bit-identical.
    """
    height, width = x.shape[-2:]
    # Beyond these, PyTorch's output size has rules of its own (an empty or a dropped last window).
    if height < kernel or width < kernel or stride > kernel:
        return F.max_pool2d(x, kernel, stride, ceil_mode=True)
    out_h = math.ceil((height - kernel) / stride) + 1
    out_w = math.ceil((width - kernel) / stride) + 1
    pad_h = (out_h - 1) * stride + kernel - height
    pad_w = (out_w - 1) * stride + kernel - width
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=-math.inf)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    rows = x[..., 0:span_h:stride, :]
    for i in range(1, kernel):
        rows = torch.maximum(rows, x[..., i : i + span_h : stride, :])
    out = rows[..., 0:span_w:stride]
    for j in range(1, kernel):
        out = torch.maximum(out, rows[..., j : j + span_w : stride])
    return out


class CeilMaxPool(nn.Module):
    """Drop-in for ``nn.MaxPool2d(kernel, stride, ceil_mode=True)`` using :func:`ceil_max_pool`."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ceil_max_pool(x, self.kernel, self.stride)


def exact_fast_pooling(module: nn.Module) -> int:
    """Replaces every ceil-mode ``nn.MaxPool2d`` (square, unpadded, undilated) in ``module``; returns how many."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.MaxPool2d) or not child.ceil_mode or child.return_indices:
                continue
            kernel, stride = child.kernel_size, child.stride
            if (
                not (isinstance(kernel, int) and isinstance(stride, int))
                or stride > kernel
                or child.padding != 0
                or child.dilation != 1
            ):
                continue
            setattr(parent, name, CeilMaxPool(kernel, stride))
            replaced += 1
    return replaced
