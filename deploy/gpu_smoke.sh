#!/usr/bin/env bash
# End-to-end check on a GPU node: build the image, export the classifiers (ONNX, then TensorRT
# plans on this GPU), start Triton, score a video with the client, load-test the classifier
# with perf_analyzer, and tear everything down (also on failure).
#
#   deploy/gpu_smoke.sh                        # demo checkpoints (random weights), sample clip
#   CHECKPOINTS=/data/checkpoints SAMPLE_VIDEO=/data/clip.mp4 deploy/gpu_smoke.sh
#
# Environment (defaults in brackets):
#   CHECKPOINTS            folder of published .pt checkpoints [none: random-weight demo models]
#   SAMPLE_VIDEO           video to score [a clip generated in the container from a real photo]
#   TRITON_MODEL_CONFIG    default | tensorrt [tensorrt: the plans this script builds]
#   TRITON_GPU_DEVICE_ID   GPU to use (index or UUID) [0]
#   FRAMES                 sequence lengths to export ["10 20 30"]; 20 must be among them
#   READY_TIMEOUT_S        how long to wait for every model to load [1800]
#   KEEP_RUNNING           yes: leave the server up at the end [no]
# Needs: Docker with the NVIDIA Container Toolkit, and `docker compose` or `docker-compose`.
set -euo pipefail

readonly SMOKE_FRAMES=20
readonly POLL_S=10

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n== %s\n' "$*"; }
fail() {
    echo "gpu_smoke: error: $*" >&2
    exit 1
}

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: this script needs an NVIDIA GPU node"
nvidia-smi -L

# The local stand-in of the NGC base (tools/standin/build.sh, for CPU-only machines) has no CUDA:
# a GPU check on it would prove nothing.
readonly STANDIN_LABEL=deepfake.standin
refuse_standin() {
    local image="$1" label
    label="$(docker image inspect --format "{{ index .Config.Labels \"$STANDIN_LABEL\" }}" "$image" 2>/dev/null || true)"
    [[ "$label" != true ]] || fail "$image is the local CPU stand-in of the NGC base, not NVIDIA's image: remove it (docker image rm $image) and build again with access to nvcr.io"
}
refuse_standin nvcr.io/nvidia/tritonserver:24.10-py3

export TRITON_MODEL_CONFIG="${TRITON_MODEL_CONFIG:-tensorrt}"
export FRAMES="${FRAMES:-10 20 30}"
[[ " $FRAMES " == *" $SMOKE_FRAMES "* ]] || fail "FRAMES='$FRAMES' must include $SMOKE_FRAMES (the length scored here)"
# The export service writes into ./model_repository as this user.
DEPLOY_UID="$(id -u)"
DEPLOY_GID="$(id -g)"
export DEPLOY_UID DEPLOY_GID

# Secrets for compose: private folder, files readable by the container users (see compose).
secrets_dir=deploy/secrets
mkdir -p "$secrets_dir"
chmod 0700 "$secrets_dir"
for secret in triton_admin_key grafana_admin_password; do
    if [[ ! -s "$secrets_dir/$secret" ]]; then
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$secrets_dir/$secret"
        echo "gpu_smoke: created $secrets_dir/$secret"
    fi
    chmod 0644 "$secrets_dir/$secret"
done

if [[ -n "${CHECKPOINTS:-}" ]]; then
    [[ -d "$CHECKPOINTS" ]] || fail "CHECKPOINTS=$CHECKPOINTS is not a directory"
    CHECKPOINTS="$(cd "$CHECKPOINTS" && pwd)"
    export DEMO_CHECKPOINTS=no
else
    CHECKPOINTS="$(mktemp -d)"
    empty_checkpoints="$CHECKPOINTS"
    chmod 0755 "$CHECKPOINTS"
    export DEMO_CHECKPOINTS=yes
    echo "gpu_smoke: no CHECKPOINTS given: the models get RANDOM weights (the pipeline is real, the scores are not)"
fi
export CHECKPOINTS

samples_dir="$(mktemp -d)"
chmod 0755 "$samples_dir"
if [[ -n "${SAMPLE_VIDEO:-}" ]]; then
    [[ -f "$SAMPLE_VIDEO" ]] || fail "SAMPLE_VIDEO=$SAMPLE_VIDEO is not a file"
    cp "$SAMPLE_VIDEO" "$samples_dir/"
    sample="/samples/$(basename "$SAMPLE_VIDEO")"
    chmod 0644 "$samples_dir/$(basename "$SAMPLE_VIDEO")"
else
    sample=/tmp/sample.mp4
fi
export SAMPLES="$samples_dir"

cleanup() {
    local status=$?
    if ((status != 0)); then
        echo "gpu_smoke: FAILED (exit $status); server log:" >&2
        "${compose[@]}" logs --no-color --tail=200 triton >&2 || true
    fi
    if [[ "${KEEP_RUNNING:-no}" != yes || $status -ne 0 ]]; then
        "${compose[@]}" down --remove-orphans || true
    fi
    rm -rf "$samples_dir" "${empty_checkpoints:-}"
    exit "$status"
}
trap cleanup EXIT


log "build"
"${compose[@]}" build triton
refuse_standin "${DEEPFAKE_IMAGE:-deepfake-triton:local}"

log "export: ONNX (verified against PyTorch) and TensorRT plans on this GPU"
"${compose[@]}" --profile build run --rm export

log "start Triton (TRITON_MODEL_CONFIG=$TRITON_MODEL_CONFIG)"
"${compose[@]}" up -d triton
container="$("${compose[@]}" ps -q triton)"
[[ -n "$container" ]] || fail "the triton container did not start"
deadline=$((SECONDS + ${READY_TIMEOUT_S:-1800}))
until [[ "$(docker inspect --format '{{.State.Health.Status}}' "$container")" == healthy ]]; do
    state="$(docker inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$container")"
    [[ "$state" == running* ]] || fail "the triton container stopped ($state)"
    ((SECONDS < deadline)) || fail "Triton not healthy after ${READY_TIMEOUT_S:-1800} s ($state)"
    sleep "$POLL_S"
done
echo "gpu_smoke: every model is ready"

log "score a video with the client (gRPC)"
"${compose[@]}" --profile tools run --rm --entrypoint bash tools -c "
    set -euo pipefail
    if [[ ! -f '$sample' ]]; then python3 -m deploy.sample_video '$sample'; fi
    python3 -m client score '$sample' --frames $SMOKE_FRAMES --url triton:8001
    python3 -m client score '$sample' --frames $SMOKE_FRAMES --url triton:8001 --json
"

log "perf_analyzer: resnext_lstm_$SMOKE_FRAMES (HTTP with the admin key, which statistics need)"
"${compose[@]}" --profile tools run --rm --entrypoint bash tools -c "
    set -euo pipefail
    perf_analyzer -m resnext_lstm_$SMOKE_FRAMES -u triton:8000 -i http \
        -H \"admin-key:\$(cat /run/secrets/triton_admin_key)\" \
        --concurrency-range 1:8:1 --measurement-interval 5000 --percentile 95
"

log "health after the load test (models ready, no python stub died)"
"${compose[@]}" exec -T triton python3 -m deploy.health --check ready
echo "gpu_smoke: PASSED"
