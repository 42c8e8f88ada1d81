"""Detection metrics, all from scikit-learn (the ``eval`` extra).

Every function takes ``truth`` (1 fake, 0 real) and fake scores. A metric that is undefined
for the videos given (one class only, no video) is ``None`` with its reason in ``undefined``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    log_loss,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import train_test_split

DEFAULT_THRESHOLD = 0.5
#: The score given to a refused video in the second log-loss, as the DFDC scoring did.
REFUSED_SCORE = 0.5
LABELS = (0, 1)
#: Metrics that need both classes among the videos.
TWO_CLASS_METRICS = ("video_auc", "average_precision", "balanced_accuracy", "eer")
METRIC_NAMES = ("video_auc", "average_precision", "accuracy", "balanced_accuracy", "log_loss", "eer")


def one_class_reason(truth: Sequence[int]) -> str | None:
    """Why two-class metrics are undefined for ``truth``, or None when both classes are there."""
    if len(truth) == 0:
        return "no scored video"
    present = {int(value) for value in truth}
    if present == {1}:
        return "only fake videos: needs real ones too"
    if present == {0}:
        return "only real videos: needs fake ones too"
    return None


def predictions(scores: Sequence[float], threshold: float) -> np.ndarray:
    """FAKE (1) when the score reaches the threshold: the original app called a tie FAKE."""
    return (np.asarray(scores, dtype=np.float64) >= threshold).astype(int)


def equal_error_rate(truth: Sequence[int], scores: Sequence[float]) -> float:
    """The rate where false positives equal false negatives, on scikit-learn's ROC curve.

    Interpolated linearly between the two ROC points where ``1 - tpr`` crosses ``fpr``.
    """
    fpr, tpr, _ = roc_curve(truth, scores)
    fnr = 1.0 - tpr
    difference = fnr - fpr  # starts at 1 (nothing called fake), ends at -1, never increases
    crossing = int(np.argmax(difference <= 0.0))
    if crossing == 0 or difference[crossing] == 0.0:
        return float(fpr[crossing])
    before, after = crossing - 1, crossing
    weight = difference[before] / (difference[before] - difference[after])
    return float(fpr[before] + weight * (fpr[after] - fpr[before]))


def best_threshold(truth: Sequence[int], scores: Sequence[float]) -> float:
    """The ROC threshold with the highest balanced accuracy (Youden's J); ties to the higher one."""
    fpr, tpr, thresholds = roc_curve(truth, scores)
    best = int(np.argmax(tpr - fpr))
    threshold = float(thresholds[best])
    # roc_curve's first threshold is +inf (nothing called fake): keep it inside [0, 1].
    return min(threshold, float(np.nextafter(1.0, 2.0)))


def binary_metrics(
    truth: Sequence[int],
    scores: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    refused_truth: Sequence[int] = (),
) -> dict:
    """AUC, average precision, accuracy and balanced accuracy at ``threshold``, log-loss, EER.

    Args:
        truth: 1 fake, 0 real, of the scored videos.
        scores: their fake scores.
        threshold: a score at or above it counts as FAKE.
        refused_truth: the truth of refused videos, which only enter the second log-loss
            (``log_loss_refused_as_half``) with a score of 0.5.

    Returns:
        ``{"n", "n_fake", "n_real", <metric>: value or None, "log_loss_refused_as_half",
        "undefined": {metric: reason}}``.
    """
    truth = np.asarray(truth, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    result: dict = {"n": len(truth), "n_fake": int(truth.sum()), "n_real": int(len(truth) - truth.sum())}
    undefined: dict[str, str] = {}
    reason = one_class_reason(truth)
    if len(truth) == 0:
        for name in METRIC_NAMES:
            result[name] = None
            undefined[name] = reason
    else:
        predicted = predictions(scores, threshold)
        result["accuracy"] = float(accuracy_score(truth, predicted))
        result["log_loss"] = float(log_loss(truth, scores, labels=list(LABELS)))
        if reason is None:
            result["video_auc"] = float(roc_auc_score(truth, scores))
            result["average_precision"] = float(average_precision_score(truth, scores))
            result["balanced_accuracy"] = float(balanced_accuracy_score(truth, predicted))
            result["eer"] = equal_error_rate(truth, scores)
        else:
            for name in TWO_CLASS_METRICS:
                result[name] = None
                undefined[name] = reason
    refused_truth = np.asarray(refused_truth, dtype=int)
    every_truth = np.concatenate([truth, refused_truth])
    if len(every_truth):
        every_score = np.concatenate([scores, np.full(len(refused_truth), REFUSED_SCORE)])
        result["log_loss_refused_as_half"] = float(log_loss(every_truth, every_score, labels=list(LABELS)))
    else:
        result["log_loss_refused_as_half"] = None
        undefined["log_loss_refused_as_half"] = "no video"
    result["undefined"] = undefined
    return {
        key: result[key] for key in ("n", "n_fake", "n_real", *METRIC_NAMES, "log_loss_refused_as_half", "undefined")
    }


def frame_auc(truth: Sequence[int], frame_scores: Sequence[Sequence[float]]) -> tuple[float | None, str | None]:
    """ROC AUC over every frame, each frame labelled with its video's truth."""
    labels = [label for label, frames in zip(truth, frame_scores) for _ in frames]
    pooled = [score for frames in frame_scores for score in frames]
    reason = one_class_reason(labels)
    if reason is not None:
        return None, reason.replace("video", "frame")
    return float(roc_auc_score(labels, pooled)), None


def validation_split(truth: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(validation, test)``: a seeded split, stratified by truth when each class has two.

    Raises:
        ValueError: the fraction leaves no video on one side.
    """
    indices = list(range(len(truth)))
    counts = np.bincount(np.asarray(truth, dtype=int), minlength=2)
    stratify = list(truth) if counts.min() >= 2 else None
    try:
        validation, test = train_test_split(indices, train_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:
        if stratify is None:
            raise
        validation, test = train_test_split(indices, train_size=fraction, random_state=seed)
    return sorted(validation), sorted(test)


def roc_points(truth: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of scikit-learn's ROC curve, for the plots."""
    fpr, tpr, _ = roc_curve(truth, scores)
    return fpr, tpr
