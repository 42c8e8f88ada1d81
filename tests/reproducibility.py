"""One run of the reproducibility matrix: preprocess every clip under this process's settings.

Run as ``python -m tests.reproducibility OUT.npz --threads T [--pin] [--device cuda] [--clips IN.npz]``, with
``ONEDNN_MAX_CPU_ISA`` in the environment where the instruction set is capped (oneDNN reads it
once, when torch loads: that is why every setting is a process of its own). For each served
preprocessing config (the CPU server's and the GPU node's, both from the committed
repository) and each clip it records the face boxes, the found flags, the refusal message (or
none), and the faithful score of the crops, computed by one single-threaded ONNX Runtime session
of the served classifier, so that a difference between two runs is the preprocessing's alone. It
also records a fingerprint of MTCNN's raw arithmetic, so the caller can see whether the setting
changed anything at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from contract import classifier_file

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"
SAMPLE = ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
FRAMES = 10
#: The two served preprocessing configs: the embedded CPU server's and the GPU node's.
CONFIGS = {
    "cpu": REPOSITORY / f"preprocess_{FRAMES}" / "configs" / "cpu.pbtxt",
    "gpu": REPOSITORY / f"preprocess_{FRAMES}" / "config.pbtxt",
}
CLASSIFIER = classifier_file(REPOSITORY, FRAMES)
# Adapter settings of the served configs that are not the library's.
ADAPTER_KEYS = ("torch_threads",)


def clips() -> dict[str, bytes]:
    """The matrix's inputs: generated clips, every corpus case, the 1080p sample when present."""
    from tests import corpus, media

    generated = {
        "face_seed0": media.face_clip(frames=14, seed=0),
        "face_seed1": media.face_clip(frames=14, seed=1),
        "face_seed2_vp9": media.face_clip(frames=12, seed=2, codec="libvpx-vp9", container="webm"),
        "two_faces": media.two_face_clip(frames=12),
        "hidden_face": media.face_clip(frames=12, seed=4, hide_face=(3, 4, 8)),
    }
    with tempfile.TemporaryDirectory() as scratch:
        generated.update({f"corpus_{case.name}": case.data for case in corpus.build(Path(scratch), FRAMES)})
    if SAMPLE.is_file():
        generated["people_walking_1080p"] = SAMPLE.read_bytes()
    return generated


def save_clips(path: Path) -> None:
    """Writes :func:`clips` once, for every run of the matrix to read the same bytes."""
    np.savez(path, **{name: np.frombuffer(data, np.uint8) for name, data in clips().items()})


def load_clips(path: Path) -> dict[str, bytes]:
    with np.load(path) as loaded:
        return {name: loaded[name].tobytes() for name in loaded.files}


def served_parameters(path: Path) -> dict[str, str]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    return {key: value.string_value for key, value in config.parameters.items() if key not in ADAPTER_KEYS}


def arithmetic_fingerprint(detector) -> str:
    """A hash of P-Net's and R-Net's raw outputs on fixed inputs: changes whenever their arithmetic does."""
    import torch

    generator = torch.Generator().manual_seed(0)
    nets = detector._cascade
    with torch.no_grad():
        pnet = nets.pnet(torch.rand(1, 3, 96, 128, generator=generator).to(detector.device))
        rnet = nets.rnet(torch.rand(16, 3, 24, 24, generator=generator).to(detector.device))
    digest = hashlib.sha256()
    for output in (*pnet, *rnet):
        digest.update(output.detach().cpu().numpy().astype(np.float32).tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the results (.npz)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--pin", action="store_true", help="run on one core only (sched_setaffinity)")
    parser.add_argument("--device", default="cpu", help="MTCNN's device (default cpu)")
    parser.add_argument("--clips", type=Path, help="the inputs, as written by save_clips (default: made here)")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import onnxruntime as ort
    import torch

    from preprocessing import FacePipeline, InputError, PipelineConfig

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(CLASSIFIER), options, providers=["CPUExecutionProvider"])
    inputs = load_clips(args.clips) if args.clips else clips()
    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, object] = {
        "threads": torch.get_num_threads(),
        "cores": len(os.sched_getaffinity(0)),
        "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "device": args.device,
        "errors": {},
    }
    for config_name, path in CONFIGS.items():
        pipeline = FacePipeline(PipelineConfig.from_parameters({**served_parameters(path), "device": args.device}))
        summary.setdefault("fingerprint", arithmetic_fingerprint(pipeline.detector))
        for clip_name, data in inputs.items():
            key = f"{config_name}/{clip_name}"
            try:
                result = pipeline(data)
            except InputError as exc:
                summary["errors"][key] = str(exc)
                continue
            last = result.faces[-1:][None]  # the faithful score is the last frame's
            (prob,) = session.run(["PROB_FAKE"], {"FACES": np.ascontiguousarray(last)})
            arrays[f"{key}/boxes"] = result.boxes
            arrays[f"{key}/found"] = result.found
            arrays[f"{key}/prob_fake"] = np.asarray(prob, np.float64).reshape(-1)
    arrays["summary"] = np.frombuffer(json.dumps(summary).encode(), np.uint8)
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
