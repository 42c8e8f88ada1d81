"""What the served classifiers were exported from, for clients: ``model_info``.

Committed configs cannot say which checkpoints a deployment serves (the ONNX files and their
``export.json`` are built on the node), so this model reads every
``resnext_lstm_<N>/<version>/export.json`` of its repository when it loads and answers each
request with them as one JSON document (``INFO``, one string). Clients show a banner when a
served checkpoint is a demo one: random weights written by ``python -m export demo-checkpoints``,
whose scores mean nothing. Loading again (a restart, a repository reload) reads the files again.

The document::

    {"classifiers": {"20": {"model": "resnext_lstm_20", "frames": 20,
                            "checkpoint": "model_50_acc_20_frames_demo_random.pt", "checkpoint_accuracy": 50.0,
                            "sha256": "...", "precision": "fp32", "demo": true,
                            "export": {...the whole export.json...}}, ...},
     "demo": true}

``demo`` at the top is true when any served classifier is a demo one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from contract import DEMO_CHECKPOINT_TAG, EXPORT_METADATA_FILE, MODEL_INFO_OUTPUTS, Kind, parse_model_name

DEMO_CHECKPOINT = re.compile(rf"^model_\d+(?:\.\d+)?_acc_\d+_frames_{DEMO_CHECKPOINT_TAG}\.pt$")
(OUTPUT_NAME,) = MODEL_INFO_OUTPUTS


def is_demo_checkpoint(path: str) -> bool:
    """Whether a checkpoint path names a demo checkpoint (random weights)."""
    return DEMO_CHECKPOINT.match(Path(path).name) is not None


def _latest_version(model_dir: Path) -> Path | None:
    versions = [child for child in model_dir.iterdir() if child.is_dir() and child.name.isdigit()]
    return max(versions, key=lambda child: int(child.name)) if versions else None


def read_model_info(repository: Path) -> dict[str, Any]:
    """The document described above, from the ``export.json`` files under ``repository``.

    A classifier folder without ``export.json`` (not exported yet) is left out; an unreadable or
    malformed one raises ``ValueError`` naming the file, so that a broken export is not served
    as if it were fine.
    """
    classifiers: dict[str, dict[str, Any]] = {}
    for model_dir in sorted(repository.iterdir()):
        parsed = parse_model_name(model_dir.name)
        if parsed is None or parsed[0] is not Kind.CLASSIFIER or not model_dir.is_dir():
            continue
        version = _latest_version(model_dir)
        path = version / EXPORT_METADATA_FILE if version is not None else None
        if path is None or not path.is_file():
            continue
        try:
            export = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
        if not isinstance(export, dict) or not isinstance(export.get("checkpoint"), str):
            raise ValueError(f'{path} has no "checkpoint" path')
        frames = parsed[1]
        classifiers[str(frames)] = {
            "model": model_dir.name,
            "frames": frames,
            "checkpoint": Path(export["checkpoint"]).name,
            "checkpoint_accuracy": export.get("checkpoint_accuracy"),
            "sha256": export.get("sha256"),
            "precision": export.get("precision"),
            "demo": is_demo_checkpoint(export["checkpoint"]),
            "export": export,
        }
    return {"classifiers": classifiers, "demo": any(entry["demo"] for entry in classifiers.values())}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        # Imported here, not at the top: read_model_info is unit-tested without a server.
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        # args["model_repository"] is this model's own folder; the classifiers are its siblings.
        repository = Path(args["model_repository"]).parent
        try:
            info = read_model_info(repository)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {exc}") from exc
        self._answer = np.array([json.dumps(info, sort_keys=True).encode("utf-8")], dtype=np.object_)
        served = ", ".join(
            f"{n}: {c['checkpoint']}" for n, c in sorted(info["classifiers"].items(), key=lambda kv: int(kv[0]))
        )
        pb_utils.Logger.log_info(
            f"{args['model_name']}: classifiers {served or 'none exported'}"
            + (" (DEMO checkpoints: random weights)" if info["demo"] else "")
        )

    def execute(self, requests):
        return [
            self._pb.InferenceResponse(output_tensors=[self._pb.Tensor(OUTPUT_NAME, self._answer)]) for _ in requests
        ]
