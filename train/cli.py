"""``python -m train SET --frames N --out DIR --url HOST:PORT --head published|temporal``.

Fine-tunes the detector on a labelled set and writes, into ``DIR``: the checkpoint
(``model_<acc>_acc_<N>_frames_trained_<run>.pt`` or ``temporal_<acc>_acc_<N>_frames_trained_<run>.pt``,
``<acc>`` the held-out test accuracy in percent), ``report.json`` and ``report.md``, ``run.json``
(what the run is: settings, data, parent; ``--resume`` continues only the same run) and
``epochs/`` (a checkpoint each epoch). The steps, in order, are those of :mod:`train`'s modules.

Every check of the input comes before anything is written to ``DIR``: a bad argument, an empty
set, one class only, a set too small for the split, a starting checkpoint of another architecture
or length, or a ``DIR`` holding another run is one line on stderr and exit status 2 (the server
failing: 1; Ctrl-C: 130, and the same command with ``--resume`` continues).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from calibration.fit import FitError, SetInfo, Target
from calibration.fit import fit as fit_calibration
from client.commands.args import (
    add_retries_option,
    check_tls,
    connection_from_args,
    connection_parent,
    fraction,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
)
from client.commands.calibrate import add_target_options
from client.errors import NOT_FOUND, ClientError
from client.evaluate.layouts import AUTO, LAYOUTS
from client.evaluate.report import as_text
from contract import (
    CALIBRATION_DOCUMENT,
    DEFAULT_FRAMES,
    TRAINED_CHECKPOINT_TAG,
    Exit,
    Kind,
    Score,
    model_name,
    program_name,
)
from export.checkpoints import (
    CheckpointError,
    best_checkpoint,
    find_checkpoints,
    load_original_model,
    parse_checkpoint_name,
    read_state_dict,
    sha256_of,
)
from export.model import OriginalModel
from export.temporal import build_temporal_model, is_temporal_checkpoint

from . import augment as augmentations
from .crops import CropCache, CropRequest, CropStats, PreprocessClient, fetch_crops
from .data import (
    CLASS_NAMES,
    REFUSED,
    SPLITS,
    TEST,
    TRAIN,
    VALIDATION,
    Video,
    check_classes,
    check_splittable,
    connected_groups,
    hash_videos,
    manifest,
    read_set,
    split_videos,
)
from .errors import TrainError
from .features import FeatureCache, compute_features
from .files import (
    canonical_json,
    read_json,
    sha256_bytes,
    sha256_text,
    torch_save_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .fit import EPOCHS_FOLDER, RESUME_FILE, FitData, deterministic, fit, score_videos
from .heads import PublishedTrainee, TemporalScorer, TemporalTrainee, checkpoint_name
from .progress import TrainingProgress
from .report import REPORT_FORMAT, REPORT_JSON, REPORT_MD, evaluation, library_versions, write_report
from .settings import (
    DEFAULT_BACKBONE_LR,
    DEFAULT_BATCH,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_PATIENCE,
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    DEFAULT_WEIGHT_DECAY,
    HEADS,
    MAX_UNFREEZE,
    PUBLISHED,
    TEMPORAL,
    TrainSettings,
)

RUN_FILE = "run.json"
#: Every video of the run with its split: path, sha256, label, group, source, split (or ``refused``).
MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ("path", "sha256", "label", "group", "source", "split")
DEFAULT_CHECKPOINTS = "checkpoints"
CACHE_NAME = "deepfake-train"
DEVICES = ("cpu", "cuda", "auto")
#: Preprocessing requests in flight: the CPU server runs two preprocessing instances.
DEFAULT_CONCURRENCY = 2
#: Threads by default: the machine's cores, at most this many (the run then fixes them).
MAX_DEFAULT_THREADS = 8
VARIANTS_COUNTER = "preprocessing variants"
#: Variants made at once per request in flight (see ``make_variants``).
VARIANT_CHUNK_PER_REQUEST = 8
#: Characters of the run's identity hash in its checkpoint's name.
RUN_ID_CHARS = 12
FAITHFUL_PUBLISHED = "PROB_FAKE of the published architecture: the last frame's single-step score"
FAITHFUL_TEMPORAL = "PROB_FAKE of the temporal head: the clip's score from all N frames"


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/deepfake-train``, else ``~/.cache/deepfake-train``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / CACHE_NAME


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_THREADS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("train"),
        parents=[connection_parent()],
        description="Fine-tune the deepfake detector on a labelled set, on the face crops the running server makes "
        "(preprocess_<N> over gRPC), and write DIR/<checkpoint>.pt, DIR/report.json and DIR/report.md (the model "
        "before and after on a held-out test split, with evaluate's metrics, and the model card). SET is what "
        "'evaluate' reads: a folder (real/ + fake/, FaceForensics++, DFDC, Celeb-DF) or a list file (CSV "
        "path,label[,group[,source]]). Exit 0 when done, 1 when the server failed, 2 on bad arguments or input, "
        "130 when interrupted (run the same command with --resume).",
    )
    parser.add_argument("dataset", metavar="SET", help="the labelled set: a folder or a list file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the run: new, empty, or --resume")
    parser.add_argument(
        "--head",
        choices=HEADS,
        default=PUBLISHED,
        help="published: fine-tune the published architecture on single frames (a checkpoint export onnx takes); "
        "temporal: train an attention head over the N frames' features (default: %(default)s)",
    )
    parser.add_argument(
        "--frames",
        type=positive_int,
        default=DEFAULT_FRAMES,
        metavar="N",
        help="sequence length: the server's preprocess_<N> and the checkpoint's length (default: %(default)s)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--layout", choices=(AUTO, *LAYOUTS), default=AUTO, help="how SET is laid out (default: from its files)"
    )
    data.add_argument("--compression", metavar="C", help="FaceForensics++: the compression folder (c23, c40, raw)")
    data.add_argument("--ffpp-split", metavar="FILE", help="FaceForensics++: keep only the videos of a split file")
    data.add_argument(
        "--val-fraction",
        type=fraction,
        default=DEFAULT_VAL_FRACTION,
        metavar="F",
        help="share of each class in the validation split (early stopping) (default: %(default)s)",
    )
    data.add_argument(
        "--test-fraction",
        type=fraction,
        default=DEFAULT_TEST_FRACTION,
        metavar="F",
        help="share of each class in the held-out test split (the report) (default: %(default)s)",
    )
    data.add_argument(
        "--seed",
        type=non_negative_int,
        default=DEFAULT_SEED,
        metavar="S",
        help="seed of the split, the shuffling and the initialisation (default: %(default)s)",
    )
    data.add_argument(
        "--augment",
        default=",".join(augmentations.DEFAULT_AUGMENT),
        metavar="NAMES",
        help="re-encoded variants of each training video, comma-separated, or 'none' "
        f"({', '.join(augmentations.AUGMENTATIONS)}) (default: %(default)s)",
    )
    data.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help=f"cache of the served crops, re-encoded variants and trunk features (default: {default_cache()})",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="the starting published checkpoint (default: the best one for N in --checkpoints, trained ones skipped)",
    )
    model.add_argument(
        "--checkpoints",
        default=DEFAULT_CHECKPOINTS,
        metavar="DIR",
        help="where to look for the starting checkpoint (default: %(default)s)",
    )
    model.add_argument(
        "--unfreeze",
        type=int,
        choices=range(MAX_UNFREEZE + 1),
        default=0,
        help="--head published: also train the last trunk stages, 1: layer4, 2: layer3 and layer4 (default: 0)",
    )
    fitting = parser.add_argument_group("training")
    fitting.add_argument(
        "--epochs", type=positive_int, default=DEFAULT_EPOCHS, metavar="E", help="most epochs (default: %(default)s)"
    )
    fitting.add_argument(
        "--patience",
        type=positive_int,
        default=DEFAULT_PATIENCE,
        metavar="P",
        help="stop after P epochs without a better validation AUC (default: %(default)s)",
    )
    fitting.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="B",
        help=f"frames per step for the published head (default: {DEFAULT_BATCH[PUBLISHED]}), videos per step for "
        f"the temporal head (default: {DEFAULT_BATCH[TEMPORAL]})",
    )
    fitting.add_argument(
        "--lr",
        type=positive_number,
        default=None,
        metavar="LR",
        help=f"learning rate of linear1 (default: {DEFAULT_LR[PUBLISHED]}) / of the temporal head "
        f"(default: {DEFAULT_LR[TEMPORAL]})",
    )
    fitting.add_argument(
        "--backbone-lr",
        type=positive_number,
        default=None,
        metavar="LR",
        help=f"--head published: learning rate of the LSTM's input weights and unfrozen stages "
        f"(default: {DEFAULT_BACKBONE_LR})",
    )
    fitting.add_argument(
        "--weight-decay",
        type=non_negative_number,
        default=DEFAULT_WEIGHT_DECAY,
        metavar="W",
        help="AdamW weight decay of linear1 / the temporal head (default: %(default)s)",
    )
    fitting.add_argument("--resume", action="store_true", help="continue the run in DIR after an interruption")
    fitting.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where the trunk and the training run; auto: CUDA when torch sees it (default: %(default)s)",
    )
    fitting.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="T",
        help=f"CPU threads, fixed for the run (default: the cores, at most {MAX_DEFAULT_THREADS}: {default_threads()})",
    )
    fitting.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="K",
        help="preprocessing requests in flight (default: %(default)s)",
    )
    add_retries_option(fitting)
    deciding = parser.add_argument_group(
        "calibration (fitted on the held-out test split, installed by export; none written when refused)"
    )
    add_target_options(deciding, "test split's real videos", "fakes")
    return parser


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    if args.head == TEMPORAL and args.backbone_lr is not None:
        raise TrainError("--backbone-lr applies to --head published: the temporal head trains on a frozen trunk")
    return TrainSettings(
        head=args.head,
        frames=args.frames,
        unfreeze=args.unfreeze,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size or 0,
        lr=args.lr or 0.0,
        backbone_lr=DEFAULT_BACKBONE_LR if args.backbone_lr is None else args.backbone_lr,
        weight_decay=args.weight_decay,
        augment=augmentations.parse_augment(args.augment),
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device cuda: torch {torch.__version__} sees no CUDA device here; use --device cpu or auto")
    return torch.device(name)


def check_out_folder(out: Path, settings: TrainSettings, resume: bool) -> dict | None:
    """The run manifest already in ``out`` (when resuming it), after refusing a folder that holds another run.

    Raises:
        TrainError: ``out`` is a file, holds other files, or holds a run that is not this one.
    """
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder")
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = read_json(run_file)
        if not resume:
            raise TrainError(
                f"--out {out} holds a run already ({RUN_FILE}, run {previous.get('run_id')}): give --resume to "
                "continue it, or another --out"
            )
        changed = differing(previous.get("identity", {}).get("settings", {}), settings.hyperparameters())
        if changed:
            raise TrainError(
                f"--out {out} holds another run (its settings differ: {', '.join(changed)}): --resume continues "
                "only the same command; give another --out"
            )
        return previous
    if out.is_dir() and any(out.iterdir()):
        raise TrainError(f"--out {out} holds other files and no run of train: give a new or empty folder")
    return None


def differing(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two flat mappings, each with both values."""
    return [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


@dataclass(frozen=True)
class Parent:
    """The starting published checkpoint."""

    path: Path
    sha256: str
    model: OriginalModel

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()


def find_parent(checkpoint: str | None, folder: str, frames: int) -> Path:
    """The starting checkpoint's file: ``checkpoint``, or the best published one for ``frames`` in ``folder``.

    Raises:
        TrainError: none found, a temporal checkpoint, or a name of another length (or no length).
    """
    if checkpoint is None:
        try:
            found = [
                candidate
                for candidate in find_checkpoints(Path(folder))
                if not candidate.tag.startswith(TRAINED_CHECKPOINT_TAG)
            ]
            path = best_checkpoint(found, frames).path
        except CheckpointError as error:
            raise TrainError(f"--checkpoints {folder}: {error}; give --checkpoint FILE") from None
    else:
        path = Path(checkpoint)
    if is_temporal_checkpoint(path):
        raise TrainError(
            f"--checkpoint {path} is a temporal model's checkpoint: training starts from a published checkpoint "
            "(model_<acc>_acc_<N>_frames_<tag>.pt)"
        )
    name = parse_checkpoint_name(path)
    if name is None:
        raise TrainError(
            f"--checkpoint {path}: the name does not follow model_<acc>_acc_<N>_frames_<tag>.pt, so its length "
            "is unknown: rename it after the length it was trained with"
        )
    if name.frames != frames:
        raise TrainError(
            f"--checkpoint {path} is a {name.frames}-frame checkpoint, not {frames}: give --frames {name.frames} "
            f"or a {frames}-frame checkpoint"
        )
    return path


def load_parent(path: Path) -> Parent:
    """The starting checkpoint loaded into the published architecture (``strict=True``).

    Raises:
        TrainError: the file is not a state_dict of the published architecture (another model, damaged, not torch).
    """
    try:
        model = load_original_model(path)
    except CheckpointError as error:
        raise TrainError(f"--checkpoint: {error}") from None
    return Parent(path, sha256_of(path), model)


@dataclass
class Stages:
    """Seconds spent in each stage of this invocation."""

    seconds: dict[str, float]

    def timed(self, name: str, started: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - started, 3)


class TrainingRun:
    """One invocation of the command: the stages in order, sharing what they find."""

    def __init__(self, args: argparse.Namespace, settings: TrainSettings, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.settings = settings
        self.out_stream = out
        self.folder = Path(args.out)
        self.cache_root = Path(args.cache).expanduser() if args.cache else default_cache()
        self.progress = TrainingProgress(err, bar=err.isatty())
        self.stages = Stages({})
        self.stats = CropStats()
        self.refused: list[dict] = []
        #: Per augmentation: [variants made and accepted, variants refused].
        self.augment_counts: dict[str, list[int]] = {}
        self.started = dt.datetime.now(dt.timezone.utc)
        self.clock = time.monotonic()

    # -- the stages ---------------------------------------------------------------------------

    def run(self) -> int:
        device = resolve_device(self.args.device)
        threads = self.args.threads or default_threads()
        with deterministic(threads, device):
            return self._run(device, threads)

    def _run(self, device: torch.device, threads: int) -> int:
        args, settings = self.args, self.settings
        previous = check_out_folder(self.folder, settings, args.resume)
        if previous is not None and (self.folder / REPORT_JSON).is_file():
            self.progress.note(f"the run in {self.folder} has finished already: see {self.folder / REPORT_MD}")
            return Exit.OK
        parent_path = find_parent(args.checkpoint, args.checkpoints, settings.frames)
        videos = self.read(args)
        parent = load_parent(parent_path)
        client = self.connect(args)
        with client:
            preprocess = self.preprocess_settings(client)
            crops = CropCache(self.cache_root, preprocess)
            accepted, refused = self.fetch_originals(client, crops, videos)
            splits = self.split(accepted)
            data = manifest(accepted, splits, refused)
            identity = {
                "settings": settings.hyperparameters(),
                "parent_sha256": parent.sha256,
                "manifest_sha256": data["manifest_sha256"],
                "preprocessing_sha256": preprocess.sha256,
            }
            run_id = sha256_text(canonical_json(identity))[:RUN_ID_CHARS]
            self.record_run(previous, identity, run_id, accepted, splits, refused)
            variants = self.make_variants(client, crops, preprocess, accepted, splits)
        return self.train(parent, crops, accepted, splits, variants, data, preprocess, run_id, device, threads)

    def read(self, args: argparse.Namespace) -> list[Video]:
        started = time.monotonic()
        labelled = read_set(args.dataset, args.layout, compression=args.compression, ffpp_split=args.ffpp_split)
        videos, unreadable = hash_videos(labelled)
        for video, reason in unreadable:
            self.refuse(video.path, video.truth, video.group, reason)
        check_classes([video.labelled for video in videos], f"{args.dataset} (readable videos)")
        check_splittable([video.truth for video in videos], connected_groups(videos), args.dataset)
        self.stages.timed("read", started)
        return videos

    def connect(self, args: argparse.Namespace) -> PreprocessClient:
        try:
            return PreprocessClient(connection_from_args(args))
        except ValueError as error:
            raise TrainError(str(error)) from None

    def preprocess_settings(self, client: PreprocessClient):
        try:
            return client.preprocess_settings(self.settings.frames)
        except ClientError as error:
            if error.status == NOT_FOUND:
                raise TrainError(
                    f"the server at {client.url} has no preprocess_{self.settings.frames}: give the --frames it serves "
                    f"({error.message})"
                ) from None
            raise TrainError(
                f"cannot read the preprocessing settings from {client.url}: {error}", Exit.FAILED
            ) from None

    def fetch_originals(
        self, client: PreprocessClient, crops: CropCache, videos: Sequence[Video]
    ) -> tuple[list[Video], list[Video]]:
        """``(videos with crops, videos the server refused)``."""
        started = time.monotonic()
        requests = [
            CropRequest(video.sha256, video.path, lambda path=video.path: Path(path).read_bytes()) for video in videos
        ]
        outcome = self.fetch(client, crops, requests, "preprocessing")
        accepted, refused = [], []
        for video in videos:
            reason = outcome[video.sha256]
            if reason is None:
                accepted.append(video)
            else:
                refused.append(video)
                self.refuse(video.path, video.truth, video.group, reason)
        self.stages.timed("preprocess", started)
        if self.refused:
            self.progress.note(f"{len(self.refused)} video(s) left out (refused or unreadable): listed in the report")
        check_classes([video.labelled for video in accepted], f"{self.args.dataset} (videos the server accepted)")
        return accepted, refused

    def fetch(
        self,
        client,
        crops: CropCache,
        requests: Sequence[CropRequest],
        what: str,
        *,
        done: int = 0,
        total: int | None = None,
    ) -> dict[str, str | None]:
        """:func:`train.crops.fetch_crops` with the counter ``what done/total`` (``total``: the requests)."""
        finished = [done]
        total = len(requests) if total is None else total

        def on_done(request: CropRequest, reason: str | None) -> None:
            finished[0] += 1
            self.progress.count(what, finished[0], total)

        return fetch_crops(
            client,
            crops,
            requests,
            self.settings.frames,
            concurrency=self.args.concurrency,
            retries=self.args.retries,
            stats=self.stats,
            seed=self.settings.seed,
            on_done=on_done,
        )

    def split(self, accepted: Sequence[Video]) -> list[str]:
        truth = [video.truth for video in accepted]
        groups = connected_groups(accepted)
        check_splittable(truth, groups, f"{self.args.dataset} (videos the server accepted)")
        fractions = {
            TRAIN: self.settings.train_fraction,
            VALIDATION: self.settings.val_fraction,
            TEST: self.settings.test_fraction,
        }
        strata = [f"{video.truth}/{video.group}" for video in accepted]
        return split_videos(truth, groups, fractions, self.settings.seed, strata)

    def record_run(
        self,
        previous: dict | None,
        identity: dict,
        run_id: str,
        accepted: Sequence[Video],
        splits: Sequence[str],
        refused: Sequence[Video],
    ) -> None:
        """Writes ``run.json`` and ``manifest.csv`` for a new run; refuses to resume a run of other data."""
        if previous is not None:
            changed = differing(previous["identity"], identity)
            if changed:
                raise TrainError(
                    f"--out {self.folder} holds another run ({', '.join(changed)}): --resume continues only the same "
                    "run; give another --out"
                )
            return
        write_json_atomic(
            self.folder / RUN_FILE,
            {
                "run_id": run_id,
                "identity": identity,
                "command": shlex.join([program_name("train"), *sys.argv[1:]]),
                "started": self.started.isoformat(timespec="seconds"),
            },
        )
        rows = [(video, split) for video, split in zip(accepted, splits)] + [(video, REFUSED) for video in refused]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(MANIFEST_COLUMNS)
        for video, split in rows:
            writer.writerow((video.path, video.sha256, CLASS_NAMES[video.truth], video.group, video.source, split))
        write_text_atomic(self.folder / MANIFEST_FILE, buffer.getvalue())

    def make_variants(
        self, client, crops: CropCache, preprocess, accepted: Sequence[Video], splits: Sequence[str]
    ) -> list[tuple[Video, str]]:
        """The accepted re-encoded variants of the training videos: ``(video, variant sha256)``."""
        started = time.monotonic()
        chosen = [augmentations.AUGMENTATIONS[name] for name in self.settings.augment]
        training = [video for video, split in zip(accepted, splits) if split == TRAIN]
        if not chosen or not training:
            return []
        config = augmentations.decode_settings(preprocess.parameters, self.settings.frames)
        cache = augmentations.AugmentCache(self.cache_root, config)
        jobs = [(video, augmentation) for video in training for augmentation in chosen]
        self.augment_counts = {augmentation.name: [0, 0] for augmentation in chosen}
        variants = []

        def variant(job):
            video, augmentation = job
            known = cache.lookup(video.sha256, augmentation)
            if known is not None and crops.has(known):
                return known, None, None
            data, reason = augmentations.make_variant(Path(video.path).read_bytes(), augmentation, config)
            if data is None:
                return None, None, reason
            sha256 = sha256_bytes(data)
            cache.remember(video.sha256, augmentation, sha256)
            return sha256, data, None

        # In chunks: a chunk's variants are made, sent and dropped before the next one is made, so
        # that the new files of a large set never sit in memory together.
        chunk = VARIANT_CHUNK_PER_REQUEST * self.args.concurrency
        with ThreadPoolExecutor(max_workers=self.args.concurrency, thread_name_prefix="augment") as pool:
            for first in range(0, len(jobs), chunk):
                part = jobs[first : first + chunk]
                made = list(pool.map(variant, part))
                requests = [
                    CropRequest(sha256, f"{video.path} ({augmentation.name})", lambda data=data: data)
                    for (video, augmentation), (sha256, data, _) in zip(part, made)
                    if sha256 is not None
                ]
                outcome = self.fetch(client, crops, requests, VARIANTS_COUNTER, done=first, total=len(jobs))
                self.progress.count(VARIANTS_COUNTER, first + len(part), len(jobs))
                for (video, augmentation), (sha256, _, reason) in zip(part, made):
                    reason = reason if sha256 is None else outcome[sha256]
                    if reason is None:
                        variants.append((video, sha256))
                        self.augment_counts[augmentation.name][0] += 1
                    else:
                        self.refuse(video.path, video.truth, video.group, reason, augmentation.name)
                        self.augment_counts[augmentation.name][1] += 1
        self.stages.timed("augment", started)
        return variants

    def train(self, parent, crops, accepted, splits, variants, data, preprocess, run_id, device, threads) -> int:
        settings = self.settings
        unfreeze = settings.unfreeze
        started = time.monotonic()
        front = parent.model.model[: len(parent.model.model) - unfreeze]
        cache = FeatureCache(self.cache_root, parent.sha256, unfreeze)
        wanted = [video.sha256 for video in accepted] + [sha256 for _, sha256 in variants]
        done = [0]

        def on_done(computed: bool) -> None:
            done[0] += 1
            self.progress.count("trunk features", done[0], len(wanted))

        features = compute_features(wanted, crops, cache, front, unfreeze, device, on_done)
        self.stages.timed("features", started)

        by_split = {split: [video for video, s in zip(accepted, splits) if s == split] for split in SPLITS}
        train_videos = by_split[TRAIN] + [video for video, _ in variants]
        train_features = [features[video.sha256] for video in by_split[TRAIN]] + [features[s] for _, s in variants]
        train_truth = [video.truth for video in train_videos]
        torch.manual_seed(settings.seed)
        if settings.head == PUBLISHED:
            trainee = PublishedTrainee(parent.model, unfreeze)
            before_scorer = PublishedTrainee(parent.model, unfreeze)
        else:
            mean, std = TemporalTrainee.standardisation(train_features)
            trainee = TemporalTrainee(settings.frames, mean, std)
            before_scorer = PublishedTrainee(parent.model, 0)
        inputs, classes = trainee.samples(train_features, train_truth)
        fit_data = FitData(
            inputs=inputs,
            classes=classes,
            validation=[features[video.sha256] for video in by_split[VALIDATION]],
            validation_truth=[video.truth for video in by_split[VALIDATION]],
        )
        test = by_split[TEST]
        test_features = [features[video.sha256] for video in test]
        before_scores = score_videos(before_scorer.to(device), test_features, device)

        started = time.monotonic()
        result = fit(trainee, fit_data, settings, self.folder, device, self.progress, resume=self.args.resume)
        self.stages.timed("fit", started)

        state = trainee.checkpoint_state(parent.state)
        scorer = self.finished_scorer(state).to(device)
        after_scores = score_videos(scorer, test_features, device)
        common = {"dataset": self.args.dataset, "layout": self.args.layout, "frames": settings.frames}
        before = evaluation(test, before_scores, model=parent.path.name, score=FAITHFUL_PUBLISHED, **common)
        score = FAITHFUL_PUBLISHED if settings.head == PUBLISHED else FAITHFUL_TEMPORAL
        after = evaluation(test, after_scores, model="", score=score, **common)
        accuracy = after["overall"]["accuracy"]
        name = checkpoint_name(settings.head, round(100 * (accuracy or 0.0)), settings.frames, run_id)
        after["model"] = name
        path = self.folder / name
        torch_save_atomic(path, state)
        self.check_checkpoint(path)

        report = self.report(
            parent, path, data, preprocess, result, before, after, device, threads, run_id, len(train_videos)
        )
        report["calibration"] = self.calibrate(test, after_scores, path, report["checkpoint"]["sha256"])
        write_report(self.folder, report)
        (self.folder / EPOCHS_FOLDER / RESUME_FILE).unlink(missing_ok=True)
        self.progress.close()
        auc_before, auc_after = before["overall"]["video_auc"], after["overall"]["video_auc"]
        self.out_stream.write(
            f"checkpoint: {path}\n"
            f"held-out test video AUC: before {as_text(auc_before)}, after {as_text(auc_after)} "
            f"({after['overall']['n']} videos)\n"
            f"report: {self.folder / REPORT_MD}\n"
        )
        return Exit.OK

    # -- helpers ------------------------------------------------------------------------------

    def calibrate(self, test: Sequence[Video], scores, checkpoint: Path, sha256: str) -> dict:
        """Fits the new checkpoint's calibration on the held-out test split and writes calibration.json.

        The scores are the in-process ones (the served version gives them within the export's
        tolerance, 1e-4); ``export`` installs the file with the version. A split too small for the
        target is said in the report, and nothing is written.
        """
        settings = self.settings
        published = settings.head == PUBLISHED
        score = Score.DEEPFAKE if published else Score.TEMPORAL
        kind = Kind.CLASSIFIER if published else Kind.TEMPORAL_CLASSIFIER
        path = self.folder / CALIBRATION_DOCUMENT
        path.unlink(missing_ok=True)
        listing = sorted(f"{video.path}\t{video.truth}" for video in test)
        try:
            document = fit_calibration(
                [row[0] for row in scores],  # the clip's score (each row: PROB_FAKE, then the frames')
                [video.truth for video in test],
                target=Target(score, model_name(kind, settings.frames), settings.frames, None, sha256),
                data=SetInfo(
                    f"the held-out test split of {Path(self.args.dataset).name}",
                    hashlib.sha256("\n".join(listing).encode("utf-8")).hexdigest(),
                ),
                target_fpr=self.args.target_fpr,
                target_fnr=self.args.target_fnr,
                seed=settings.seed,
                fitted_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                fitted_by=f"train run {checkpoint.stem}",
            )
        except FitError as error:
            self.progress.note(f"no calibration written: {error}")
            return {"file": None, "reason": str(error)}
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        point = document["operating_point"]
        return {
            "file": path.name,
            "fake_threshold": point["fake_threshold"],
            "real_threshold": point["real_threshold"],
            "target_fpr": point["target_fpr"],
            "fpr": point["fpr"]["value"],
            "tpr": point["tpr"]["value"],
        }

    def finished_scorer(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """Scores with the checkpoint's own tensors, as they will be loaded."""
        if self.settings.head == PUBLISHED:
            model = OriginalModel()
            model.load_state_dict(state, strict=True)
            return PublishedTrainee(model.eval(), self.settings.unfreeze)
        return TemporalScorer(build_temporal_model(state).temporal)

    def check_checkpoint(self, path: Path) -> None:
        """The written checkpoint loads the way ``export`` loads it (strict keys and shapes)."""
        try:
            if self.settings.head == PUBLISHED:
                load_original_model(path)
            else:
                build_temporal_model(read_state_dict(path))
        except (CheckpointError, ValueError) as error:
            raise TrainError(f"the written checkpoint {path} does not load: {error}", Exit.FAILED) from None

    def refuse(self, video: str, truth: int, group: str, reason: str, variant: str | None = None) -> None:
        self.refused.append({"video": video, "truth": truth, "group": group, "variant": variant, "reason": reason})

    def report(
        self, parent, path, data, preprocess, result, before, after, device, threads, run_id, n_train_samples
    ) -> dict:
        settings = self.settings
        finished = dt.datetime.now(dt.timezone.utc)
        return {
            "format": REPORT_FORMAT,
            "run_id": run_id,
            "command": shlex.join([program_name("train"), *sys.argv[1:]]),
            "head": settings.head,
            "frames": settings.frames,
            "checkpoint": {"file": path.name, "sha256": sha256_of(path)},
            "parent": {"file": parent.path.name, "path": str(parent.path), "sha256": parent.sha256},
            "data": {
                "set": self.args.dataset,
                "layout": self.args.layout,
                **data,
                "fractions": {
                    TRAIN: settings.train_fraction,
                    VALIDATION: settings.val_fraction,
                    TEST: settings.test_fraction,
                },
                "seed": settings.seed,
                "training_videos_with_variants": n_train_samples,
            },
            "preprocessing": {
                "model": preprocess.model,
                "settings_sha256": preprocess.sha256,
                "parameters": preprocess.parameters,
                **self.stats.as_json(),
                "cache": str(self.cache_root),
            },
            "augmentations": [
                {
                    "name": name,
                    "description": augmentations.AUGMENTATIONS[name].description,
                    "n_variants": counts[0],
                    "n_refused": counts[1],
                }
                for name, counts in self.augment_counts.items()
            ],
            "hyperparameters": settings.hyperparameters(),
            "training": {
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "resumed_after": result.resumed_after,
                "history": result.history,
                "device": str(device),
                "threads": threads,
            },
            "before": before,
            "after": after,
            "refused": self.refused,
            "versions": library_versions(),
            "started": self.started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - self.clock, 3),
            "stage_seconds": self.stages.seconds,
        }


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Runs the command; returns its exit status (see the module's docstring)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)
    check_tls(parser, args)
    try:
        settings = settings_from_args(args)
        return TrainingRun(args, settings, out, err).run()
    except TrainError as error:
        err.write(f"{parser.prog}: error: {error}\n")
        return error.status
    except KeyboardInterrupt:
        err.write(f"\n{parser.prog}: interrupted; the same command with --resume continues from the last epoch\n")
        return Exit.INTERRUPTED
