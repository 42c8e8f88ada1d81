"""The Triton model repository on disk: its folders, for any sequence length.

The folders for 10, 20 and 30 frames are committed exactly as ``render_model_folders`` writes
them (a test keeps them in sync; ``python -m export.repository`` rewrites them), and
``python -m export onnx --frames 40`` adds the folders for a length nobody committed. The configs
themselves are built in ``export/configs.py``; this module adds what sits beside them: the python
models' entry scripts, the ensembles' empty version folders and the per-frame classifiers' links
to their classifier's ONNX file.

Versions: a classifier serves every version folder it has. Version 1 (the published checkpoint)
is committed; ``export onnx --checkpoint FILE --version V`` adds ``<model>/<V>/`` with what a
version folder needs (:func:`write_version_files`), and the temporal models' folders appear the
first time one is exported (:data:`contract.TEMPORAL_KINDS`). ``retire_version`` takes a version
out of service by renaming its folder to a name Triton does not read as a version, and
``restore_version`` brings it back.
"""

from __future__ import annotations

import os
from pathlib import Path

from contract import (
    BASE_KINDS,
    DEFAULT_VERSION,
    ONNX_FILE,
    SERVED_LENGTHS,
    SHARED_KINDS,
    VERSIONED_KINDS,
    Kind,
    lengths_of,
    model_name,
    version_folders,
)
from export.configs import Config, ConfigFile, model_configs

ENTRY_FILE = "model.py"
#: What keeps an ensemble's empty version folder in git.
KEEP_FILE = ".gitkeep"
#: A retired version folder is renamed ``retired_<version>_<UTC time>``: Triton reads only
#: positive integers as versions, so it stops serving it at the next load.
RETIRED_PREFIX = "retired_"


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
    Kind.SELECT: _entry(
        "Triton entry point of classify_<N>: calls the classifier version a request names.", "triton_models.select"
    ),
    Kind.ORIGINAL_SELECT: _entry(
        "Triton entry point of classify_original_<N>: the classifier version a request names, for original_<N>.",
        "triton_models.select",
    ),
    Kind.TEMPORAL_CLASSIFIER: _entry(
        "Triton entry point of a temporal model on the embedded CPU server (ONNX Runtime in python).",
        "triton_models.classifier",
    ),
    Kind.TEMPORAL_SELECT: _entry(
        "Triton entry point of classify_temporal_<N>: calls the temporal model version a request names.",
        "triton_models.select",
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
    """Every committed text file of one model, by path relative to the repository.

    A temporal model's version folders are written by its export only: a version folder without
    its ONNX file would fail the whole model's load.
    """
    name = model_name(kind, frames)
    configs = model_configs(kind, frames)
    files = {f"{name}/{file.value}": config.text() for file, config in configs.items()}
    if kind is not Kind.TEMPORAL_CLASSIFIER:
        files.update(
            {f"{name}/{DEFAULT_VERSION}/{relative}": text for relative, text in _version_files(kind, configs).items()}
        )
    return files


def render_shared_folders() -> dict[str, str]:
    """Every committed text file of the models that serve all lengths, by path relative to the repository."""
    return {path: text for kind in Kind if kind in SHARED_KINDS for path, text in render_model_folder(kind).items()}


def render_model_folders(frames: int, kinds: tuple[Kind, ...] = BASE_KINDS) -> dict[str, str]:
    """Every committed text file of the models for one length, by path relative to the repository."""
    return {path: text for kind in kinds for path, text in render_model_folder(kind, frames).items()}


def frame_classifier_link(frames: int, version: str | int = DEFAULT_VERSION) -> tuple[str, str]:
    """The link of ``resnext_frame_<N>``'s ONNX file of one version: (path in the repository, its target)."""
    folder = f"{version}/{ONNX_FILE}"
    return (
        f"{model_name(Kind.FRAME_CLASSIFIER, frames)}/{folder}",
        f"../../{model_name(Kind.CLASSIFIER, frames)}/{folder}",
    )


def ensure_frame_links(repository: Path, frames_list: list[int], version: str | int = DEFAULT_VERSION) -> None:
    """Writes the model link of each ``resnext_frame_<N>`` that lacks one (of ``version``)."""
    for frames in frames_list:
        relative, target = frame_classifier_link(frames, version)
        path = repository / relative
        if not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)


def _write(repository: Path, frames_list: list[int], overwrite: bool, kinds: tuple[Kind, ...] = BASE_KINDS) -> None:
    for files in (render_shared_folders(), *(render_model_folders(frames, kinds) for frames in frames_list)):
        for relative, text in files.items():
            path = repository / relative
            if overwrite or not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if Kind.FRAME_CLASSIFIER in kinds:
        ensure_frame_links(repository, frames_list)


def ensure_model_folders(repository: Path, frames_list: list[int], kinds: tuple[Kind, ...] = BASE_KINDS) -> None:
    """Writes the folders of any length the repository does not have yet; leaves existing files alone.

    Raises:
        RepositoryLayoutError: ``repository`` exists and is not a folder.
    """
    if repository.exists() and not repository.is_dir():
        raise RepositoryLayoutError(f"model repository {repository} is not a folder")
    _write(repository, frames_list, overwrite=False, kinds=kinds)


def write_version_files(repository: Path, kind: Kind, frames: int, version: int) -> None:
    """What a new version folder needs beside its exported file: a python model's entry on the CPU
    server and, for a classifier, the per-frame classifier's version (its entry and the link to the
    file), so that live streams can use every version too."""
    if kind not in VERSIONED_KINDS:
        raise ValueError(f"{kind.value} has no versions of its own")
    entry = ENTRY_POINTS[kind]
    folder = repository / model_name(kind, frames) / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ENTRY_FILE).write_text(entry)
    if kind is Kind.CLASSIFIER:
        frame_folder = repository / model_name(Kind.FRAME_CLASSIFIER, frames) / str(version)
        frame_folder.mkdir(parents=True, exist_ok=True)
        (frame_folder / ENTRY_FILE).write_text(ENTRY_POINTS[Kind.FRAME_CLASSIFIER])
        ensure_frame_links(repository, [frames], version)


def served_versions(repository: Path, kind: Kind, frames: int) -> list[int]:
    """The version folders of a model in the repository, ascending."""
    return version_folders(repository / model_name(kind, frames))


def _version_folders_of(repository: Path, kind: Kind, frames: int) -> list[Path]:
    kinds = [kind, Kind.FRAME_CLASSIFIER] if kind is Kind.CLASSIFIER else [kind]
    return [repository / model_name(k, frames) for k in kinds]


def retire_version(repository: Path, kind: Kind, frames: int, version: int, stamp: str) -> list[Path]:
    """Takes one version out of service: renames its folder (and its per-frame twin's) to
    ``retired_<version>_<stamp>``, which Triton does not read as a version. Returns the new paths.

    Raises:
        RepositoryLayoutError: the version does not exist, or it is the only one left.
    """
    versions = served_versions(repository, kind, frames)
    name = model_name(kind, frames)
    if version not in versions:
        shown = ", ".join(map(str, versions)) or "none"
        raise RepositoryLayoutError(f"{name} has no version {version} (versions: {shown})")
    if versions == [version]:
        raise RepositoryLayoutError(f"version {version} is the only version of {name}: nothing would be served")
    moved = []
    retired = f"{RETIRED_PREFIX}{version}_{stamp}"
    for model_dir in _version_folders_of(repository, kind, frames):
        source = model_dir / str(version)
        if source.is_dir():
            target = model_dir / retired
            os.rename(source, target)
            moved.append(target)
    _point_frame_link(repository, kind, frames, retired)
    return moved


def _point_frame_link(repository: Path, kind: Kind, frames: int, folder: str) -> None:
    """Points the per-frame classifier's link in ``folder`` at the classifier's file in the folder of the
    same name, so that a retired version's link is not left dangling (Triton logs each dangling one)."""
    if kind is not Kind.CLASSIFIER:
        return
    link = repository / model_name(Kind.FRAME_CLASSIFIER, frames) / folder / ONNX_FILE
    if link.is_symlink():
        link.unlink()
        link.symlink_to(f"../../{model_name(Kind.CLASSIFIER, frames)}/{folder}/{ONNX_FILE}")


def restore_version(repository: Path, kind: Kind, frames: int, version: int) -> list[Path]:
    """Serves a retired version again (its most recently retired folder). Returns the restored paths.

    Raises:
        RepositoryLayoutError: no retired folder of that version, or the version exists already.
    """
    name = model_name(kind, frames)
    if version in served_versions(repository, kind, frames):
        raise RepositoryLayoutError(f"{name} version {version} is served already")
    restored = []
    for model_dir in _version_folders_of(repository, kind, frames):
        retired = sorted(model_dir.glob(f"{RETIRED_PREFIX}{version}_*")) if model_dir.is_dir() else []
        if retired:
            target = model_dir / str(version)
            os.rename(retired[-1], target)
            restored.append(target)
    if not restored:
        raise RepositoryLayoutError(f"{name} has no retired version {version}")
    _point_frame_link(repository, kind, frames, str(version))
    return restored


def served_lengths(repository: Path, kind: Kind = Kind.CLASSIFIER) -> list[int]:
    """Sequence lengths with a model folder of ``kind`` in the repository (default: the classifiers), sorted."""
    folders = [child.name for child in repository.iterdir() if child.is_dir()] if repository.is_dir() else []
    return lengths_of(kind, folders)


def main() -> None:
    """Rewrites the committed folders for the served lengths and the shared models (``python -m export.repository``)."""
    _write(Path(__file__).resolve().parent.parent / "model_repository", list(SERVED_LENGTHS), overwrite=True)


if __name__ == "__main__":
    main()
