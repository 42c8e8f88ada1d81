"""``python -m client evaluate`` without a server: layouts, aggregations, metrics, report, resume.

The metrics are checked against scikit-learn called directly on the same scores; the command
runs against a stand-in client whose answers are known, so that every path (scored, refused,
server gone, resumed) is seen in a second.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn import metrics as skm

import client
from calibration.point import decide_uncalibrated, uncalibrated_point
from client import ClientError, ScoreResult
from client.cli import main
from client.evaluate import command, layouts, metrics, report, scores
from client.evaluate.layouts import LabelledVideo, LayoutError
from contract import Exit, Mode, Score

CLIENT_ROOT = Path(client.__file__).resolve().parents[1]
FRAMES = 10
EXACT = 1e-12


# ----------------------------------------------------------------------------- metrics


def known_scores(seed: int = 3, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    scores = np.clip(0.35 * truth + rng.normal(0.35, 0.2, n), 0.001, 0.999)
    return truth, scores


@pytest.mark.parametrize("threshold", [0.5, 0.42])
def test_metrics_equal_scikit_learn_on_known_scores(threshold):
    truth, scores_ = known_scores()
    result = metrics.binary_metrics(truth, scores_, threshold)
    predicted = (scores_ >= threshold).astype(int)

    assert result["video_auc"] == pytest.approx(skm.roc_auc_score(truth, scores_), abs=EXACT)
    assert result["average_precision"] == pytest.approx(skm.average_precision_score(truth, scores_), abs=EXACT)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted), abs=EXACT)
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(truth, predicted), abs=EXACT)
    assert result["log_loss"] == pytest.approx(skm.log_loss(truth, scores_), abs=EXACT)
    assert (result["n"], result["n_fake"], result["n_real"]) == (len(truth), truth.sum(), len(truth) - truth.sum())
    assert result["undefined"] == {}


def test_eer_is_where_the_roc_curve_meets_the_diagonal():
    truth, scores_ = known_scores(seed=11, n=80)
    fpr, tpr, _ = skm.roc_curve(truth, scores_)
    # The usual formula: the false positive rate x at which 1 - x equals the interpolated tpr.
    expected = brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0)

    assert metrics.equal_error_rate(truth, scores_) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("truth", "scores_", "eer"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.0),
        ([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2], 1.0),
        ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5),
    ],
)
def test_eer_of_hand_worked_cases(truth, scores_, eer):
    assert metrics.equal_error_rate(truth, scores_) == pytest.approx(eer, abs=EXACT)


def test_refused_videos_enter_only_the_second_log_loss_at_one_half():
    truth, scores_ = [0, 1, 1, 0], [0.2, 0.7, 0.9, 0.4]
    result = metrics.binary_metrics(truth, scores_, refused_truth=[1, 0, 1])

    assert result["n"] == 4
    assert result["log_loss"] == pytest.approx(skm.log_loss(truth, scores_), abs=EXACT)
    assert result["log_loss_refused_as_half"] == pytest.approx(
        skm.log_loss(truth + [1, 0, 1], scores_ + [0.5, 0.5, 0.5]), abs=EXACT
    )


def test_one_class_leaves_two_class_metrics_null_with_the_reason():
    result = metrics.binary_metrics([1, 1, 1], [0.9, 0.2, 0.6])

    for name in ("video_auc", "average_precision", "balanced_accuracy", "eer"):
        assert result[name] is None
        assert result["undefined"][name] == "only fake videos: needs real ones too"
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["log_loss"] == pytest.approx(skm.log_loss([1, 1, 1], [0.9, 0.2, 0.6], labels=[0, 1]))
    empty = metrics.binary_metrics([], [])
    assert empty["video_auc"] is None and empty["undefined"]["log_loss"] == "no scored video"


def test_frame_auc_pools_every_frame_with_its_videos_truth():
    frames = [[0.1, 0.3], [0.8, 0.2, 0.7], [0.4]]
    value, reason = metrics.frame_auc([0, 1, 0], frames)

    assert reason is None
    assert value == pytest.approx(skm.roc_auc_score([0, 0, 1, 1, 1, 0], [0.1, 0.3, 0.8, 0.2, 0.7, 0.4]))
    assert metrics.frame_auc([1], [[0.5]]) == (None, "only fake frames: needs real ones too")


def test_best_threshold_maximises_balanced_accuracy():
    truth, scores_ = known_scores(seed=5)
    threshold = metrics.best_threshold(truth, scores_)
    best = max(skm.balanced_accuracy_score(truth, (scores_ >= t).astype(int)) for t in np.unique(scores_))

    assert skm.balanced_accuracy_score(truth, (scores_ >= threshold).astype(int)) == pytest.approx(best)


def test_validation_split_is_seeded_stratified_and_disjoint():
    truth = [0] * 10 + [1] * 10
    first = metrics.validation_split(truth, 0.3, seed=7)

    assert first == metrics.validation_split(truth, 0.3, seed=7)
    assert first != metrics.validation_split(truth, 0.3, seed=8)
    validation, test = first
    assert sorted(validation + test) == list(range(20)) and len(validation) == 6
    assert sum(truth[i] for i in validation) == 3


# ----------------------------------------------------------------------------- aggregations


def test_confident_strategy_follows_the_dfdc_winners_three_branches():
    many_high = [0.9] * 14 + [0.1] * 18  # 14 > 32 // 2.5 = 12 and 14 > 11
    assert scores.confident_strategy(many_high) == pytest.approx(0.9)
    mostly_low = [0.1] * 30 + [0.6, 0.7]  # 30 > 0.9 * 32
    assert scores.confident_strategy(mostly_low) == pytest.approx(0.1)
    mixed = [0.9] * 10 + [0.3] * 22
    assert scores.confident_strategy(mixed) == pytest.approx(np.mean(mixed))
    # With 10 frames the "more than 11 high scores" branch cannot apply: the plain mean.
    assert scores.confident_strategy([0.95] * 10) == pytest.approx(0.95)


def test_mean_of_face_max_takes_each_frames_highest_face():
    tracks = [{"frame_prob_fake": [0.1, 0.9, 0.2]}, {"frame_prob_fake": [0.5, 0.3, 0.4]}]
    assert scores.mean_of_face_max(tracks) == pytest.approx((0.5 + 0.9 + 0.4) / 3)


def test_mean_of_face_max_counts_a_face_only_where_it_was_detected():
    tracks = [
        {"frame_prob_fake": [0.1, 0.9, 0.2, 0.6], "face_found": [True, False, True, False]},
        {"frame_prob_fake": [0.5, 0.3, 0.4, 0.7], "face_found": [False, True, True, False]},
    ]
    # Frame 1: only the second face was detected there; frame 3: no face, left out.
    assert scores.mean_of_face_max(tracks) == pytest.approx((0.1 + 0.3 + 0.4) / 3)
    nowhere = [{**track, "face_found": [False] * 4} for track in tracks]
    assert scores.mean_of_face_max(nowhere) == pytest.approx((0.5 + 0.9 + 0.4 + 0.7) / 4)


def test_aggregations_of_a_line_and_why_one_is_missing():
    line = {"prob_fake": 0.7, "frame_prob_fake": [0.2, 0.4, 0.7], "error": None}
    assert scores.aggregate(line, "faithful") == (0.7, None)
    assert scores.aggregate(line, "frame_mean")[0] == pytest.approx(np.mean([0.2, 0.4, 0.7]))
    value, why = scores.aggregate(line, "face_max_mean")
    assert value is None and "face_tracks" in why
    with_tracks = {**line, "face_tracks": [{"frame_prob_fake": [0.2, 0.4, 0.7]}, {"frame_prob_fake": [0.9, 0.1, 0.1]}]}
    assert scores.aggregate(with_tracks, "face_max_mean")[0] == pytest.approx((0.9 + 0.4 + 0.7) / 3)
    assert scores.aggregate({"error": "no face"}, "faithful") == (None, "refused")
    assert scores.aggregate(line, "any_face")[0] is None
    assert scores.aggregate({**line, "max_prob_fake": 0.8}, "any_face") == (0.8, None)


# ----------------------------------------------------------------------------- layouts


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def as_tuples(videos, root: Path):
    return [(str(Path(video.path).relative_to(root)), video.truth, video.group) for video in videos]


def test_folders_layout_with_group_subfolders(tmp_path):
    for name in (
        "real/a.mp4",
        "real/b.MOV",
        "real/notes.txt",
        "fake/x.mp4",
        "fake/blend/y.webm",
        "fake/blend/deep/z.mkv",
    ):
        touch(tmp_path / name)

    videos = layouts.read_layout(tmp_path)

    assert layouts.detect_layout(tmp_path) == "folders"
    assert as_tuples(videos, tmp_path) == [
        ("fake/blend/deep/z.mkv", 1, "blend"),
        ("fake/blend/y.webm", 1, "blend"),
        ("fake/x.mp4", 1, "fake"),
        ("real/a.mp4", 0, "real"),
        ("real/b.MOV", 0, "real"),
    ]


def test_csv_layout_labels_groups_header_and_errors(tmp_path):
    listing = tmp_path / "set.csv"
    listing.write_text("path,label,group\nv/a.mp4,1,swap\nv/b.mp4,REAL,\nv/c.mp4,fake\n# a comment\nv/d.mp4,0,studio\n")

    videos = layouts.read_layout(listing)

    assert layouts.detect_layout(listing) == "csv"
    assert as_tuples(videos, tmp_path) == [
        ("v/a.mp4", 1, "swap"),
        ("v/b.mp4", 0, "real"),
        ("v/c.mp4", 1, "fake"),
        ("v/d.mp4", 0, "studio"),
    ]
    listing.write_text("v/a.mp4,maybe\n")
    with pytest.raises(LayoutError, match="line 1: label 'maybe'"):
        layouts.read_layout(listing)
    listing.write_text("v/a.mp4,1\nv/a.mp4,0\n")
    with pytest.raises(LayoutError, match="both real and fake"):
        layouts.read_layout(listing)


def test_dfdc_metadata_labels_and_parts(tmp_path):
    for part, entries in (
        (
            "dfdc_train_part_0",
            {
                "aaa.mp4": {"label": "FAKE", "split": "train", "original": "bbb.mp4"},
                "bbb.mp4": {"label": "REAL", "split": "train", "original": None},
            },
        ),
        ("dfdc_train_part_1", {"ccc.mp4": {"label": "REAL", "split": "train"}}),
    ):
        (tmp_path / part).mkdir()
        (tmp_path / part / "metadata.json").write_text(json.dumps(entries))

    videos = layouts.read_layout(tmp_path)

    assert layouts.detect_layout(tmp_path) == "dfdc"
    assert as_tuples(videos, tmp_path) == [
        ("dfdc_train_part_0/aaa.mp4", 1, "dfdc_train_part_0"),
        ("dfdc_train_part_0/bbb.mp4", 0, "dfdc_train_part_0"),
        ("dfdc_train_part_1/ccc.mp4", 0, "dfdc_train_part_1"),
    ]
    one = tmp_path / "dfdc_train_part_1" / "metadata.json"
    assert [v.truth for v in layouts.read_layout(one)] == [0]
    one.write_text(json.dumps({"ddd.mp4": {"label": "fake"}}))
    with pytest.raises(LayoutError, match="expected FAKE or REAL"):
        layouts.read_layout(one)


def test_faceforensics_layout_groups_by_method_and_skips_masks(tmp_path):
    for name in (
        "original_sequences/youtube/c23/videos/000.mp4",
        "original_sequences/youtube/c23/videos/001.mp4",
        "original_sequences/actors/c23/videos/01__walk.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
        "manipulated_sequences/Deepfakes/masks/videos/000_003.mp4",
        "manipulated_sequences/NeuralTextures/c23/videos/001_870.mp4",
        "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walk__X.mp4",
    ):
        touch(tmp_path / name)

    videos = layouts.read_layout(tmp_path)

    assert layouts.detect_layout(tmp_path) == "ffpp"
    groups = {group: sorted(v.truth for v in videos if v.group == group) for group in layouts.group_names(videos)}
    assert groups == {
        "DeepFakeDetection": [1],
        "Deepfakes": [1],
        "NeuralTextures": [1],
        "actors": [0],
        "original": [0, 0],
    }
    assert not any("masks" in v.path for v in videos)

    touch(tmp_path / "original_sequences/youtube/c40/videos/000.mp4")
    with pytest.raises(LayoutError, match="compressions c23, c40; choose one with --compression"):
        layouts.read_layout(tmp_path)
    assert [v.group for v in layouts.read_layout(tmp_path, compression="c40")] == ["original"]


def test_faceforensics_official_split_keeps_its_originals_and_the_fakes_of_its_pairs(tmp_path):
    for name in (
        "original_sequences/youtube/c23/videos/000.mp4",
        "original_sequences/youtube/c23/videos/003.mp4",
        "original_sequences/youtube/c23/videos/500.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/003_000.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/500_501.mp4",
        "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walk__X.mp4",
    ):
        touch(tmp_path / name)
    split = tmp_path / "test.json"
    split.write_text(json.dumps([["000", "003"], ["953", "974"]]))

    videos = layouts.read_layout(tmp_path, split=split)

    assert sorted(Path(v.path).name for v in videos) == ["000.mp4", "000_003.mp4", "003.mp4", "003_000.mp4"]
    split.write_text(json.dumps({"000": "003"}))
    with pytest.raises(LayoutError, match="list of \\[target, source\\] pairs"):
        layouts.read_layout(tmp_path, split=split)


def test_celebdf_list_says_1_for_real_and_0_for_fake(tmp_path):
    listing = tmp_path / "List_of_testing_videos.txt"
    listing.write_text("1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id1_id0_0007.mp4\n1 Celeb-real/id0_0000.mp4\n\n")

    videos = layouts.read_layout(tmp_path)

    assert layouts.detect_layout(tmp_path) == "celebdf" == layouts.detect_layout(listing)
    assert as_tuples(videos, tmp_path) == [
        ("Celeb-real/id0_0000.mp4", 0, "Celeb-real"),
        ("Celeb-synthesis/id1_id0_0007.mp4", 1, "Celeb-synthesis"),
        ("YouTube-real/00170.mp4", 0, "YouTube-real"),
    ]


def test_celebdf_list_written_the_other_way_round_is_refused(tmp_path):
    listing = tmp_path / "List_of_testing_videos.txt"
    listing.write_text("0 YouTube-real/00170.mp4\n1 Celeb-synthesis/id1_id0_0007.mp4\n")

    with pytest.raises(
        LayoutError,
        match=re.escape("line 1: 'YouTube-real/00170.mp4' is marked 0, but in Celeb-DF's list 1 means real"),
    ):
        layouts.read_layout(listing)


def test_unknown_folder_and_empty_sets_are_refused(tmp_path):
    with pytest.raises(LayoutError, match="found none of"):
        layouts.read_layout(tmp_path)
    (tmp_path / "real").mkdir()
    with pytest.raises(LayoutError, match="no video found"):
        layouts.read_layout(tmp_path)
    with pytest.raises(LayoutError, match="no such file"):
        layouts.read_layout(tmp_path / "absent")


# ----------------------------------------------------------------------------- report


def line(video: LabelledVideo, prob: float | None, frames=None, error=None, tracks=None) -> dict:
    record = {
        "video": video.path,
        "truth": video.truth,
        "group": video.group,
        "model": "deepfake_10",
        "prob_fake": prob,
        "frame_prob_fake": frames if frames is not None else (None if prob is None else [prob] * 3),
        "faces_found": None if error else 3,
        "frames_decoded": None if error else 3,
        "error": error,
    }
    if tracks is not None:
        record["face_tracks"] = tracks
    return record


@pytest.fixture
def labelled():
    videos = [
        LabelledVideo("r1.mp4", 0, "real"),
        LabelledVideo("r2.mp4", 0, "real"),
        LabelledVideo("r3.mp4", 0, "real"),
        LabelledVideo("a1.mp4", 1, "swap"),
        LabelledVideo("a2.mp4", 1, "swap"),
        LabelledVideo("b1.mp4", 1, "blend"),
        LabelledVideo("b2.mp4", 1, "blend"),
    ]
    probs = [0.2, 0.6, None, 0.9, 0.1, 0.7, 0.8]
    records = [
        line(
            video,
            prob,
            error=None
            if prob is not None
            else "in ensemble 'deepfake_10': no face found in any of the 10 decoded frames",
        )
        for video, prob in zip(videos, probs)
    ]
    return videos, records


def test_report_counts_refused_videos_and_splits_groups_against_all_reals(labelled):
    videos, records = labelled
    records = records[:-1] + [None]  # the last one never finished

    built = report.build_report(videos, records, report.Settings("set", "folders", "deepfake_10", FRAMES))

    assert (built["n_videos"], built["n_scored"], built["n_refused"], built["n_unfinished"]) == (7, 5, 1, 1)
    assert built["n_no_face"] == 1 and built["no_face_rate"] == pytest.approx(1 / 6)
    assert built["refused"] == [{"video": "r3.mp4", "truth": 0, "group": "real", "reason": records[2]["error"]}]
    assert built["unfinished"] == ["b2.mp4"]
    truth, probs = [0, 0, 1, 1, 1], [0.2, 0.6, 0.9, 0.1, 0.7]
    assert built["video_auc"] == pytest.approx(skm.roc_auc_score(truth, probs))
    assert built["log_loss"] == pytest.approx(skm.log_loss(truth, probs))
    assert built["log_loss_refused_as_half"] == pytest.approx(skm.log_loss(truth + [0], probs + [0.5]))
    groups = built["aggregations"]["faithful"]["groups"]
    assert groups["swap"]["video_auc"] == pytest.approx(skm.roc_auc_score([0, 0, 1, 1], [0.2, 0.6, 0.9, 0.1]))
    assert groups["blend"]["n"] == 3 and groups["blend"]["video_auc"] == pytest.approx(1.0)
    # A group of reals only is compared with all fakes.
    assert built["groups"]["real"]["compared_with"] == "all fakes" and groups["real"]["n"] == 5
    assert built["groups"]["swap"] == {
        "n_videos": 2,
        "n_fake": 2,
        "n_real": 0,
        "n_scored": 2,
        "n_refused": 0,
        "compared_with": "all reals",
        "frame_auc": pytest.approx(skm.roc_auc_score([0] * 6 + [1] * 6, [0.2] * 3 + [0.6] * 3 + [0.9] * 3 + [0.1] * 3)),
    }
    assert set(built["aggregations"]) == {"faithful", "frame_mean", "confident", "face_max_mean", "any_face"}
    assert built["aggregations"]["face_max_mean"]["video_auc"] is None
    assert "face_tracks" in built["aggregations"]["face_max_mean"]["undefined"]["video_auc"]


def test_face_max_mean_is_computed_when_the_lines_have_face_tracks(labelled):
    videos, records = labelled
    for record in records:
        if record["error"] is None:
            record["face_tracks"] = [
                {"frame_prob_fake": record["frame_prob_fake"]},
                {"frame_prob_fake": [0.5, 0.5, 0.5]},
            ]

    built = report.build_report(videos, records, report.Settings("set", "folders", "deepfake_10", FRAMES))

    maxima = [max(p, 0.5) for p in (0.2, 0.6, 0.9, 0.1, 0.7, 0.8)]
    assert built["aggregations"]["face_max_mean"]["video_auc"] == pytest.approx(
        skm.roc_auc_score([0, 0, 1, 1, 1, 1], maxima)
    )


def test_validation_fraction_chooses_the_threshold_on_its_own_part(labelled):
    videos, records = labelled
    settings = report.Settings("set", "folders", "deepfake_10", FRAMES, val_fraction=0.5, seed=1)

    first = report.build_report(videos, records, settings)
    again = report.build_report(videos, records, settings)

    assert first == again
    assert first["split"]["n_validation"] + first["split"]["n_test"] == len(videos)
    assert first["threshold"]["source"] in ("validation", "given")
    assert first["aggregations"]["faithful"]["n"] <= first["split"]["n_test"]


def test_report_files_are_written(tmp_path, labelled):
    videos, records = labelled

    built = report.write_report(
        tmp_path, videos, records, report.Settings("set", "folders", "deepfake_10", FRAMES, demo=True)
    )

    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(built))
    assert {"n_videos", "n_scored", "n_refused", "video_auc", "log_loss", "aggregations"} <= set(on_disk)
    text = (tmp_path / "report.md").read_text()
    assert "demo checkpoints" in text and "| swap |" in text and "r3.mp4" in text
    for png in ("roc.png", "histograms.png", "calibration.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- the command, with a stand-in client


class StandInClient:
    """Answers like DeepfakeClient.score: a score, INVALID_ARGUMENT, or UNAVAILABLE."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.modes: set[Mode] = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def model_info(self):
        return {"classifiers": {"10": {"checkpoint": "model_50_acc_10_frames_demo.pt", "demo": True}}, "demo": True}

    def score(self, video, frames, *, name=None, mode=Mode.SCORE, version=None):
        self.asked.append(Path(video).name)
        self.modes.add(mode)
        answer = self.answers[Path(video).name]
        if isinstance(answer, ClientError):
            raise answer
        frame_scores = np.full(frames, answer, dtype=np.float32)
        return ScoreResult(
            video=str(video),
            prob_fake=float(answer),
            logits=(0.0, 0.0),
            frame_prob_fake=frame_scores,
            frame_prob_fake_mean=float(answer),
            label="FAKE",
            confidence=50.0,
            face_boxes=np.zeros((frames, 4), np.float32),
            face_found=np.ones(frames, bool),
            frame_times=np.zeros(frames, np.float32),
            faces_found=frames,
            frames_decoded=frames,
            latency_ms=1.0,
            model_version=1 if version is None else version,
            checkpoint_sha256=f"{1 if version is None else version:064x}",
            decision=decide_uncalibrated(float(answer))[1],
            prob_fake_calibrated=float(answer),
            operating_point=uncalibrated_point(Score.DEEPFAKE),
        )


def parse(argv):
    from client.cli import build_parser

    return build_parser().parse_args(argv)


def run(stand_in, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = command.run_evaluate(lambda: stand_in, parse(["evaluate", *argv, "--retries", "0"]), Mode.SCORE, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def folder_set(tmp_path):
    for name in ("real/r1.mp4", "real/r2.mp4", "real/empty.mp4", "fake/f1.mp4", "fake/f2.mp4"):
        touch(tmp_path / "set" / name)
    return tmp_path / "set"


def test_command_scores_refuses_resumes_and_refuses_another_model(tmp_path, folder_set):
    # Asked in path order: fake/f1, fake/f2, real/empty, real/r1, real/r2.
    answers = {
        "f1.mp4": 0.9,
        "f2.mp4": 0.8,
        "empty.mp4": ClientError("INVALID_ARGUMENT", "no face found in any of the 10 decoded frames"),
        "r1.mp4": 0.3,
        "r2.mp4": ClientError("UNAVAILABLE", "connection refused"),
    }
    out_dir = tmp_path / "report"
    first = StandInClient(answers)

    code, out, err = run(first, [str(folder_set), "--out", str(out_dir), "--frames", str(FRAMES)])

    assert code == Exit.FAILED, err
    assert first.modes == {Mode.SCORE}
    assert "WARNING" in err and "demo checkpoints" in err
    lines = [json.loads(text) for text in (out_dir / "scores.jsonl").read_text().splitlines()]
    assert sorted(Path(item["video"]).name for item in lines) == ["empty.mp4", "f1.mp4", "f2.mp4", "r1.mp4"]
    refused = next(item for item in lines if item["error"])
    assert (refused["truth"], refused["group"], refused["model"], refused["prob_fake"]) == (
        0,
        "real",
        "deepfake_10",
        None,
    )
    assert all(set(scores.SCORE_KEYS) <= set(item) for item in lines)
    built = json.loads((out_dir / "report.json").read_text())
    assert (built["n_videos"], built["n_scored"], built["n_refused"], built["n_unfinished"]) == (5, 3, 1, 1)
    assert built["unfinished"] == [str(folder_set / "real" / "r2.mp4")]
    assert built["demo_checkpoints"] is True

    answers["r2.mp4"] = 0.4
    second = StandInClient(answers)
    code, out, err = run(second, [str(folder_set), "--out", str(out_dir), "--frames", str(FRAMES)])

    assert code == Exit.OK, err
    assert second.asked == ["r2.mp4"]
    built = json.loads((out_dir / "report.json").read_text())
    assert (built["n_scored"], built["n_refused"], built["n_unfinished"]) == (4, 1, 0)
    assert built["video_auc"] == pytest.approx(1.0)
    assert "video AUC 1.0000" in out

    third = StandInClient(answers)
    code, _, err = run(third, [str(folder_set), "--out", str(out_dir), "--frames", "20"])
    assert code == Exit.USAGE and third.asked == []
    assert "holds scores of deepfake_10, not deepfake_20" in err


def test_command_without_the_eval_extra_stops_before_scoring(monkeypatch, folder_set, tmp_path):
    monkeypatch.setattr(command, "missing_eval_modules", lambda: ["sklearn"])
    stand_in = StandInClient({})

    code, _, err = run(stand_in, [str(folder_set), "--out", str(tmp_path / "r")])

    assert code == Exit.USAGE and stand_in.asked == []
    assert "pip install '.[eval]'" in err


def test_cli_refuses_an_unreadable_set_and_bad_fractions(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "absent"), "--out", str(tmp_path / "r")]) == Exit.USAGE
    assert "no such file or folder" in capsys.readouterr().err
    for bad in ("0", "1", "x"):
        with pytest.raises(SystemExit):
            main(["evaluate", str(tmp_path), "--out", str(tmp_path / "r"), "--val-fraction", bad])


def test_importing_evaluate_loads_neither_scikit_learn_nor_matplotlib():
    code = textwrap.dedent(
        """
        import json, sys
        import client.cli, client.evaluate, client.evaluate.layouts, client.evaluate.scores, client.evaluate.command
        client.cli.build_parser().parse_args(["evaluate", "x", "--out", "y"])
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ("sklearn", "matplotlib", "scipy"))))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=CLIENT_ROOT, capture_output=True, text=True, check=True
    )

    assert json.loads(completed.stdout) == []


# ----------------------------------------------------------------------------- classifier versions side by side


class VersionedStandIn(StandInClient):
    """Serves versions 1 and 2 (the latest): version 1 scores every video 0.5, version 2 gets them right."""

    def __init__(self, answers: dict[str, object], info: dict | None = None, latest: list[int] | None = None) -> None:
        super().__init__(answers)
        self.info = info if info is not None else served(1, 2)
        self.latest = latest or [2]
        self.versions: list[int | None] = []

    def model_info(self):
        return self.info

    def score(self, video, frames, *, name=None, mode=Mode.SCORE, version=None):
        self.versions.append(version)
        answered = version if version is not None else self.latest[min(len(self.versions), len(self.latest)) - 1]
        result = super().score(video, frames, name=name, mode=mode, version=answered)
        if answered == 1:
            return dataclasses.replace(result, prob_fake=0.5, frame_prob_fake=np.full(frames, 0.5, np.float32))
        return result


def served(*versions: int) -> dict:
    entries = {
        str(v): {"version": v, "checkpoint": f"model_{v}.pt", "sha256": f"{v:064x}", "demo": False, "ready": True}
        for v in versions
    }
    return {"classifiers": {str(FRAMES): {**entries[str(max(versions))], "versions": entries}}, "demo": False}


def versioned_run(stand_in, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = parse(["evaluate", *argv, "--retries", "0", "--frames", str(FRAMES)])
    code = command.run_evaluate(lambda: stand_in, args, Mode.SCORE, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def scored_set(tmp_path):
    for name in ("real/r1.mp4", "real/r2.mp4", "fake/f1.mp4", "fake/f2.mp4"):
        touch(tmp_path / "set" / name)
    return tmp_path / "set", {"r1.mp4": 0.2, "r2.mp4": 0.3, "f1.mp4": 0.9, "f2.mp4": 0.8}


def test_two_versions_are_scored_side_by_side_each_in_its_own_folder(tmp_path, scored_set):
    dataset, answers = scored_set
    out_dir = tmp_path / "compared"
    stand_in = VersionedStandIn(answers)

    code, out, err = versioned_run(stand_in, [str(dataset), "--out", str(out_dir), "--model-version", "1", "2"])

    assert code == Exit.OK, err
    assert stand_in.versions == [1] * 4 + [2] * 4
    for version in (1, 2):
        lines = [json.loads(text) for text in (out_dir / f"v{version}" / "scores.jsonl").read_text().splitlines()]
        assert {(line["model_version"], line["checkpoint_sha256"]) for line in lines} == {(version, f"{version:064x}")}
        built = json.loads((out_dir / f"v{version}" / "report.json").read_text())
        assert (built["model_version"], built["checkpoint_sha256"]) == (version, f"{version:064x}")
        assert (
            (out_dir / f"v{version}" / "report.md")
            .read_text()
            .startswith(
                f"# Evaluation of deepfake_{FRAMES} on {dataset}\n\nClassifier version {version}, checkpoint sha256"
            )
        )
    compared = json.loads((out_dir / "comparison.json").read_text())
    assert compared["versions"] == [1, 2] and compared["runs"]["2"]["folder"] == "v2"
    assert compared["overall"]["video_auc"] == {"1": pytest.approx(0.5), "2": pytest.approx(1.0)}
    assert compared["difference"]["video_auc"] == {"2": pytest.approx(0.5)}
    assert compared["groups"]["fake"]["video_auc"] == {"1": pytest.approx(0.5), "2": pytest.approx(1.0)}
    markdown = (out_dir / "comparison.md").read_text()
    assert "| metric | version 1 | version 2 | version 2 - 1 |" in markdown
    assert "| video_auc | 0.5000 | 1.0000 | +0.5000 |" in markdown
    assert "| group | video AUC v1 | video AUC v2 | AP v1 | AP v2 |" in markdown
    assert "(deepfake_10, version 1)" in out and "(deepfake_10, version 2)" in out

    again = VersionedStandIn(answers)
    code, _, err = versioned_run(again, [str(dataset), "--out", str(out_dir), "--model-version", "1", "2"])
    assert code == Exit.OK and again.asked == [], err


def test_a_version_not_served_or_named_twice_is_refused_before_scoring(tmp_path, scored_set, capsys):
    dataset, answers = scored_set
    stand_in = VersionedStandIn(answers)

    code, _, err = versioned_run(stand_in, [str(dataset), "--out", str(tmp_path / "r"), "--model-version", "1", "7"])

    assert code == Exit.USAGE and stand_in.asked == []
    assert "version 7 of the 10-frame classifier is not served; versions served: 1, 2 (latest 2)" in err
    with pytest.raises(SystemExit) as caught:
        main(["evaluate", str(dataset), "--out", str(tmp_path / "r"), "--model-version", "2", "2"])
    assert caught.value.code == Exit.USAGE and "names a version twice: 2 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(dataset), "--out", str(tmp_path / "r"), "--model-version", "0"])


def test_resume_keeps_to_the_version_of_the_results_file(tmp_path, scored_set):
    dataset, answers = scored_set
    out_dir = tmp_path / "report"
    first = VersionedStandIn(answers, info=served(1), latest=[1])
    code, _, err = versioned_run(first, [str(dataset), "--out", str(out_dir)])
    assert code == Exit.OK and first.versions == [None] * 4, err

    # Version 2 went live: resuming the "latest" run would mix versions, and so would asking version 2.
    for extra in ([], ["--model-version", "2"]):
        later = VersionedStandIn(answers)
        code, _, err = versioned_run(later, [str(dataset), "--out", str(out_dir), *extra])
        assert code == Exit.USAGE and later.asked == [], err
        assert "holds scores of version 1 of the classifier, this run's come from version 2" in err
        assert "give --model-version 1, or another --out folder" in err
    same = VersionedStandIn(answers)
    code, _, err = versioned_run(same, [str(dataset), "--out", str(out_dir), "--model-version", "1"])
    assert code == Exit.OK and same.asked == [], err


def test_a_version_change_mid_run_stops_before_the_other_versions_line(tmp_path, scored_set):
    dataset, answers = scored_set
    out_dir = tmp_path / "report"
    # model_info lists nothing, so the first answer fixes the version; then version 2 goes live.
    stand_in = VersionedStandIn(answers, info={"classifiers": {}}, latest=[1, 1, 2])

    code, _, err = versioned_run(stand_in, [str(dataset), "--out", str(out_dir)])

    assert code == Exit.FAILED
    assert "answered with classifier version 2, but this run's lines come from version 1" in err
    lines = [json.loads(text) for text in (out_dir / "scores.jsonl").read_text().splitlines()]
    assert [line["model_version"] for line in lines] == [1, 1]
    built = json.loads((out_dir / "report.json").read_text())
    assert (built["n_scored"], built["n_unfinished"], built["model_version"]) == (2, 2, 1)


def test_a_refused_run_leaves_no_folder_behind(tmp_path, scored_set):
    dataset, answers = scored_set
    out_dir = tmp_path / "never"

    code, _, _ = versioned_run(VersionedStandIn(answers), [str(dataset), "--out", str(out_dir), "--model-version", "8"])

    assert code == Exit.USAGE and not out_dir.exists()
