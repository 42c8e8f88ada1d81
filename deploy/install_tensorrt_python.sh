#!/usr/bin/env bash
# Installs TensorRT's Python bindings at exactly the version of the TensorRT library that the
# image's Triton links, so that plans built by `python -m export tensorrt` load in Triton.
#
# The version is read from the image, not pinned: it belongs to the base image tag. The
# bindings wheel uses the image's libnvinfer (no second copy of TensorRT), and the
# `tensorrt-cu12` package of the same version only adds the `tensorrt` import name over them;
# NVIDIA_TENSORRT_DISABLE_INTERNAL_PIP keeps its setup script from running a pip of its own
# against NVIDIA's index to fetch a second TensorRT.
set -euo pipefail

fail() {
    echo "install_tensorrt_python: error: $*" >&2
    exit 1
}

library="$(ldconfig -p | awk '$1 ~ /^libnvinfer\.so\.[0-9]+$/ { print $NF; exit }')"
[[ -n "$library" ]] || fail "no libnvinfer.so.<major> in the linker cache: is this the NGC tritonserver image?"
resolved="$(readlink -f "$library")"
version="${resolved##*.so.}"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "cannot read a TensorRT version from $resolved"

python3 -m pip install "tensorrt-cu12-bindings==${version}"
NVIDIA_TENSORRT_DISABLE_INTERNAL_PIP=1 python3 -m pip install --no-deps "tensorrt-cu12==${version}"
python3 -c "import sys, tensorrt; sys.exit(0 if tensorrt.__version__ == '${version}' else 'tensorrt ' + tensorrt.__version__ + ' imported, expected ${version}')"
echo "install_tensorrt_python: TensorRT ${version} bindings installed over ${resolved}"
