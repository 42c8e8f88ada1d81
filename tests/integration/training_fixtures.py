"""One trained run of each head on the labelled set of :mod:`tests.training_set`, for the whole session.

``trained_runs`` makes the set, then trains ``--head published`` (through ``python -m train``, a
process of its own, as a user runs it) and ``--head temporal`` (in this process, on the same crop
cache: its preprocessing must all come from the cache) against the session's real server, and
returns their folders. Tests of training and of serving trained models (new versions) share them;
``tests/integration/conftest.py`` imports the fixture.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.training_set import make_training_set
from train import cli

PROJECT = Path(__file__).resolve().parents[2]
FRAMES = 10
PER_CLASS = 20
#: Small on purpose (the suite's time): 40 clips, 12 of them held out; one augmentation.
TRAIN_ARGS = (
    "--frames",
    str(FRAMES),
    "--test-fraction",
    "0.3",
    "--val-fraction",
    "0.2",
    "--augment",
    "recompress",
    "--epochs",
    "8",
    "--patience",
    "3",
    "--seed",
    "0",
    # The held-out split has 6 real videos: the smallest target FPR they can estimate is 0.39.
    "--target-fpr",
    "0.4",
)
TRAIN_TIMEOUT_S = 1200


@dataclass(frozen=True)
class TrainedRuns:
    """The set and the two runs' folders (each holds its checkpoint, report.json, report.md, run.json)."""

    set_csv: Path
    cache: Path
    published: Path
    temporal: Path
    published_stdout: str
    temporal_stdout: str

    def checkpoint(self, head: str) -> Path:
        folder = self.published if head == "published" else self.temporal
        (path,) = folder.glob("*.pt")
        return path


@pytest.fixture(scope="session")
def trained_runs(triton_server, tmp_path_factory: pytest.TempPathFactory) -> TrainedRuns:
    root = tmp_path_factory.mktemp("training")
    set_csv = make_training_set(root / "set", per_class=PER_CLASS)
    cache = root / "cache"
    common = [str(set_csv), *TRAIN_ARGS, "--url", triton_server.grpc_url, "--cache", str(cache)]
    published = root / "published"
    completed = subprocess.run(
        [sys.executable, "-m", "train", *common, "--head", "published", "--out", str(published)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(
            f"python -m train --head published exited with {completed.returncode}:\n{completed.stderr[-5000:]}",
            pytrace=False,
        )
    temporal = root / "temporal"
    out, err = io.StringIO(), io.StringIO()
    status = cli.main([*common, "--head", "temporal", "--out", str(temporal)], out=out, err=err)
    if status != 0:
        pytest.fail(f"train --head temporal exited with {status}:\n{err.getvalue()[-5000:]}", pytrace=False)
    return TrainedRuns(set_csv, cache, published, temporal, completed.stdout, out.getvalue())
