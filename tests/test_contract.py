"""The serving contract (export/contract.py) against every place that repeats or derives it.

The configs are parsed with Triton's own protobuf; the client's light copy (client/api.py, which
installs without export/) must name the same tensors with the same shapes as the ensembles it
calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from client import api
from export import contract
from export.stream_configs import FRAME_CLASSIFIER_PREFIX
from export.model import FACE_SIZE as MODEL_FACE_SIZE
from export.model import INPUT_NAME, OUTPUT_NAMES
from preprocessing.crop import FACE_SIZE as CROP_FACE_SIZE

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
TYPE_NAMES = {value: name for name, value in model_config_pb2.DataType.items()}
# The client's output tables, by the ensemble they are asked of.
CLIENT_TABLES = {
    "deepfake": api.SCORE_OUTPUTS,
    "verdict": api.VERDICT_OUTPUTS,
    "explain": api.EXPLAIN_OUTPUTS,
    "faces": api.FACES_OUTPUTS,
}
CONTRACT_TABLES = {
    "deepfake": contract.SCORE_OUTPUTS,
    "verdict": contract.VERDICT_OUTPUTS,
    "explain": contract.EXPLAIN_OUTPUTS,
    "faces": contract.FACES_OUTPUTS,
}


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def configs_of(frames: int) -> list[tuple[Path, model_config_pb2.ModelConfig]]:
    found = []
    for model in sorted(REPOSITORY.glob(f"*_{frames}")):
        for path in sorted([model / "config.pbtxt", *model.glob("configs/*.pbtxt")]):
            if path.is_file():
                found.append((path, parse(path)))
    return found


@pytest.mark.parametrize("frames", contract.SERVED_LENGTHS)
def test_every_config_uses_the_contracts_names_types_and_shapes(frames: int) -> None:
    configs = configs_of(frames)
    assert len(configs) >= 5, f"the models of {frames} frames are missing from {REPOSITORY}"
    problems = []
    for path, config in configs:
        # The live streams' per-frame classifiers take one frame per row, whatever their N.
        axis = 1 if config.name.startswith(FRAME_CLASSIFIER_PREFIX) else frames
        if config.max_batch_size != contract.MAX_BATCH:
            problems.append(f"{path}: max_batch_size {config.max_batch_size}, the contract says {contract.MAX_BATCH}")
        for tensor in (*config.input, *config.output):
            spec = contract.TENSORS.get(tensor.name)
            if spec is None:
                problems.append(f"{path}: {tensor.name} is not in export/contract.py")
                continue
            if TYPE_NAMES[tensor.data_type] != spec.data_type or tuple(tensor.dims) != spec.dims(axis):
                problems.append(f"{path}: {tensor.name} is {TYPE_NAMES[tensor.data_type]} {list(tensor.dims)}, "
                                f"the contract says {spec.data_type} {list(spec.dims(axis))}")
    assert problems == []


@pytest.mark.parametrize("frames", contract.SERVED_LENGTHS)
def test_models_serve_the_contracts_inputs_and_outputs(frames: int) -> None:
    expected = {
        f"preprocess_{frames}": (contract.PREPROCESS_INPUTS, contract.PREPROCESS_OUTPUTS),
        f"resnext_lstm_{frames}": (contract.CLASSIFIER_INPUTS, contract.CLASSIFIER_OUTPUTS),
        **{f"{kind}_{frames}": (contract.PREPROCESS_INPUTS, outputs) for kind, outputs in CONTRACT_TABLES.items()},
    }
    for model, (inputs, outputs) in expected.items():
        config = parse(REPOSITORY / model / "config.pbtxt")
        assert tuple(tensor.name for tensor in config.input) == inputs, model
        assert tuple(tensor.name for tensor in config.output) == outputs, model


@pytest.mark.parametrize("kind", sorted(CLIENT_TABLES))
@pytest.mark.parametrize("frames", contract.SERVED_LENGTHS)
def test_the_clients_light_copy_matches_the_rendered_ensembles(kind: str, frames: int) -> None:
    config = parse(REPOSITORY / f"{kind}_{frames}" / "config.pbtxt")
    served = {tensor.name: tuple(tensor.dims) for tensor in config.output}
    # The client writes None for the frame axis and FACE_AXIS for the any-length axis of one row per face.
    served_axis = {None: frames, api.FACE_AXIS: contract.ANY}
    asked = {name: tuple(served_axis.get(axis, axis) for axis in shape) for name, shape in CLIENT_TABLES[kind].items()}
    assert asked == served, f"client/api.py asks {kind}_{frames} for {asked}, the config serves {served}"
    (video,) = config.input
    assert (video.name, TYPE_NAMES[video.data_type].removeprefix("TYPE_")) == (api.VIDEO_INPUT, api.VIDEO_DATATYPE)


def test_sizes_and_lengths_repeated_elsewhere_are_the_contracts() -> None:
    assert MODEL_FACE_SIZE == CROP_FACE_SIZE == api.FACE_SIZE == contract.FACE_SIZE
    assert tuple(api.DEFAULT_HEALTH_FRAMES) == contract.SERVED_LENGTHS
    assert (INPUT_NAME, *OUTPUT_NAMES) == (*contract.CLASSIFIER_INPUTS, *contract.CLASSIFIER_OUTPUTS)
    for frames in contract.SERVED_LENGTHS:
        assert (REPOSITORY / f"resnext_lstm_{frames}" / "config.pbtxt").is_file(), f"length {frames} is not committed"


def test_per_frame_outputs_are_those_with_a_frame_axis() -> None:
    assert contract.PER_FRAME_OUTPUTS == {"FRAME_PROB_FAKE", "HEATMAP"}
    assert set(contract.LAST_FRAME_OUTPUTS) == {"LOGITS", "PROB_FAKE"}
    config = parse(REPOSITORY / "resnext_lstm_20" / "config.pbtxt")
    with_frame_axis = {tensor.name for tensor in config.output if tensor.dims[0] == 20}
    assert with_frame_axis == contract.PER_FRAME_OUTPUTS
