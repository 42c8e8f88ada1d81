"""Command line: ``python -m export {demo-checkpoints,onnx,tensorrt,reload,retire,restore}``.

``onnx --checkpoints DIR`` exports the published checkpoint of each length as version 1 (the best
``<acc>`` per length, never a checkpoint ``train`` wrote). ``onnx --checkpoint FILE --version V``
exports one checkpoint as version V of its model (``resnext_lstm_<N>``, or ``resnext_temporal_<N>``
for a temporal model), with its lineage from the ``report.json`` beside it; the folder appears
whole once verified. ``reload`` makes a running server (explicit model control) load what changed in
its repository; ``retire`` takes a version out of service and ``restore`` brings it back, each with
``--url`` reloading the server at once: rolling back is one ``retire`` command.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from calibration.install import InstallError, install
from calibration.point import CalibrationError
from calibration.point import load as load_calibration
from client.commands.args import positive_int, positive_seconds
from contract import (
    ADMIN_KEY_FILE_DEFAULT,
    ADMIN_KEY_FILE_ENV,
    CALIBRATION_ARCHIVE_DIR,
    CALIBRATION_DOCUMENT,
    CALIBRATION_PREFIX,
    CLASSIFIER_INPUTS,
    CLASSIFIER_OUTPUTS,
    DEFAULT_VERSION,
    EXPORT_METADATA_FILE,
    ONNX_FILE,
    SERVED_LENGTHS,
    TEMPORAL_CLASSIFIER_OUTPUTS,
    TEMPORAL_KINDS,
    TENSORS,
    TRAINED_CHECKPOINT_TAG,
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
    parse_checkpoint_name,
    read_state_dict,
    sha256_of,
    write_demo_checkpoints,
)
from export.live import ADMIN_KEY_ENV, ADMIN_KEY_HEADER, LiveError, reload_server
from export.onnx_export import (
    BATCH_TOLERANCE,
    DEFAULT_OPSET,
    PRECISIONS,
    TOLERANCES,
    library_versions,
    verify_onnx,
    write_onnx,
)
from export.repository import (
    RepositoryLayoutError,
    ensure_model_folders,
    restore_version,
    retire_version,
    served_versions,
    write_version_files,
)
from export.temporal import TEMPORAL_CHECKPOINT_PATTERN, build_temporal_model, verify_temporal_onnx, write_temporal_onnx
from export.temporal import TOLERANCES as TEMPORAL_TOLERANCES

log = logging.getLogger("export")
#: What ``train`` writes beside the checkpoints it makes; its lineage goes into ``export.json``.
REPORT_FILE = "report.json"

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
        help="export the published checkpoint per length as version 1 (--checkpoints DIR), or one checkpoint "
        "as version V (--checkpoint FILE --version V), verified",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = onnx.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoints",
        type=Path,
        help="folder holding model_<acc>_acc_<N>_frames_<tag>.pt files: the best of each length becomes version 1 "
        f"(checkpoints tagged {TRAINED_CHECKPOINT_TAG}_... are skipped: export those with --checkpoint and --version)",
    )
    source.add_argument(
        "--checkpoint",
        type=Path,
        help="one checkpoint (model_..._frames_<tag>.pt, or temporal_..._frames_<tag>.pt for a temporal model) to "
        "export as --version; its lineage is read from the report.json beside it when there is one",
    )
    onnx.add_argument("--version", type=positive_int, help="the version --checkpoint becomes (a new folder <V>/)")
    onnx.add_argument(
        "--calibration",
        type=Path,
        help="with --checkpoint: the calibration.json fitted for it, installed with the new version (default: the "
        "calibration.json that train wrote beside the checkpoint, when it was fitted for that checkpoint)",
    )
    onnx.add_argument(
        "--force", action="store_true", help="replace a version folder that was exported from another checkpoint"
    )
    onnx.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    onnx.add_argument(
        "--frames",
        type=positive_int,
        nargs="+",
        default=None,
        help=f"sequence lengths to export (default: {' '.join(map(str, DEFAULT_FRAMES))}; with --checkpoint: "
        "the one its name gives)",
    )
    _live_options(onnx, "after the export, load the new version on the server at URL")
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

    reload = commands.add_parser(
        "reload",
        help="make a running server load what changed in its repository (new versions, retired ones, new models)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _live_options(reload, "the server's HTTP endpoint", required=True)

    for name, verb in (
        ("retire", "take a version out of service (rollback)"),
        ("restore", "serve a retired version again"),
    ):
        command = commands.add_parser(name, help=verb, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        command.add_argument(
            "--repository", type=Path, default=Path("model_repository"), help="Triton model repository"
        )
        command.add_argument("--frames", type=positive_int, required=True, help="sequence length")
        command.add_argument("--version", type=positive_int, required=True, help="the version")
        command.add_argument(
            "--temporal", action="store_true", help="a version of the temporal model (default: the classifier)"
        )
        _live_options(command, "then reload the server at URL")
    return parser


def _live_options(parser: argparse.ArgumentParser, url_help: str, required: bool = False) -> None:
    parser.add_argument("--url", required=required, metavar="HOST:PORT", help=f"{url_help} (Triton's HTTP port)")
    parser.add_argument(
        "--admin-key",
        help=f"the key of the restricted model-control API (default: ${ADMIN_KEY_ENV}, else a key file; never shown)",
    )
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        help=f"a file holding the key, e.g. the container's secret (default: ${ADMIN_KEY_FILE_ENV}, else "
        f"{ADMIN_KEY_FILE_DEFAULT} when it exists)",
    )
    parser.add_argument(
        "--admin-header", default=ADMIN_KEY_HEADER, help="the HTTP header the server reads the key from"
    )
    parser.add_argument("--timeout", type=positive_seconds, default=600.0, help="seconds a load may take")


def command_demo(args: argparse.Namespace) -> int:
    for path in write_demo_checkpoints(args.out, args.frames):
        log.info("wrote %s (random weights: its scores mean nothing)", path)
    return 0


def _metadata(checkpoint: Path, target: Path, frames: int, settings, verification, outputs, tolerances, accuracy):
    """What ``export.json`` records of one exported graph."""
    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_accuracy": accuracy,
        "sha256": sha256_of(checkpoint),
        "onnx_sha256": sha256_of(target),
        "frames": frames,
        "precision": settings.precision,
        "opset": settings.opset,
        "exporter": "torch.onnx (TorchScript)",
        "inputs": _signature(CLASSIFIER_INPUTS, frames),
        "outputs": _signature(outputs, frames),
        "tolerances": tolerances,
        "batch_tolerance": BATCH_TOLERANCE[settings.precision],
        "max_abs_diff": verification.max_abs_diff,
        "verified": verification.ok,
        "failures": verification.failures,
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _signature(names: tuple[str, ...], frames: int) -> dict[str, list]:
    """The graph's tensors as ``export.json`` records them: the batch axis, then the contract's dims."""
    return {name: ["batch", *TENSORS[name].dims(frames)] for name in names}


def published_checkpoint(checkpoint_dir: Path, frames: int):
    """The best checkpoint of a length that ``train`` did not write (those are served only as the version
    they are exported to)."""
    candidates = []
    for candidate in find_checkpoints(checkpoint_dir):
        if candidate.frames == frames and candidate.tag.startswith(TRAINED_CHECKPOINT_TAG):
            log.warning(
                "%s: skipped, written by train; serve it with --checkpoint %s --version V",
                candidate.path,
                candidate.path,
            )
            continue
        candidates.append(candidate)
    return best_checkpoint(candidates, frames)


def export_one(checkpoint_dir: Path, repository: Path, frames: int, precision: str, opset: int) -> list[str]:
    """Exports and verifies one length; returns the failures (empty when all checks passed)."""
    choice = published_checkpoint(checkpoint_dir, frames)
    log.info("%d frames: %s (accuracy %g%%)", frames, choice.path, choice.accuracy)
    original = load_original_model(choice.path)
    target_dir = repository / model_name(Kind.CLASSIFIER, frames) / DEFAULT_VERSION
    target = target_dir / ONNX_FILE
    started = time.perf_counter()
    write_onnx(original, frames, target, precision=precision, opset=opset)
    log.info("  wrote %s (%.1f MB) in %.1f s", target, target.stat().st_size / 1e6, time.perf_counter() - started)
    verification = verify_onnx(target, original, frames, precision)
    settings = argparse.Namespace(precision=precision, opset=opset)
    metadata = _metadata(
        choice.path, target, frames, settings, verification, CLASSIFIER_OUTPUTS, TOLERANCES[precision], choice.accuracy
    )
    metadata.update({"version": int(DEFAULT_VERSION), "kind": Kind.CLASSIFIER.value, "lineage": None})
    (target_dir / EXPORT_METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return [f"{frames} frames: {failure}" for failure in verification.failures]


def command_onnx(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        return command_onnx_version(args)
    if args.version is not None:
        raise CheckpointError("--version goes with --checkpoint FILE; --checkpoints DIR exports version 1")
    args.frames = args.frames or list(DEFAULT_FRAMES)
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


def read_lineage(checkpoint: Path, sha256: str) -> dict | None:
    """The lineage of a checkpoint ``train`` wrote, from the ``report.json`` beside it; None for others.

    Raises:
        CheckpointError: the report is unreadable, or it describes another checkpoint.
    """
    path = checkpoint.parent / REPORT_FILE
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        written = report["checkpoint"]
        lineage = {
            "parent_sha256": report["parent"]["sha256"],
            "manifest_sha256": report["data"]["manifest_sha256"],
            "metrics": report["after"]["overall"],
            "head": report.get("head"),
            "report": str(path.resolve()),
        }
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} (the training report beside {checkpoint.name}) cannot be read: {exc}") from exc
    if written.get("sha256") != sha256:
        raise CheckpointError(f"{path} describes another checkpoint than {checkpoint.name} (its sha256 differs)")
    return lineage


def _existing_sha(folder: Path) -> str | None:
    try:
        return json.loads((folder / EXPORT_METADATA_FILE).read_text(encoding="utf-8")).get("sha256")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None


def command_onnx_version(args: argparse.Namespace) -> int:
    """Exports one checkpoint as one version, into a folder that appears whole once verified."""
    path: Path = args.checkpoint
    if args.version is None:
        raise CheckpointError("--checkpoint needs --version: the version number it is served as")
    temporal = TEMPORAL_CHECKPOINT_PATTERN.match(path.name)
    published = parse_checkpoint_name(path)
    if temporal is None and published is None:
        raise CheckpointError(
            f"{path.name} is not named model_<acc>_acc_<N>_frames_<tag>.pt or temporal_<acc>_acc_<N>_frames_<tag>.pt"
        )
    frames = int(temporal["frames"]) if temporal else published.frames
    if args.frames not in (None, [frames]):
        raise CheckpointError(f"{path.name} is a {frames}-frame checkpoint; --frames says {args.frames}")
    kind = Kind.TEMPORAL_CLASSIFIER if temporal else Kind.CLASSIFIER
    if temporal and args.precision != "fp32":
        raise CheckpointError("temporal models are exported in fp32 only")
    sha256 = sha256_of(path)
    lineage = read_lineage(path, sha256)
    folder = args.repository / model_name(kind, frames) / str(args.version)
    existing = _existing_sha(folder) if folder.exists() else None
    if folder.exists() and existing != sha256 and not args.force:
        raise CheckpointError(
            f"{folder} exists and was exported from another checkpoint (sha256 {str(existing)[:12]}...); "
            "choose another --version, or --force to replace it"
        )
    ensure_model_folders(args.repository, [frames])
    if temporal:
        ensure_model_folders(args.repository, [frames], kinds=TEMPORAL_KINDS)
    staging = folder.parent / f".export-{args.version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / ONNX_FILE
    started = time.perf_counter()
    try:
        if temporal:
            try:
                model = build_temporal_model(read_state_dict(path))
            except ValueError as exc:
                raise CheckpointError(f"checkpoint {path} is not a temporal model: {exc}") from exc
            write_temporal_onnx(model, target, args.opset)
            verification = verify_temporal_onnx(target, model)
            outputs = TEMPORAL_CLASSIFIER_OUTPUTS
            tolerances = TEMPORAL_TOLERANCES
        else:
            model = load_original_model(path)
            write_onnx(model, frames, target, precision=args.precision, opset=args.opset)
            verification = verify_onnx(target, model, frames, args.precision)
            outputs = CLASSIFIER_OUTPUTS
            tolerances = TOLERANCES[args.precision]
        log.info("  wrote %s (%.1f MB) in %.1f s", target, target.stat().st_size / 1e6, time.perf_counter() - started)
        if verification.failures:
            log.error("verification failed; version %d not written:", args.version)
            for failure in verification.failures:
                log.error("  %s", failure)
            return Exit.FAILED
        accuracy = temporal["accuracy"] if temporal else published.accuracy
        metadata = _metadata(path, target, frames, args, verification, outputs, tolerances, float(accuracy))
        metadata.update({"version": args.version, "kind": kind.value, "lineage": lineage})
        (staging / EXPORT_METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if folder.exists() and existing == sha256:
            # The same checkpoint again: its calibrations and their history stay with it.
            keep_calibrations(folder, staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_version_files(args.repository, kind, frames, args.version)
    install_calibration(args, path, sha256)
    log.info(
        "exported %s version %d from %s%s",
        model_name(kind, frames),
        args.version,
        path.name,
        f" (parent {lineage['parent_sha256'][:12]}...)" if lineage else "",
    )
    return _maybe_reload(args, kind, frames)


def keep_calibrations(old: Path, new: Path) -> None:
    """Copies a version folder's calibrations, their archive and history into its re-export."""
    for item in old.iterdir():
        if item.name.startswith(CALIBRATION_PREFIX) or item.name == CALIBRATION_ARCHIVE_DIR:
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, new / item.name)


def install_calibration(args: argparse.Namespace, checkpoint: Path, sha256: str) -> None:
    """Installs the calibration of a new version: ``--calibration``, or the one train wrote beside the checkpoint.

    Raises:
        CheckpointError: ``--calibration`` was fitted for another checkpoint or cannot be read.
    """
    given = args.calibration
    path = given or checkpoint.parent / CALIBRATION_DOCUMENT
    if not path.is_file():
        if given is not None:
            raise CheckpointError(f"--calibration {given}: no such file")
        return
    try:
        fitted_for = load_calibration(path).checkpoint_sha256
    except CalibrationError as exc:
        raise CheckpointError(f"calibration {exc}") from None
    if fitted_for != sha256 and given is None:
        log.warning("  %s was fitted for another checkpoint (%s...): not installed", path, fitted_for[:12])
        return
    try:
        installed = install(path, args.repository, by=f"export ({getpass.getuser()})", version=args.version)
    except InstallError as exc:
        raise CheckpointError(f"calibration {path}: {exc}") from None
    log.info("  installed its calibration %s (%s...)", installed.path, installed.sha256[:12])


def _maybe_reload(args: argparse.Namespace, kind: Kind, frames: int) -> int:
    if args.url is None:
        log.info("a running server serves it after `%s reload --url HOST:PORT` (or a restart)", program_name("export"))
        return Exit.OK
    # The model whose versions changed (and the per-frame classifier serving the same files); models
    # that appeared (a first temporal model) are loaded too, since they are not ready yet.
    models = [model_name(kind, frames)]
    if kind is Kind.CLASSIFIER:
        models.append(model_name(Kind.FRAME_CLASSIFIER, frames))
    for line in reload_server(args.url, _admin_key(args), args.admin_header, args.timeout, models):
        log.info("  %s", line)
    return Exit.OK


def _admin_key(args: argparse.Namespace) -> str | None:
    """The model-control key: ``--admin-key``, ``--admin-key-file``, ``$DEEPFAKE_ADMIN_KEY``, the file
    ``$TRITON_ADMIN_KEY_FILE`` names, or the container's secret file when it exists; None without one.

    The container and the pods mount the key as a secret file and name it in ``TRITON_ADMIN_KEY_FILE``
    (``deploy/entrypoint.py``), so that ``export`` run inside them needs no key on its command line,
    where the process list would show it.

    Raises:
        LiveError: a key file that is named cannot be read, or is empty.
    """
    secret_file_env = ADMIN_KEY_FILE_ENV
    container_secret = Path(ADMIN_KEY_FILE_DEFAULT)
    if args.admin_key:
        return args.admin_key
    path = args.admin_key_file
    if path is None:
        if os.environ.get(ADMIN_KEY_ENV):
            return os.environ[ADMIN_KEY_ENV]
        named = os.environ.get(secret_file_env)
        path = Path(named) if named else container_secret
        if not named and not path.is_file():
            return None
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise LiveError(f"admin key file {path} cannot be read: {exc}") from exc
    if not key:
        raise LiveError(f"admin key file {path} is empty")
    return key


def _version_change(args: argparse.Namespace, change) -> int:
    kind = Kind.TEMPORAL_CLASSIFIER if args.temporal else Kind.CLASSIFIER
    for path in change(args.repository, kind, args.frames, args.version):
        log.info("  %s", path)
    log.info("%s versions now: %s", model_name(kind, args.frames), served_versions(args.repository, kind, args.frames))
    return _maybe_reload(args, kind, args.frames)


def command_retire(args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return _version_change(args, lambda *where: retire_version(*where, stamp=stamp))


def command_restore(args: argparse.Namespace) -> int:
    return _version_change(args, restore_version)


def command_reload(args: argparse.Namespace) -> int:
    for line in reload_server(args.url, _admin_key(args), args.admin_header, args.timeout):
        log.info("%s", line)
    return Exit.OK


COMMANDS = {
    "demo-checkpoints": command_demo,
    "onnx": command_onnx,
    "tensorrt": command_tensorrt,
    "reload": command_reload,
    "retire": command_retire,
    "restore": command_restore,
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CheckpointError, RepositoryLayoutError, LiveError) as exc:
        log.error("error: %s", exc)
        return Exit.FAILED


if __name__ == "__main__":
    sys.exit(main())
