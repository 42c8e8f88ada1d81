"""Triton entry point of stream: live streams scored while they play."""

from triton_models.stream import TritonPythonModel  # noqa: F401
