"""Triton entry point of resnext_frame_<N>: the classifier, one frame per row (live streams)."""

from triton_models.classifier import TritonPythonModel  # noqa: F401
