"""The custom metrics that watch for drift, through the python backend's metrics API.

Only python models can add metrics to Triton's metrics port, and on GPU nodes the classifier is
the onnxruntime backend: so the version-choosing step (``classify_<N>``, python everywhere) counts
what it served, labelled with the classifier version, and the preprocessing models count the
videos with and without a face. Names and labels are :data:`contract.DRIFT_METRICS`; the alert
rules in ``deploy/monitoring/rules/`` compare each rate with its own recent past.

Several instances of one model (separate stub processes) register the same families and label
sets: Triton keeps one metric per family and label set and counts from every instance into it.
"""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from contract import (
    DECISIONS,
    METRIC_CALIBRATION_MEAN,
    METRIC_CALIBRATION_SHARE,
    METRIC_CALIBRATION_TARGET_FPR,
    METRIC_DECISIONS,
    METRIC_SCORE,
    METRIC_VIDEOS,
    SCORE_BUCKETS,
    Score,
)

FACES_FOUND = "found"
FACES_NONE = "none"


class VideoCounter:
    """``deepfake_videos_total{model, faces}``: videos preprocessed, with a face found or with none."""

    def __init__(self, model: str) -> None:
        self._family = pb_utils.MetricFamily(
            name=METRIC_VIDEOS,
            description="videos preprocessed, by whether a face was found (faces=found|none)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._metrics = {
            outcome: self._family.Metric(labels={"model": model, "faces": outcome})
            for outcome in (FACES_FOUND, FACES_NONE)
        }

    def count(self, outcome: str) -> None:
        self._metrics[outcome].increment(1)


class DecisionMetrics:
    """The served scores and decisions per classifier version, and the calibration's own rates beside them."""

    def __init__(self, model: str, score: Score) -> None:
        self.model = model
        self.score = score
        self._scores = pb_utils.MetricFamily(
            name=METRIC_SCORE,
            description="raw fake probability (PROB_FAKE) of each scored video or face",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self._decisions = pb_utils.MetricFamily(
            name=METRIC_DECISIONS,
            description="decisions served, by decision and whether a calibration was in force",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._share = pb_utils.MetricFamily(
            name=METRIC_CALIBRATION_SHARE,
            description="share of the calibration set given each decision at the served operating point",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self._mean = pb_utils.MetricFamily(
            name=METRIC_CALIBRATION_MEAN,
            description="mean raw score on the calibration set",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self._target = pb_utils.MetricFamily(
            name=METRIC_CALIBRATION_TARGET_FPR,
            description="the false-positive rate the served operating point was chosen for",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self._histograms: dict[int, object] = {}
        self._counters: dict[tuple[int, str, bool], object] = {}
        self._gauges: dict[int, list] = {}

    def _labels(self, version: int) -> dict[str, str]:
        return {"model": self.model, "version": str(version), "score": self.score.value}

    def _histogram(self, version: int):
        histogram = self._histograms.get(version)
        if histogram is None:
            histogram = self._scores.Metric(labels=self._labels(version), buckets=list(SCORE_BUCKETS))
            self._histograms[version] = histogram
        return histogram

    def _counter(self, version: int, decision: str, calibrated: bool):
        key = (version, decision, calibrated)
        counter = self._counters.get(key)
        if counter is None:
            labels = {**self._labels(version), "decision": decision, "calibrated": "yes" if calibrated else "no"}
            counter = self._decisions.Metric(labels=labels)
            self._counters[key] = counter
        return counter

    def observe(self, version: int, prob_fake: float, decision: str, calibrated: bool) -> None:
        self._histogram(version).observe(prob_fake)
        self._counter(version, decision, calibrated).increment(1)

    def calibration(self, version: int, calibration) -> None:
        """Exports ``calibration``'s rates for ``version`` (None: takes them away).

        The version's histogram and its decision counters for this calibration state are created at
        0 here, before the first answer: Prometheus's ``increase()`` does not count the value a series
        first appears with, so a counter born at 1 would lose the first decision from every rate.
        """
        self._histogram(version)
        for decision in DECISIONS:
            self._counter(version, decision, calibration is not None)
        self._gauges.pop(version, None)  # deleting the metrics removes them from the port
        if calibration is None:
            return
        labels = self._labels(version)
        gauges = []
        for decision in DECISIONS:
            gauge = self._share.Metric(labels={**labels, "decision": decision})
            gauge.set(calibration.decision_share[decision])
            gauges.append(gauge)
        for family, value in ((self._mean, calibration.score_mean), (self._target, calibration.target_fpr)):
            gauge = family.Metric(labels=labels)
            gauge.set(value)
            gauges.append(gauge)
        self._gauges[version] = gauges
