"""Calibration and operating points without a server: the fit against scikit-learn, thresholds against
the ROC curve and hand-checked cases, the sample-size rule, the bootstrap's coverage on simulated
scores, the document's checks, installing and rolling back, and the words reviewers read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import _SigmoidCalibration
from sklearn.metrics import roc_curve

from calibration.fit import (
    FitError,
    SetInfo,
    Target,
    bootstrap_rate,
    clopper_pearson,
    eer,
    fake_threshold_for,
    fit,
    platt,
    real_threshold_for,
    required_real_videos,
)
from calibration.install import InstallError, history, in_force, install, rollback
from calibration.point import Calibration, CalibrationError, decide, describe, load, uncalibrated_point
from client.versions import format_calibration
from contract import (
    CALIBRATION_HISTORY_FILE,
    DECISIONS,
    EXPORT_METADATA_FILE,
    OPERATING_POINT_KEYS,
    Score,
    calibration_file,
)

CHECKPOINT = "ab" * 32
TARGET = Target(Score.DEEPFAKE, "resnext_lstm_10", 10, 1, CHECKPOINT)
DATA = SetInfo("sim", "cd" * 32)


def simulated(reals: int, fakes: int, shift: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores as a softmax would give them: sigmoid of normal logits, fakes shifted up."""
    rng = np.random.default_rng(seed)
    logits = np.concatenate([rng.normal(0, 1, reals), rng.normal(shift, 1, fakes)])
    return 1 / (1 + np.exp(-logits)), np.concatenate([np.zeros(reals, int), np.ones(fakes, int)])


def test_platt_matches_scikit_learns_sigmoid_calibration() -> None:
    scores, labels = simulated(300, 200)
    slope, intercept = platt(scores, labels)
    reference = _SigmoidCalibration().fit(np.log(scores / (1 - scores)), labels)
    # scikit-learn's is P = 1 / (1 + exp(a f + b)).
    assert slope == pytest.approx(-reference.a_, abs=1e-4) and intercept == pytest.approx(-reference.b_, abs=1e-4)


def test_a_perfectly_separated_set_gets_a_finite_slope() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    slope, intercept = platt(scores, np.array([0, 0, 0, 1, 1, 1]))
    assert math.isfinite(slope) and math.isfinite(intercept) and slope > 0


def test_the_fake_threshold_is_the_roc_curves_best_point_within_the_target() -> None:
    scores, labels = simulated(400, 300, seed=3)
    for target in (0.01, 0.05, 0.2):
        threshold = fake_threshold_for(scores, labels, target)
        fpr, tpr, _ = roc_curve(labels, scores)
        best = max(t for f, t in zip(fpr, tpr) if f <= target)
        flagged = scores >= threshold
        assert flagged[labels == 0].mean() <= target
        assert flagged[labels == 1].mean() == pytest.approx(best)


def test_thresholds_on_a_hand_checked_set() -> None:
    reals = [0.1, 0.2, 0.3, 0.4, 0.9]
    fakes = [0.35, 0.6, 0.7, 0.8, 0.95]
    scores, labels = np.array(reals + fakes), np.array([0] * 5 + [1] * 5)
    # One false positive allowed (0.9): everything from 0.6 up is FAKE, 4 of 5 fakes.
    assert fake_threshold_for(scores, labels, 0.2) == 0.6
    # None allowed: only 0.95 is above every real.
    assert fake_threshold_for(scores, labels, 0.1) == 0.95
    # At most one fake of five below: REAL below 0.6 (0.35 is the one missed).
    assert real_threshold_for(scores, labels, 0.2) == 0.6
    assert real_threshold_for(scores, labels, 0.1) == 0.35
    threshold, rate = eer(scores, labels)
    assert threshold == 0.6 and rate == pytest.approx(0.2)


def test_decisions_at_the_thresholds() -> None:
    assert [decide(p, 0.7, 0.3) for p in (0.0, 0.29, 0.3, 0.5, 0.69, 0.7, 1.0)] == [
        "REAL",
        "REAL",
        "UNCERTAIN",
        "UNCERTAIN",
        "UNCERTAIN",
        "FAKE",
        "FAKE",
    ]
    assert decide(0.5, 0.5, 0.5) == "FAKE" and decide(0.4999, 0.5, 0.5) == "REAL"


def test_the_sample_size_rule_is_the_exact_binomial_bound() -> None:
    assert required_real_videos(0.01) == 299 and required_real_videos(0.05) == 59
    for target in (0.01, 0.05, 0.2):
        n = required_real_videos(target)
        # With n reals and no false positive the exact one-sided 95 % bound is at most the target;
        # with one fewer it is above.
        assert 1 - 0.05 ** (1 / n) <= target < 1 - 0.05 ** (1 / (n - 1))
    scores, labels = simulated(298, 100)
    with pytest.raises(FitError, match="at least 299 scored real videos, the set has 298"):
        fit(scores, labels, target=TARGET, data=DATA, target_fpr=0.01)
    scores, labels = simulated(299, 100)
    assert fit(scores, labels, target=TARGET, data=DATA, target_fpr=0.01, rounds=200)["set"]["real"] == 299


def test_a_set_with_one_class_is_refused() -> None:
    with pytest.raises(FitError, match="no scored fake video"):
        fit(np.full(400, 0.2), np.zeros(400, int), target=TARGET, data=DATA, target_fpr=0.05)


def test_the_bootstrap_interval_covers_the_true_rate() -> None:
    # Reals' scores standard normal, a fixed threshold: the true FPR is known.
    threshold = 1.2816  # upper 10 % point
    true_rate = 0.1
    rng = np.random.default_rng(7)
    trials, covered_bootstrap, covered_exact = 300, 0, 0
    for _ in range(trials):
        sample = rng.normal(0, 1, 300)
        low, high = bootstrap_rate(sample, threshold, rng, 1000)
        covered_bootstrap += low <= true_rate <= high
        exact_low, exact_high = clopper_pearson(int((sample >= threshold).sum()), len(sample))
        covered_exact += exact_low <= true_rate <= exact_high
    # 95 % intervals: the bootstrap's percentile interval is a little short of nominal at this n.
    assert 0.90 <= covered_bootstrap / trials <= 0.99
    assert covered_exact / trials >= 0.94


def test_the_document_reads_back_and_applies_its_calibration_and_thresholds() -> None:
    scores, labels = simulated(400, 300)
    document = fit(scores, labels, target=TARGET, data=DATA, target_fpr=0.05, target_fnr=0.1, rounds=300)
    calibration = Calibration.from_document(json.loads(json.dumps(document)), "f" * 64)
    point = document["operating_point"]
    for score in scores[:50]:
        probability, decision = calibration.decide(float(score))
        assert decision == decide(float(score), point["fake_threshold"], point["real_threshold"])
        logit = math.log(score / (1 - score))
        expected = 1 / (
            1 + math.exp(-(document["calibration"]["slope"] * logit + document["calibration"]["intercept"]))
        )
        assert probability == pytest.approx(expected)
    shares = [decide(float(s), point["fake_threshold"], point["real_threshold"]) for s in scores]
    assert {d: shares.count(d) / len(shares) for d in DECISIONS} == pytest.approx(point["decision_share"])
    assert tuple(calibration.operating_point()) == OPERATING_POINT_KEYS
    # Calibrated: the expected calibration error drops on the set it was fitted on.
    assert document["calibration"]["ece_calibrated"] < document["calibration"]["ece_raw"]


def test_a_prior_moves_the_intercept_by_the_log_odds() -> None:
    scores, labels = simulated(300, 300)
    plain = fit(scores, labels, target=TARGET, data=DATA, target_fpr=0.05, rounds=100)
    shifted = fit(scores, labels, target=TARGET, data=DATA, target_fpr=0.05, prior=0.1, rounds=100)
    assert shifted["calibration"]["intercept"] - plain["calibration"]["intercept"] == pytest.approx(math.log(0.1 / 0.9))
    assert shifted["operating_point"]["fake_threshold"] == plain["operating_point"]["fake_threshold"]


def _document(**changes) -> dict:
    scores, labels = simulated(100, 100)
    document = fit(scores, labels, target=TARGET, data=DATA, target_fpr=0.05, rounds=100)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        document[section][key] = value
    return document


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"for__score": "smile"}, "for.score"),
        ({"for__frames": 0}, "for.frames"),
        ({"calibration__method": "isotonic"}, "calibration.method"),
        ({"operating_point__fake_threshold": "high"}, "fake_threshold"),
        ({"operating_point__real_threshold": 2.0}, "real_threshold 2.0 is above"),
        ({"set__real": -1}, "set.real"),
    ],
)
def test_a_malformed_document_is_refused_naming_the_field(changes, message) -> None:
    with pytest.raises(CalibrationError, match=message):
        Calibration.from_document(_document(**changes))


def test_a_calibration_for_another_score_model_or_checkpoint_is_refused() -> None:
    calibration = Calibration.from_document(_document())
    calibration.check_for(Score.DEEPFAKE, "resnext_lstm_10", CHECKPOINT, 1)
    with pytest.raises(CalibrationError, match="not the original scores"):
        calibration.check_for(Score.ORIGINAL, "resnext_lstm_10", CHECKPOINT, 1)
    with pytest.raises(CalibrationError, match="not the deepfake scores of resnext_lstm_20"):
        calibration.check_for(Score.DEEPFAKE, "resnext_lstm_20", CHECKPOINT, 1)
    with pytest.raises(CalibrationError, match="exported from checkpoint 000000000000"):
        calibration.check_for(Score.DEEPFAKE, "resnext_lstm_10", "0" * 64, 2)


def _repository(tmp_path: Path, checkpoint: str = CHECKPOINT) -> Path:
    folder = tmp_path / "repo" / "resnext_lstm_10" / "1"
    folder.mkdir(parents=True)
    (folder / EXPORT_METADATA_FILE).write_text(json.dumps({"sha256": checkpoint, "checkpoint": "x.pt"}))
    return tmp_path / "repo"


def _file(tmp_path: Path, name: str, **changes) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(_document(**changes)))
    return path


def test_install_records_who_and_rollback_replays_the_history(tmp_path) -> None:
    repository = _repository(tmp_path)
    first, second = _file(tmp_path, "a.json"), _file(tmp_path, "b.json", operating_point__target_fpr=0.02)
    one = install(first, repository, by="alice", at="t1")
    two = install(second, repository, by="bob", at="t2")
    served = repository / "resnext_lstm_10" / "1" / calibration_file(Score.DEEPFAKE)
    assert two.previous_sha256 == one.sha256 and load(served).sha256 == two.sha256
    back = rollback(repository, "resnext_lstm_10", 1, Score.DEEPFAKE, by="carol", at="t3")
    assert (back.sha256, back.previous_sha256) == (one.sha256, two.sha256) and load(served).sha256 == one.sha256
    rollback(repository, "resnext_lstm_10", 1, Score.DEEPFAKE, by="carol", at="t4")
    assert not served.exists()
    records = history(repository, "resnext_lstm_10", 1)
    assert [(r["by"], r["action"], r["at"]) for r in records] == [
        ("alice", "install", "t1"),
        ("bob", "install", "t2"),
        ("carol", "rollback", "t3"),
        ("carol", "rollback", "t4"),
    ]
    assert in_force(records, Score.DEEPFAKE) == []
    with pytest.raises(InstallError, match="no deepfake calibration installed"):
        rollback(repository, "resnext_lstm_10", 1, Score.DEEPFAKE, by="carol")
    assert (repository / "resnext_lstm_10" / "1" / CALIBRATION_HISTORY_FILE).read_text().count("\n") == 4


def test_install_refuses_another_checkpoint_or_version_and_changes_nothing(tmp_path) -> None:
    repository = _repository(tmp_path, checkpoint="0" * 64)
    folder = repository / "resnext_lstm_10" / "1"
    with pytest.raises(InstallError, match="refused: fitted for"):
        install(_file(tmp_path, "a.json"), repository, by="alice")
    with pytest.raises(InstallError, match="not version 2"):
        install(_file(tmp_path, "b.json"), repository, by="alice", version=2)
    with pytest.raises(InstallError, match="not JSON"):
        bad = tmp_path / "bad.json"
        bad.write_text("{")
        install(bad, repository, by="alice")
    assert sorted(p.name for p in folder.iterdir()) == [EXPORT_METADATA_FILE]


def test_reviewers_read_the_decision_in_words() -> None:
    calibration = Calibration.from_document(_document(set__name="dfdc-val"))
    point = calibration.operating_point()
    fake = describe("FAKE", point)
    assert fake.startswith("FAKE: at or above the threshold chosen for at most 5 % false positives on dfdc-val")
    assert "n = 100 real, 100 fake" in fake
    assert describe("UNCERTAIN", point).startswith("UNCERTAIN: between")
    assert describe("REAL", point).startswith("REAL: below the threshold chosen to miss at most 5 % of fakes")
    assert "uncalibrated" in describe("FAKE", uncalibrated_point(Score.DEEPFAKE))


def test_health_lists_the_operating_point_of_each_score() -> None:
    point = Calibration.from_document(_document(set__name="dfdc-val")).operating_point()
    line = format_calibration("deepfake", point)
    assert line.startswith("deepfake: FAKE at >= ") and "for at most 5 % false positives on dfdc-val" in line
    assert format_calibration("original", uncalibrated_point(Score.ORIGINAL)) == "original: uncalibrated (FAKE at 0.5)"
    refused = format_calibration("deepfake", {**uncalibrated_point(Score.DEEPFAKE), "error": "fitted for x"})
    assert "REFUSED (fitted for x)" in refused
