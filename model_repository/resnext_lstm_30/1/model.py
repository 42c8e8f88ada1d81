"""Triton entry point of a classifier on the embedded CPU server (ONNX Runtime in python)."""

from triton_models.classifier import TritonPythonModel  # noqa: F401
