"""The configs built as protobuf messages (export/configs.py) say what the f-string templates said.

Until commit 933dca4 every config was rendered as an f-string. The messages that replaced them must
parse to exactly the same ``ModelConfig`` as the files of that commit, so that only comments and
layout differ, but for the changes listed in :data:`CHANGED` with their reasons (each applied to the
old message, so that any other difference fails); the entry scripts and the empty folders' keep
files are the same bytes (but for modules renamed since), and the per-frame classifiers' links point
where they pointed. Skipped where that commit is not in the clone (a shallow clone).
"""

from __future__ import annotations

import difflib
import subprocess
from functools import cache
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import contract
from contract import SERVED_LENGTHS, Kind, model_name, parse_model_name
from export.repository import frame_classifier_link, render_model_folders, render_shared_folders

ROOT = Path(__file__).resolve().parent.parent
#: The last commit whose configs were f-strings.
BEFORE = "933dca4"
REPOSITORY = "model_repository"


def _drop_classifier_prefix(config: model_config_pb2.ModelConfig) -> None:
    # The stream model finds its per-frame classifiers by the contract's kind (Kind.FRAME_CLASSIFIER)
    # since commit 51d52e9 and no longer reads this parameter; its adapter hands the parameters it
    # does not read to PipelineConfig, which refuses unknown keys.
    del config.parameters["classifier_prefix"]


def _stream_versions(config: model_config_pb2.ModelConfig) -> None:
    _drop_classifier_prefix(config)
    # Windows and the summary of a stream name the classifier version that scored it (issue 21).
    for name in contract.VERSION_OUTPUTS:
        _add_tensor(config.output, name)


def _add_tensor(tensors, name: str, optional: bool = False) -> None:
    spec = contract.TENSORS[name]
    tensor = tensors.add(name=name, dims=list(spec.dims(1)))
    if optional:
        tensor.optional = True
    tensor.data_type = model_config_pb2.DataType.Value(spec.data_type)


def _choose_versions(config: model_config_pb2.ModelConfig) -> None:
    # Classifier versions (issue 21): a client names the version in MODEL_VERSION, classify_<N> calls
    # it and every answer says which version and checkpoint answered.
    kind, frames = parse_model_name(config.name)
    if kind in (Kind.CLASSIFIER, Kind.FRAME_CLASSIFIER):
        # Every version folder is served, not only the latest.
        config.version_policy.all.SetInParent()
        if config.backend == "python":
            config.parameters["frames_independent"].string_value = "1"
        return
    _add_tensor(config.input, contract.VERSION_INPUT, optional=True)
    # After the scoring outputs (the contract's SCORE_OUTPUTS end with them), before the others.
    outputs = list(config.output)
    cut = [tensor.name for tensor in outputs].index("FRAME_TIMES") + 1
    del config.output[:]
    config.output.extend(outputs[:cut])
    # The decision at the served operating point follows (issue 22), then what the bank of
    # confirmed fakes says and the video's fingerprint (issue 23).
    for name in (*contract.VERSION_OUTPUTS, *contract.DECISION_OUTPUTS, *contract.MATCH_OUTPUTS, "FINGERPRINT"):
        _add_tensor(config.output, name)
    config.output.extend(outputs[cut:])
    if kind is Kind.FACES:
        config.parameters["classifier"].string_value = model_name(Kind.SELECT, frames)
        return
    step = config.ensemble_scheduling.step[1]
    # original_<N>'s scores have a calibration of their own, applied by a step of their own (issue 22).
    step.model_name = model_name(Kind.ORIGINAL_SELECT if kind is Kind.ORIGINAL else Kind.SELECT, frames)
    step.input_map[contract.VERSION_INPUT] = contract.VERSION_INPUT
    step.input_map[contract.FINGERPRINT_INPUT] = contract.FINGERPRINT_INPUT
    step.input_map[contract.REFUSAL_INPUT] = contract.REFUSAL_INPUT
    for name in (*contract.VERSION_OUTPUTS, *contract.DECISION_OUTPUTS, *contract.MATCH_OUTPUTS):
        step.output_map[name] = name
    config.ensemble_scheduling.step[0].output_map["FINGERPRINT"] = "FINGERPRINT"
    config.ensemble_scheduling.step[0].output_map[contract.REFUSAL_INPUT] = contract.REFUSAL_INPUT


def _fingerprint_and_cache(config: model_config_pb2.ModelConfig) -> None:
    # The preprocessing models fingerprint each video and their answers are cached (issue 23); a
    # refusal travels as data (an error answer of a cached model is cached as an empty one).
    _add_tensor(config.output, "FINGERPRINT")
    _add_tensor(config.output, contract.REFUSAL_INPUT)
    config.response_cache.enable = True


def _changes() -> dict:
    changed = {
        "stream/config.pbtxt": _stream_versions,
        "stream/configs/cpu.pbtxt": _stream_versions,
    }
    versioned = (
        Kind.SCORE,
        Kind.EXPLAIN,
        Kind.VERDICT,
        Kind.ORIGINAL,
        Kind.FACES,
        Kind.CLASSIFIER,
        Kind.FRAME_CLASSIFIER,
    )
    for frames in SERVED_LENGTHS:
        for kind in versioned:
            for file in ("config.pbtxt", "configs/cpu.pbtxt", "configs/tensorrt.pbtxt"):
                changed[f"{model_name(kind, frames)}/{file}"] = _choose_versions
        for kind in (Kind.PREPROCESS, Kind.ORIGINAL_PREPROCESS):
            for file in ("config.pbtxt", "configs/cpu.pbtxt"):
                changed[f"{model_name(kind, frames)}/{file}"] = _fingerprint_and_cache
    return changed


#: Values changed on purpose since :data:`BEFORE`, by config file: each edits the old message.
CHANGED = _changes()
#: Models added since :data:`BEFORE`: the steps that pick the classifier version and decide (issues 21, 22).
ADDED_KINDS = (Kind.SELECT, Kind.ORIGINAL_SELECT)
#: Modules of the entry scripts renamed since :data:`BEFORE` (commit 51d52e9).
RENAMED_MODULES = {"from triton_models.stream import": "from triton_models.live_stream import"}


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)


@cache
def _before_files() -> frozenset[str]:
    """The repository's text files at :data:`BEFORE` (paths relative to the repository), or skip."""
    try:
        found = _git("cat-file", "-e", f"{BEFORE}^{{commit}}")
    except FileNotFoundError:
        pytest.skip("git is not installed: the pre-refactoring configs cannot be read")
    if found.returncode != 0:
        pytest.skip(f"commit {BEFORE} (the last f-string configs) is not in this clone (shallow?): nothing to compare")
    listing = _git("ls-tree", "-r", "--name-only", BEFORE, "--", REPOSITORY)
    assert listing.returncode == 0, listing.stderr
    return frozenset(line.removeprefix(f"{REPOSITORY}/") for line in listing.stdout.splitlines())


def _before(relative: str) -> str:
    shown = _git("show", f"{BEFORE}:{REPOSITORY}/{relative}")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def _rendered() -> dict[str, str]:
    files = render_shared_folders()
    for frames in SERVED_LENGTHS:
        files.update(render_model_folders(frames))
    return files


def _added(relative: str) -> bool:
    parsed = parse_model_name(relative.split("/", 1)[0])
    return parsed is not None and parsed[0] in ADDED_KINDS


RENDERED = _rendered()
CONFIGS = sorted(path for path in RENDERED if path.endswith(".pbtxt") and not _added(path))
OTHERS = sorted(path for path in RENDERED if not path.endswith(".pbtxt") and not _added(path))


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_the_same_files_are_rendered():
    before = {path for path in _before_files() if path.endswith((".pbtxt", "model.py", ".gitkeep"))}
    assert {path for path in RENDERED if not _added(path)} == before
    assert any(_added(path) for path in RENDERED)


@pytest.mark.parametrize("relative", CONFIGS)
def test_config_parses_to_the_same_message_as_before(relative):
    if relative not in _before_files():
        pytest.fail(f"{relative} did not exist at {BEFORE}")
    old, new = _parse(_before(relative)), _parse(RENDERED[relative])
    if relative in CHANGED:
        unchanged = model_config_pb2.ModelConfig()
        unchanged.CopyFrom(old)
        CHANGED[relative](old)
        assert old != unchanged, f"{relative}: the change listed in CHANGED is no longer a change"
    if new != old:
        # Both printed the same canonical way (fields in number order, map keys sorted): the diff
        # names the values that changed, not the layout.
        diff = difflib.unified_diff(
            text_format.MessageToString(old).splitlines(),
            text_format.MessageToString(new).splitlines(),
            f"{BEFORE}:{relative}",
            f"rendered {relative}",
            lineterm="",
        )
        pytest.fail("\n".join(diff))


@pytest.mark.parametrize("relative", OTHERS)
def test_entry_scripts_and_keep_files_are_unchanged(relative):
    if relative not in _before_files():
        pytest.fail(f"{relative} did not exist at {BEFORE}")
    before = _before(relative)
    for old, new in RENAMED_MODULES.items():
        before = before.replace(old, new)
    assert RENDERED[relative] == before


@pytest.mark.parametrize("frames", SERVED_LENGTHS)
def test_frame_classifier_links_point_where_they_did(frames):
    relative, target = frame_classifier_link(frames)
    assert relative in _before_files()
    # git stores a link as a blob holding its target.
    assert _before(relative) == target
