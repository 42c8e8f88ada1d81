"""``python -m train`` without a server: the split, the layouts' sources, fitting, resume, bad input, checkpoints.

Fitting runs on synthetic pooled features (no trunk, no crops); the end-to-end runs on the real
server are in ``tests/integration/test_train_server.py``. Two fits of the same settings on one
machine must give the same tensors bit for bit (that is the promise being tested); everything
compared with another computation (the served head, a folded layer) uses a tolerance.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from client.evaluate import layouts
from client.evaluate.layouts import LabelledVideo, LayoutError
from client.evaluate.metrics import METRIC_NAMES
from contract import Exit
from export.checkpoints import load_original_model
from export.model import OriginalModel, ServedModel
from export.temporal import build_temporal_model
from tests import media
from train import augment, cli, data, fit
from train.crops import CropCache, CropRequest, CropStats, PreprocessSettings, fetch_crops
from train.errors import TrainError
from train.features import pooled, split_trunk
from train.heads import PublishedTrainee, TemporalTrainee, checkpoint_name
from train.progress import TrainingProgress
from train.report import METRIC_KEYS, evaluation
from train.settings import TrainSettings

PROJECT = Path(__file__).resolve().parents[1]
DEMO_10 = PROJECT / "checkpoints" / "model_50_acc_10_frames_demo_random.pt"
DEMO_20 = PROJECT / "checkpoints" / "model_50_acc_20_frames_demo_random.pt"
FEATURE_DIM = 2048
#: Frames per synthetic video: the temporal head is built for this N.
FRAMES = 4
SPLITS_OF = {"train": 0.5, "validation": 0.25, "test": 0.25}
CPU = torch.device("cpu")
#: Tolerance of comparisons with another computation of the same value (float32 sums in another order).
ATOL = 1e-5


# -- the split ------------------------------------------------------------------------------------


def _video(name: str, truth: int, group: str = "g", source: str = "") -> data.Video:
    return data.Video(LabelledVideo(name, truth, group, source), sha256=f"sha-{name}")


def _split(videos, seed=0, fractions=SPLITS_OF):
    truth = [video.truth for video in videos]
    return data.split_videos(truth, data.connected_groups(videos), fractions, seed)


def test_split_is_stratified_seeded_and_keeps_connected_videos_together():
    # 12 originals, each with two fakes made from it (FaceForensics++-like), and 6 reals alone.
    videos = []
    for index in range(12):
        videos.append(_video(f"orig{index}.mp4", 0, source=f"{index:03d}"))
        videos += [_video(f"fake{index}_{k}.mp4", 1, source=f"{index:03d}+{100 + 2 * index + k:03d}") for k in range(2)]
    videos += [_video(f"solo{index}.mp4", 0) for index in range(6)]
    first = _split(videos, seed=3)
    assert first == _split(videos, seed=3)
    assert first != _split(videos, seed=4)
    groups = data.connected_groups(videos)
    for group in set(groups):
        assert len({split for split, g in zip(first, groups) if g == group}) == 1, "a connected group straddles"
    for name in data.SPLITS:
        classes = {video.truth for video, split in zip(videos, first) if split == name}
        assert classes == {0, 1}, f"{name} lacks a class"
    test_share = sum(1 for split in first if split == "test") / len(videos)
    assert 0.1 < test_share < 0.45


def test_split_follows_the_fractions_per_class():
    videos = [_video(f"r{i}.mp4", 0) for i in range(40)] + [_video(f"f{i}.mp4", 1) for i in range(20)]
    splits = _split(videos, fractions={"train": 0.6, "validation": 0.2, "test": 0.2})
    counts = {(split, video.truth): 0 for split in data.SPLITS for video in videos}
    for video, split in zip(videos, splits):
        counts[split, video.truth] += 1
    assert counts["train", 0] == 24 and counts["validation", 0] == 8 and counts["test", 0] == 8
    assert counts["train", 1] == 12 and counts["validation", 1] == 4 and counts["test", 1] == 4


def test_videos_with_the_same_bytes_are_connected():
    a = data.Video(LabelledVideo("a.mp4", 1, "g"), "same")
    b = data.Video(LabelledVideo("copy_of_a.mp4", 1, "g"), "same")
    c = data.Video(LabelledVideo("c.mp4", 1, "g"), "other")
    groups = data.connected_groups([a, b, c])
    assert groups[0] == groups[1] != groups[2]


def test_a_set_too_small_for_the_split_is_refused_with_what_it_needs():
    videos = [_video(f"r{i}", 0) for i in range(5)] + [_video(f"f{i}", 1) for i in range(2)]
    with pytest.raises(TrainError, match=r"at least 3 real and 3 fake videos whose sources are not connected"):
        _split(videos)
    # Six fakes, but all made from one original: one source group.
    videos = [_video(f"r{i}", 0) for i in range(5)] + [_video(f"f{i}", 1, source="one") for i in range(6)]
    with pytest.raises(TrainError, match="1 with a fake one"):
        _split(videos)


def test_groups_with_both_classes_cover_a_split_alone():
    videos = []
    for index in range(3):
        videos += [_video(f"o{index}", 0, source=f"s{index}"), _video(f"f{index}", 1, source=f"s{index}")]
    splits = _split(videos)
    assert sorted(splits) == sorted(["train", "train", "validation", "validation", "test", "test"])


# -- the layouts' sources -------------------------------------------------------------------------


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_csv_source_column_and_its_default(tmp_path):
    (tmp_path / "set.csv").write_text(
        "path,label,group,source\na.mp4,fake,swap,orig1+actor7\nb.mp4,real,,orig1\nc.mp4,0\n", encoding="utf-8"
    )
    videos = {Path(v.path).name: v for v in layouts.read_layout(tmp_path / "set.csv")}
    assert videos["a.mp4"].source_keys == ("orig1", "actor7")
    assert videos["b.mp4"].source == "orig1" and videos["b.mp4"].group == "real"
    assert videos["c.mp4"].source == str(tmp_path / "c.mp4")
    (tmp_path / "bad.csv").write_text("a.mp4,1,g,s,extra\n", encoding="utf-8")
    with pytest.raises(LayoutError, match=r"expected path,label\[,group\[,source\]\], got 5"):
        layouts.read_layout(tmp_path / "bad.csv")


def test_dfdc_fakes_take_their_original_as_source(tmp_path):
    metadata = {
        "aaa.mp4": {"label": "FAKE", "original": "ooo.mp4"},
        "ooo.mp4": {"label": "REAL"},
        "bbb.mp4": {"label": "FAKE"},
    }
    (tmp_path / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    videos = {Path(v.path).name: v.source for v in layouts.read_layout(tmp_path)}
    assert videos == {"aaa.mp4": "ooo.mp4", "ooo.mp4": "ooo.mp4", "bbb.mp4": "bbb.mp4"}


def test_ffpp_fakes_share_both_identities(tmp_path):
    for relative in (
        "original_sequences/youtube/c23/videos/000.mp4",
        "original_sequences/youtube/c23/videos/003.mp4",
        "original_sequences/actors/c23/videos/01__walking.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
        "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking__ABCD.mp4",
    ):
        _touch(tmp_path / relative)
    videos = {Path(v.path).name: v.source for v in layouts.read_layout(tmp_path)}
    assert videos["000.mp4"] == "000" and videos["003.mp4"] == "003"
    assert videos["000_003.mp4"] == "000+003"
    assert videos["01__walking.mp4"] == "actors/01"
    assert videos["01_02__walking__ABCD.mp4"] == "actors/01+actors/02"


def test_celebdf_videos_share_identities(tmp_path):
    lines = ["1 Celeb-real/id0_0000.mp4", "1 YouTube-real/00001.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4"]
    (tmp_path / layouts.CELEBDF_LIST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    videos = {Path(v.path).name: v.source for v in layouts.read_layout(tmp_path)}
    assert videos["id0_0000.mp4"] == "id0"
    assert videos["id0_id1_0000.mp4"] == "id0+id1"
    assert videos["00001.mp4"] == str(tmp_path / "YouTube-real/00001.mp4")


def test_folders_videos_are_their_own_source(tmp_path):
    _touch(tmp_path / "real" / "a.mp4")
    _touch(tmp_path / "fake" / "swap" / "b.mp4")
    assert all(video.source == video.path for video in layouts.read_layout(tmp_path))


def test_connected_sources_through_a_layout(tmp_path):
    rows = "o.mp4,real,,s1\nf.mp4,fake,,s1+s2\ng.mp4,fake,,s2\nh.mp4,fake,,s3\n"
    (tmp_path / "set.csv").write_text(rows, encoding="utf-8")
    videos = [data.Video(v, v.path) for v in layouts.read_layout(tmp_path / "set.csv")]
    groups = dict(zip((Path(v.path).name for v in videos), data.connected_groups(videos)))
    assert groups["o.mp4"] == groups["f.mp4"] == groups["g.mp4"] != groups["h.mp4"]


# -- fitting: determinism and resume --------------------------------------------------------------


def synthetic_case(head: str, videos: int = 12, seed: int = 0):
    """Seeded pooled features of ``videos`` videos (half fake, shifted), their trainee and fit data."""
    generator = torch.Generator().manual_seed(seed)
    truth = [index % 2 for index in range(videos)]
    features = [
        torch.rand(FRAMES, FEATURE_DIM, generator=generator) + 0.2 * label * torch.linspace(-1, 1, FEATURE_DIM)
        for label in truth
    ]
    torch.manual_seed(seed)
    if head == "published":
        trainee = PublishedTrainee(OriginalModel().eval(), 0)
    else:
        mean, std = TemporalTrainee.standardisation(features[: videos // 2])
        trainee = TemporalTrainee(FRAMES, mean, std)
    inputs, classes = trainee.samples(features[: videos // 2], truth[: videos // 2])
    fit_data = fit.FitData(inputs, classes, features[videos // 2 :], truth[videos // 2 :])
    settings = TrainSettings(head=head, frames=FRAMES, epochs=3, patience=3, batch_size=8 if head == "published" else 2)
    return trainee, fit_data, settings


def run_fit(head: str, folder: Path, *, resume: bool = False, on_step=None) -> dict[str, torch.Tensor]:
    trainee, fit_data, settings = synthetic_case(head)
    with fit.deterministic(1, CPU):
        fit.fit(trainee, fit_data, settings, folder, CPU, TrainingProgress(io.StringIO(), False), resume=resume,
                on_step=on_step)  # fmt: skip
    return {key: value.clone() for key, value in trainee.state_dict().items()}


def assert_same_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, f"tensors differ: {different}"


@pytest.fixture(scope="module")
def published_run(tmp_path_factory) -> dict[str, torch.Tensor]:
    """One uninterrupted published fit on the synthetic features."""
    return run_fit("published", tmp_path_factory.mktemp("published"))


def test_two_published_fits_give_the_same_weights(published_run, tmp_path):
    assert_same_tensors(published_run, run_fit("published", tmp_path))


def test_two_temporal_fits_give_the_same_weights(tmp_path):
    assert_same_tensors(run_fit("temporal", tmp_path / "a"), run_fit("temporal", tmp_path / "b"))


def test_resume_after_an_exception_mid_epoch_gives_the_uninterrupted_weights(published_run, tmp_path):
    class Stop(Exception):
        pass

    def stop(epoch: int, step: int) -> None:
        if (epoch, step) == (2, 2):
            raise Stop

    with pytest.raises(Stop):
        run_fit("published", tmp_path, on_step=stop)
    state = torch.load(tmp_path / fit.EPOCHS_FOLDER / fit.RESUME_FILE, weights_only=True)
    assert state["epoch"] == 1
    assert_same_tensors(published_run, run_fit("published", tmp_path, resume=True))


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_train import run_fit

def kill(epoch, step):
    if (epoch, step) == (2, 3):
        os.kill(os.getpid(), signal.SIGKILL)

run_fit("temporal", Path({folder!r}), on_step=kill)
"""


def test_resume_after_a_kill_mid_epoch_gives_the_uninterrupted_weights(tmp_path):
    uninterrupted = run_fit("temporal", tmp_path / "whole")
    folder = tmp_path / "killed"
    script = textwrap.dedent(KILLED_RUN).format(root=str(PROJECT), folder=str(folder))
    completed = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert not list((folder / fit.EPOCHS_FOLDER).glob(".*.tmp")), "a half-written file was left"
    assert torch.load(folder / fit.EPOCHS_FOLDER / fit.RESUME_FILE, weights_only=True)["epoch"] == 1
    assert_same_tensors(uninterrupted, run_fit("temporal", folder, resume=True))


# -- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parent() -> OriginalModel:
    torch.manual_seed(1)
    return OriginalModel().eval()


def _perturb(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(1e-3 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("unfreeze", [0, 1])
def test_published_checkpoint_loads_strictly_and_scores_as_the_served_head(parent, tmp_path, unfreeze):
    trainee = PublishedTrainee(parent, unfreeze)
    _perturb(trainee, seed=unfreeze)
    path = tmp_path / checkpoint_name("published", 90, 10, "abc123")
    torch.save(trainee.checkpoint_state(parent.state_dict()), path)
    loaded = load_original_model(path)
    old, new = parent.state_dict(), loaded.state_dict()
    assert torch.equal(new["lstm.weight_hh_l0"], old["lstm.weight_hh_l0"])
    assert torch.equal(new["lstm.weight_ih_l0"].chunk(4)[1], old["lstm.weight_ih_l0"].chunk(4)[1]), "forget rows"
    assert not torch.equal(new["linear1.weight"], old["linear1.weight"])
    trained_stage = f"model.{8 - unfreeze}." if unfreeze else None
    for key in old:
        if key.startswith("model.") and not (trained_stage and key.startswith(trained_stage)):
            assert torch.equal(new[key], old[key]), key
    faces = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(5))
    served = ServedModel(loaded).eval()
    front, _ = split_trunk(parent.model, unfreeze)
    with torch.inference_mode():
        boundary = front(faces)
        boundary = pooled(boundary) if unfreeze == 0 else boundary
        expected = served.head(served.frame_features(faces))
        trainee.eval()
        got = trainee.frame_logits(boundary)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)


def test_temporal_checkpoint_builds_and_reads_raw_features(parent):
    generator = torch.Generator().manual_seed(2)
    features = [300.0 * torch.rand(FRAMES, FEATURE_DIM, generator=generator) for _ in range(6)]
    mean, std = TemporalTrainee.standardisation(features)
    torch.manual_seed(0)
    trainee = TemporalTrainee(FRAMES, mean, std).eval()
    model = build_temporal_model(trainee.checkpoint_state(parent.state_dict()))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in parent.state_dict().items() if k.startswith("model."))
    batch = torch.stack(features)
    with torch.inference_mode():
        expected, expected_frames, expected_weights = trainee(batch)
        logits, frame_logits, weights = model.temporal(batch)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(frame_logits, expected_frames, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=1e-4)


def test_checkpoint_names_follow_the_published_and_temporal_patterns():
    from export.checkpoints import parse_checkpoint_name
    from export.temporal import is_temporal_checkpoint

    published = parse_checkpoint_name(Path(checkpoint_name("published", 83, 20, "0123abcd")))
    assert published is not None and published.frames == 20 and published.tag == "trained_0123abcd"
    assert is_temporal_checkpoint(Path(checkpoint_name("temporal", 91, 10, "0123abcd")))


# -- crops, augmentations, report -----------------------------------------------------------------


def test_crop_cache_answers_without_the_server_once_filled(tmp_path):
    cache = CropCache(tmp_path, PreprocessSettings("preprocess_10", {"frames": "10", "selection": "first"}))
    faces = np.zeros((10, 3, 112, 112), np.float32)
    cache.store("aaa", faces, np.ones(10, bool))
    cache.store_refusal("bbb", "no face found in any of the 10 decoded frames")
    cache.store_refusal("ccc", "input exceeds decode_timeout_s: 31 > 30")
    stats = CropStats()
    requests = [CropRequest(sha, sha, lambda: b"") for sha in ("aaa", "bbb", "aaa")]
    outcome = fetch_crops(None, cache, requests, 10, concurrency=1, retries=0, stats=stats)
    assert outcome == {"aaa": None, "bbb": "no face found in any of the 10 decoded frames"}
    assert stats.as_json() == {"calls": 0, "cache_hits": 2, "refused": 0}
    assert not cache.has("ccc"), "a refusal for the time budget depends on the load: not cached"
    loaded, found = cache.load("aaa")
    assert loaded.dtype == np.float32 and found.all()
    other = CropCache(tmp_path, PreprocessSettings("preprocess_10", {"frames": "10", "selection": "uniform"}))
    assert not other.has("aaa"), "other preprocessing settings, other cache"


def test_augmentations_are_new_videos_of_the_served_frames():
    clip = media.face_clip(frames=12, size=(320, 240))
    config = augment.decode_settings({"frames": "10", "selection": "first", "torch_threads": "1"}, 10)
    for name, recipe in augment.AUGMENTATIONS.items():
        variant = augment.augment(clip, recipe, config)
        assert variant == augment.augment(clip, recipe, config), f"{name} is not a function of its input"
        decoded = augment.decode_frames(variant, 10)
        assert decoded.frames_decoded == 10
        width = decoded.frames[0].shape[1]
        assert width == (192 if name == "downscale" else 320)
    assert augment.parse_augment("none") == ()
    assert augment.parse_augment("blur, recompress") == ("blur", "recompress")
    for bad in ("sharpen", "blur,blur", ""):
        with pytest.raises(TrainError, match="augment"):
            augment.parse_augment(bad)


def test_evaluation_has_evaluates_metric_keys_overall_and_per_group():
    videos = [_video(f"r{i}", 0, "real") for i in range(3)] + [_video(f"f{i}", 1, "swap") for i in range(3)]
    scores = [[0.1, 0.2, 0.1], [0.2, 0.1, 0.2], [0.6, 0.5, 0.6], [0.7, 0.8, 0.7], [0.9, 0.9, 0.9], [0.4, 0.3, 0.4]]
    result = evaluation(videos, scores, model="m.pt", score="s", dataset="set", layout="csv", frames=2)
    assert set(METRIC_NAMES) <= set(result["overall"]) and set(result["overall"]) <= set(METRIC_KEYS)
    assert result["overall"]["video_auc"] == pytest.approx(8 / 9)
    assert set(result["groups"]) == {"real", "swap"}
    assert result["groups"]["swap"]["n"] == 6


# -- bad input: one line, exit status 2, nothing written ------------------------------------------


@pytest.fixture
def small_set(tmp_path) -> Path:
    """Three real and three fake 'videos' (never decoded: every refusal comes before the server)."""
    folder = tmp_path / "set"
    folder.mkdir()
    rows = []
    for index in range(6):
        name = f"v{index}.mp4"
        (folder / name).write_bytes(f"video {index}".encode())
        rows.append(f"{name},{index % 2}")
    (folder / "set.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "set.csv"


def run_cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    status = cli.main(list(argv), out=io.StringIO(), err=err)
    return status, err.getvalue()


def refused(tmp_path, *argv: str, match: str) -> None:
    out = tmp_path / "out"
    status, message = run_cli(*argv, "--out", str(out), "--url", "127.0.0.1:1", "--cache", str(tmp_path / "cache"))
    assert status == Exit.USAGE, message
    assert len(message.strip().splitlines()) == 1, message
    assert match in message, message
    assert not out.exists() or not any(out.iterdir()), "a refused run wrote into --out"


def test_an_empty_set_is_refused(tmp_path):
    (tmp_path / "empty.csv").write_text("path,label\n", encoding="utf-8")
    refused(tmp_path, str(tmp_path / "empty.csv"), "--frames", "10", match="no video found")


def test_a_set_of_one_class_is_refused(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"a")
    (tmp_path / "b.mp4").write_bytes(b"b")
    (tmp_path / "set.csv").write_text("a.mp4,real\nb.mp4,real\n", encoding="utf-8")
    refused(tmp_path, str(tmp_path / "set.csv"), "--frames", "10", match="one class only")


def test_a_set_too_small_for_the_split_is_refused(tmp_path, small_set):
    (small_set.parent / "v1.mp4").unlink()  # unreadable now: 3 real, 2 fake left
    refused(tmp_path, str(small_set), "--frames", "10", match="at least 3 real and 3 fake")


def test_a_temporal_checkpoint_is_refused_as_the_start(tmp_path, small_set):
    start = tmp_path / "temporal_90_acc_10_frames_trained_x.pt"
    start.write_bytes(b"")
    refused(tmp_path, str(small_set), "--frames", "10", "--checkpoint", str(start), match="temporal model's checkpoint")


def test_a_checkpoint_of_another_length_is_refused(tmp_path, small_set):
    refused(tmp_path, str(small_set), "--frames", "10", "--checkpoint", str(DEMO_20), match="20-frame checkpoint")


def test_a_checkpoint_of_another_architecture_or_damaged_is_refused(tmp_path, small_set):
    other = tmp_path / "model_90_acc_10_frames_other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    refused(tmp_path, str(small_set), "--frames", "10", "--checkpoint", str(other), match="does not match")
    garbage = tmp_path / "model_90_acc_10_frames_garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    refused(tmp_path, str(small_set), "--frames", "10", "--checkpoint", str(garbage), match="not a readable")


def test_the_default_start_skips_trained_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("model_99_acc_10_frames_trained_abc.pt", "model_60_acc_10_frames_final.pt"):
        (folder / name).write_bytes(b"")
    assert cli.find_parent(None, str(folder), 10).name == "model_60_acc_10_frames_final.pt"
    (folder / "model_60_acc_10_frames_final.pt").unlink()
    with pytest.raises(TrainError, match="no checkpoint for 10 frames"):
        cli.find_parent(None, str(folder), 10)


def test_an_output_folder_holding_another_run_is_refused(tmp_path, small_set):
    out = tmp_path / "out"
    out.mkdir()
    settings = TrainSettings(head="published", frames=10, seed=7, augment=augment.DEFAULT_AUGMENT).hyperparameters()
    (out / cli.RUN_FILE).write_text(json.dumps({"run_id": "x", "identity": {"settings": settings}}), encoding="utf-8")
    base = [str(small_set), "--frames", "10", "--out", str(out), "--url", "127.0.0.1:1"]
    status, message = run_cli(*base)
    assert status == Exit.USAGE and "holds a run already" in message and "--resume" in message
    status, message = run_cli(*base, "--resume")
    assert status == Exit.USAGE and "its settings differ: seed 7 -> 0)" in message
    assert sorted(path.name for path in out.iterdir()) == [cli.RUN_FILE]
    (out / cli.RUN_FILE).unlink()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    status, message = run_cli(*base)
    assert status == Exit.USAGE and "holds other files" in message


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--head", "temporal", "--unfreeze", "1"], "--unfreeze applies to --head published"),
        (["--head", "temporal", "--backbone-lr", "1e-4"], "--backbone-lr applies to --head published"),
        (["--val-fraction", "0.5", "--test-fraction", "0.5"], "leave nothing to train on"),
        (["--augment", "sharpen"], "unknown augmentation"),
    ],
)
def test_contradicting_settings_are_refused(tmp_path, small_set, argv, match):
    refused(tmp_path, str(small_set), "--frames", "10", *argv, match=match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_without_cuda_is_refused(tmp_path, small_set):
    refused(tmp_path, str(small_set), "--frames", "10", "--device", "cuda", match="sees no CUDA device")


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["set.csv", "--out", "x", "--unfreeze", "3"])
    assert exit_info.value.code == Exit.USAGE
    assert "--unfreeze" in capsys.readouterr().err
