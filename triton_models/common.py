"""Small pieces shared by the python-backend adapters."""

from __future__ import annotations

import json
from typing import Any


def model_parameters(config: dict[str, Any]) -> dict[str, str]:
    """The ``parameters`` of a model config as plain strings."""
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def parse_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def instance_device(args: dict[str, str]) -> str:
    """``cuda:<id>`` for a KIND_GPU instance, ``cpu`` otherwise."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{args['model_instance_device_id']}"
    return "cpu"
