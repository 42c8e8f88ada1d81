"""Triton entry point of stream: live streams scored while they play."""

from triton_models.live_stream import TritonPythonModel  # noqa: F401
