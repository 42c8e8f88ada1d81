"""Preprocessing of two revisions side by side in one run: speed and how far the scores moved.

``python -m benchmarks.preprocess_ab --against REV`` takes the ``preprocessing/`` package of git
revision ``REV`` (``git archive``, into a temporary folder) and this checkout's, and runs both on
the same machine in alternating rounds (A B A B ...), each in a process of its own with the CPU
server's settings (``preprocess_20``'s ``configs/cpu.pbtxt``, one torch thread):

* speed: wall and CPU time of one call on the 1080p sample (or a generated 1080p clip when the
  sample is absent), the median over every call of every round;
* scores: every clip of the reproducibility matrix (generated clips, the corpus, the sample)
  through both, each scored by one single-threaded ONNX Runtime session of the served 20-frame
  classifier; the largest and mean difference in the faithful score, and in the face boxes.

Results: ``benchmarks/results/<name>.json`` and ``.md`` (``--name``, default ``preprocess_ab``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from contract import classifier_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FRAMES = 20
CONFIG = ROOT / "model_repository" / f"preprocess_{FRAMES}" / "configs" / "cpu.pbtxt"
CLASSIFIER = classifier_file(ROOT / "model_repository", FRAMES)
SAMPLE = ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"


def _worker(out: Path, calls: int, scores: bool) -> None:
    """Runs in the child: times ``calls`` calls on the speed clip, optionally scores every clip."""
    import onnxruntime as ort
    import torch

    import preprocessing.crop
    from benchmarks.video import generated_clip
    from preprocessing import FacePipeline, InputError, PipelineConfig, decode_frames
    from tests.reproducibility import clips, served_parameters

    torch.set_num_threads(1)
    pipeline = FacePipeline(PipelineConfig.from_parameters({**served_parameters(CONFIG), "frames": str(FRAMES)}))
    speed_clip = SAMPLE.read_bytes() if SAMPLE.is_file() else generated_clip()
    pipeline(speed_clip)  # warm-up
    wall, cpu = [], []
    for _ in range(calls):
        started, started_cpu = time.perf_counter(), time.process_time()
        pipeline(speed_clip)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    record: dict[str, object] = {
        "wall": wall,
        "cpu": cpu,
        "scores": {},
        "boxes": {},
        "errors": {},
        "whole_pixel_crop_scores": {},
    }
    if scores:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(CLASSIFIER), options, providers=["CPUExecutionProvider"])
        for name, data in clips().items():
            try:
                result = pipeline(data)
            except InputError as exc:
                record["errors"][name] = str(exc)
                continue
            (prob,) = session.run(["PROB_FAKE"], {"FACES": np.ascontiguousarray(result.faces[-1:][None])})
            record["scores"][name] = float(np.asarray(prob).reshape(-1)[0])
            record["boxes"][name] = result.boxes.tolist()
            if hasattr(preprocessing.crop, "sample_region"):
                # The crop alone: the same region cut on whole pixels and resized as before.
                last = _whole_pixel_crop(decode_frames(data, FRAMES).frames[-1], result.boxes[-1])
                (whole,) = session.run(["PROB_FAKE"], {"FACES": last[None, None]})
                record["whole_pixel_crop_scores"][name] = float(np.asarray(whole).reshape(-1)[0])
    out.write_text(json.dumps(record))


def _whole_pixel_crop(frame: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The region rounded half up to whole pixels, cut out and resized with cv2 (the earlier crop)."""
    import cv2

    from contract import FACE_SIZE
    from preprocessing.crop import normalize_faces

    left, top, right, bottom = (int(np.floor(v + 0.5)) for v in region)
    crop = cv2.resize(frame[top:bottom, left:right], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
    return normalize_faces(crop[None])[0]


def _export_revision(revision: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "preprocessing"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    tar_path = into / "old.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")


def _run(code_root: Path, out: Path, calls: int, scores: bool) -> dict:
    # The revision's preprocessing first on the path; everything else (tests, benchmarks) from here.
    env_path = f"{code_root}:{ROOT}"
    command = [
        sys.executable,
        "-c",
        f"import sys; sys.path[:0] = {env_path.split(':')!r}; "
        f"from benchmarks.preprocess_ab import _worker; from pathlib import Path; "
        f"_worker(Path({str(out)!r}), {calls}, {scores})",
    ]
    subprocess.run(command, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision whose preprocessing is the 'old' side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side (default 3)")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per round (default 5)")
    parser.add_argument(
        "--name", default="preprocess_ab", help="results file name in benchmarks/results (default %(default)s)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        old_root = scratch_path / "old"
        old_root.mkdir()
        _export_revision(args.against, old_root)
        sides = {"old": old_root, "new": ROOT}
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        for round_index in range(args.rounds):
            for side, code_root in sides.items():
                out = scratch_path / f"{side}_{round_index}.json"
                runs[side].append(_run(code_root, out, args.calls, scores=round_index == 0))
                print(
                    f"round {round_index + 1}/{args.rounds} {side}: median wall "
                    f"{statistics.median(runs[side][-1]['wall']) * 1000:.0f} ms",
                    flush=True,
                )
    report = _report(args.against, runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(_markdown(report))
    print(_markdown(report))


def _report(revision: str, runs: dict[str, list[dict]]) -> dict:
    speed = {
        side: {
            "wall_ms": statistics.median(t for r in rs for t in r["wall"]) * 1000,
            "cpu_ms": statistics.median(t for r in rs for t in r["cpu"]) * 1000,
            "calls": sum(len(r["wall"]) for r in rs),
        }
        for side, rs in runs.items()
    }
    old, new = runs["old"][0], runs["new"][0]
    common = sorted(set(old["scores"]) & set(new["scores"]))
    score_diff = {name: abs(new["scores"][name] - old["scores"][name]) for name in common}
    crop_only = {name: abs(new["scores"][name] - whole) for name, whole in new["whole_pixel_crop_scores"].items()}
    box_diff = {
        name: float(np.abs(np.asarray(new["boxes"][name]) - np.asarray(old["boxes"][name])).max()) for name in common
    }
    return {
        "against": revision,
        "clip": "people_walking_1080p.mp4" if SAMPLE.is_file() else "generated 1080p clip",
        "speed": speed,
        "wall_ratio_new_over_old": speed["new"]["wall_ms"] / speed["old"]["wall_ms"],
        "cpu_ratio_new_over_old": speed["new"]["cpu_ms"] / speed["old"]["cpu_ms"],
        "clips_scored_by_both": len(common),
        "prob_fake_abs_diff": {
            "max": max(score_diff.values(), default=0.0),
            "mean": statistics.fmean(score_diff.values()) if score_diff else 0.0,
            "per_clip": score_diff,
        },
        "crop_only_prob_fake_abs_diff": {
            "max": max(crop_only.values(), default=0.0),
            "mean": statistics.fmean(crop_only.values()) if crop_only else 0.0,
            "per_clip": crop_only,
        },
        "box_max_abs_diff_px": {"max": max(box_diff.values(), default=0.0), "per_clip": box_diff},
        "refusals_changed": sorted(set(old["errors"]) ^ set(new["errors"])),
    }


def _markdown(report: dict) -> str:
    speed = report["speed"]
    worst = max(report["prob_fake_abs_diff"]["per_clip"].items(), key=lambda kv: kv[1], default=("-", 0.0))
    return "\n".join(
        [
            f"# Preprocessing, this checkout against {report['against']} (side by side, one run)",
            "",
            f"Speed on {report['clip']}, 20 frames, CPU server settings, one torch thread (median of "
            f"{speed['new']['calls']} calls per side):",
            "",
            "| side | wall ms | CPU ms |",
            "| --- | --- | --- |",
            f"| old | {speed['old']['wall_ms']:.0f} | {speed['old']['cpu_ms']:.0f} |",
            f"| new | {speed['new']['wall_ms']:.0f} | {speed['new']['cpu_ms']:.0f} |",
            "",
            f"New over old: wall {report['wall_ratio_new_over_old']:.3f}, CPU {report['cpu_ratio_new_over_old']:.3f}.",
            "",
            f"Scores (20-frame classifier, {report['clips_scored_by_both']} clips scored by both): "
            "faithful score moved "
            f"by {report['prob_fake_abs_diff']['mean']:.4f} on average, "
            f"at most {report['prob_fake_abs_diff']['max']:.4f} "
            f"({worst[0]}); face boxes by at most {report['box_max_abs_diff_px']['max']:.2f} px. Refusals changed: "
            f"{', '.join(report['refusals_changed']) or 'none'}.",
            "",
            f"The crop alone (the new code's regions, cut on whole pixels and resized as before, against "
            f"the sub-pixel crop): faithful score moved by {report['crop_only_prob_fake_abs_diff']['mean']:.4f} on "
            f"average, at most {report['crop_only_prob_fake_abs_diff']['max']:.4f}. Random demo weights: real "
            f"weights may be more or less sensitive.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
