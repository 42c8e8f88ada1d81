"""The serving contract (contract/__init__.py) against the rendered configs and the ONNX graph's names.

The configs are parsed with Triton's own protobuf: every model's name, inputs and outputs (names,
data types, dims, order), the ensembles' outputs, and the upload and stream limits must be the
contract's. The clients build their requests from the contract itself, so what they send and read
is checked here through the wire types tritonclient uses.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import tomllib
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

import contract
from contract import SERVED_LENGTHS, Kind, model_name, parse_model_name
from export.configs import ModelConfig, model_configs
from export.model import INPUT_NAME, OUTPUT_NAMES
from export.repository import served_lengths

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
TYPE_NAMES = {value: name for name, value in model_config_pb2.DataType.items()}
#: Models whose tensors are rendered with one frame whatever their N: the live streams' per-frame
#: classifiers, the stream model's events and model_info's document.
ONE_FRAME_KINDS = (Kind.FRAME_CLASSIFIER, Kind.STREAM, Kind.MODEL_INFO)


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def config_paths(model: str) -> list[Path]:
    folder = REPOSITORY / model
    return sorted(path for path in [folder / "config.pbtxt", *folder.glob("configs/*.pbtxt")] if path.is_file())


def configs_of(frames: int) -> list[tuple[Path, model_config_pb2.ModelConfig]]:
    return [
        (path, parse(path)) for model in sorted(REPOSITORY.glob(f"*_{frames}")) for path in config_paths(model.name)
    ]


def shared_configs() -> list[tuple[Path, model_config_pb2.ModelConfig]]:
    kinds = sorted(contract.SHARED_KINDS, key=lambda kind: kind.value)
    return [(path, parse(path)) for kind in kinds for path in config_paths(model_name(kind))]


def _problems(configs: list[tuple[Path, model_config_pb2.ModelConfig]]) -> list[str]:
    """Each config's batch size, names, data types and dims against the contract."""
    problems = []
    for path, config in configs:
        parsed = parse_model_name(config.name)
        if parsed is None:
            problems.append(f"{path}: {config.name} is not a name of the contract")
            continue
        kind, frames = parsed
        axis = 1 if kind in ONE_FRAME_KINDS else frames
        batch = 0 if kind is Kind.MODEL_INFO else contract.MAX_BATCH
        if config.max_batch_size != batch:
            problems.append(f"{path}: max_batch_size {config.max_batch_size}, the contract says {batch}")
        for side, tensors, names in (
            ("inputs", config.input, contract.MODEL_INPUTS[kind]),
            ("outputs", config.output, contract.MODEL_OUTPUTS[kind]),
        ):
            if tuple(tensor.name for tensor in tensors) != names:
                problems.append(f"{path}: {side} {[t.name for t in tensors]}, the contract says {list(names)}")
        for tensor in (*config.input, *config.output):
            spec = contract.TENSORS.get(tensor.name)
            if spec is None:
                problems.append(f"{path}: {tensor.name} is not in contract.TENSORS")
                continue
            if TYPE_NAMES[tensor.data_type] != spec.data_type or tuple(tensor.dims) != spec.dims(axis):
                problems.append(
                    f"{path}: {tensor.name} is {TYPE_NAMES[tensor.data_type]} {list(tensor.dims)}, "
                    f"the contract says {spec.data_type} {list(spec.dims(axis))}"
                )
    return problems


@pytest.mark.parametrize("frames", SERVED_LENGTHS)
def test_every_config_uses_the_contracts_names_types_and_shapes(frames: int) -> None:
    configs = configs_of(frames)
    assert len(configs) >= 5, f"the models of {frames} frames are missing from {REPOSITORY}"
    assert _problems(configs) == []


def test_the_shared_models_use_the_contracts_names_types_and_shapes() -> None:
    configs = shared_configs()
    assert {config.name for _, config in configs} == {model_name(kind) for kind in contract.SHARED_KINDS}
    assert _problems(configs) == []


@pytest.mark.parametrize("frames", SERVED_LENGTHS)
def test_models_serve_the_contracts_inputs_and_outputs(frames: int) -> None:
    for kind in contract.BASE_KINDS:
        for path in config_paths(model_name(kind, frames)):
            config = parse(path)
            assert tuple(tensor.name for tensor in config.input) == contract.MODEL_INPUTS[kind], path
            assert tuple(tensor.name for tensor in config.output) == contract.MODEL_OUTPUTS[kind], path
            optional = {tensor.name for tensor in config.input if tensor.optional}
            assert optional == contract.optional_inputs(kind), path


@pytest.mark.parametrize("kind", contract.TEMPORAL_KINDS)
def test_the_temporal_models_configs_serve_the_contracts_tensors(kind: Kind) -> None:
    # Not committed (written by the first temporal export): checked as rendered.
    for file, rendered in model_configs(kind, 20).items():
        config = text_format.Parse(rendered.text(), ModelConfig())
        assert config.name == model_name(kind, 20), file
        assert tuple(tensor.name for tensor in config.input) == contract.MODEL_INPUTS[kind], file
        assert tuple(tensor.name for tensor in config.output) == contract.MODEL_OUTPUTS[kind], file


def test_every_scoring_answer_names_the_version_that_answered() -> None:
    for kind in (Kind.SCORE, Kind.EXPLAIN, Kind.VERDICT, Kind.FACES, Kind.ORIGINAL, Kind.TEMPORAL):
        assert set(contract.VERSION_OUTPUTS) <= set(contract.MODEL_OUTPUTS[kind]), kind
        assert set(contract.DECISION_OUTPUTS) <= set(contract.MODEL_OUTPUTS[kind]), kind
        assert contract.VERSION_INPUT in contract.MODEL_INPUTS[kind], kind
    assert set(contract.ANSWER_FACT_TENSORS.values()) == {
        *contract.VERSION_OUTPUTS,
        *contract.DECISION_OUTPUTS,
        *contract.MATCH_OUTPUTS,
    }
    assert set(contract.ANSWER_FACT_TENSORS) <= set(contract.ANSWER_FACTS)


@pytest.mark.parametrize("kind", [Kind.SCORE, Kind.EXPLAIN, Kind.VERDICT, Kind.FACES, Kind.ORIGINAL])
@pytest.mark.parametrize("frames", SERVED_LENGTHS)
def test_what_clients_send_and_read_is_what_the_configs_serve(kind: Kind, frames: int) -> None:
    # The clients build requests and read answers from contract.TENSORS with each tensor's wire
    # type (Tensor.datatype): tritonclient must know it, and it must be the config's data type.
    config = parse(REPOSITORY / model_name(kind, frames) / "config.pbtxt")
    for tensor in (*config.input, *config.output):
        spec = contract.TENSORS[tensor.name]
        assert np_to_triton_dtype(triton_to_np_dtype(spec.datatype)) == spec.datatype
        config_type = TYPE_NAMES[tensor.data_type].removeprefix("TYPE_")
        assert spec.datatype == ("BYTES" if config_type == "STRING" else config_type), tensor.name
    video, version = config.input
    assert (video.name, TYPE_NAMES[video.data_type]) == (contract.VIDEO_INPUT, contract.TENSORS["VIDEO"].data_type)
    assert (version.name, version.optional) == (contract.VERSION_INPUT, True)


def test_the_repository_serves_the_contracts_lengths() -> None:
    for kind in contract.BASE_KINDS:
        assert served_lengths(REPOSITORY, kind) == list(SERVED_LENGTHS), kind
    for frames in SERVED_LENGTHS:
        assert (REPOSITORY / model_name(Kind.CLASSIFIER, frames) / "config.pbtxt").is_file(), (
            f"length {frames} is not committed"
        )


def test_the_graphs_names_are_the_contracts() -> None:
    assert (INPUT_NAME, *OUTPUT_NAMES) == (*contract.CLASSIFIER_INPUTS, *contract.CLASSIFIER_OUTPUTS)


def test_per_frame_outputs_are_those_with_a_frame_axis() -> None:
    assert {"FRAME_PROB_FAKE", "HEATMAP"} == contract.PER_FRAME_OUTPUTS
    assert set(contract.LAST_FRAME_OUTPUTS) == {"LOGITS", "PROB_FAKE"}
    config = parse(REPOSITORY / model_name(Kind.CLASSIFIER, 20) / "config.pbtxt")
    with_frame_axis = {tensor.name for tensor in config.output if tensor.dims[0] == 20}
    assert with_frame_axis == contract.PER_FRAME_OUTPUTS


@pytest.mark.parametrize("path", config_paths(model_name(Kind.STREAM)), ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_the_stream_model_holds_the_contracts_limits(path: Path) -> None:
    config = parse(path)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters["max_packets"] == str(contract.MAX_PACKETS_PER_REQUEST)
    assert parameters["max_request_bytes"] == str(contract.MAX_STREAM_REQUEST_BYTES)
    assert config.sequence_batching.max_sequence_idle_microseconds == contract.STREAM_IDLE_US
    assert config.model_transaction_policy.decoupled
    assert {tensor.name for tensor in config.input if tensor.optional} == set(contract.STREAM_OPTIONAL_INPUTS)
    events = {name for names in contract.STREAM_EVENTS.values() for name in names}
    assert {tensor.name for tensor in config.output} == events | {"EVENT"}


@pytest.mark.parametrize("kind", [Kind.PREPROCESS, Kind.FACES, Kind.ORIGINAL_PREPROCESS])
def test_the_video_models_hold_the_contracts_upload_limits(kind: Kind) -> None:
    limits = {
        "max_bytes": contract.MAX_UPLOAD_BYTES,
        "max_pixels": contract.MAX_PIXELS,
        "decode_timeout_s": contract.DECODE_TIMEOUT_S,
    }
    for frames in SERVED_LENGTHS:
        for path in config_paths(model_name(kind, frames)):
            parameters = parse(path).parameters
            assert {key: float(parameters[key].string_value) for key in limits} == limits, path
            if "max_frames_scanned" in parameters:
                assert int(parameters["max_frames_scanned"].string_value) == contract.MAX_FRAMES_SCANNED, path


# -- the contract module itself ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_every_name_parses_back_to_its_kind_and_length(kind: Kind) -> None:
    frames = 40 if kind.per_length else None
    assert parse_model_name(model_name(kind, frames)) == (kind, frames)


def test_names_not_served_parse_to_none_and_bad_lengths_are_refused() -> None:
    assert parse_model_name("resnext_lstm_x") is None
    assert parse_model_name("deepfake_0") is None
    assert parse_model_name("other_20") is None
    with pytest.raises(ValueError, match="positive integer"):
        model_name(Kind.SCORE, 0)
    with pytest.raises(ValueError, match="every length"):
        model_name(Kind.STREAM, 20)
    names = ["resnext_lstm_30", "resnext_lstm_10", "resnext_frame_20", "deepfake_20", "stream"]
    assert contract.lengths_of(Kind.CLASSIFIER, names) == [10, 30]


@pytest.mark.parametrize(
    ("choices", "mode"),
    [
        ({}, contract.Mode.SCORE),
        ({"verdict_only": True}, contract.Mode.VERDICT),
        ({"all_faces": True}, contract.Mode.FACES),
        ({"original": True}, contract.Mode.ORIGINAL),
    ],
)
def test_each_choice_picks_one_mode_and_its_model(choices: dict, mode: contract.Mode) -> None:
    assert contract.Mode.from_choices(**choices) is mode
    assert parse_model_name(mode.model(20)) == (mode.kind, 20)
    assert mode.outputs == contract.MODEL_OUTPUTS[mode.kind]
    assert mode.frame_scores == ("FRAME_PROB_FAKE" in mode.outputs)


@pytest.mark.parametrize(
    ("choices", "named"),
    [
        ({"all_faces": True, "verdict_only": True}, ("--all-faces", "--verdict-only")),
        ({"original": True, "verdict_only": True}, ("--original", "--all-faces or --verdict-only")),
        ({"original": True, "all_faces": True}, ("--original", "--all-faces or --verdict-only")),
        ({"original": True, "all_faces": True, "verdict_only": True}, ("--all-faces", "--verdict-only")),
    ],
)
def test_choices_that_do_not_combine_are_refused_in_the_callers_words(choices: dict, named: tuple) -> None:
    with pytest.raises(contract.ModeError) as refused:
        contract.Mode.from_choices(**choices, spell=lambda choice: "--" + choice.replace("_", "-"))
    assert str(refused.value).startswith(named[0]) and str(refused.value).endswith(named[1])


def test_every_answer_fact_is_documented_in_the_api_reference() -> None:
    reference = (ROOT / "docs" / "reference" / "api.md").read_text()
    for key in contract.ANSWER_FACTS:
        assert f"| `{key}` |" in reference, f"answer fact {key!r} is missing from docs/reference/api.md"


def test_the_contract_is_standard_library_only_and_runs_on_python_3_10() -> None:
    source = (ROOT / "contract" / "__init__.py").read_text()
    tree = ast.parse(source, feature_version=(3, 10))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "StrEnum" not in names, "enum.StrEnum is Python 3.11+: the NGC image runs 3.10"


def test_every_console_command_names_the_module_it_also_runs_as() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    assert set(scripts) == set(contract.CONSOLE_COMMANDS)
    for command, module in contract.CONSOLE_COMMANDS.items():
        assert (ROOT / module / "__main__.py").is_file(), f"{command}: python -m {module} must keep working"
