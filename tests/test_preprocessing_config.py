"""PipelineConfig: defaults, checks and parsing of Triton-style string parameters."""

from __future__ import annotations

import dataclasses

import pytest

from preprocessing import ConfigError, PipelineConfig


def test_defaults() -> None:
    config = PipelineConfig(frames=20)
    assert config.selection == "first"
    assert config.detect_size == 640
    assert (config.margin, config.square, config.shift_y) == (0.0, True, 0.06)
    assert config.thresholds == (0.6, 0.7, 0.7)
    assert config.device == "cpu"
    assert config.max_bytes == 256 * 1024 * 1024
    assert config.max_pixels == 4096 * 2160
    assert config.max_frames_scanned == 3000
    assert config.decode_timeout_s == 30.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.frames = 10  # type: ignore[misc]


def test_from_parameters_parses_strings_and_triton_objects() -> None:
    config = PipelineConfig.from_parameters(
        {
            "frames": "30",
            "selection": {"string_value": "uniform"},
            "detect_size": " 480 ",
            "margin": "0.1",
            "square": "false",
            "shift_y": "0",
            "thresholds": "0.5, 0.6, 0.7",
            "min_face_prob": "0.95",
            "device": "cpu",
            "max_bytes": "1000000",
            "max_pixels": "2073600",
            "max_frames_scanned": "500",
            "decode_timeout_s": "2.5",
            "decode_threads": "1",
            "EXECUTION_ENV_PATH": "ignored by the caller",
        },
        ignore=["EXECUTION_ENV_PATH"],
    )
    assert config == PipelineConfig(
        frames=30,
        selection="uniform",
        detect_size=480,
        margin=0.1,
        square=False,
        shift_y=0.0,
        thresholds=(0.5, 0.6, 0.7),
        min_face_prob=0.95,
        max_bytes=1_000_000,
        max_pixels=2_073_600,
        max_frames_scanned=500,
        decode_timeout_s=2.5,
        decode_threads=1,
    )


def test_frames_from_the_caller() -> None:
    assert PipelineConfig.from_parameters({}, frames=10).frames == 10
    assert PipelineConfig.from_parameters({"frames": "10"}, frames=10).frames == 10
    with pytest.raises(ConfigError, match="contradicts"):
        PipelineConfig.from_parameters({"frames": "20"}, frames=10)
    with pytest.raises(ConfigError, match="'frames' is required"):
        PipelineConfig.from_parameters({})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"frame": "20"}, "unknown pipeline parameter 'frame'"),
        ({"detect_size": "big"}, "'detect_size' must be an integer, got 'big'"),
        ({"margin": "wide"}, "'margin' must be a number"),
        ({"square": "maybe"}, "'square' must be true or false"),
        ({"thresholds": "0.6,0.7"}, "thresholds must be three numbers between 0 and 1"),
        ({"thresholds": "a,b,c"}, "'thresholds' must be three numbers"),
        ({"selection": "random"}, "selection must be one of first, uniform"),
        ({"device": "gpu"}, "device must be 'cpu', 'cuda' or 'cuda:<index>'"),
        ({"detect_size": "8"}, "detect_size must be >= 32"),
        ({"max_bytes": "0"}, "max_bytes must be >= 1"),
        ({"max_frames_scanned": "10"}, "max_frames_scanned must be >= 20"),
        ({"decode_timeout_s": "0"}, "decode_timeout_s must be > 0.0"),
        ({"min_face_prob": "1.5"}, "min_face_prob must be >= 0.0 and <= 1.0"),
        ({"margin": "nan"}, "margin must be a number"),
        ({"selection": {"int64_value": 3}}, "has no string_value"),
    ],
)
def test_bad_parameters_name_the_problem(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PipelineConfig.from_parameters({"frames": "20", **params})


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="frames must be >= 1"):
        PipelineConfig(frames=0)
    with pytest.raises(ConfigError, match="frames must be an integer"):
        PipelineConfig(frames=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="square must be a bool"):
        PipelineConfig(frames=4, square="yes")  # type: ignore[arg-type]
    assert PipelineConfig(frames=4, thresholds=[0.5, 0.5, 0.5]).thresholds == (0.5, 0.5, 0.5)
