"""Small pieces shared by the python-backend adapters."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


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


class OutputTensors:
    """Makes a model's output tensors with the data types its own config declares.

    The config is rendered from the contract (``contract.TENSORS``), so the adapter keeps no table
    of its own: each output's type is read with ``get_output_config_by_name``, as Triton's own
    python-backend examples do.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        # Imported here: the stub provides the module; the helpers above are unit-tested without it.
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        self.dtypes = {
            output["name"]: pb_utils.triton_string_to_numpy(
                pb_utils.get_output_config_by_name(config, output["name"])["data_type"]
            )
            for output in config.get("output", [])
        }

    def __call__(self, name: str, value) -> Any:
        """``pb_utils.Tensor(name, value)`` with the output's declared data type."""
        return self._pb.Tensor(name, np.ascontiguousarray(value, dtype=self.dtypes[name]))
