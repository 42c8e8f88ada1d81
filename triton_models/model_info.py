"""What the served classifiers were exported from, for clients: ``model_info``.

Committed configs cannot say which checkpoints a deployment serves (the ONNX files and their
``export.json`` are built on the node), so this model reads the ``export.json`` of every version of
every ``resnext_lstm_<N>`` and ``resnext_temporal_<N>`` in its repository, at each request (a few
small files: a version exported and loaded while the server runs shows at once), and answers with
them as one JSON document (``INFO``, one string). Clients show a banner when a served checkpoint is
a demo one: random weights written by ``python -m export demo-checkpoints``, whose scores mean
nothing.

The document::

    {"classifiers": {"20": {<the entry of the latest ready version>,
                            "versions": {"1": {<entry>}, "2": {<entry>}}}, ...},
     "temporal": {"20": {<same shape>}},
     "demo": true}

An entry: ``model``, ``frames``, ``version``, ``checkpoint`` (file name), ``checkpoint_accuracy``,
``sha256``, ``precision``, ``demo``, ``lineage`` (null for a published checkpoint; for a trained
one its parent's sha256, the data manifest's hash and the held-out metrics), ``ready`` (loaded and
ready on this server), ``export`` (the whole ``export.json``) and ``calibrations``: per score the
version serves (``deepfake`` and ``original`` for a classifier, ``temporal`` for a temporal model),
the operating point in force (:data:`contract.OPERATING_POINT_KEYS`, with ``fitted`` and ``eer``
from the calibration file), the uncalibrated point when there is none, or ``error`` when the file
there is refused (``classify_<N>`` then keeps serving the one it had). ``demo`` at the top is true
when the latest ready classifier of any length is a demo one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from calibration.point import CalibrationError, load, uncalibrated_point
from contract import (
    DEMO_CHECKPOINT_TAG,
    EXPORT_METADATA_FILE,
    MODEL_INFO_OUTPUTS,
    MODEL_INFO_SECTIONS,
    SELECT_SCORES,
    SELECTED_KINDS,
    Kind,
    Score,
    calibration_file,
    parse_model_name,
    version_folders,
)

DEMO_CHECKPOINT = re.compile(rf"^model_\d+(?:\.\d+)?_acc_\d+_frames_{DEMO_CHECKPOINT_TAG}\.pt$")
(OUTPUT_NAME,) = MODEL_INFO_OUTPUTS
#: The document's section for each versioned kind it reports.
SECTIONS = MODEL_INFO_SECTIONS


def is_demo_checkpoint(path: str) -> bool:
    """Whether a checkpoint path names a demo checkpoint (random weights)."""
    return DEMO_CHECKPOINT.match(Path(path).name) is not None


def scores_of(kind: Kind) -> list[Score]:
    """The scores answered with versions of ``kind`` (each has a calibration of its own)."""
    return [SELECT_SCORES[step] for step, target in SELECTED_KINDS.items() if target is kind]


def calibration_entry(version_dir: Path, score: Score, model: str, sha256: str | None) -> dict[str, Any]:
    """The operating point a version folder holds for ``score`` (see the module docstring)."""
    path = version_dir / calibration_file(score)
    if not path.exists():
        return uncalibrated_point(score)
    try:
        calibration = load(path)
        calibration.check_for(score, model, sha256 or "", int(version_dir.name))
    except CalibrationError as exc:
        return {**uncalibrated_point(score), "error": str(exc)}
    document = calibration.document
    return {**calibration.operating_point(), "fitted": document.get("fitted"), "eer": document.get("eer")}


def _entry(model_dir: Path, frames: int, version: int, ready: bool, kind: Kind) -> dict[str, Any] | None:
    path = model_dir / str(version) / EXPORT_METADATA_FILE
    if not path.is_file():
        return None
    try:
        export = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(export, dict) or not isinstance(export.get("checkpoint"), str):
        raise ValueError(f'{path} has no "checkpoint" path')
    return {
        "model": model_dir.name,
        "frames": frames,
        "version": version,
        "checkpoint": Path(export["checkpoint"]).name,
        "checkpoint_accuracy": export.get("checkpoint_accuracy"),
        "sha256": export.get("sha256"),
        "precision": export.get("precision"),
        "demo": is_demo_checkpoint(export["checkpoint"]),
        "lineage": export.get("lineage"),
        "ready": ready,
        "export": export,
        "calibrations": {
            score.value: calibration_entry(model_dir / str(version), score, model_dir.name, export.get("sha256"))
            for score in scores_of(kind)
        },
    }


def read_model_info(repository: Path, is_ready: Callable[[str, int], bool] | None = None) -> dict[str, Any]:
    """The document described above, from the ``export.json`` files under ``repository``.

    Args:
        is_ready: whether the server has a model version loaded and ready; None: every version
            on disk counts as ready (read without a server).

    A version folder without ``export.json`` (not exported yet) is left out; an unreadable or
    malformed one raises ``ValueError`` naming the file, so that a broken export is not served
    as if it were fine.
    """
    document: dict[str, Any] = {section: {} for section in SECTIONS.values()}
    for model_dir in sorted(repository.iterdir()):
        parsed = parse_model_name(model_dir.name)
        if parsed is None or parsed[0] not in SECTIONS or not model_dir.is_dir():
            continue
        kind, frames = parsed
        versions = {}
        for version in version_folders(model_dir):
            ready = True if is_ready is None else is_ready(model_dir.name, version)
            entry = _entry(model_dir, frames, version, ready, kind)
            if entry is not None:
                versions[str(version)] = entry
        if not versions:
            continue
        ready_versions = [entry for entry in versions.values() if entry["ready"]]
        latest = (ready_versions or list(versions.values()))[-1]
        document[SECTIONS[kind]][str(frames)] = {**latest, "versions": versions}
    document["demo"] = any(entry["demo"] for entry in document["classifiers"].values())
    return document


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        # Imported here, not at the top: read_model_info is unit-tested without a server.
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        # args["model_repository"] is this model's own folder; the classifiers are its siblings.
        self.name = args["model_name"]
        self.repository = Path(args["model_repository"]).parent
        try:
            info = read_model_info(self.repository)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: {exc}") from exc
        served = ", ".join(
            f"{n}: " + ", ".join(f"v{v} {entry['checkpoint']}" for v, entry in c["versions"].items())
            for n, c in sorted(info["classifiers"].items(), key=lambda kv: int(kv[0]))
        )
        pb_utils.Logger.log_info(
            f"{self.name}: classifiers {served or 'none exported'}"
            + (" (DEMO checkpoints: random weights)" if info["demo"] else "")
        )

    def _is_ready(self, model: str, version: int) -> bool:
        return self._pb.is_model_ready(model, str(version))

    def execute(self, requests):
        pb_utils = self._pb
        try:
            info = read_model_info(self.repository, self._is_ready)
        except ValueError as exc:
            error = pb_utils.TritonError(f"{self.name}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        answer = np.array([json.dumps(info, sort_keys=True).encode("utf-8")], dtype=np.object_)
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, answer)]) for _ in requests]
