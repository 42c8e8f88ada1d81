"""Triton entry point of preprocess_original_<N>: the original app's preprocessing."""

from triton_models.original import TritonPythonModel  # noqa: F401
