"""Every committed config parsed with Triton's own model_config protobuf and cross-checked."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.checkpoints import write_demo_checkpoints
from export.repository import MODEL_INFO_NAME, render_model_folders, render_shared_folders, served_lengths

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
LENGTHS = (10, 20, 30)
ONNX_TYPES = {onnx.TensorProto.FLOAT: mc.TYPE_FP32}


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def all_config_files() -> list[Path]:
    return sorted(REPOSITORY.glob("*/config.pbtxt")) + sorted(REPOSITORY.glob("*/configs/*.pbtxt"))


def test_repository_holds_the_default_lengths():
    assert served_lengths(REPOSITORY) == list(LENGTHS)


@pytest.mark.parametrize("path", all_config_files(), ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_config_parses_and_names_its_folder(path):
    config = parse(path)
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    assert config.name == model_dir.name
    # model_info answers one document per request: no batch axis.
    assert config.max_batch_size == (0 if model_dir.name == MODEL_INFO_NAME else 8)


@pytest.mark.parametrize("frames", LENGTHS)
def test_committed_folders_are_what_the_renderer_writes(frames):
    for relative, text in render_model_folders(frames).items():
        path = REPOSITORY / relative
        assert path.is_file(), f"{relative} is missing: run `python -m export.repository`"
        assert path.read_text() == text, f"{relative} differs from the rendered template"


def test_committed_shared_folders_are_what_the_renderer_writes():
    for relative, text in render_shared_folders().items():
        path = REPOSITORY / relative
        assert path.is_file(), f"{relative} is missing: run `python -m export.repository`"
        assert path.read_text() == text, f"{relative} differs from the rendered template"


def test_model_info_takes_nothing_and_answers_one_string():
    config = parse(REPOSITORY / MODEL_INFO_NAME / "config.pbtxt")
    assert config.backend == "python" and not config.input
    assert [(o.name, o.data_type, tuple(o.dims)) for o in config.output] == [("INFO", mc.TYPE_STRING, (1,))]


def test_model_info_knows_the_demo_checkpoint_tag():
    import inspect

    from triton_models.model_info import DEMO_TAG, is_demo_checkpoint

    default_tag = inspect.signature(write_demo_checkpoints).parameters["tag"].default
    assert default_tag == DEMO_TAG
    assert is_demo_checkpoint(f"/x/checkpoints/model_50_acc_20_frames_{default_tag}.pt")
    assert not is_demo_checkpoint("/x/checkpoints/model_84_acc_20_frames_final_data.pt")


def _io(config: mc.ModelConfig, kind: str) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in getattr(config, kind)}


@pytest.mark.parametrize("frames", LENGTHS)
def test_classifier_configs_agree_with_each_other(frames):
    folder = REPOSITORY / f"resnext_lstm_{frames}"
    configs = {p.name: parse(p) for p in [folder / "config.pbtxt", *sorted((folder / "configs").glob("*.pbtxt"))]}
    assert set(configs) == {"config.pbtxt", "cpu.pbtxt", "tensorrt.pbtxt"}
    gpu, cpu, trt = configs["config.pbtxt"], configs["cpu.pbtxt"], configs["tensorrt.pbtxt"]
    assert gpu.platform == "onnxruntime_onnx"
    accelerator = gpu.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert cpu.backend == "python"
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == "model.plan"
    for config in (gpu, cpu, trt):
        assert _io(config, "input") == {"FACES": (mc.TYPE_FP32, (frames, 3, 112, 112))}
        assert _io(config, "output") == _io(gpu, "output")
        assert config.HasField("dynamic_batching")
        assert config.dynamic_batching.default_queue_policy.max_queue_size > 0
    assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert [g.kind for g in cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]


@pytest.mark.parametrize("frames", LENGTHS)
def test_classifier_config_matches_the_onnx_graph(frames):
    path = REPOSITORY / f"resnext_lstm_{frames}" / "1" / "model.onnx"
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make models` exports it before the tests")
    graph = onnx.load(str(path), load_external_data=False).graph
    config = parse(REPOSITORY / f"resnext_lstm_{frames}" / "config.pbtxt")

    def signature(values) -> dict[str, tuple[int, tuple]]:
        # The graph's frame axis is open ("frames"); the config pins it to N.
        out = {}
        for value in values:
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch", f"{value.name}: the first axis must be the dynamic batch"
            shape = tuple(frames if d.dim_param == "frames" else d.dim_value for d in dims[1:])
            assert all(d.dim_param in ("", "frames") for d in dims[1:]), f"{value.name}: unexpected open axis"
            out[value.name] = (ONNX_TYPES[value.type.tensor_type.elem_type], shape)
        return out

    assert signature(graph.input) == _io(config, "input")
    assert signature(graph.output) == _io(config, "output")


@pytest.mark.parametrize("ensemble", [f"{kind}_{n}" for kind in ("deepfake", "explain", "verdict") for n in LENGTHS])
def test_ensemble_steps_connect(ensemble):
    config = parse(REPOSITORY / ensemble / "config.pbtxt")
    assert config.platform == "ensemble"
    produced = {name: spec for name, spec in _io(config, "input").items()}
    for step in config.ensemble_scheduling.step:
        step_model_dir = REPOSITORY / step.model_name
        for config_path in [step_model_dir / "config.pbtxt", *sorted((step_model_dir / "configs").glob("*.pbtxt"))]:
            step_config = parse(config_path)
            assert step_config.max_batch_size >= config.max_batch_size
            inputs, outputs = _io(step_config, "input"), _io(step_config, "output")
            for model_input, tensor in step.input_map.items():
                assert tensor in produced, f"{step.model_name} reads {tensor} before any step writes it"
                assert produced[tensor] == inputs[model_input], f"{config_path}: {model_input} does not match {tensor}"
            for model_output, tensor in step.output_map.items():
                produced[tensor] = outputs[model_output]
    for name, spec in _io(config, "output").items():
        assert produced.get(name) == spec, f"{ensemble} output {name} is {spec}, its step gives {produced.get(name)}"


def test_scoring_ensemble_does_not_ask_for_heatmaps():
    for frames in LENGTHS:
        config = parse(REPOSITORY / f"deepfake_{frames}" / "config.pbtxt")
        mapped = {t for step in config.ensemble_scheduling.step for t in step.output_map.values()}
        assert "HEATMAP" not in mapped
        assert {o.name for o in config.output} == {"PROB_FAKE", "LOGITS", "FRAME_PROB_FAKE", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED",
                                                   "FRAME_TIMES"}


def test_verdict_ensemble_asks_the_classifier_for_the_clip_score_only():
    # With nothing per frame asked for, the classifier runs its trunk on the last frame alone.
    for frames in LENGTHS:
        config = parse(REPOSITORY / f"verdict_{frames}" / "config.pbtxt")
        classifier = [step for step in config.ensemble_scheduling.step if step.model_name == f"resnext_lstm_{frames}"]
        assert len(classifier) == 1
        assert set(classifier[0].output_map) == {"LOGITS", "PROB_FAKE"}
        assert {o.name for o in config.output} == {"PROB_FAKE", "LOGITS", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED", "FRAME_TIMES"}


@pytest.mark.parametrize("ensemble", [f"{kind}_{n}" for kind in ("deepfake", "explain", "verdict") for n in LENGTHS])
def test_every_ensemble_returns_the_frame_times(ensemble):
    frames = int(ensemble.rsplit("_", 1)[1])
    config = parse(REPOSITORY / ensemble / "config.pbtxt")
    assert _io(config, "output")["FRAME_TIMES"] == (mc.TYPE_FP32, (frames,))


def test_preprocess_parameters_name_the_length():
    for frames in LENGTHS:
        for path in (REPOSITORY / f"preprocess_{frames}" / "config.pbtxt", REPOSITORY / f"preprocess_{frames}" / "configs" / "cpu.pbtxt"):
            config = parse(path)
            assert config.parameters["frames"].string_value == str(frames)
            assert config.backend == "python"
