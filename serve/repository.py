"""What a model repository holds, checked before the server starts.

A model needs an exported file when Triton (or its python model) would load one:

* any ``resnext_lstm_*`` model needs ``<version>/model.onnx`` (the classifier, whatever its
  configuration says, is always exported from a checkpoint first);
* a configuration on the ONNX Runtime platform or backend needs its model file (``model.onnx``
  unless ``default_model_filename`` says otherwise);
* a configuration on the TensorRT platform or backend needs its plan (``model.plan``);
* a python model whose parameters name an ``*.onnx`` or ``*.plan`` file needs that file;
* a version folder holding ``export.json`` was written by the exporter and needs ``model.onnx``.

The file is looked for in every numeric version folder (``1/`` when there is none yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2

from contract import DEFAULT_VERSION, EXPORT_METADATA_FILE, ONNX_FILE, PLAN_FILE, Kind

CONFIG_FILE = "config.pbtxt"
CUSTOM_CONFIG_DIR = "configs"

ONNX_PLATFORMS = frozenset({"onnxruntime_onnx"})
ONNX_BACKENDS = frozenset({"onnxruntime"})
TENSORRT_PLATFORMS = frozenset({"tensorrt_plan"})
TENSORRT_BACKENDS = frozenset({"tensorrt"})
ARTIFACT_SUFFIXES = (".onnx", ".plan")


@dataclass(frozen=True)
class MissingArtifact:
    """One exported file a model loads but does not have.

    Attributes:
        model: the model's folder name.
        path: the file that should exist.
    """

    model: str
    path: Path

    @property
    def kind(self) -> str:
        """``"tensorrt"`` for a plan, ``"onnx"`` otherwise (what builds it)."""
        return "tensorrt" if self.path.suffix == ".plan" else "onnx"


def config_path(model_dir: Path, config_name: str | None) -> Path | None:
    """The configuration file Triton reads for a model, or None when it has none.

    Triton (>= 2.46) started with ``--model-config-name=<name>`` reads
    ``configs/<name>.pbtxt`` and falls back to ``config.pbtxt``.
    """
    if config_name:
        custom = model_dir / CUSTOM_CONFIG_DIR / f"{config_name}.pbtxt"
        if custom.is_file():
            return custom
    default = model_dir / CONFIG_FILE
    return default if default.is_file() else None


def model_dirs(repository: Path) -> list[Path]:
    """Model folders of a repository (every sub-folder not hidden), sorted by name."""
    return sorted(path for path in repository.iterdir() if path.is_dir() and not path.name.startswith("."))


def _parse_config(path: Path) -> model_config_pb2.ModelConfig | None:
    """The parsed configuration, or None when it does not parse (Triton reports that itself)."""
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    except (text_format.ParseError, DecodeError, UnicodeDecodeError):
        return None


def _version_dirs(model_dir: Path) -> list[Path]:
    versions = sorted(
        (path for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit()), key=lambda p: int(p.name)
    )
    return versions or [model_dir / DEFAULT_VERSION]


def required_files(model_dir: Path, config_name: str | None) -> list[str]:
    """Names of the exported files each version folder of a model must hold (see module doc)."""
    names: list[str] = []
    if model_dir.name.startswith(Kind.CLASSIFIER.prefix):
        names.append(ONNX_FILE)
    if any((version / EXPORT_METADATA_FILE).is_file() for version in _version_dirs(model_dir)):
        names.append(ONNX_FILE)
    path = config_path(model_dir, config_name)
    config = _parse_config(path) if path is not None else None
    if config is not None:
        if config.platform in ONNX_PLATFORMS or config.backend in ONNX_BACKENDS:
            names.append(config.default_model_filename or ONNX_FILE)
        if config.platform in TENSORRT_PLATFORMS or config.backend in TENSORRT_BACKENDS:
            names.append(config.default_model_filename or PLAN_FILE)
        for parameter in config.parameters.values():
            value = parameter.string_value
            # A bare file name, not a path: the python model resolves it inside its version folder.
            if value.endswith(ARTIFACT_SUFFIXES) and "/" not in value:
                names.append(value)
    return list(dict.fromkeys(names))


def missing_artifacts(repository: Path, config_name: str | None) -> list[MissingArtifact]:
    """Every exported file that some model of the repository loads and lacks."""
    missing: list[MissingArtifact] = []
    for model_dir in model_dirs(repository):
        for name in required_files(model_dir, config_name):
            for version in _version_dirs(model_dir):
                if not (version / name).is_file():
                    missing.append(MissingArtifact(model=model_dir.name, path=version / name))
    return missing


def export_commands(repository: Path, missing: Iterable[MissingArtifact]) -> list[str]:
    """The commands that build the given missing files for ``repository``."""
    kinds = {item.kind for item in missing}
    commands: list[str] = []
    if "onnx" in kinds:
        commands.append(f"python -m export onnx --checkpoints <checkpoint-dir> --repository {repository}")
        commands.append(
            "(no published checkpoints at hand? `python -m export demo-checkpoints --out <checkpoint-dir>` "
            "writes random-weight ones whose scores mean nothing)"
        )
    if "tensorrt" in kinds:
        commands.append(f"python -m export tensorrt --repository {repository}   (on the GPU that will serve it)")
    return commands
