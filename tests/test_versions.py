"""Classifier versions without a server: the repository's version folders, export's refusals and
lineage, model_info's document, the stream's version setting and the version facts of an answer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from contract import EXPORT_METADATA_FILE, Exit, Kind, model_name, version_folders
from export.__main__ import main as export_main
from export.__main__ import published_checkpoint, read_lineage
from export.checkpoints import CheckpointError, sha256_of
from export.live import _rank
from export.repository import (
    ENTRY_FILE,
    RETIRED_PREFIX,
    RepositoryLayoutError,
    ensure_model_folders,
    frame_classifier_link,
    restore_version,
    retire_version,
    served_versions,
    write_version_files,
)
from preprocessing.errors import InputError
from preprocessing.live import StreamSettings
from triton_models.model_info import read_model_info
from triton_models.versions import VersionError, checkpoint_sha256

FRAMES = 10


def _exported(repository: Path, version: int, sha: str, checkpoint: str, lineage=None, kind=Kind.CLASSIFIER) -> Path:
    folder = repository / model_name(kind, FRAMES) / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"checkpoint": f"/somewhere/{checkpoint}", "sha256": sha, "precision": "fp32", "lineage": lineage}
    (folder / EXPORT_METADATA_FILE).write_text(json.dumps(metadata))
    return folder


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    ensure_model_folders(root, [FRAMES])
    return root


def test_version_folders_are_positive_integers_in_order(tmp_path: Path) -> None:
    for name in ("1", "10", "2", "0", "01", "retired_2_x", ".export-3-1", "x"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a folder")
    assert version_folders(tmp_path) == [1, 2, 10]
    assert version_folders(tmp_path / "missing") == []


def test_a_new_version_folder_gets_its_entry_and_the_per_frame_twin(repository: Path) -> None:
    write_version_files(repository, Kind.CLASSIFIER, FRAMES, 2)
    assert (repository / model_name(Kind.CLASSIFIER, FRAMES) / "2" / ENTRY_FILE).is_file()
    relative, target = frame_classifier_link(FRAMES, 2)
    assert (repository / relative).is_symlink() and str((repository / relative).readlink()) == target
    assert target == f"../../{model_name(Kind.CLASSIFIER, FRAMES)}/2/model.onnx"
    assert (repository / model_name(Kind.FRAME_CLASSIFIER, FRAMES) / "2" / ENTRY_FILE).is_file()
    with pytest.raises(ValueError, match="no versions"):
        write_version_files(repository, Kind.SCORE, FRAMES, 2)


def test_retire_and_restore_move_both_folders_and_refuse_what_cannot_be(repository: Path) -> None:
    write_version_files(repository, Kind.CLASSIFIER, FRAMES, 2)
    assert served_versions(repository, Kind.CLASSIFIER, FRAMES) == [1, 2]
    moved = retire_version(repository, Kind.CLASSIFIER, FRAMES, 2, stamp="20261203T000000Z")
    assert [path.name for path in moved] == [f"{RETIRED_PREFIX}2_20261203T000000Z"] * 2
    assert served_versions(repository, Kind.CLASSIFIER, FRAMES) == [1]
    assert served_versions(repository, Kind.FRAME_CLASSIFIER, FRAMES) == [1]
    # The retired per-frame folder's link follows its classifier's file, not a folder that is gone.
    link = repository / model_name(Kind.FRAME_CLASSIFIER, FRAMES) / moved[1].name / "model.onnx"
    assert str(link.readlink()) == f"../../{model_name(Kind.CLASSIFIER, FRAMES)}/{moved[1].name}/model.onnx"
    with pytest.raises(RepositoryLayoutError, match="only version"):
        retire_version(repository, Kind.CLASSIFIER, FRAMES, 1, stamp="x")
    with pytest.raises(RepositoryLayoutError, match="has no version 7"):
        retire_version(repository, Kind.CLASSIFIER, FRAMES, 7, stamp="x")
    restore_version(repository, Kind.CLASSIFIER, FRAMES, 2)
    assert served_versions(repository, Kind.CLASSIFIER, FRAMES) == [1, 2]
    relative, target = frame_classifier_link(FRAMES, 2)
    assert str((repository / relative).readlink()) == target
    assert served_versions(repository, Kind.FRAME_CLASSIFIER, FRAMES) == [1, 2]
    with pytest.raises(RepositoryLayoutError, match="served already"):
        restore_version(repository, Kind.CLASSIFIER, FRAMES, 2)
    with pytest.raises(RepositoryLayoutError, match="no retired version 5"):
        restore_version(repository, Kind.CLASSIFIER, FRAMES, 5)


def test_version_one_never_takes_a_trained_checkpoint(tmp_path: Path, caplog) -> None:
    for name in ("model_50_acc_10_frames_demo_random.pt", "model_99_acc_10_frames_trained_abc.pt"):
        (tmp_path / name).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="export"):
        chosen = published_checkpoint(tmp_path, FRAMES)
    assert chosen.path.name == "model_50_acc_10_frames_demo_random.pt"
    assert "trained_abc.pt: skipped" in caplog.text
    (tmp_path / "model_50_acc_10_frames_demo_random.pt").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint for 10 frames"):
        published_checkpoint(tmp_path, FRAMES)


def _report(folder: Path, sha: str | None) -> None:
    report = {
        "checkpoint": {"file": "model_90_acc_10_frames_trained_abc.pt", "sha256": sha},
        "parent": {"sha256": "p" * 64},
        "data": {"manifest_sha256": "m" * 64},
        "after": {"overall": {"video_auc": 0.9}},
        "head": "published",
    }
    (folder / "report.json").write_text(json.dumps(report))


def test_lineage_comes_from_the_report_beside_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model_90_acc_10_frames_trained_abc.pt"
    checkpoint.write_bytes(b"weights")
    sha = sha256_of(checkpoint)
    assert read_lineage(checkpoint, sha) is None
    _report(tmp_path, sha)
    lineage = read_lineage(checkpoint, sha)
    assert lineage["parent_sha256"] == "p" * 64 and lineage["manifest_sha256"] == "m" * 64
    assert lineage["metrics"] == {"video_auc": 0.9} and lineage["head"] == "published"
    _report(tmp_path, "0" * 64)
    with pytest.raises(CheckpointError, match="describes another checkpoint"):
        read_lineage(checkpoint, sha)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_lineage(checkpoint, sha)


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    # Every refusal below comes before the file is loaded: its bytes only need a sha256.
    path = tmp_path / "model_61_acc_10_frames_trained_abc.pt"
    path.write_bytes(b"not loaded")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --version"),
        (["--version", "2", "--frames", "20"], "is a 10-frame checkpoint"),
        (["--version", "2", "--precision", "fp16", "--checkpoint-name", "temporal"], "fp32 only"),
    ],
)
def test_export_of_a_version_refuses_bad_requests(trained, repository, caplog, extra, message) -> None:
    checkpoint = trained
    if "--checkpoint-name" in extra:
        extra = extra[: extra.index("--checkpoint-name")]
        checkpoint = trained.rename(trained.with_name("temporal_61_acc_10_frames_trained_abc.pt"))
    with caplog.at_level(logging.ERROR, logger="export"):
        code = export_main(["onnx", "--checkpoint", str(checkpoint), "--repository", str(repository), *extra])
    assert code == Exit.FAILED
    assert message in caplog.text


def test_export_of_a_version_refuses_a_badly_named_file_and_a_taken_version(trained, repository, caplog) -> None:
    odd = trained.rename(trained.with_name("weights.pt"))
    with caplog.at_level(logging.ERROR, logger="export"):
        assert export_main(["onnx", "--checkpoint", str(odd), "--version", "2", "--repository", str(repository)]) == 1
    assert "is not named model_<acc>_acc_<N>_frames_<tag>.pt" in caplog.text
    good = odd.rename(trained)
    _exported(repository, 2, "f" * 64, "model_70_acc_10_frames_trained_other.pt")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="export"):
        assert export_main(["onnx", "--checkpoint", str(good), "--version", "2", "--repository", str(repository)]) == 1
    assert "exported from another checkpoint" in caplog.text and "--force" in caplog.text


def test_version_one_export_rejects_a_version_flag(tmp_path, repository, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="export"):
        code = export_main(["onnx", "--checkpoints", str(tmp_path), "--version", "3", "--repository", str(repository)])
    assert code == Exit.FAILED and "--version goes with --checkpoint" in caplog.text


def test_model_info_lists_every_version_and_picks_the_latest_ready(repository: Path) -> None:
    _exported(repository, 1, "a" * 64, "model_50_acc_10_frames_demo_random.pt")
    lineage = {"parent_sha256": "a" * 64, "manifest_sha256": "m" * 64, "metrics": {"video_auc": 0.93}}
    _exported(repository, 2, "b" * 64, "model_93_acc_10_frames_trained_x.pt", lineage=lineage)
    info = read_model_info(repository)
    entry = info["classifiers"][str(FRAMES)]
    assert (entry["version"], entry["sha256"], entry["demo"], entry["lineage"]) == (2, "b" * 64, False, lineage)
    assert sorted(entry["versions"]) == ["1", "2"] and entry["versions"]["1"]["demo"]
    assert info["demo"] is False and info["temporal"] == {}
    # Version 2 on disk but not loaded: the latest ready one answers, and the document says so.
    info = read_model_info(repository, lambda model, version: version == 1)
    entry = info["classifiers"][str(FRAMES)]
    assert entry["version"] == 1 and entry["versions"]["2"]["ready"] is False and info["demo"] is True


def test_a_versions_checkpoint_comes_from_its_export_json(tmp_path: Path) -> None:
    folder = _exported(tmp_path, 3, "c" * 64, "model_1_acc_10_frames_x.pt")
    assert checkpoint_sha256(folder) == "c" * 64
    (folder / EXPORT_METADATA_FILE).write_text(json.dumps({"checkpoint": "x"}))
    with pytest.raises(VersionError, match="names no checkpoint sha256") as raised:
        checkpoint_sha256(folder)
    assert raised.value.invalid is False
    (folder / EXPORT_METADATA_FILE).unlink()
    with pytest.raises(VersionError, match="cannot be read"):
        checkpoint_sha256(folder)


def test_reload_loads_classifiers_before_the_steps_and_ensembles() -> None:
    names = ["deepfake_10", "classify_10", "resnext_lstm_10", "temporal_10", "resnext_temporal_10", "model_info"]
    ordered = sorted(names, key=lambda name: (_rank(name), name))
    assert ordered[:2] == ["resnext_lstm_10", "resnext_temporal_10"]
    assert ordered[2] == "classify_10"


def _settings(**extra) -> str:
    return json.dumps({"codec": "h264", "time_base": [1, 25], "frames": FRAMES, **extra})


def test_a_stream_names_the_version_it_is_scored_with() -> None:
    assert StreamSettings.from_json(_settings(), [FRAMES]).model_version == 0
    assert StreamSettings.from_json(_settings(model_version=2), [FRAMES]).model_version == 2
    for bad in (0, -1, "2", 1.5, True):
        with pytest.raises(InputError, match="model_version must be a positive integer"):
            StreamSettings.from_json(_settings(model_version=bad), [FRAMES])


def test_the_admin_key_in_the_environment_restricts_the_model_control_api(monkeypatch) -> None:
    from serve.__main__ import _with_admin_key
    from serve.options import Restriction

    monkeypatch.delenv("DEEPFAKE_ADMIN_KEY", raising=False)
    assert _with_admin_key([]) == []
    monkeypatch.setenv("DEEPFAKE_ADMIN_KEY", "k" * 20)
    (added,) = _with_admin_key([])
    assert (added.protocols, added.key, added.value) == (("model-repository",), "admin-key", "k" * 20)
    own = Restriction.parse("model-repository,statistics:mine=secret")
    assert _with_admin_key([own]) == [own]  # the caller's own restriction wins
    monkeypatch.setenv("DEEPFAKE_ADMIN_KEY", "bad,key")
    with pytest.raises(SystemExit, match="DEEPFAKE_ADMIN_KEY cannot be used") as raised:
        _with_admin_key([])
    assert "bad,key" not in str(raised.value)
