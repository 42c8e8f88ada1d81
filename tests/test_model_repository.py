"""Every committed config parsed with Triton's own model_config protobuf and checked against the contract
and the ONNX graph; the repository's folders, links and renderer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import contract
from contract import BASE_KINDS, DEFAULT_VERSION, SERVED_LENGTHS, SHARED_KINDS, Kind, model_name, parse_model_name
from export import configs
from export.checkpoints import write_demo_checkpoints
from export.repository import (
    ENTRY_FILE,
    KEEP_FILE,
    RepositoryLayoutError,
    ensure_model_folders,
    frame_classifier_link,
    render_model_folders,
    render_shared_folders,
    served_lengths,
)

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
LENGTHS = SERVED_LENGTHS
ONNX_TYPES = {onnx.TensorProto.FLOAT: mc.TYPE_FP32}
ENSEMBLE_KINDS = (Kind.SCORE, Kind.EXPLAIN, Kind.VERDICT, Kind.ORIGINAL)
ENSEMBLES = [model_name(kind, n) for kind in ENSEMBLE_KINDS for n in LENGTHS]


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def all_config_files() -> list[Path]:
    return sorted(REPOSITORY.glob("*/config.pbtxt")) + sorted(REPOSITORY.glob("*/configs/*.pbtxt"))


def _spec(name: str, frames: int) -> tuple[int, tuple[int, ...]]:
    """(data type, dims) the contract gives ``name`` in a model of ``frames`` frames."""
    tensor = contract.TENSORS[name]
    return mc.DataType.Value(tensor.data_type), tensor.dims(frames)


def _io(config: mc.ModelConfig, kind: str) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in getattr(config, kind)}


# --- the folders -------------------------------------------------------------------------------


def test_repository_holds_the_default_lengths():
    assert served_lengths(REPOSITORY) == list(LENGTHS)
    assert served_lengths(REPOSITORY, Kind.FRAME_CLASSIFIER) == list(LENGTHS)


def test_repository_holds_every_model_of_the_contract_and_nothing_else():
    folders = {child.name for child in REPOSITORY.iterdir() if child.is_dir()}
    expected = {model_name(kind) for kind in SHARED_KINDS}
    expected |= {model_name(kind, frames) for kind in BASE_KINDS for frames in LENGTHS}
    assert folders == expected
    assert all(parse_model_name(folder) is not None for folder in folders)


@pytest.mark.parametrize("path", all_config_files(), ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_config_parses_and_names_its_folder(path):
    config = parse(path)
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    assert config.name == model_dir.name
    # model_info answers one document per request: no batch axis.
    assert config.max_batch_size == (0 if model_dir.name == model_name(Kind.MODEL_INFO) else contract.MAX_BATCH)


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


def test_python_models_have_an_entry_script_and_ensembles_a_kept_empty_folder():
    rendered = {**render_shared_folders(), **{k: v for n in LENGTHS for k, v in render_model_folders(n).items()}}
    for path in all_config_files():
        config = parse(path)
        version = f"{config.name}/{DEFAULT_VERSION}"
        if config.backend == "python":
            assert f"{version}/{ENTRY_FILE}" in rendered, f"{path}: a python model without {ENTRY_FILE}"
        if config.platform == "ensemble":
            assert rendered.get(f"{version}/{KEEP_FILE}") == "", f"{path}: an ensemble without {KEEP_FILE}"


def test_every_kind_has_configs():
    for kind in Kind:
        files = configs.model_configs(kind, 20 if kind.per_length else None)
        assert configs.ConfigFile.DEFAULT in files, kind
        assert all(
            config.message.name == model_name(kind, 20 if kind.per_length else None) for config in files.values()
        )


def test_rendering_needs_neither_pyav_pillow_torch_nor_onnx():
    code = textwrap.dedent("""
        import sys
        import export.repository
        heavy = ("av", "PIL", "torch", "onnx", "onnxruntime", "preprocessing", "triton_models")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_the_configs_do_not_import_the_filesystem_side():
    # export.repository imports export.configs; the other way round would be a cycle.
    code = "import sys, export.configs; print(sorted(m for m in sys.modules if m.startswith('export.')))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "['export.configs']"


def test_new_lengths_get_every_folder_and_link(tmp_path):
    ensure_model_folders(tmp_path, [40])
    for relative, text in {**render_shared_folders(), **render_model_folders(40)}.items():
        assert (tmp_path / relative).read_text() == text
    link, target = frame_classifier_link(40)
    assert os.readlink(tmp_path / link) == target
    assert served_lengths(tmp_path) == [40]


def test_existing_files_are_left_alone(tmp_path):
    config = tmp_path / model_name(Kind.CLASSIFIER, 10) / "config.pbtxt"
    config.parent.mkdir()
    config.write_text("# tuned by hand\n")
    ensure_model_folders(tmp_path, [10])
    assert config.read_text() == "# tuned by hand\n"


def test_a_repository_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "repo"
    path.write_text("")
    with pytest.raises(RepositoryLayoutError, match="is not a folder"):
        ensure_model_folders(path, [10])


# --- model_info --------------------------------------------------------------------------------


def test_model_info_takes_nothing_and_answers_one_string():
    config = parse(REPOSITORY / model_name(Kind.MODEL_INFO) / "config.pbtxt")
    assert config.backend == "python" and not config.input
    assert [(o.name, o.data_type, tuple(o.dims)) for o in config.output] == [("INFO", mc.TYPE_STRING, (1,))]
    assert [(o.name, *_spec(o.name, 1)) for o in config.output] == [
        (name, *_spec(name, 1)) for name in contract.MODEL_OUTPUTS[Kind.MODEL_INFO]
    ]


def test_model_info_knows_the_demo_checkpoint_tag():
    import inspect

    from triton_models.model_info import is_demo_checkpoint

    default_tag = inspect.signature(write_demo_checkpoints).parameters["tag"].default
    assert default_tag == contract.DEMO_CHECKPOINT_TAG
    assert is_demo_checkpoint(f"/x/checkpoints/model_50_acc_20_frames_{default_tag}.pt")
    assert not is_demo_checkpoint("/x/checkpoints/model_84_acc_20_frames_final_data.pt")


# --- the classifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize("frames", LENGTHS)
def test_classifier_configs_agree_with_each_other(frames):
    folder = REPOSITORY / model_name(Kind.CLASSIFIER, frames)
    found = {p.name: parse(p) for p in [folder / "config.pbtxt", *sorted((folder / "configs").glob("*.pbtxt"))]}
    assert set(found) == {"config.pbtxt", "cpu.pbtxt", "tensorrt.pbtxt"}
    gpu, cpu, trt = found["config.pbtxt"], found["cpu.pbtxt"], found["tensorrt.pbtxt"]
    assert gpu.platform == "onnxruntime_onnx"
    accelerator = gpu.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert cpu.backend == "python"
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == contract.PLAN_FILE
    for config in (gpu, cpu, trt):
        assert _io(config, "input") == {"FACES": _spec("FACES", frames)}
        assert _io(config, "output") == {name: _spec(name, frames) for name in contract.CLASSIFIER_OUTPUTS}
        assert config.HasField("dynamic_batching")
        assert config.dynamic_batching.default_queue_policy.max_queue_size > 0
        assert config.dynamic_batching.default_queue_policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert [g.kind for g in cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]


@pytest.mark.parametrize("frames", LENGTHS)
def test_each_frame_classifier_is_the_one_frame_classifier_renamed(frames):
    folder = REPOSITORY / model_name(Kind.FRAME_CLASSIFIER, frames)
    builders = {"config.pbtxt": configs.classifier_gpu_config, "configs/cpu.pbtxt": configs.classifier_cpu_config}
    for relative, build in builders.items():
        expected = build(1).message
        expected.name = model_name(Kind.FRAME_CLASSIFIER, frames)
        assert parse(folder / relative) == expected, relative
    assert not (folder / "configs" / "tensorrt.pbtxt").exists()


@pytest.mark.parametrize("frames", LENGTHS)
def test_classifier_config_matches_the_onnx_graph(frames):
    version = REPOSITORY / model_name(Kind.CLASSIFIER, frames) / DEFAULT_VERSION
    path = version / contract.ONNX_FILE
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make models` exports it before the tests")
    graph = onnx.load(str(path), load_external_data=False).graph
    config = parse(REPOSITORY / model_name(Kind.CLASSIFIER, frames) / "config.pbtxt")

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


# --- the ensembles -----------------------------------------------------------------------------


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_ensemble_steps_connect(ensemble):
    config = parse(REPOSITORY / ensemble / "config.pbtxt")
    assert config.platform == "ensemble"
    produced = dict(_io(config, "input"))
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


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_ensemble_maps_are_the_contracts(ensemble):
    kind, frames = parse_model_name(ensemble)
    config = parse(REPOSITORY / ensemble / "config.pbtxt")
    preprocess_kind = Kind.ORIGINAL_PREPROCESS if kind is Kind.ORIGINAL else Kind.PREPROCESS
    preprocess, classifier = config.ensemble_scheduling.step
    assert preprocess.model_name == model_name(preprocess_kind, frames)
    # The classifier is reached through the step that picks its version and decides (original_<N>'s
    # own, for its own calibration).
    select = Kind.ORIGINAL_SELECT if kind is Kind.ORIGINAL else Kind.SELECT
    assert classifier.model_name == model_name(select, frames)
    assert dict(preprocess.input_map) == {name: name for name in contract.MODEL_INPUTS[preprocess_kind]}
    assert dict(preprocess.output_map) == {name: name for name in contract.MODEL_OUTPUTS[preprocess_kind]}
    assert dict(classifier.input_map) == {name: name for name in contract.SELECT_INPUTS}
    # The classifier is asked for what the ensemble returns and nothing more; the answer names its version.
    asked = {name for name in contract.SELECT_OUTPUTS if name in contract.MODEL_OUTPUTS[kind]}
    assert set(contract.VERSION_OUTPUTS) <= asked and set(contract.DECISION_OUTPUTS) <= asked
    assert dict(classifier.output_map) == {name: name for name in asked}


def test_scoring_ensemble_does_not_ask_for_heatmaps():
    for frames in LENGTHS:
        config = parse(REPOSITORY / model_name(Kind.SCORE, frames) / "config.pbtxt")
        mapped = {t for step in config.ensemble_scheduling.step for t in step.output_map.values()}
        assert "HEATMAP" not in mapped
        assert tuple(o.name for o in config.output) == contract.SCORE_OUTPUTS


def test_verdict_ensemble_asks_the_classifier_for_the_clip_score_only():
    # With nothing per frame asked for, the classifier runs its trunk on the last frame alone.
    for frames in LENGTHS:
        config = parse(REPOSITORY / model_name(Kind.VERDICT, frames) / "config.pbtxt")
        classifier = [s for s in config.ensemble_scheduling.step if s.model_name == model_name(Kind.SELECT, frames)]
        assert len(classifier) == 1
        scores = (
            set(classifier[0].output_map)
            - set(contract.VERSION_OUTPUTS)
            - set(contract.DECISION_OUTPUTS)
            - set(contract.MATCH_OUTPUTS)
        )
        assert scores == set(contract.LAST_FRAME_OUTPUTS) == {"LOGITS", "PROB_FAKE"}
        assert tuple(o.name for o in config.output) == contract.VERDICT_OUTPUTS


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_every_ensemble_returns_the_frame_times(ensemble):
    _, frames = parse_model_name(ensemble)
    config = parse(REPOSITORY / ensemble / "config.pbtxt")
    assert _io(config, "output")["FRAME_TIMES"] == (mc.TYPE_FP32, (frames,)) == _spec("FRAME_TIMES", frames)


# --- the python models that take a video -------------------------------------------------------


def test_preprocess_parameters_name_the_length():
    for frames in LENGTHS:
        folder = REPOSITORY / model_name(Kind.PREPROCESS, frames)
        for path in (folder / "config.pbtxt", folder / "configs" / "cpu.pbtxt"):
            config = parse(path)
            assert config.parameters["frames"].string_value == str(frames)
            assert config.backend == "python"


@pytest.mark.parametrize("kind", [Kind.PREPROCESS, Kind.FACES, Kind.ORIGINAL_PREPROCESS])
def test_upload_limits_are_the_contracts(kind):
    expected = {
        "max_bytes": str(contract.MAX_UPLOAD_BYTES),
        "max_pixels": str(contract.MAX_PIXELS),
        "decode_timeout_s": f"{contract.DECODE_TIMEOUT_S:g}",
    }
    if kind is not Kind.ORIGINAL_PREPROCESS:
        # dlib's preprocessing reads the video whole: it has no packet budget.
        expected["max_frames_scanned"] = str(contract.MAX_FRAMES_SCANNED)
    for frames in LENGTHS:
        folder = REPOSITORY / model_name(kind, frames)
        for path in (folder / "config.pbtxt", folder / "configs" / "cpu.pbtxt"):
            parameters = parse(path).parameters
            assert {key: parameters[key].string_value for key in expected} == expected, path
            assert ("max_frames_scanned" in parameters) == ("max_frames_scanned" in expected), path


def test_faces_models_name_their_classifier():
    for frames in LENGTHS:
        folder = REPOSITORY / model_name(Kind.FACES, frames)
        for path, max_faces in (
            (folder / "config.pbtxt", configs.GPU_MAX_FACES),
            (folder / "configs" / "cpu.pbtxt", configs.CPU_MAX_FACES),
        ):
            parameters = parse(path).parameters
            assert parameters["classifier"].string_value == model_name(Kind.SELECT, frames)
            assert parameters["max_faces"].string_value == str(max_faces)
