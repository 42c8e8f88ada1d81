"""Triton entry point of a preprocessing model; the implementation is shared by every length."""

from triton_models.preprocess import TritonPythonModel  # noqa: F401
