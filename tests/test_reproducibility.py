"""Same video, same answer, whatever ran the preprocessing: the reproducibility matrix.

Every setting that changes float arithmetic runs :mod:`tests.reproducibility` in a process of its
own, one setting changed at a time against the baseline (torch threads 1, no instruction-set cap):
torch threads 2 and 4, oneDNN capped at SSE4.1 and at AVX2, the process pinned to one core, and
CUDA when this machine has it. The bar, for every clip and both served configs:

* the faithful score (``PROB_FAKE``) within :data:`PROB_TOLERANCE` of the baseline's;
* every frame's ``FACE_BOXES`` within :data:`BOX_TOLERANCE_PX` (which also means the same face);
* the same ``FACE_FOUND`` flags, and the same refusal (or none) for every corpus case.

A setting that leaves MTCNN's arithmetic bit-identical tests nothing; the test says which ones did
(on an AVX2-only CPU the AVX2 cap is the baseline), and requires the SSE4.1 cap to differ, which
it does on every x86-64 CPU with AVX2 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reproducibility import CLASSIFIER, ROOT, save_clips

#: Largest difference in PROB_FAKE the design guarantees across settings.
PROB_TOLERANCE = 1e-3
#: Largest difference in any FACE_BOXES coordinate across settings, in pixels.
BOX_TOLERANCE_PX = 0.5
WORKER_TIMEOUT_S = 300

BASELINE = ("baseline (threads 1)", {"threads": 1}, {})
SETTINGS = [
    ("torch threads 2", {"threads": 2}, {}),
    ("torch threads 4", {"threads": 4}, {}),
    ("oneDNN ISA SSE41", {"threads": 1}, {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
    ("oneDNN ISA AVX2", {"threads": 1}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("pinned to one core", {"threads": 1, "pin": True}, {}),
]
if torch.cuda.is_available():
    SETTINGS.append(("CUDA", {"threads": 1, "device": "cuda"}, {}))
#: The setting that must change the arithmetic on any CPU this suite runs on.
MUST_DIFFER = "oneDNN ISA SSE41"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLASSIFIER.is_file(), reason=f"needs the exported classifier {CLASSIFIER} (make models)"),
]


def _run(tmp: Path, clips: Path, name: str, options: dict, env: dict[str, str]) -> dict:
    out = tmp / f"{name.replace(' ', '_')}.npz"
    command = [
        sys.executable,
        "-m",
        "tests.reproducibility",
        str(out),
        "--threads",
        str(options["threads"]),
        "--clips",
        str(clips),
    ]
    if options.get("pin"):
        command.append("--pin")
    if "device" in options:
        command += ["--device", options["device"]]
    environment = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"} | env
    completed = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False
    )
    assert completed.returncode == 0, f"{name}: worker failed\n{completed.stderr[-4000:]}"
    with np.load(out) as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    summary = json.loads(arrays.pop("summary").tobytes())
    return {"summary": summary, "arrays": arrays}


#: Worker processes run at once: most settings use one thread, and the machines have two cores.
PARALLEL_RUNS = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Every setting's run, the baseline's included, two at a time."""
    tmp = tmp_path_factory.mktemp("repro")
    clips = tmp / "clips.npz"
    save_clips(clips)  # made once: every run reads the same bytes
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        futures = {
            name: pool.submit(_run, tmp, clips, name, options, env) for name, options, env in [BASELINE, *SETTINGS]
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def baseline(runs) -> dict:
    return runs[BASELINE[0]]


def _compare(base: dict, other: dict) -> tuple[list[str], dict[str, float]]:
    """Every breach of the bar, and the largest differences seen."""
    failures: list[str] = []
    if base["summary"]["errors"] != other["summary"]["errors"]:
        keys = sorted(set(base["summary"]["errors"]) ^ set(other["summary"]["errors"]))
        changed = [
            k
            for k in set(base["summary"]["errors"]) & set(other["summary"]["errors"])
            if base["summary"]["errors"][k] != other["summary"]["errors"][k]
        ]
        failures.append(f"refusals differ: scored in one run only {keys}, other message {sorted(changed)}")
    worst = {"prob_fake": 0.0, "box_px": 0.0}
    for key, value in base["arrays"].items():
        if key not in other["arrays"]:
            continue  # already reported as a refusal difference
        theirs = other["arrays"][key]
        if key.endswith("/found"):
            if not np.array_equal(value, theirs):
                failures.append(f"{key}: {value.astype(int).tolist()} vs {theirs.astype(int).tolist()}")
            continue
        diff = float(np.abs(value.astype(np.float64) - theirs.astype(np.float64)).max())
        kind, bound = ("prob_fake", PROB_TOLERANCE) if key.endswith("/prob_fake") else ("box_px", BOX_TOLERANCE_PX)
        worst[kind] = max(worst[kind], diff)
        if diff > bound:
            failures.append(f"{key}: differs by {diff:.3g} (bar {bound})")
    return failures, worst


@pytest.mark.parametrize(("name", "options", "env"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_same_answer_under(runs, baseline, name, options, env):
    other = runs[name]
    failures, worst = _compare(baseline, other)
    changed = other["summary"]["fingerprint"] != baseline["summary"]["fingerprint"]
    clips = len({k.rsplit("/", 1)[0] for k in baseline["arrays"]})
    print(
        f"\n{name}: MTCNN arithmetic {'changed' if changed else 'UNCHANGED (tests nothing here)'}; "
        f"{clips} scored clip/config pairs, {len(baseline['summary']['errors'])} refusals; "
        f"max |dPROB_FAKE| {worst['prob_fake']:.2e}, max box difference {worst['box_px']:.4f} px"
    )
    assert not failures, f"{name}: " + "; ".join(failures[:10])
    if name == MUST_DIFFER:
        assert changed, f"{name} left MTCNN's arithmetic bit-identical: the setting does not work here"


def test_comparison_catches_a_moved_box(baseline):
    """The comparison itself can fail: a box moved by one pixel is a breach."""
    moved = {"summary": baseline["summary"], "arrays": dict(baseline["arrays"])}
    key = next(k for k in moved["arrays"] if k.endswith("/boxes"))
    moved["arrays"][key] = moved["arrays"][key] + np.float32(1.0)
    failures, _ = _compare(baseline, moved)
    assert failures and key in failures[0]
