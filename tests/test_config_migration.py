"""The configs built as protobuf messages (export/configs.py) say what the f-string templates said.

Until commit 933dca4 every config was rendered as an f-string. The messages that replaced them must
parse to exactly the same ``ModelConfig`` as the files of that commit, so that only comments and
layout differ, but for the changes listed in :data:`CHANGED` with their reasons; the entry scripts
and the empty folders' keep files are the same bytes (but for modules renamed since), and the
per-frame classifiers' links point where they pointed. Skipped
where that commit is not in the clone (a shallow clone).
"""

from __future__ import annotations

import difflib
import subprocess
from functools import cache
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contract import SERVED_LENGTHS
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


#: Values changed on purpose since :data:`BEFORE`, by config file: each edits the old message.
CHANGED = {
    "stream/config.pbtxt": _drop_classifier_prefix,
    "stream/configs/cpu.pbtxt": _drop_classifier_prefix,
}
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


RENDERED = _rendered()
CONFIGS = sorted(path for path in RENDERED if path.endswith(".pbtxt"))
OTHERS = sorted(path for path in RENDERED if not path.endswith(".pbtxt"))


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_the_same_files_are_rendered():
    before = {path for path in _before_files() if path.endswith((".pbtxt", "model.py", ".gitkeep"))}
    assert set(RENDERED) == before


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
