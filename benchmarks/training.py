"""Training on this machine: ``python -m benchmarks.training`` -> ``benchmarks/results/training.{json,md}``.

Measured in this order, each in the process it runs in when a user trains:

1. **Steps** (in this process, on synthetic features of the right shapes, the command's default
   batch sizes and thread count): frames per second through a training step (forward, backward,
   AdamW) of each head: ``published`` with ``--unfreeze`` 0, 1 and 2, and ``temporal``; and frames
   per second through the frozen trunk, which every video's crops cross once. Each is the best of
   :data:`ROUNDS` rounds.
2. **Fine-tuning 100 videos of 20 frames** (the labelled set of ``tests/training_set.py``, 50 real
   and 50 fake clips): ``python -m train --head published`` from an empty cache (server
   preprocessing, the default augmentations, trunk features, the epochs), then ``--head temporal``
   on the cache the first run filled, each a process of its own. Its peak memory is the high-water
   mark of its resident set (``VmHWM``), which it reads itself at exit: not ``ru_maxrss``, which on
   Linux carries the parent's peak across fork and exec (a ``python -c pass`` started from a process
   holding 1 GB reports 987 MiB). The server is started here with ``preprocess_<N>`` alone (the CPU
   configuration), unless ``--url`` names one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.server import cpu_count, start_server
from contract import Kind, model_name
from export.model import FEATURE_DIM, OriginalModel
from serve.distribution import PROJECT_ROOT
from tests.training_set import make_training_set
from train.features import split_trunk
from train.fit import deterministic
from train.heads import PublishedTrainee, TemporalTrainee, class_weights, weighted_loss
from train.settings import MAX_UNFREEZE, PUBLISHED, TEMPORAL, TrainSettings

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
REPOSITORY = PROJECT_ROOT / "model_repository"
DEFAULT_VIDEOS = 100
DEFAULT_FRAMES = 20
#: Shapes of one frame at each frozen boundary (112 px crops: layer2 14 x 14, layer3 7 x 7).
BOUNDARY_SHAPES = {0: (FEATURE_DIM,), 1: (1024, 7, 7), 2: (512, 14, 14)}
WARMUP_STEPS = 2
TIMED_STEPS = 8
TRUNK_VIDEOS = 3
#: Each throughput is the best of this many timed rounds: other work on a shared machine only ever
#: slows a round down.
ROUNDS = 3
TRAIN_TIMEOUT_S = 4 * 3600
KIB = 1024


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _step_rate(trainee, inputs: torch.Tensor, classes: torch.Tensor, settings: TrainSettings, per_sample: int) -> float:
    """Frames per second through training steps of ``trainee`` (each sample holds ``per_sample`` frames)."""
    optimizer = torch.optim.AdamW(trainee.parameter_groups(settings), fused=True)
    weights = class_weights(classes)
    trainee.train()

    def step() -> None:
        loss = weighted_loss(trainee.logits(inputs), classes, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(TIMED_STEPS):
            step()
        best = min(best, time.perf_counter() - started)
    return TIMED_STEPS * len(classes) * per_sample / best


def measure_steps(frames: int, threads: int) -> dict:
    """Training-step and trunk throughputs on synthetic inputs."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = OriginalModel().eval()
    rates: dict[str, float] = {}
    with deterministic(threads, torch.device("cpu")):
        for unfreeze in range(MAX_UNFREEZE + 1):
            settings = TrainSettings(head=PUBLISHED, frames=frames, unfreeze=unfreeze)
            batch = settings.batch_size
            inputs = torch.rand(batch, *BOUNDARY_SHAPES[unfreeze], generator=generator)
            classes = torch.arange(batch) % 2
            rates[f"published_unfreeze_{unfreeze}"] = _step_rate(
                PublishedTrainee(model, unfreeze), inputs, classes, settings, per_sample=1
            )
        settings = TrainSettings(head=TEMPORAL, frames=frames)
        inputs = torch.rand(settings.batch_size, frames, FEATURE_DIM, generator=generator)
        mean, std = TemporalTrainee.standardisation(list(inputs))
        classes = torch.arange(settings.batch_size) % 2
        rates["temporal"] = _step_rate(TemporalTrainee(frames, mean, std), inputs, classes, settings, per_sample=frames)
        trunk: dict[str, float] = {}
        faces = torch.randn(frames, 3, 112, 112, generator=generator)
        for unfreeze in range(MAX_UNFREEZE + 1):
            front, _ = split_trunk(model.model, unfreeze)
            best = float("inf")
            with torch.inference_mode():
                front(faces)
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    for _ in range(TRUNK_VIDEOS):
                        front(faces)
                    best = min(best, time.perf_counter() - started)
            trunk[f"unfreeze_{unfreeze}"] = TRUNK_VIDEOS * frames / best
    return {"training_frames_per_s": rates, "trunk_frames_per_s": trunk, "threads": threads}


#: Runs ``python -m train`` with the arguments after the first, then writes its /proc status (VmHWM) to the first.
TRAIN_WITH_STATUS = (
    "import atexit, runpy, sys\n"
    "status = sys.argv[1]\n"
    "atexit.register(lambda: open(status, 'w').write(open('/proc/self/status').read()))\n"
    "sys.argv = ['train', *sys.argv[2:]]\n"
    "runpy.run_module('train', run_name='__main__', alter_sys=True)\n"
)


def _high_water_mib(status: str) -> float:
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / KIB, 1)
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def _run_train(args: list[str], log: Path) -> dict:
    """One ``python -m train`` in a child process: its wall time, peak memory and report."""
    status = log.with_suffix(".status")
    with log.open("w", encoding="utf-8") as err:
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-c", TRAIN_WITH_STATUS, str(status), *args],
            cwd=PROJECT_ROOT,
            stdout=err,
            stderr=err,
            timeout=TRAIN_TIMEOUT_S,
            check=False,
        )
        seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"python -m train {' '.join(args)} exited with {completed.returncode}; see {log}")
    out = Path(args[args.index("--out") + 1])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {
        "wall_s": round(seconds, 1),
        "peak_rss_mib": _high_water_mib(status.read_text(encoding="utf-8")),
        "stage_seconds": report["stage_seconds"],
        "epochs_run": report["training"]["epochs_run"],
        "preprocessing": {key: report["preprocessing"][key] for key in ("calls", "cache_hits", "refused")},
        "training_videos_with_variants": report["data"]["training_videos_with_variants"],
        "splits": report["data"]["splits"],
        "video_auc_before": report["before"]["overall"]["video_auc"],
        "video_auc_after": report["after"]["overall"]["video_auc"],
    }


def measure_fine_tuning(videos: int, frames: int, url: str | None, work: Path) -> dict:
    started = time.perf_counter()
    set_csv = make_training_set(work / "set", per_class=videos // 2, frames=frames)
    generated_s = time.perf_counter() - started
    server = None
    if url is None:
        repository = work / "repository"
        repository.mkdir()
        name = model_name(Kind.PREPROCESS, frames)
        (repository / name).symlink_to((REPOSITORY / name).resolve(), target_is_directory=True)
        server = start_server(repository, work / "tritonserver.log")
        url = server.grpc_url
    try:
        common = [str(set_csv), "--frames", str(frames), "--url", url, "--cache", str(work / "cache")]
        runs = {}
        for head in (PUBLISHED, TEMPORAL):
            runs[head] = _run_train([*common, "--head", head, "--out", str(work / head)], work / f"{head}.log")
    finally:
        if server is not None:
            server.stop()
    return {"videos": videos, "frames": frames, "set_generated_s": round(generated_s, 1), "runs": runs}


def render_markdown(results: dict) -> str:
    steps, tuning = results["steps"], results["fine_tuning"]
    lines = [
        "# Training (`python -m benchmarks.training`)",
        "",
        f"Machine: {results['cpu']}, {results['cores']} cores; torch {results['torch']}; {results['date']}. "
        f"N = {tuning['frames']} frames; {steps['threads']} threads. Load average (1, 5, 15 min) "
        f"{results['load_average_at_start']} at the start, {results['load_average_at_end']} at the end.",
        "",
        "## Frames per second",
        "",
        "| what | frames/s |",
        "| --- | --- |",
    ]
    for name, rate in steps["training_frames_per_s"].items():
        lines.append(f"| training step, {name.replace('_', ' ')} | {rate:.0f} |")
    for name, rate in steps["trunk_frames_per_s"].items():
        lines.append(f"| frozen trunk, once per crop ({name.replace('_', ' ')}) | {rate:.1f} |")
    lines += [
        "",
        f"## Fine-tuning {tuning['videos']} videos of {tuning['frames']} frames",
        "",
        "The published head first (an empty cache: every stage), then the temporal head on the cache it filled; "
        "the default settings (three augmentations, early stopping). Peak RSS: the process's VmHWM.",
        "",
        "| head | wall s | peak RSS MiB | preprocess s | augment s | features s | fit s | epochs | "
        "server calls | training videos (+ variants) | AUC before | AUC after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for head, run in tuning["runs"].items():
        stages = run["stage_seconds"]
        lines.append(
            f"| {head} | {run['wall_s']} | {run['peak_rss_mib']} | {stages.get('preprocess', 0):.1f} | "
            f"{stages.get('augment', 0):.1f} | {stages.get('features', 0):.1f} | {stages.get('fit', 0):.1f} | "
            f"{run['epochs_run']} | {run['preprocessing']['calls']} | {run['training_videos_with_variants']} | "
            f"{run['video_auc_before']:.3f} | {run['video_auc_after']:.3f} |"
        )
    lines += [
        "",
        "The AUCs are of the demo checkpoints (random weights) and of what training made of them on the "
        "generated set: they show the run learnt, nothing about real fakes. The set's colour cast was "
        "chosen so that the 10-frame demo checkpoint cannot rank it; other random weights, like the "
        f"{tuning['frames']}-frame demo's, may.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=DEFAULT_VIDEOS, help="videos of the set (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="N (default: %(default)s)")
    parser.add_argument("--url", help="a running server with preprocess_<N> (default: start one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.videos < 12 or args.frames < 1:
        parser.error("--videos must be at least 12 and --frames positive")
    threads = min(cpu_count(), 8)
    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # Other work on the machine slows every figure down: the load it had is part of the result.
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "cpu": _cpu_model(),
        "cores": cpu_count(),
        "torch": torch.__version__,
        "steps": measure_steps(args.frames, threads),
    }
    with tempfile.TemporaryDirectory(prefix="bench-training-") as work:
        results["fine_tuning"] = measure_fine_tuning(args.videos, args.frames, args.url, Path(work))
    results["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "training.md").write_text(render_markdown(results), encoding="utf-8")
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
