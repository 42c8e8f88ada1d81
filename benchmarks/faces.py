"""What scoring every face costs: ``faces_<N>``'s work for K = 1, 2, 4 faces, in process.

``python -m benchmarks.faces`` runs, for each K, the preprocessing of the served ``faces_20`` CPU
config with ``max_faces`` K (and ``max_followed`` at least K, as the config requires) and the
classifier as the CPU server runs it (one chunk per core on one ONNX Runtime session) on the K
faces, on the 1080p sample (a generated 1080p clip when it is absent), a few times each. It
reports the CPU time per video (preprocessing and classifier, summed over threads), the wall time,
the throughput two cores can give at that CPU cost (cores / CPU seconds per video: the server's
two cores are kept busy by two requests at once, as ``make bench`` measured for ``deepfake_<N>``),
the faces seen in the clip and the faces left out. Results: ``benchmarks/results/faces.json``, ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from contract import classifier_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FRAMES = 20
CONFIG = ROOT / "model_repository" / f"faces_{FRAMES}" / "configs" / "cpu.pbtxt"
GPU_CONFIG = ROOT / "model_repository" / f"faces_{FRAMES}" / "config.pbtxt"
CLASSIFIER = classifier_file(ROOT / "model_repository", FRAMES)
SAMPLE = ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
FACE_COUNTS = (1, 2, 4)
SERVER_CORES = 2
OUTPUTS = ("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed videos per K (default 5)")
    args = parser.parse_args()
    import onnxruntime as ort
    import torch

    from benchmarks.video import generated_clip
    from preprocessing import FacePipeline, PipelineConfig
    from tests.reproducibility import served_parameters
    from triton_models.chunks import ChunkedSession

    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ChunkedSession(
        ort.InferenceSession(str(CLASSIFIER), options, providers=["CPUExecutionProvider"]), "FACES", SERVER_CORES
    )
    video = SAMPLE.read_bytes() if SAMPLE.is_file() else generated_clip()
    params = {k: v for k, v in served_parameters(CONFIG).items() if k != "classifier"}
    rows = []
    for faces in FACE_COUNTS:
        followed = max(faces, int(params["max_followed"]))
        pipeline = FacePipeline(
            PipelineConfig.from_parameters({**params, "max_faces": str(faces), "max_followed": str(followed)})
        )
        pipeline(video)  # warm-up
        cpu, wall, scored, seen = [], [], 0, 0
        for _ in range(args.repeats):
            started, started_cpu = time.perf_counter(), time.process_time()
            result = pipeline(video)
            crops = np.ascontiguousarray(np.stack([track.faces for track in result.tracks]))
            session.run(OUTPUTS, crops)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            scored, seen = len(result.tracks), result.faces_seen
        cpu_s = statistics.median(cpu)
        rows.append(
            {
                "max_faces": faces,
                "faces_scored": scored,
                "faces_seen": seen,
                "faces_left_out": seen - scored,
                "cpu_s_per_video": cpu_s,
                "wall_s_per_video": statistics.median(wall),
                "videos_per_s_on_2_cores": SERVER_CORES / cpu_s,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    # The GPU node's config (every frame searched whole, faces from 20 px at 640): how many faces it
    # sees and leaves out of its max_faces, on this CPU.
    gpu_params = {k: v for k, v in served_parameters(GPU_CONFIG).items() if k != "classifier"}
    gpu = FacePipeline(PipelineConfig.from_parameters(gpu_params))(video)
    gpu_row = {
        "max_faces": int(gpu_params["max_faces"]),
        "faces_scored": len(gpu.tracks),
        "faces_seen": gpu.faces_seen,
        "faces_left_out": gpu.faces_seen - len(gpu.tracks),
    }
    print(json.dumps({"gpu_config": gpu_row}), flush=True)
    report = {
        "clip": "people_walking_1080p.mp4" if SAMPLE.is_file() else "generated 1080p clip",
        "frames": FRAMES,
        "repeats": args.repeats,
        "rows": rows,
        "gpu_config": gpu_row,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faces.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Every face: cost per video for K faces ({report['clip']}, {FRAMES} frames, CPU server settings)",
        "",
        "| max_faces | faces scored | seen | left out | CPU s / video | wall s / video | videos/s on 2 cores |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['max_faces']} | {r['faces_scored']} | {r['faces_seen']} | {r['faces_left_out']} | "
        f"{r['cpu_s_per_video']:.2f} | {r['wall_s_per_video']:.2f} | {r['videos_per_s_on_2_cores']:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        f"The GPU node's config (`faces_{FRAMES}/config.pbtxt`: every frame searched whole, max_faces "
        f"{gpu_row['max_faces']}), run on this CPU: {gpu_row['faces_seen']} faces seen, {gpu_row['faces_scored']} "
        f"scored, {gpu_row['faces_left_out']} left out.",
    ]
    (RESULTS / "faces.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
