"""The Triton model repository on disk: its folders, for any sequence length.

The folders for 10, 20 and 30 frames are committed exactly as ``render_model_folders`` writes
them (a test keeps them in sync; ``python -m export.repository`` rewrites them), and
``python -m export onnx --frames 40`` adds the folders for a length nobody committed. The configs
themselves are built in ``export/configs.py``; this module adds what sits beside them: the python
models' entry scripts, the ensembles' empty version folders and the per-frame classifiers' links
to their classifier's ONNX file.
"""

from __future__ import annotations

import os
from pathlib import Path

from contract import (
    DEFAULT_VERSION,
    ONNX_FILE,
    PER_LENGTH_KINDS,
    SERVED_LENGTHS,
    SHARED_KINDS,
    Kind,
    lengths_of,
    model_name,
)
from export.configs import Config, ConfigFile, model_configs

ENTRY_FILE = "model.py"
#: What keeps an ensemble's empty version folder in git.
KEEP_FILE = ".gitkeep"


class RepositoryLayoutError(Exception):
    """The repository cannot hold the requested models; the message names the problem."""


def _entry(doc: str, module: str) -> str:
    return f'"""{doc}"""\n\nfrom {module} import TritonPythonModel  # noqa: F401\n'


#: The ``1/model.py`` of every model with a python-backend config: its docstring, then the module
#: of ``triton_models/`` that implements it (shared by every length).
ENTRY_POINTS: dict[Kind, str] = {
    Kind.PREPROCESS: _entry(
        "Triton entry point of a preprocessing model; the implementation is shared by every length.",
        "triton_models.preprocess",
    ),
    Kind.ORIGINAL_PREPROCESS: _entry(
        "Triton entry point of preprocess_original_<N>: the original app's preprocessing.", "triton_models.original"
    ),
    Kind.FACES: _entry("Triton entry point of faces_<N>: every face of a video, each scored.", "triton_models.faces"),
    Kind.CLASSIFIER: _entry(
        "Triton entry point of a classifier on the embedded CPU server (ONNX Runtime in python).",
        "triton_models.classifier",
    ),
    Kind.FRAME_CLASSIFIER: _entry(
        "Triton entry point of resnext_frame_<N>: the classifier, one frame per row (live streams).",
        "triton_models.classifier",
    ),
    Kind.STREAM: _entry(
        "Triton entry point of stream: live streams scored while they play.", "triton_models.live_stream"
    ),
    Kind.MODEL_INFO: _entry(
        "Triton entry point of model_info: the served checkpoints' export.json files, for clients.",
        "triton_models.model_info",
    ),
}


def _version_files(kind: Kind, configs: dict[ConfigFile, Config]) -> dict[str, str]:
    """What the version folder of a model holds in git: a python model's entry, an ensemble's keep file."""
    messages = [config.message for config in configs.values()]
    if any(message.backend == "python" for message in messages):
        return {ENTRY_FILE: ENTRY_POINTS[kind]}
    if all(message.platform == "ensemble" for message in messages):
        return {KEEP_FILE: ""}
    return {}


def render_model_folder(kind: Kind, frames: int | None = None) -> dict[str, str]:
    """Every committed text file of one model, by path relative to the repository."""
    name = model_name(kind, frames)
    configs = model_configs(kind, frames)
    files = {f"{name}/{file.value}": config.text() for file, config in configs.items()}
    files.update(
        {f"{name}/{DEFAULT_VERSION}/{relative}": text for relative, text in _version_files(kind, configs).items()}
    )
    return files


def render_shared_folders() -> dict[str, str]:
    """Every committed text file of the models that serve all lengths, by path relative to the repository."""
    return {path: text for kind in Kind if kind in SHARED_KINDS for path, text in render_model_folder(kind).items()}


def render_model_folders(frames: int) -> dict[str, str]:
    """Every committed text file of the models for one length, by path relative to the repository."""
    return {path: text for kind in PER_LENGTH_KINDS for path, text in render_model_folder(kind, frames).items()}


def frame_classifier_link(frames: int) -> tuple[str, str]:
    """The committed link of ``resnext_frame_<N>``'s ONNX file: (path in the repository, its target)."""
    folder = f"{DEFAULT_VERSION}/{ONNX_FILE}"
    return (
        f"{model_name(Kind.FRAME_CLASSIFIER, frames)}/{folder}",
        f"../../{model_name(Kind.CLASSIFIER, frames)}/{folder}",
    )


def ensure_frame_links(repository: Path, frames_list: list[int]) -> None:
    """Writes the model link of each ``resnext_frame_<N>`` that lacks one."""
    for frames in frames_list:
        relative, target = frame_classifier_link(frames)
        path = repository / relative
        if not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)


def _write(repository: Path, frames_list: list[int], overwrite: bool) -> None:
    for files in (render_shared_folders(), *(render_model_folders(frames) for frames in frames_list)):
        for relative, text in files.items():
            path = repository / relative
            if overwrite or not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    ensure_frame_links(repository, frames_list)


def ensure_model_folders(repository: Path, frames_list: list[int]) -> None:
    """Writes the folders of any length the repository does not have yet; leaves existing files alone.

    Raises:
        RepositoryLayoutError: ``repository`` exists and is not a folder.
    """
    if repository.exists() and not repository.is_dir():
        raise RepositoryLayoutError(f"model repository {repository} is not a folder")
    _write(repository, frames_list, overwrite=False)


def served_lengths(repository: Path, kind: Kind = Kind.CLASSIFIER) -> list[int]:
    """Sequence lengths with a model folder of ``kind`` in the repository (default: the classifiers), sorted."""
    folders = [child.name for child in repository.iterdir() if child.is_dir()] if repository.is_dir() else []
    return lengths_of(kind, folders)


def main() -> None:
    """Rewrites the committed folders for the served lengths and the shared models (``python -m export.repository``)."""
    _write(Path(__file__).resolve().parent.parent / "model_repository", list(SERVED_LENGTHS), overwrite=True)


if __name__ == "__main__":
    main()
