"""Triton entry point of model_info: the served checkpoints' export.json files, for clients."""

from triton_models.model_info import TritonPythonModel  # noqa: F401
