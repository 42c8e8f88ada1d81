"""Triton entry point of classify_<N>: calls the classifier version a request names."""

from triton_models.select import TritonPythonModel  # noqa: F401
