# GPU node image: NVIDIA's Triton 24.10 (tritonserver 2.51.0, the release the embedded CPU
# server runs) plus what the python-backend preprocessing and `python -m export` need.
# Every Python and Debian package comes from pyproject.toml, the project's single source of
# pins; the image downloads nothing at run time.
#
#   docker compose build triton          (or: docker build -t deepfake-triton:local .)
#
# `make image` builds the same file on machines without NGC access, over a local stand-in of the
# base image (tools/standin/build.sh) and with INSTALL_TENSORRT=no: see the README.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /opt/deepfake

# Dependencies first, from pyproject.toml alone, so that a code change reuses these layers.
# pip reads the `server` extra itself (the image's Python 3.10 has no tomllib); the project
# wheel built here holds no code, only its metadata: the code runs from /opt/deepfake. Its
# metadata wants a README: a placeholder, so that editing the real one rebuilds nothing here.
# DL3013 is a false alarm: every version is pinned in pyproject.toml, which pip reads here.
# pdqhash is a Cython source build: a C++ compiler and the Python headers are installed for it
# and purged in the same step, so that the image keeps no compiler. Exactly the packages this
# step added are purged (the list of installed packages before and after), not an autoremove,
# which would also take whatever the base image left unused. DL3008 as for the apt step below.
COPY pyproject.toml ./
COPY tools/pins.py tools/
# hadolint ignore=DL3008,DL3013
RUN echo "Dependencies of the deepfake-triton image; the code runs from /opt/deepfake." > README.md \
    && dpkg-query --show --showformat '${Package}\n' | sort > /tmp/packages-before \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends g++ python3-dev \
    && python3 -m pip install ".[server]" \
    && mapfile -t no_deps < <(python3 tools/pins.py no-deps) \
    && python3 -m pip install --no-deps "${no_deps[@]}" \
    && mapfile -t build_only < <(dpkg-query --show --showformat '${Package}\n' | sort | comm -13 /tmp/packages-before -) \
    && if (( ${#build_only[@]} )); then DEBIAN_FRONTEND=noninteractive apt-get purge --yes "${build_only[@]}"; fi \
    && rm -rf /var/lib/apt/lists/* /tmp/packages-before README.md \
    && python3 -c "import pdqhash"

# Debian packages listed in pyproject.toml (libb64 for perf_analyzer, jemalloc for the server).
# Their versions are those of the base image's Ubuntu release (DL3008): the same names install
# on Debian 12 for the CPU setup, so pyproject.toml lists names, and the base image tag pins the
# release.
# hadolint ignore=DL3008
RUN mapfile -t apt_packages < <(python3 tools/pins.py apt) \
    && apt-get update \
    && apt-get install --yes --no-install-recommends "${apt_packages[@]}" \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so.2 \
    && test -f /usr/local/lib/libjemalloc.so.2

# TensorRT's Python bindings at the version of the image's own TensorRT (plans built by
# `python -m export tensorrt` must match the TensorRT that Triton loads them with). Always on
# the NGC base; INSTALL_TENSORRT=no is for the CPU stand-in only, which has no libnvinfer.
ARG INSTALL_TENSORRT=yes
COPY deploy/install_tensorrt_python.sh deploy/
RUN case "${INSTALL_TENSORRT}" in \
        yes) bash deploy/install_tensorrt_python.sh ;; \
        no) echo "INSTALL_TENSORRT=no: no TensorRT bindings (python -m export tensorrt will not run in this image)" ;; \
        *) echo "INSTALL_TENSORRT=${INSTALL_TENSORRT}: expected yes or no" >&2; exit 2 ;; \
    esac

# /var/lib/deepfake: the bank of confirmed fakes when DEEPFAKE_BANK is a SQLite file (compose
# mounts a volume there; owned by the server's user so that a new volume is writable).
RUN groupadd --gid 10001 deepfake \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin deepfake \
    && mkdir -p /var/lib/deepfake \
    && chown 10001:10001 /var/lib/deepfake

# Code and model configurations, owned by root and read-only to the server's user. Built
# artifacts (model.onnx, model.plan) are kept out by .dockerignore: they are exported on the
# target GPU into the mounted repository (compose) or an emptyDir (Kubernetes).
# Every package a model.py, the entrypoint or the health check imports is here; a test checks
# the imports against this list and .dockerignore (tests/test_deploy.py).
COPY contract/ contract/
COPY calibration/ calibration/
COPY bank/ bank/
COPY client/ client/
COPY preprocessing/ preprocessing/
COPY triton_models/ triton_models/
COPY serve/ serve/
COPY export/ export/
COPY deploy/ deploy/
COPY model_repository/ model_repository/

# PYTHONPATH lets every python-backend model.py (run by Triton's stub) import `triton_models` and
# `preprocessing`.
# HOME and caches point at /tmp, the only writable place besides the mounted volumes.
# jemalloc, preloaded into tritonserver and its python stubs, keeps their memory flat under load,
# backed by transparent huge pages where the node allows them (measured with the embedded server:
# serve/distribution.py, server_environment).
ENV PYTHONPATH=/opt/deepfake \
    HOME=/tmp \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    MALLOC_CONF=thp:always \
    MODEL_REPOSITORY=/models \
    TRITON_MODEL_CONFIG=default \
    TRITON_ADMIN_KEY_FILE=/run/secrets/triton_admin_key

USER 10001:10001
EXPOSE 8000 8001 8002

# NVIDIA's entrypoint sets up CUDA forward compatibility, then execs ours (PID 1).
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "python3", "-m", "deploy.entrypoint"]
