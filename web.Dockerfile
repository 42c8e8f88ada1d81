# The web page (`python -m client web`): the client, its `web` extra and the page's own assets
# (client/web/static); no torch, no model code. It talks to Triton over gRPC.
#
#   docker compose build web            (or: docker build -f web.Dockerfile -t deepfake-web:local .)
#
# The base is the server image's base, already on every node that runs Triton (locally, the
# stand-in that `make image` builds); any image with Python >= 3.10 and pip will do:
# --build-arg BASE_IMAGE=<image>. Every package comes from pyproject.toml.
ARG BASE_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /opt/deepfake-web

# Dependencies first, from pyproject.toml alone (the project wheel built here holds only its
# metadata; the code runs from /opt/deepfake-web). DL3013: every version is pinned in pyproject.toml.
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN echo "Dependencies of the deepfake web page; the code runs from /opt/deepfake-web." > README.md \
    && python3 -m pip install ".[web]" \
    && rm README.md

# /var/lib/deepfake: where the case history and the bank live when DEEPFAKE_BANK is a SQLite file
# (compose mounts a volume there; owned by the page's user so that a new volume is writable).
RUN groupadd --gid 10001 deepfake \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin deepfake \
    && mkdir -p /var/lib/deepfake \
    && chown 10001:10001 /var/lib/deepfake

COPY contract/ contract/
COPY calibration/ calibration/
COPY bank/ bank/
COPY client/ client/

ENV PYTHONPATH=/opt/deepfake-web \
    HOME=/tmp

USER 10001:10001
EXPOSE 8080

# Inside a container the page listens on every address of the container; publish it on the host
# with care (compose binds it to 127.0.0.1) and set DEEPFAKE_WEB_TOKEN before opening it wider.
ENTRYPOINT ["python3", "-m", "client", "web", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--url", "triton:8001"]
