"""Triton entry point of classify_original_<N>: the classifier version a request names, for original_<N>."""

from triton_models.select import TritonPythonModel  # noqa: F401
