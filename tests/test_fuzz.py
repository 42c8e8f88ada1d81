"""Property-based fuzzing of the bytes -> FACES entry point (``preprocessing.FacePipeline``).

Inputs are small valid files of every accepted format (``tests.corpus.fuzz_seeds``) damaged by a
list of edits (set/flip/insert/delete/duplicate bytes, truncate, overwrite a 32-bit field), or
random bytes behind a format's magic number. The property: the pipeline returns well-formed face
tensors, or raises :class:`preprocessing.InputError` with a message; never another exception,
and never longer than its decode time limit allows.

``make test`` runs a fixed, derandomised set of examples (about a minute on 2 cores);
``make fuzz`` runs many more, freshly random (``FUZZ_EXAMPLES``, ``FUZZ_RANDOM=1``). A failure
prints the seed and the edits; add them to ``tests.corpus.REGRESSIONS`` so that the corpus and
:func:`test_regressions_stay_fixed` try them on every run.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preprocessing import FacePipeline, InputError, LimitError, NoFaceError, PipelineConfig
from tests import corpus

FRAMES = 4
FACE_SHAPE = (FRAMES, 3, 112, 112)
# A damaged file may make the decoder read a lot; the limit keeps each example short.
DECODE_TIMEOUT_S = 5.0
MAX_FRAMES_SCANNED = 400
# Decoding stops at the limit; face detection on a few small frames adds at most this much.
EXAMPLE_BOUND_S = DECODE_TIMEOUT_S + 15.0
#: Examples in ``make test`` (about a minute on 2 cores); ``FUZZ_EXAMPLES`` overrides it.
DEFAULT_EXAMPLES = 300
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
#: ``FUZZ_RANDOM=1`` draws new inputs on every run (``make fuzz``); otherwise the run is repeatable.
RANDOM = os.environ.get("FUZZ_RANDOM", "0") == "1"
MAX_EDITS = 8
MAX_RANDOM_TAIL = 4096
MAGIC = {
    "mp4": b"\x00\x00\x00\x18ftypisom",
    "matroska": b"\x1a\x45\xdf\xa3",
    "avi": b"RIFF\x00\x10\x00\x00AVI LIST",
    "jpeg": b"\xff\xd8\xff\xe0",
    "png": b"\x89PNG\r\n\x1a\n",
}

SEEDS = corpus.fuzz_seeds()

edits = st.lists(
    st.tuples(st.sampled_from(corpus.MUTATIONS), st.integers(0, 2**20), st.integers(0, 2**32 - 1)),
    min_size=1,
    max_size=MAX_EDITS,
)


@st.composite
def damaged_inputs(draw) -> tuple[str, list[tuple[str, int, int]], bytes]:
    """``(origin, edits, bytes)``: a seed with edits, or a magic number with random bytes."""
    if draw(st.integers(0, 4)) == 0:
        kind = draw(st.sampled_from(sorted(MAGIC)))
        tail = draw(st.binary(max_size=MAX_RANDOM_TAIL))
        return f"magic:{kind}", [], MAGIC[kind] + tail
    seed = draw(st.sampled_from(sorted(SEEDS)))
    changes = draw(edits)
    return seed, changes, corpus.mutate(SEEDS[seed], changes)


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(
        PipelineConfig(frames=FRAMES, decode_timeout_s=DECODE_TIMEOUT_S, max_frames_scanned=MAX_FRAMES_SCANNED)
    )


def check_one(pipeline: FacePipeline, data: bytes) -> str:
    """Runs the pipeline on ``data`` and checks the property; returns the kind of outcome."""
    started = time.monotonic()
    try:
        result = pipeline(data)
    except LimitError as error:
        outcome = f"refused: {error.limit}"
    except NoFaceError:
        outcome = "refused: no face"
    except InputError as error:
        assert str(error).strip(), "an InputError without a message"
        outcome = "refused: " + str(error).split(":")[0][:40]
    else:
        assert result.faces.shape == FACE_SHAPE and result.faces.dtype == np.float32
        assert np.all(np.isfinite(result.faces)), "non-finite face values"
        assert result.boxes.shape == (FRAMES, 4) and np.all(np.isfinite(result.boxes))
        assert np.all(result.boxes[:, 2] > result.boxes[:, 0]) and np.all(result.boxes[:, 3] > result.boxes[:, 1])
        assert result.found.shape == (FRAMES,) and result.found.dtype == np.bool_
        assert 1 <= result.frames_decoded <= FRAMES
        outcome = "scored"
    seconds = time.monotonic() - started
    assert seconds < EXAMPLE_BOUND_S, f"took {seconds:.1f} s"
    return outcome


def test_seeds_score(pipeline):
    """The undamaged seeds all score: the fuzzing starts from inputs that reach every stage."""
    assert {name: check_one(pipeline, data) for name, data in SEEDS.items()} == dict.fromkeys(SEEDS, "scored")


def test_damaged_inputs_give_faces_or_an_input_error(pipeline, capsys):
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(damaged_inputs())
    def run(case: tuple[str, list[tuple[str, int, int]], bytes]) -> None:
        origin, changes, data = case
        try:
            outcomes[check_one(pipeline, data)] += 1
        except AssertionError as error:
            raise AssertionError(
                f"{error}; add to tests.corpus.REGRESSIONS: ({origin!r}, {tuple(changes)!r})"
            ) from error

    started = time.monotonic()
    run()
    seconds = time.monotonic() - started
    with capsys.disabled():
        summary = ", ".join(f"{kind} {count}" for kind, count in outcomes.most_common())
        print(
            f"\n[fuzz] {sum(outcomes.values())} inputs in {seconds:.0f} s "
            f"({'random' if RANDOM else 'derandomised'}): {summary}"
        )
    assert outcomes["scored"] > 0, (
        "no damaged input got through: the edits are too destructive to test the later stages"
    )


@pytest.mark.parametrize(
    "name",
    sorted(corpus.REGRESSIONS) or [pytest.param("none", marks=pytest.mark.skip(reason="no fuzz finding recorded yet"))],
)
def test_regressions_stay_fixed(pipeline, name):
    seed, changes, _, _ = corpus.REGRESSIONS[name]
    check_one(pipeline, corpus.mutate(SEEDS[seed], list(changes)))
