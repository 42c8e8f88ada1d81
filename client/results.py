"""What an answer means: the result types, the label rule, and results built from unpacked tensors.

numpy only; the tensors come checked against the serving contract (:func:`client.codec.unpack_outputs`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from contract import (
    ANSWER_FACT_TENSORS,
    CHECKPOINT_SHA256_KEY,
    DECISION_KEY,
    DECISIONS,
    FAKE_INDEX,
    KNOWN_MATCH_KEY,
    LABEL_FAKE,
    LABEL_REAL,
    MODEL_VERSION_KEY,
    NUM_CLASSES,
    OPERATING_POINT_KEY,
    OPERATING_POINT_KEYS,
    PROB_FAKE_CALIBRATED_KEY,
    REAL_INDEX,
    Mode,
)

from .errors import INTERNAL, INVALID_ARGUMENT, ClientError

PERCENT = 100.0
#: How far FRAME_WEIGHT may sum from 1 (float32 softmax over at most a few hundred frames).
WEIGHT_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class FaceTrack:
    """One face of the video, as ``faces_<N>`` scores it.

    Attributes:
        prob_fake: its faithful score (its crop in the last frame).
        frame_prob_fake: [N] its fake probability in every frame.
        face_boxes: [N, 4] the region cropped in every frame.
        face_found: [N] whether it was detected there (else the nearest frame's box).
        prominence: sum over its frames of sqrt(box area) x confidence (the order of the faces).
    """

    prob_fake: float
    frame_prob_fake: np.ndarray
    face_boxes: np.ndarray
    face_found: np.ndarray
    prominence: float


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """One video's score as returned by ``deepfake_<N>`` (or another mode's model).

    Attributes:
        video: name of the video (its path, or the name given for bytes).
        prob_fake: the faithful score: fake probability of the published N-frame model.
        logits: (fake, real) logits.
        frame_prob_fake: [N] fake probability of every frame on its own (None when the clip's
            score alone was asked for, :attr:`contract.Mode.VERDICT`).
        frame_prob_fake_mean: mean of ``frame_prob_fake`` (None likewise).
        label: ``"REAL"`` when the real logit is larger, else ``"FAKE"``.
        confidence: softmax probability of ``label``, in percent.
        face_boxes: [N, 4] x1, y1, x2, y2 in pixels of the displayed frame.
        face_found: [N] whether a face was detected in each frame.
        frame_times: [N] when each frame is shown, in seconds from the start of the video stream
            (0 for a still image; repeated for the padding of a clip shorter than N).
        faces_found: number of frames in which a face was detected.
        frames_decoded: frames the server decoded from the video.
        latency_ms: round trip of the successful request, in milliseconds.
        face_tracks: with :attr:`contract.Mode.FACES`: every face scored, most prominent first (the
            first is the main face, the one the other fields describe); else None.
        max_prob_fake: with :attr:`contract.Mode.FACES`: "is any face fake", the largest over the
            faces of each face's mean frame score where it was detected; else None.
        faces_seen: with :attr:`contract.Mode.FACES`: faces found in the clip, those not scored included.
        model_version: the classifier version that answered (the latest served unless one was asked for).
        checkpoint_sha256: sha256 of the checkpoint file that version was exported from.
        frame_weight: with :attr:`contract.Mode.TEMPORAL`: [N] how much each frame counted in the
            temporal model's answer (summing to 1); else None.
        decision: FAKE, REAL or UNCERTAIN at the served operating point (not :attr:`label`, the
            original app's argmax at 0.5).
        prob_fake_calibrated: ``prob_fake`` through the version's calibration (equal to it when
            the version is uncalibrated).
        operating_point: the point the decision was made at (:data:`contract.OPERATING_POINT_KEYS`);
            :func:`calibration.point.describe` puts it into words.
        known_match: what the bank of confirmed fakes says of the video: None (no entry matches), the
            entry (``status: match``, :data:`contract.KNOWN_MATCH_KEYS`), or ``status: unavailable``.
        fingerprint: the video's vPDQ fingerprint as the server computed it (JSON), or None.
    """

    video: str
    prob_fake: float
    logits: tuple
    frame_prob_fake: np.ndarray | None
    frame_prob_fake_mean: float | None
    label: str
    confidence: float
    face_boxes: np.ndarray
    face_found: np.ndarray
    frame_times: np.ndarray
    faces_found: int
    frames_decoded: int
    latency_ms: float
    face_tracks: tuple[FaceTrack, ...] | None = field(default=None, kw_only=True)
    max_prob_fake: float | None = field(default=None, kw_only=True)
    faces_seen: int | None = field(default=None, kw_only=True)
    model_version: int = field(kw_only=True)
    checkpoint_sha256: str = field(kw_only=True)
    frame_weight: np.ndarray | None = field(default=None, kw_only=True)
    decision: str = field(kw_only=True)
    prob_fake_calibrated: float = field(kw_only=True)
    operating_point: dict = field(kw_only=True)
    known_match: dict | None = field(default=None, kw_only=True)
    fingerprint: str | None = field(default=None, kw_only=True)

    @property
    def calibrated(self) -> bool:
        """Whether the decision was made at a calibrated operating point (else at 0.5)."""
        return bool(self.operating_point.get("calibrated"))


@dataclass(frozen=True, eq=False)
class ExplainResult(ScoreResult):
    """A score plus what the classifier saw, from ``explain_<N>``.

    Attributes:
        faces: [N, 3, 112, 112] normalised classifier input (BGR channels).
        heatmap: [N, 112, 112] class activation map of FAKE, 0..1 per frame.
    """

    faces: np.ndarray
    heatmap: np.ndarray


def label_and_confidence(logits) -> tuple[str, float]:
    """Label and confidence as the original application showed them.

    REAL when the real logit is the larger one, else FAKE (the application took ``torch.max`` of
    the softmax, which gives a tie to index 0, FAKE); the confidence is that class's softmax
    probability times 100.

    Args:
        logits: the two logits (fake, real).

    Returns:
        ``("REAL" | "FAKE", confidence in percent)``.
    """
    if len(logits) != NUM_CLASSES:
        raise ValueError(f"expected two logits (fake, real), got {len(logits)}")
    fake, real = float(logits[FAKE_INDEX]), float(logits[REAL_INDEX])
    label = LABEL_REAL if real > fake else LABEL_FAKE
    predicted, other = (real, fake) if label == LABEL_REAL else (fake, real)
    # softmax of the larger logit of two, written so that exp cannot overflow
    probability = 1.0 / (1.0 + math.exp(other - predicted))
    return label, probability * PERCENT


def score_result(mode: Mode, video: str, tensors: dict[str, np.ndarray], latency_ms: float) -> ScoreResult:
    """A :class:`ScoreResult` from the unpacked outputs of ``mode``'s model (with ``face_tracks`` for FACES)."""
    if mode is Mode.TEMPORAL:
        return ScoreResult(**_score_fields(video, tensors, latency_ms), frame_weight=_frame_weight(video, tensors))
    if mode is not Mode.FACES:
        return ScoreResult(**_score_fields(video, tensors, latency_ms))
    track_scores = tensors["TRACK_PROB_FAKE"].astype(np.float32, copy=False)
    track_frames = tensors["TRACK_FRAME_PROB_FAKE"].astype(np.float32, copy=False)
    max_prob_fake = float(tensors["MAX_PROB_FAKE"][0])
    if not (np.all(np.isfinite(track_scores)) and np.all(np.isfinite(track_frames)) and math.isfinite(max_prob_fake)):
        raise ClientError(INTERNAL, f"server returned non-finite face scores for '{video}'")
    tracks = tuple(
        FaceTrack(
            prob_fake=float(score),
            frame_prob_fake=frame_scores,
            face_boxes=boxes.astype(np.float32, copy=False),
            face_found=found.astype(bool, copy=False),
            prominence=float(prominence),
        )
        for score, frame_scores, boxes, found, prominence in zip(
            track_scores, track_frames, tensors["TRACK_BOXES"], tensors["TRACK_FOUND"], tensors["TRACK_PROMINENCE"]
        )
    )
    return ScoreResult(
        **_score_fields(video, tensors, latency_ms),
        face_tracks=tracks,
        max_prob_fake=max_prob_fake,
        faces_seen=int(tensors["FACES_SEEN"][0]),
    )


def explain_result(video: str, tensors: dict[str, np.ndarray], latency_ms: float) -> ExplainResult:
    """An :class:`ExplainResult` from the unpacked outputs of ``explain_<N>``."""
    heatmap = tensors["HEATMAP"].astype(np.float32, copy=False)
    if not np.all(np.isfinite(heatmap)):
        raise ClientError(INTERNAL, "server returned non-finite HEATMAP values")
    return ExplainResult(
        **_score_fields(video, tensors, latency_ms),
        faces=tensors["FACES"].astype(np.float32, copy=False),
        heatmap=heatmap,
    )


def _score_fields(video: str, tensors: dict[str, np.ndarray], latency_ms: float) -> dict:
    logits = tuple(float(value) for value in tensors["LOGITS"])
    prob_fake = float(tensors["PROB_FAKE"][0])
    frame_prob_fake = tensors.get("FRAME_PROB_FAKE")
    if frame_prob_fake is not None:
        frame_prob_fake = frame_prob_fake.astype(np.float32, copy=False)
    if not all(math.isfinite(v) for v in (*logits, prob_fake)) or (
        frame_prob_fake is not None and not np.all(np.isfinite(frame_prob_fake))
    ):
        raise ClientError(INTERNAL, f"server returned non-finite scores for '{video}'")
    label, confidence = label_and_confidence(logits)
    face_found = tensors["FACE_FOUND"].astype(bool, copy=False)
    return {
        "video": video,
        "prob_fake": prob_fake,
        "logits": logits,
        "frame_prob_fake": frame_prob_fake,
        "frame_prob_fake_mean": (
            None if frame_prob_fake is None else float(np.mean(frame_prob_fake, dtype=np.float64))
        ),
        "label": label,
        "confidence": confidence,
        "face_boxes": tensors["FACE_BOXES"].astype(np.float32, copy=False),
        "face_found": face_found,
        "frame_times": tensors["FRAME_TIMES"].astype(np.float32, copy=False),
        "faces_found": int(np.count_nonzero(face_found)),
        "frames_decoded": int(tensors["FRAMES_DECODED"][0]),
        "latency_ms": latency_ms,
        **answer_facts(video, tensors),
        "fingerprint": fingerprint_of(tensors),
    }


def answer_facts(video: str, tensors: dict[str, np.ndarray]) -> dict:
    """The answer facts (:data:`contract.ANSWER_FACTS` but the model): which classifier version and
    checkpoint answered, and the decision, calibrated probability and operating point.

    Raises:
        ClientError: INTERNAL for a version below 1, an empty checkpoint digest, an unknown decision
            or an operating point that is not the contract's document.
    """
    version = int(tensors[ANSWER_FACT_TENSORS[MODEL_VERSION_KEY]][0])
    raw = tensors[ANSWER_FACT_TENSORS[CHECKPOINT_SHA256_KEY]][0]
    digest = _text(raw)
    if version < 1 or not digest:
        raise ClientError(
            INTERNAL, f"server named no usable classifier version or checkpoint for '{video}' ({version}, {raw!r})"
        )
    decision = _text(tensors[ANSWER_FACT_TENSORS[DECISION_KEY]][0])
    calibrated = float(tensors[ANSWER_FACT_TENSORS[PROB_FAKE_CALIBRATED_KEY]][0])
    try:
        point = json.loads(_text(tensors[ANSWER_FACT_TENSORS[OPERATING_POINT_KEY]][0]))
    except json.JSONDecodeError:
        point = None
    if (
        decision not in DECISIONS
        or not (math.isfinite(calibrated) and 0.0 <= calibrated <= 1.0)
        or not isinstance(point, dict)
        or set(point) < set(OPERATING_POINT_KEYS)
    ):
        raise ClientError(INTERNAL, f"server returned no usable decision for '{video}' ({decision!r}, {point!r})")
    known = _known_match(video, tensors)
    return {
        MODEL_VERSION_KEY: version,
        CHECKPOINT_SHA256_KEY: digest,
        DECISION_KEY: decision,
        PROB_FAKE_CALIBRATED_KEY: calibrated,
        OPERATING_POINT_KEY: point,
        KNOWN_MATCH_KEY: known,
    }


def _known_match(video: str, tensors: dict[str, np.ndarray]) -> dict | None:
    """The answer's ``KNOWN_MATCH`` (None: no entry matched); absent from an older server: unavailable."""
    raw = tensors.get(ANSWER_FACT_TENSORS[KNOWN_MATCH_KEY])
    if raw is None:
        return {"status": "unavailable", "reason": "the server does not match against a bank"}
    try:
        known = json.loads(_text(raw.reshape(-1)[0]))
    except json.JSONDecodeError:
        known = "unreadable"
    if known is not None and not (isinstance(known, dict) and isinstance(known.get("status"), str)):
        raise ClientError(INTERNAL, f"server returned an unreadable KNOWN_MATCH for '{video}'")
    return known


def check_not_refused(model: str, tensors: dict[str, np.ndarray]) -> None:
    """Raises INVALID_ARGUMENT with ``preprocess_<N>``'s ``REFUSAL`` when it refused the video (called directly,
    it answers a refusal as data: see contract's REFUSAL)."""
    raw = tensors.get("REFUSAL")
    refusal = "" if raw is None else _text(raw.reshape(-1)[0])
    if refusal:
        raise ClientError(INVALID_ARGUMENT, f"{model}: {refusal}")


def fingerprint_of(tensors: dict[str, np.ndarray]) -> str | None:
    raw = tensors.get("FINGERPRINT")
    return None if raw is None else (_text(raw.reshape(-1)[0]) or None)


def _text(raw) -> str:
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return ""
    return str(raw)


def _frame_weight(video: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    weight = tensors["FRAME_WEIGHT"].astype(np.float32, copy=False)
    if not np.all(np.isfinite(weight)) or np.any(weight < 0) or abs(float(weight.sum()) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ClientError(INTERNAL, f"server returned frame weights for '{video}' that are not a distribution")
    return weight
