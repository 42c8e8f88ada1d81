"""Triton entry point of faces_<N>: every face of a video, each scored."""

from triton_models.faces import TritonPythonModel  # noqa: F401
