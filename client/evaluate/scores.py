"""One line of ``scores.jsonl`` per video, and the video scores derived from it.

A line holds what the report needs, so that the report can be rebuilt from the file alone:
the faithful score, every frame's score, and the face tracks when the server scored all faces.
numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from contract import (
    CHECKPOINT_SHA256_KEY,
    DECISION_KEY,
    KNOWN_MATCH_KEY,
    MODEL_KEY,
    MODEL_VERSION_KEY,
    OPERATING_POINT_KEY,
    PROB_FAKE_CALIBRATED_KEY,
)

from ..results import ScoreResult

#: Keys of a line, in this order; ``face_tracks`` only when the result had them. The model's and the
#: version's keys are the ones every results file uses (a resumed run reads them to refuse another
#: model's or another version's file); a refused video's version and checkpoint are null.
SCORE_KEYS = (
    "video",
    "truth",
    "group",
    MODEL_KEY,
    "prob_fake",
    "frame_prob_fake",
    "faces_found",
    "frames_decoded",
    "error",
    MODEL_VERSION_KEY,
    CHECKPOINT_SHA256_KEY,
    DECISION_KEY,
    PROB_FAKE_CALIBRATED_KEY,
    OPERATING_POINT_KEY,
    KNOWN_MATCH_KEY,
)
TRACKS_KEY = "face_tracks"
#: The all-faces model's own "is any face fake" score.
MAX_KEY = "max_prob_fake"
NO_FACE_MESSAGE = "no face"
SCORE_DECIMALS = 7

# The DFDC winner's rule (selimsef/dfdc_deepfake_challenge, kernel_utils.confident_strategy):
# when more than sz // 2.5 and more than 11 frame scores exceed 0.8, the mean of those; else
# when more than 90 % are below 0.2, the mean of those; else the mean of all. It was written for
# 32 frames with every face of each; with fewer than 12 frames the first branch cannot apply.
CONFIDENT_HIGH = 0.8
CONFIDENT_SHARE_DIVISOR = 2.5
CONFIDENT_MIN_HIGH = 11
CONFIDENT_LOW = 0.2
CONFIDENT_LOW_SHARE = 0.9


def _rounded(values) -> list[float]:
    return [round(float(value), SCORE_DECIMALS) for value in values]


def _track_record(track) -> dict:
    """A face track (a mapping or an object with the same fields) as plain JSON values."""

    def field(name):
        return track.get(name) if isinstance(track, Mapping) else getattr(track, name, None)

    frame_scores = field("frame_prob_fake")
    prob_fake = field("prob_fake")
    record = {
        "prob_fake": None if prob_fake is None else round(float(prob_fake), SCORE_DECIMALS),
        "frame_prob_fake": None if frame_scores is None else _rounded(np.asarray(frame_scores).reshape(-1)),
    }
    found = field("face_found")
    if found is not None:
        record["face_found"] = [bool(value) for value in np.asarray(found).reshape(-1)]
    prominence = field("prominence")
    if prominence is not None:
        record["prominence"] = float(prominence)
    return record


def record_maker(truth_of: Callable[[str], tuple[int, str]], model: str) -> Callable[[ScoreResult], dict]:
    """The ``to_record`` of :func:`client.batch.run_batch` for an evaluation.

    Args:
        truth_of: ``video -> (truth, group)``.
        model: the model asked (``deepfake_<N>``, or the all-faces model).
    """

    def to_record(result: ScoreResult) -> dict:
        truth, group = truth_of(result.video)
        frames = result.frame_prob_fake
        record = {
            "video": result.video,
            "truth": truth,
            "group": group,
            MODEL_KEY: model,
            "prob_fake": round(float(result.prob_fake), SCORE_DECIMALS),
            "frame_prob_fake": None if frames is None else _rounded(frames),
            "faces_found": result.faces_found,
            "frames_decoded": result.frames_decoded,
            "error": None,
            MODEL_VERSION_KEY: result.model_version,
            CHECKPOINT_SHA256_KEY: result.checkpoint_sha256,
            DECISION_KEY: result.decision,
            PROB_FAKE_CALIBRATED_KEY: round(float(result.prob_fake_calibrated), SCORE_DECIMALS),
            OPERATING_POINT_KEY: result.operating_point,
            KNOWN_MATCH_KEY: result.known_match,
        }
        tracks = getattr(result, TRACKS_KEY, None)
        if tracks is not None:
            record[TRACKS_KEY] = [_track_record(track) for track in tracks]
            max_prob_fake = getattr(result, MAX_KEY, None)
            record[MAX_KEY] = None if max_prob_fake is None else round(float(max_prob_fake), SCORE_DECIMALS)
        return record

    return to_record


def refused_record(video: str, truth: int, group: str, model: str, message: str) -> dict:
    """The line of a video the server refused (INVALID_ARGUMENT)."""
    record = dict.fromkeys(SCORE_KEYS)
    record.update({"video": video, "truth": truth, "group": group, MODEL_KEY: model, "error": message})
    return record


def is_no_face(record: Mapping) -> bool:
    """Whether the server refused the video because no frame has a face."""
    return record.get("error") is not None and NO_FACE_MESSAGE in record["error"].lower()


def confident_strategy(scores: Sequence[float]) -> float:
    """The DFDC winner's "confident" aggregation of frame scores (see the constants above)."""
    pred = np.asarray(scores, dtype=np.float64)
    size = len(pred)
    high = np.count_nonzero(pred > CONFIDENT_HIGH)
    if high > size // CONFIDENT_SHARE_DIVISOR and high > CONFIDENT_MIN_HIGH:
        return float(np.mean(pred[pred > CONFIDENT_HIGH]))
    if np.count_nonzero(pred < CONFIDENT_LOW) > CONFIDENT_LOW_SHARE * size:
        return float(np.mean(pred[pred < CONFIDENT_LOW]))
    return float(np.mean(pred))


def mean_of_face_max(tracks: Sequence[Mapping]) -> float:
    """Mean over frames of the highest score among the faces in that frame.

    The hook for all-faces results: each track's ``frame_prob_fake`` has one score per frame.
    Where the tracks say in which frames each face was detected (``face_found``), a frame's
    maximum is over the faces detected in it (a face not detected there is scored on a crop
    borrowed from another frame), and frames without any are left out; with no such frame at
    all, or no ``face_found``, every face counts in every frame.
    """
    kept = [track for track in tracks if track.get("frame_prob_fake")]
    if not kept:
        raise ValueError("no face track has per-frame scores")
    length = min(len(track["frame_prob_fake"]) for track in kept)
    stacked = np.array([track["frame_prob_fake"][:length] for track in kept], dtype=np.float64)
    if all(track.get("face_found") is not None and len(track["face_found"]) >= length for track in kept):
        found = np.array([track["face_found"][:length] for track in kept], dtype=bool)
        frames = found.any(axis=0)
        if frames.any():
            return float(np.mean(np.max(np.where(found, stacked, -np.inf), axis=0)[frames]))
    return float(np.mean(np.max(stacked, axis=0)))


#: Aggregation name -> (what it is, how it is computed from a scored line or why not).
AGGREGATIONS = {
    "faithful": "the served PROB_FAKE: the published weights score the clip from its last frame",
    "frame_mean": "mean of the N per-frame scores of the main face",
    "confident": "the DFDC winner's confident rule over the main face's per-frame scores",
    "face_max_mean": "mean over frames of the per-frame maximum over the faces detected in that frame (all faces)",
    "any_face": "the all-faces model's MAX_PROB_FAKE: the highest over faces of each face's mean score where detected",
}
FAITHFUL = "faithful"


def aggregate(record: Mapping, name: str) -> tuple[float | None, str | None]:
    """``(score, None)`` of a scored line for aggregation ``name``, or ``(None, why not)``."""
    if record.get("error") is not None:
        return None, "refused"
    frames = record.get("frame_prob_fake")
    if name == "faithful":
        return float(record["prob_fake"]), None
    if name in ("frame_mean", "confident"):
        if not frames:
            return None, "no per-frame scores in the results"
        return (float(np.mean(frames)) if name == "frame_mean" else confident_strategy(frames)), None
    if name == "face_max_mean":
        tracks = record.get(TRACKS_KEY)
        if not tracks:
            return None, "no face_tracks in the results: the videos were scored without all faces"
        return mean_of_face_max(tracks), None
    if name == "any_face":
        value = record.get(MAX_KEY)
        if value is None:
            return None, "no max_prob_fake in the results: the videos were scored without all faces"
        return float(value), None
    raise ValueError(f"unknown aggregation '{name}'")


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
