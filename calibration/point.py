"""The calibration document, and a decision from a raw score. Standard library only.

A calibration is fitted for one served score (:class:`contract.Score`) of one classifier length and
version (its checkpoint's sha256), and holds:

- the calibration itself, Platt scaling on the logit of PROB_FAKE:
  ``calibrated = sigmoid(slope * logit(PROB_FAKE) + intercept)``, monotone, so thresholds on the
  raw score and on the calibrated one are the same decisions;
- the operating point: ``fake_threshold`` (FAKE at or above it, chosen for the target
  false-positive rate) and ``real_threshold`` (REAL below it, chosen for the target false-negative
  rate; UNCERTAIN between), both on the raw PROB_FAKE, so a served decision can be checked against
  the served raw score exactly;
- what it was fitted on (the set, its counts and manifest hash) and the rates it gave there, each
  with a 95 % bootstrap interval and an exact binomial bound.

The server's ``classify_<N>`` step reads it with :func:`load`, checks it against the version's
checkpoint (:meth:`Calibration.check_for`), and answers with :meth:`Calibration.decide` and
:meth:`Calibration.operating_point`. The clients put the point into words with :func:`describe`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import (
    DECISION_FAKE,
    DECISION_REAL,
    DECISION_UNCERTAIN,
    DECISIONS,
    OPERATING_POINT_KEYS,
    UNCALIBRATED_THRESHOLD,
    Score,
)

#: The document's format; a reader refuses another.
FORMAT = 1
METHOD = "platt"
#: Raw scores are clipped to [EPS, 1 - EPS] before the logit (a float32 softmax reaches 0 and 1).
EPS = 1e-6


class CalibrationError(ValueError):
    """A calibration document that cannot be used here: the message says which field and why."""


def logit(p: float) -> float:
    p = min(max(float(p), EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def decide(prob_fake: float, fake_threshold: float, real_threshold: float) -> str:
    """FAKE at or above ``fake_threshold``, REAL below ``real_threshold``, UNCERTAIN between."""
    if prob_fake >= fake_threshold:
        return DECISION_FAKE
    if prob_fake < real_threshold:
        return DECISION_REAL
    return DECISION_UNCERTAIN


@dataclass(frozen=True)
class Rate:
    """A rate measured on the calibration set: the estimate, its 95 % bootstrap interval, and the
    exact (Clopper-Pearson) 95 % interval, which stays honest where the bootstrap collapses (no
    event at all among a few hundred videos gives a bootstrap interval of [0, 0])."""

    value: float
    low: float
    high: float
    exact_low: float
    exact_high: float
    count: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "exact_low": self.exact_low,
            "exact_high": self.exact_high,
            "count": self.count,
            "total": self.total,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Rate:
        if not isinstance(data, dict):
            raise CalibrationError(f"{where}: expected an object, got {type(data).__name__}")
        values = {}
        for key in ("value", "low", "high", "exact_low", "exact_high"):
            values[key] = _probability(data.get(key), f"{where}.{key}")
        for key in ("count", "total"):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CalibrationError(f"{where}.{key}: expected a count, got {value!r}")
            values[key] = value
        return cls(**values)


@dataclass(frozen=True)
class Calibration:
    """One ``calibration_<score>.json``: see the module docstring. ``sha256`` is the file's own."""

    score: Score
    model: str
    frames: int
    version: int | None
    checkpoint_sha256: str
    slope: float
    intercept: float
    prior: float | None
    fake_threshold: float
    real_threshold: float
    target_fpr: float
    target_fnr: float | None
    fpr: Rate
    tpr: Rate
    decision_share: dict[str, float]
    score_mean: float
    set_name: str
    manifest_sha256: str
    real_videos: int
    fake_videos: int
    document: dict
    sha256: str

    # -- reading --------------------------------------------------------------------------------

    @classmethod
    def from_document(cls, document: Any, sha256: str = "") -> Calibration:
        """Checks and reads a parsed document.

        Raises:
            CalibrationError: a missing or malformed field, another format, thresholds out of order.
        """
        if not isinstance(document, dict):
            raise CalibrationError("a calibration is a JSON object")
        if document.get("format") != FORMAT:
            raise CalibrationError(f"format {document.get('format')!r}: this server reads format {FORMAT}")
        target = _section(document, "for")
        data = _section(document, "set")
        fitted = _section(document, "calibration")
        point = _section(document, "operating_point")
        try:
            score = Score(target.get("score"))
        except ValueError:
            raise CalibrationError(
                f"for.score {target.get('score')!r}: expected one of {', '.join(s.value for s in Score)}"
            ) from None
        if fitted.get("method") != METHOD:
            raise CalibrationError(f"calibration.method {fitted.get('method')!r}: this server applies {METHOD!r}")
        version = target.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            raise CalibrationError(f"for.version {version!r}: expected a version number or null")
        frames = target.get("frames")
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
            raise CalibrationError(f"for.frames {frames!r}: expected a sequence length")
        share = point.get("decision_share")
        if not isinstance(share, dict) or set(share) != set(DECISIONS):
            raise CalibrationError(f"operating_point.decision_share: expected {', '.join(DECISIONS)}")
        fake_threshold = _number(point.get("fake_threshold"), "operating_point.fake_threshold")
        real_threshold = _number(point.get("real_threshold"), "operating_point.real_threshold")
        if real_threshold > fake_threshold:
            raise CalibrationError(
                f"operating_point: real_threshold {real_threshold} is above fake_threshold {fake_threshold}"
            )
        prior = fitted.get("prior")
        target_fnr = point.get("target_fnr")
        return cls(
            score=score,
            model=_text(target.get("model"), "for.model"),
            frames=frames,
            version=version,
            checkpoint_sha256=_text(target.get("checkpoint_sha256"), "for.checkpoint_sha256"),
            slope=_number(fitted.get("slope"), "calibration.slope"),
            intercept=_number(fitted.get("intercept"), "calibration.intercept"),
            prior=None if prior is None else _probability(prior, "calibration.prior"),
            fake_threshold=fake_threshold,
            real_threshold=real_threshold,
            target_fpr=_probability(point.get("target_fpr"), "operating_point.target_fpr"),
            target_fnr=None if target_fnr is None else _probability(target_fnr, "operating_point.target_fnr"),
            fpr=Rate.from_dict(point.get("fpr"), "operating_point.fpr"),
            tpr=Rate.from_dict(point.get("tpr"), "operating_point.tpr"),
            decision_share={d: _probability(share[d], f"operating_point.decision_share.{d}") for d in DECISIONS},
            score_mean=_probability(point.get("score_mean"), "operating_point.score_mean"),
            set_name=_text(data.get("name"), "set.name"),
            manifest_sha256=_text(data.get("manifest_sha256"), "set.manifest_sha256"),
            real_videos=_count(data.get("real"), "set.real"),
            fake_videos=_count(data.get("fake"), "set.fake"),
            document=document,
            sha256=sha256,
        )

    # -- identity -------------------------------------------------------------------------------

    def check_for(self, score: Score, model: str, checkpoint_sha256: str, version: int | None = None) -> None:
        """Refuses a calibration fitted for another score, model or checkpoint.

        The checkpoint decides which version it belongs to: a version re-exported from the same
        checkpoint keeps it, another checkpoint (another version) does not.

        Raises:
            CalibrationError: naming what it was fitted for and what it was asked to serve.
        """
        fitted = f"{self.score.value} scores of {self.model}" + (
            "" if self.version is None else f" version {self.version}"
        )
        here = f"{score.value} scores of {model}" + ("" if version is None else f" version {version}")
        if self.score is not score or self.model != model:
            raise CalibrationError(f"fitted for the {fitted}, not the {here}")
        if self.checkpoint_sha256 != checkpoint_sha256:
            raise CalibrationError(
                f"fitted for the {fitted} (checkpoint {self.checkpoint_sha256[:12]}), but the {here} was exported "
                f"from checkpoint {checkpoint_sha256[:12]}"
            )

    # -- applying -------------------------------------------------------------------------------

    def calibrated(self, prob_fake: float) -> float:
        return sigmoid(self.slope * logit(prob_fake) + self.intercept)

    def decide(self, prob_fake: float) -> tuple[float, str]:
        """(the calibrated probability, the decision) of a raw PROB_FAKE."""
        return self.calibrated(prob_fake), decide(prob_fake, self.fake_threshold, self.real_threshold)

    def operating_point(self) -> dict[str, Any]:
        """``OPERATING_POINT``'s document (:data:`contract.OPERATING_POINT_KEYS`)."""
        point = {
            "calibrated": True,
            "score": self.score.value,
            "fake_threshold": self.fake_threshold,
            "real_threshold": self.real_threshold,
            "target_fpr": self.target_fpr,
            "target_fnr": self.target_fnr,
            "fpr": [self.fpr.value, self.fpr.low, self.fpr.high],
            "tpr": [self.tpr.value, self.tpr.low, self.tpr.high],
            "set": self.set_name,
            "real_videos": self.real_videos,
            "fake_videos": self.fake_videos,
            "prior": self.prior,
            "calibration_sha256": self.sha256,
        }
        assert tuple(point) == OPERATING_POINT_KEYS  # the contract's order
        return point


def uncalibrated_point(score: Score) -> dict[str, Any]:
    """The operating point without a calibration: the original app's 0.5, one threshold."""
    point = dict.fromkeys(OPERATING_POINT_KEYS)
    point.update(
        calibrated=False,
        score=score.value,
        fake_threshold=UNCALIBRATED_THRESHOLD,
        real_threshold=UNCALIBRATED_THRESHOLD,
    )
    return point


def decide_uncalibrated(prob_fake: float) -> tuple[float, str]:
    return float(prob_fake), decide(prob_fake, UNCALIBRATED_THRESHOLD, UNCALIBRATED_THRESHOLD)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load(path: str | Path) -> Calibration:
    """Reads and checks a calibration file.

    Raises:
        CalibrationError: unreadable, not JSON, or not a calibration (the message names the file).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CalibrationError(f"{path}: {error.strerror or error}") from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CalibrationError(f"{path}: not JSON ({error})") from None
    try:
        return Calibration.from_document(document, hashlib.sha256(raw).hexdigest())
    except CalibrationError as error:
        raise CalibrationError(f"{path}: {error}") from None


# -- words for reviewers ---------------------------------------------------------------------------


def _percent(value: float) -> str:
    shown = f"{100 * value:.1f}".rstrip("0").rstrip(".")
    return f"{shown} %"


def describe(decision: str | None, point: dict | None) -> str:
    """The decision and the operating point it was made at, in a reviewer's words.

    e.g. ``FAKE: at or above the threshold chosen for at most 1 % false positives on dfdc-val
    (n = 312 real, 288 fake; 0.6 % of its real videos were flagged, 95 % interval 0-1.3 %)``.
    """
    if decision is None or not point:
        return ""
    if not point.get("calibrated"):
        return (
            f"{decision}: uncalibrated, at the original app's 0.5 threshold (no calibration is installed for "
            "this model version; its false-positive rate on your videos is unknown)"
        )
    where = f"on {point.get('set')} (n = {point.get('real_videos')} real, {point.get('fake_videos')} fake"
    fpr = point.get("fpr") or [None, None, None]
    tpr = point.get("tpr") or [None, None, None]
    chosen = f"the threshold chosen for at most {_percent(point['target_fpr'])} false positives"
    measured = ""
    if None not in fpr:
        measured = (
            f"; there {_percent(fpr[0])} of real videos were flagged FAKE, 95 % interval "
            f"{_percent(fpr[1])}-{_percent(fpr[2])}"
        )
    if None not in tpr:
        measured += f", and {_percent(tpr[0])} of fakes"
    if decision == DECISION_FAKE:
        return f"FAKE: at or above {chosen} {where}{measured})"
    if decision == DECISION_REAL:
        fnr = point.get("target_fnr")
        below = (
            "below the threshold"
            if fnr is None
            else f"below the threshold chosen to miss at most {_percent(fnr)} of fakes"
        )
        return f"REAL: {below} {where}{measured})"
    return f"UNCERTAIN: between the REAL and FAKE thresholds chosen {where}{measured}); a reviewer should look"


# -- field checks ----------------------------------------------------------------------------------


def _section(document: dict, key: str) -> dict:
    value = document.get(key)
    if not isinstance(value, dict):
        raise CalibrationError(f"{key}: expected an object")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalibrationError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _probability(value: Any, where: str) -> float:
    number = _number(value, where)
    if not 0.0 <= number <= 1.0:
        raise CalibrationError(f"{where}: expected a number from 0 to 1, got {value!r}")
    return number


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CalibrationError(f"{where}: expected a count, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise CalibrationError(f"{where}: expected a non-empty string, got {value!r}")
    return value
