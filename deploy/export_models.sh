#!/usr/bin/env bash
# Writes verified classifier artifacts into a model repository, inside the GPU container.
#
# Used by docker-compose's `export` service (writing into the host's model_repository) and by
# the Kubernetes init container (which first copies the image's own repository into an
# emptyDir). TensorRT plans only load on the GPU model and TensorRT version they were built
# with, so they are built here, on the GPU that serves them.
#
# Environment (defaults in brackets):
#   MODEL_REPOSITORY     repository to write into [/models]
#   CHECKPOINTS          folder of model_<acc>_acc_<N>_frames_<tag>.pt files [/checkpoints]
#   FRAMES               sequence lengths to export ["10 20 30"]
#   SEED_REPOSITORY      when set, its configs and model.py files are copied into
#                        MODEL_REPOSITORY first
#   TRITON_MODEL_CONFIG  the config the server will run [default]
#   BUILD_TENSORRT       yes | no | auto; auto builds plans when TRITON_MODEL_CONFIG=tensorrt [auto]
#   DEMO_CHECKPOINTS     yes: when CHECKPOINTS holds no checkpoint, export random-weight demo
#                        checkpoints instead (their scores mean nothing) [no]
#
# Versions beyond the published one (version 1): every folder CHECKPOINTS/versions/<model>/<V>/,
# <model> being resnext_lstm_<N> (a checkpoint model_<acc>_acc_<N>_frames_<tag>.pt) or
# resnext_temporal_<N> (temporal_<acc>_acc_<N>_frames_<tag>.pt), holds the one checkpoint served
# as version V of that model, with the report.json `train` wrote beside it (its lineage). Each is
# exported as that version, so a pod or container that starts later serves the same versions as
# those that loaded it live. A folder not named by a number (e.g. retired_2) is left out: that
# is how a rollback reaches servers that start later. Lengths outside FRAMES are left out too.
# With BUILD_TENSORRT=yes the plans are built after every version is exported, one per version folder.
#
# Calibrations (operating points, `python -m client calibrate`): a version exported from
# CHECKPOINTS/versions/ brings the calibration.json beside its checkpoint (train writes one). Every
# CHECKPOINTS/calibrations/<model>/<V>/*.json is installed into that version after the export, in
# name order (the last one is in force; each is checked against the version's checkpoint and
# refused, failing the start, when it was fitted for another): that is how version 1 gets its
# calibration, and how a new or rolled-back calibration reaches servers that start later.
set -euo pipefail

fail() {
    echo "export_models: error: $*" >&2
    exit 1
}

repository="${MODEL_REPOSITORY:-/models}"
checkpoints="${CHECKPOINTS:-/checkpoints}"
read -r -a frames <<< "${FRAMES:-10 20 30}"
model_config="${TRITON_MODEL_CONFIG:-default}"
build_tensorrt="${BUILD_TENSORRT:-auto}"

[[ -d "$repository" && -w "$repository" ]] || fail "model repository $repository is not a writable directory"
((${#frames[@]} > 0)) || fail "FRAMES is empty: give the sequence lengths to export, e.g. FRAMES='10 20 30'"
case "$build_tensorrt" in
    auto) [[ "$model_config" == tensorrt ]] && build_tensorrt=yes || build_tensorrt=no ;;
    yes | no) ;;
    *) fail "BUILD_TENSORRT=$build_tensorrt: expected yes, no or auto" ;;
esac

if [[ -n "${SEED_REPOSITORY:-}" ]]; then
    [[ -d "$SEED_REPOSITORY" ]] || fail "SEED_REPOSITORY $SEED_REPOSITORY is not a directory"
    cp -R "$SEED_REPOSITORY/." "$repository/"
    echo "export_models: copied the model configurations from $SEED_REPOSITORY"
fi

versions_dir="$checkpoints/versions"
shopt -s nullglob
found=("$checkpoints"/model_*_acc_*_frames_*.pt)
shopt -u nullglob
if ((${#found[@]} == 0)); then
    [[ "${DEMO_CHECKPOINTS:-no}" == yes ]] \
        || fail "no model_<acc>_acc_<N>_frames_<tag>.pt file in $checkpoints: mount the published checkpoints there (or set DEMO_CHECKPOINTS=yes for random-weight demo models)"
    checkpoints="$(mktemp -d)"
    echo "export_models: WARNING: no checkpoint given; exporting RANDOM-WEIGHT demo models: their scores mean nothing" >&2
    python3 -m export demo-checkpoints --out "$checkpoints" --frames "${frames[@]}"
fi

python3 -m export onnx --checkpoints "$checkpoints" --repository "$repository" --frames "${frames[@]}"

# Prints "<version> <frames> <checkpoint>" for each version folder to export; fails on a folder
# that cannot be one.
version_checkpoints() {
    local folder model version length pattern
    local -a matches
    shopt -s nullglob
    for folder in "$versions_dir"/*/*/; do
        folder="${folder%/}"
        version="${folder##*/}"
        model="$(basename "$(dirname "$folder")")"
        if [[ ! "$version" =~ ^[1-9][0-9]*$ ]]; then
            echo "export_models: $folder left out: its name is not a version number" >&2
            continue
        fi
        ((version > 1)) || fail "$folder: version 1 is the published checkpoint's; number other versions from 2"
        case "$model" in
            resnext_lstm_[1-9]*)
                pattern="model_<acc>_acc_<N>_frames_<tag>.pt"
                matches=("$folder"/model_*_acc_*_frames_*.pt)
                ;;
            resnext_temporal_[1-9]*)
                pattern="temporal_<acc>_acc_<N>_frames_<tag>.pt"
                matches=("$folder"/temporal_*_acc_*_frames_*.pt)
                ;;
            *) fail "$folder: expected versions/resnext_lstm_<N>/<V>/ or versions/resnext_temporal_<N>/<V>/" ;;
        esac
        length="${model##*_}"
        [[ "$length" =~ ^[1-9][0-9]*$ ]] || fail "$folder: $model does not end in a sequence length"
        if [[ " ${frames[*]} " != *" $length "* ]]; then
            echo "export_models: $folder left out: $length frames is not in FRAMES (${frames[*]})" >&2
            continue
        fi
        ((${#matches[@]} == 1)) \
            || fail "$folder must hold exactly one $pattern file (found ${#matches[@]})"
        echo "$version $length ${matches[0]}"
    done
    shopt -u nullglob
}

if [[ -d "$versions_dir" ]]; then
    listed="$(version_checkpoints)"
    while read -r version length checkpoint; do
        [[ -n "$version" ]] || continue
        python3 -m export onnx --checkpoint "$checkpoint" --version "$version" \
            --repository "$repository" --frames "$length"
    done <<< "$listed"
fi
calibrations_dir="$checkpoints/calibrations"
if [[ -d "$calibrations_dir" ]]; then
    shopt -s nullglob
    for file in "$calibrations_dir"/*/*/*.json; do
        version="$(basename "$(dirname "$file")")"
        [[ "$version" =~ ^[1-9][0-9]*$ ]] || fail "$file: expected calibrations/<model>/<version>/<name>.json"
        python3 -m calibration install "$file" --repository "$repository" --version "$version" \
            --by "export_models (${HOSTNAME:-container})" \
            || fail "$file was not installed (see above)"
    done
    shopt -u nullglob
fi
# After every version is exported: the plans are built for each version folder of each classifier.
if [[ "$build_tensorrt" == yes ]]; then
    python3 -m export tensorrt --repository "$repository" --frames "${frames[@]}"
fi
echo "export_models: $repository is ready for TRITON_MODEL_CONFIG=$model_config (frames: ${frames[*]})"
