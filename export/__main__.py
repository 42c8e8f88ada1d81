"""Command line: ``python -m export {demo-checkpoints,onnx,tensorrt}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from client.commands.args import positive_int
from contract import (
    CLASSIFIER_INPUTS,
    CLASSIFIER_OUTPUTS,
    DEFAULT_VERSION,
    EXPORT_METADATA_FILE,
    ONNX_FILE,
    SERVED_LENGTHS,
    TENSORS,
    Exit,
    Kind,
    model_name,
    program_name,
)
from export.checkpoints import (
    CheckpointError,
    best_checkpoint,
    find_checkpoints,
    load_original_model,
    sha256_of,
    write_demo_checkpoints,
)
from export.onnx_export import (
    BATCH_TOLERANCE,
    DEFAULT_OPSET,
    PRECISIONS,
    TOLERANCES,
    library_versions,
    verify_onnx,
    write_onnx,
)
from export.repository import RepositoryLayoutError, ensure_model_folders

log = logging.getLogger("export")

DEFAULT_FRAMES = SERVED_LENGTHS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("export"), description="Build the classifier artifacts Triton serves."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo-checkpoints",
        help="write seeded random-weight checkpoints in the published format (their scores mean nothing)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--out", type=Path, required=True, help="folder to write model_<acc>_acc_<N>_frames_<tag>.pt into"
    )
    demo.add_argument("--frames", type=positive_int, nargs="+", default=list(DEFAULT_FRAMES), help="sequence lengths")

    onnx = commands.add_parser(
        "onnx",
        help="export the best checkpoint per length to <repository>/resnext_lstm_<N>/1/model.onnx, verified",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    onnx.add_argument(
        "--checkpoints", type=Path, required=True, help="folder holding model_<acc>_acc_<N>_frames_<tag>.pt files"
    )
    onnx.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    onnx.add_argument(
        "--frames", type=positive_int, nargs="+", default=list(DEFAULT_FRAMES), help="sequence lengths to export"
    )
    onnx.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="weights and arithmetic of the graph (inputs and outputs stay float32)",
    )
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")

    trt = commands.add_parser(
        "tensorrt",
        help="build <repository>/resnext_lstm_<N>/1/model.plan from model.onnx on this GPU, verified",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    trt.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    trt.add_argument(
        "--frames", type=positive_int, nargs="+", default=None, help="sequence lengths (default: every exported model)"
    )
    trt.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="engine precision")
    trt.add_argument("--max-batch", type=int, default=8, help="largest batch of the optimization profile")
    trt.add_argument("--workspace-mib", type=int, default=4096, help="builder workspace memory pool limit")
    return parser


def command_demo(args: argparse.Namespace) -> int:
    for path in write_demo_checkpoints(args.out, args.frames):
        log.info("wrote %s (random weights: its scores mean nothing)", path)
    return 0


def _signature(names: tuple[str, ...], frames: int) -> dict[str, list]:
    """The graph's tensors as ``export.json`` records them: the batch axis, then the contract's dims."""
    return {name: ["batch", *TENSORS[name].dims(frames)] for name in names}


def export_one(checkpoint_dir: Path, repository: Path, frames: int, precision: str, opset: int) -> list[str]:
    """Exports and verifies one length; returns the failures (empty when all checks passed)."""
    choice = best_checkpoint(find_checkpoints(checkpoint_dir), frames)
    log.info("%d frames: %s (accuracy %g%%)", frames, choice.path, choice.accuracy)
    original = load_original_model(choice.path)
    target_dir = repository / model_name(Kind.CLASSIFIER, frames) / DEFAULT_VERSION
    target = target_dir / ONNX_FILE
    started = time.perf_counter()
    write_onnx(original, frames, target, precision=precision, opset=opset)
    log.info("  wrote %s (%.1f MB) in %.1f s", target, target.stat().st_size / 1e6, time.perf_counter() - started)
    verification = verify_onnx(target, original, frames, precision)
    metadata = {
        "checkpoint": str(choice.path.resolve()),
        "checkpoint_accuracy": choice.accuracy,
        "sha256": sha256_of(choice.path),
        "onnx_sha256": sha256_of(target),
        "frames": frames,
        "precision": precision,
        "opset": opset,
        "exporter": "torch.onnx (TorchScript)",
        "inputs": _signature(CLASSIFIER_INPUTS, frames),
        "outputs": _signature(CLASSIFIER_OUTPUTS, frames),
        "tolerances": TOLERANCES[precision],
        "batch_tolerance": BATCH_TOLERANCE[precision],
        "max_abs_diff": verification.max_abs_diff,
        "verified": verification.ok,
        "failures": verification.failures,
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (target_dir / EXPORT_METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return [f"{frames} frames: {failure}" for failure in verification.failures]


def command_onnx(args: argparse.Namespace) -> int:
    ensure_model_folders(args.repository, args.frames)
    failures = []
    for frames in args.frames:
        failures.extend(export_one(args.checkpoints, args.repository, frames, args.precision, args.opset))
    if failures:
        log.error("verification failed:")
        for failure in failures:
            log.error("  %s", failure)
        return Exit.FAILED
    log.info("exported and verified: %s", ", ".join(model_name(Kind.CLASSIFIER, n) for n in args.frames))
    return 0


def command_tensorrt(args: argparse.Namespace) -> int:
    from export.tensorrt_build import TensorRTUnavailable, build_all

    try:
        failures = build_all(args.repository, args.frames, args.precision, args.max_batch, args.workspace_mib)
    except TensorRTUnavailable as exc:
        log.error("%s", exc)
        return Exit.UNAVAILABLE
    if failures:
        log.error("verification failed:")
        for failure in failures:
            log.error("  %s", failure)
        return Exit.FAILED
    return 0


COMMANDS = {"demo-checkpoints": command_demo, "onnx": command_onnx, "tensorrt": command_tensorrt}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CheckpointError, RepositoryLayoutError) as exc:
        log.error("error: %s", exc)
        return Exit.FAILED


if __name__ == "__main__":
    sys.exit(main())
