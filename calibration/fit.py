"""Fitting a calibration and an operating point on a labelled set's served scores (numpy, scikit-learn).

Why Platt scaling on the logit. The served PROB_FAKE is a softmax of two logits, so its logit is
the logit difference, and a line on it (slope and intercept) corrects both a model that is too
sure (the slope) and one whose scores sit on the wrong side of 0.5 for this data (the intercept).
Two parameters are pinned down by a few hundred videos; isotonic regression needs far more, gives
steps (many videos with one calibrated value) and is not strictly monotone, so it can merge scores
a threshold should keep apart; temperature scaling alone (the slope, no intercept) cannot move
the decision boundary. The fit is scikit-learn's logistic regression on the logit with Platt's
smoothed targets ((n+ + 1) / (n+ + 2) and 1 / (n- + 2)), given as sample weights, so that a set
the model separates perfectly still gets a finite slope. A monotone map keeps the ranking, so AUC
and the thresholds do not change; the thresholds are stored on the raw score.

Operating points come from the ROC curve of the raw scores (scikit-learn's ``roc_curve``):

- ``fake_threshold``: the threshold with the highest TPR among those whose FPR on the set is at most
  the target;
- ``real_threshold``: the largest threshold whose false-negative rate (fakes below it) is at most
  the target FNR, lowered to ``fake_threshold`` when it would be above it (then there is no band);
- the EER threshold, where FPR and FNR are closest.

Each served threshold sits halfway between the score that defines it and the next lower score of
the set (:func:`midway`): the same decisions on the set, and robust to the rounding of scores.

Their rates get a stratified bootstrap interval (reals and fakes resampled apart) and an exact
Clopper-Pearson interval: the bootstrap of a proportion with no event at all is [0, 0], which
says nothing about a 1 % target. The set must be large enough to estimate the target at all
(:func:`required_real_videos`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from contract import DECISIONS, Score

from .point import EPS, FORMAT, METHOD, Rate, decide

#: The confidence of every interval and of the sample-size rule.
CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 2000
#: A regularisation weak enough to change nothing but a separable set's infinite slope (which
#: Platt's smoothed targets already bound).
_C = 1e6


class FitError(ValueError):
    """A set a calibration cannot be fitted on: the message says why and what would do."""


def required_real_videos(target_fpr: float, confidence: float = CONFIDENCE) -> int:
    """Real videos needed before a target FPR can be estimated at all.

    With n real videos and not one false positive, the exact one-sided upper bound of the FPR at
    ``confidence`` is ``1 - (1 - confidence) ** (1 / n)``; below this n that bound stays above the
    target even in the best case, so no threshold can be shown to meet it (299 for 1 %, 59 for 5 %:
    the "rule of three", n >= 3 / target, made exact).
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"a target false-positive rate is between 0 and 1, got {target_fpr}")
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_fpr))


def clopper_pearson(count: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact two-sided binomial interval of ``count / total``."""
    from scipy.stats import beta

    alpha = 1.0 - confidence
    low = 0.0 if count == 0 else float(beta.ppf(alpha / 2, count, total - count + 1))
    high = 1.0 if count == total else float(beta.ppf(1 - alpha / 2, count + 1, total - count))
    return low, high


def platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of ``sigmoid(slope * logit(score) + intercept)`` fitted to the labels (1 = fake)."""
    from sklearn.linear_model import LogisticRegression

    x = _logit(scores).reshape(-1, 1)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    target = np.where(labels == 1, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    # Each video twice, as fake with weight t and as real with weight 1 - t: the smoothed targets.
    model = LogisticRegression(C=_C, solver="lbfgs", max_iter=10_000, tol=1e-10)
    model.fit(
        np.concatenate([x, x]),
        np.concatenate([np.ones(len(x), dtype=int), np.zeros(len(x), dtype=int)]),
        sample_weight=np.concatenate([target, 1.0 - target]),
    )
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def midway(scores: np.ndarray, threshold: float) -> float:
    """A threshold halfway down to the next lower score: the same decisions on the set, and none
    that turns on the last digit of a score (results files keep 7 decimals of the served float32)."""
    below = scores[scores < threshold]
    if len(below) == 0 or not math.isfinite(threshold):
        return threshold
    return float((threshold + below.max()) / 2)


def fake_threshold_for(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """The threshold with the highest TPR among those with FPR <= ``target_fpr`` (FAKE at or above it),
    as a score of the set (see :func:`midway` for the one served)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    allowed = np.flatnonzero(fpr <= target_fpr + 1e-12)
    best = allowed[np.argmax(tpr[allowed])]
    threshold = float(thresholds[best])
    if not math.isfinite(threshold):
        # Only "nothing is FAKE" meets the target: just above the highest score.
        threshold = float(np.nextafter(np.max(scores), np.inf))
    return threshold


def real_threshold_for(scores: np.ndarray, labels: np.ndarray, target_fnr: float) -> float:
    """The largest threshold with at most ``target_fnr`` of the fakes below it (REAL below it)."""
    fakes = np.sort(scores[labels == 1])
    allowed = math.floor(target_fnr * len(fakes) + 1e-9)
    # Fakes below fakes[allowed] number at most `allowed` (ties sit at it, not below).
    return (
        float(fakes[min(allowed, len(fakes) - 1)]) if allowed < len(fakes) else float(np.nextafter(fakes[-1], np.inf))
    )


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, rate) of the equal error rate: where FPR and FNR on the set are closest."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    finite = np.isfinite(thresholds)
    index = np.flatnonzero(finite)[np.argmin(np.abs(fpr - fnr)[finite])]
    return float(thresholds[index]), float((fpr[index] + fnr[index]) / 2)


def bootstrap_rate(
    values: np.ndarray, threshold: float, rng: np.random.Generator, rounds: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile interval of the share of ``values`` at or above ``threshold`` over bootstrap resamples."""
    hits = (values >= threshold).astype(np.float64)
    if len(hits) == 0:
        return 0.0, 1.0
    draws = rng.integers(0, len(hits), size=(rounds, len(hits)))
    shares = hits[draws].mean(axis=1)
    alpha = 1.0 - confidence
    return float(np.quantile(shares, alpha / 2)), float(np.quantile(shares, 1 - alpha / 2))


def _rate(values: np.ndarray, threshold: float, rng: np.random.Generator, rounds: int) -> Rate:
    count = int(np.count_nonzero(values >= threshold))
    total = len(values)
    low, high = bootstrap_rate(values, threshold, rng, rounds)
    exact_low, exact_high = clopper_pearson(count, total)
    return Rate(count / total, low, high, exact_low, exact_high, count, total)


@dataclass(frozen=True)
class SetInfo:
    """What the calibration set was: a name for reviewers, a hash of its listing, and what was left out."""

    name: str
    manifest_sha256: str
    refused: int = 0


@dataclass(frozen=True)
class Target:
    """What the calibration was fitted for (:class:`contract.Score`, classifier, version, checkpoint)."""

    score: Score
    model: str
    frames: int
    version: int | None
    checkpoint_sha256: str


def fit(
    scores,
    labels,
    *,
    target: Target,
    data: SetInfo,
    target_fpr: float,
    target_fnr: float | None = 0.05,
    prior: float | None = None,
    rounds: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    fitted_at: str = "",
    fitted_by: str = "",
) -> dict:
    """A calibration document (``calibration.json``) for raw ``scores`` with ``labels`` (1 = fake).

    Args:
        target_fnr: REAL below the threshold missing at most this share of fakes, UNCERTAIN between
            it and the FAKE threshold; None: no band (REAL below the FAKE threshold).
        prior: the share of fakes the calibrated probability should hold at (default: the set's).

    Raises:
        FitError: one class only, a target the set is too small for, a bad prior.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(scores) != len(labels):
        raise FitError(f"{len(scores)} scores for {len(labels)} labels")
    if not np.all(np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
        raise FitError("scores must be probabilities from 0 to 1")
    reals, fakes = scores[labels == 0], scores[labels == 1]
    if len(reals) == 0 or len(fakes) == 0:
        missing = "real" if len(reals) == 0 else "fake"
        raise FitError(
            f"the set has no scored {missing} video ({len(reals)} real, {len(fakes)} fake): a calibration needs both"
        )
    needed = required_real_videos(target_fpr)
    if len(reals) < needed:
        raise FitError(
            f"a target false-positive rate of {target_fpr:g} needs at least {needed} scored real videos, the set "
            f"has {len(reals)}: with fewer, even no false positive at all leaves the exact 95 % upper bound of the "
            f"rate above {target_fpr:g}; give more real videos or a target of at least "
            f"{1 - (1 - CONFIDENCE) ** (1 / len(reals)):.3g}"
        )
    if prior is not None and not 0.0 < prior < 1.0:
        raise FitError(f"--prior is the expected share of fakes, between 0 and 1, got {prior}")
    slope, intercept = platt(scores, labels)
    prevalence = len(fakes) / len(scores)
    if prior is not None:
        # Bayes: moving the prior odds moves the logit by the difference of the log odds.
        intercept += math.log(prior / (1 - prior)) - math.log(prevalence / (1 - prevalence))
    fake_threshold = midway(scores, fake_threshold_for(scores, labels, target_fpr))
    real_threshold = (
        fake_threshold if target_fnr is None else midway(scores, real_threshold_for(scores, labels, target_fnr))
    )
    band = real_threshold < fake_threshold
    real_threshold = min(real_threshold, fake_threshold)
    rng = np.random.default_rng(seed)
    fpr = _rate(reals, fake_threshold, rng, rounds)
    tpr = _rate(fakes, fake_threshold, rng, rounds)
    # Fakes called REAL: below real_threshold.
    fnr_count = int(np.count_nonzero(fakes < real_threshold))
    fnr_low, fnr_high = clopper_pearson(fnr_count, len(fakes))
    decisions = [decide(s, fake_threshold, real_threshold) for s in scores]
    share = {d: decisions.count(d) / len(decisions) for d in DECISIONS}
    eer_threshold, eer_rate = eer(scores, labels)
    calibrated = _sigmoid(slope * _logit(scores) + intercept)
    return {
        "format": FORMAT,
        "for": {
            "score": target.score.value,
            "model": target.model,
            "frames": target.frames,
            "version": target.version,
            "checkpoint_sha256": target.checkpoint_sha256,
        },
        "set": {
            "name": data.name,
            "manifest_sha256": data.manifest_sha256,
            "videos": len(scores),
            "real": len(reals),
            "fake": len(fakes),
            "refused": data.refused,
            "prevalence": prevalence,
        },
        "calibration": {
            "method": METHOD,
            "slope": slope,
            "intercept": intercept,
            "prior": prior,
            "brier_raw": float(np.mean((scores - labels) ** 2)),
            "brier_calibrated": float(np.mean((calibrated - labels) ** 2)),
            "ece_raw": expected_calibration_error(scores, labels),
            "ece_calibrated": expected_calibration_error(calibrated, labels),
        },
        "operating_point": {
            "target_fpr": target_fpr,
            "target_fnr": target_fnr,
            "fake_threshold": fake_threshold,
            "real_threshold": real_threshold,
            "uncertain_band": band,
            "fpr": fpr.as_dict(),
            "tpr": tpr.as_dict(),
            "fnr": {
                "value": fnr_count / len(fakes),
                "exact_low": fnr_low,
                "exact_high": fnr_high,
                "count": fnr_count,
                "total": len(fakes),
            },
            "decision_share": share,
            "score_mean": float(np.mean(scores)),
            "required_real_videos": needed,
        },
        "eer": {"threshold": eer_threshold, "rate": eer_rate},
        "fitted": {
            "at": fitted_at,
            "by": fitted_by,
            "bootstrap_rounds": rounds,
            "seed": seed,
            "confidence": CONFIDENCE,
        },
    }


#: Bins of the reliability table and of the expected calibration error.
RELIABILITY_BINS = 10


def reliability(probabilities, labels, bins: int = RELIABILITY_BINS, values=None) -> list[dict]:
    """Per equal-width bin of the probabilities: how many videos, the mean probability, the share of
    fakes, and (``values`` given, one per video) the mean of those values in the bin as ``mean_value``."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    v = None if values is None else np.asarray(values, dtype=np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "videos": count,
                "mean_probability": float(p[inside].mean()) if count else None,
                "fake_share": float(y[inside].mean()) if count else None,
                **({} if v is None else {"mean_value": float(v[inside].mean()) if count else None}),
            }
        )
    return rows


def expected_calibration_error(probabilities, labels, bins: int = RELIABILITY_BINS) -> float:
    """The videos-weighted mean gap between the mean probability and the share of fakes per bin."""
    total = len(probabilities)
    return float(
        sum(
            row["videos"] / total * abs(row["mean_probability"] - row["fake_share"])
            for row in reliability(probabilities, labels, bins)
            if row["videos"]
        )
    )
