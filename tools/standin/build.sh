#!/usr/bin/env bash
# Builds the local stand-in for the NGC base image and tags it nvcr.io/nvidia/tritonserver:24.10-py3
# in the Docker engine DOCKER_HOST names; once per engine (data root): it does nothing when the
# tag is already there (the stand-in, or NVIDIA's real image on a machine that can pull it).
#
#   DOCKER_HOST=unix:///run/deepfake-docker/docker.sock tools/standin/build.sh
#
# Steps: a Debian 12 root filesystem from Debian's registry (debootstrap --variant=minbase, about
# 2 minutes), imported as deepfake-debian:bookworm; then tools/standin/Dockerfile over it
# (Python 3.11, pip trusting the machine pip's CA bundle, tritonserver 2.51.0 from the
# nvidia-pytriton pin in pyproject.toml). Needs root, debootstrap and a Docker engine.
#
# Environment (defaults in brackets):
#   STANDIN_FORCE   yes: build again even when the tag exists [no]
#   DEBIAN_MIRROR   Debian mirror for debootstrap [the first Debian URI in the machine's apt sources]
set -euo pipefail

readonly BASE_TAG="nvcr.io/nvidia/tritonserver:24.10-py3"
readonly ROOTFS_TAG="deepfake-debian:bookworm"
readonly SUITE="bookworm"
readonly LABEL="deepfake.standin"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

fail() {
    echo "standin: error: $*" >&2
    exit 1
}

command -v docker >/dev/null || fail "the docker client is not installed (Debian: docker.io)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || fail "no Docker engine answers at ${DOCKER_HOST:-the default socket} (start one: python3 tools/docker_engine.py start)"

if [[ "${STANDIN_FORCE:-no}" != yes ]] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    kind="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$BASE_TAG")"
    if [[ "$kind" == true ]]; then
        echo "standin: $BASE_TAG is already the local stand-in"
    else
        echo "standin: $BASE_TAG is present and is not the stand-in (NVIDIA's image): nothing to do"
    fi
    exit 0
fi

[[ "$(id -u)" == 0 ]] || fail "debootstrap needs root"
command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"

mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    # deb822 sources (URIs: ...) first, then one-line sources (deb URI suite ...).
    mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }')"
    [[ -n "$mirror" ]] || mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }')"
fi
[[ -n "$mirror" ]] || fail "no Debian mirror in the apt sources: set DEBIAN_MIRROR"

ca="${PIP_CERT:-}"
[[ -n "$ca" ]] || ca="$(python3 -m pip config get global.cert 2>/dev/null || true)"
[[ -n "$ca" ]] || ca=/etc/ssl/certs/ca-certificates.crt
[[ -f "$ca" ]] || fail "the CA bundle $ca (pip's cert) does not exist"

pytriton="$(python3 "$root/tools/pins.py" extra server | grep -E '^nvidia-pytriton==')" \
    || fail "pyproject.toml's server extra has no nvidia-pytriton pin"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ "${STANDIN_FORCE:-no}" == yes ]] || ! docker image inspect "$ROOTFS_TAG" >/dev/null 2>&1; then
    echo "standin: debootstrap $SUITE from $mirror"
    debootstrap --variant=minbase "$SUITE" "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
    # The sources of the image: the same mirror, with the updates and security suites beside it.
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$SUITE" "$mirror" "$SUITE" > "$work/rootfs/etc/apt/sources.list"
    tar -C "$work/rootfs" -c . | docker import --message "debootstrap --variant=minbase $SUITE $mirror" - "$ROOTFS_TAG" >/dev/null
    rm -rf "$work/rootfs"
    echo "standin: imported the root filesystem as $ROOTFS_TAG"
fi

mkdir "$work/context"
cp "$here/Dockerfile" "$here/nvidia_entrypoint.sh" "$work/context/"
cp "$ca" "$work/context/pip-ca.crt"
docker build --network host --build-arg "ROOTFS_IMAGE=$ROOTFS_TAG" --build-arg "PYTRITON_REQUIREMENT=$pytriton" \
    --tag "$BASE_TAG" "$work/context"
echo "standin: built $BASE_TAG (a stand-in: no CUDA, no onnxruntime/TensorRT backends, Python 3.11)"
