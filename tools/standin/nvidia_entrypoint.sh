#!/usr/bin/env bash
# Stand-in for NGC's /opt/nvidia/nvidia_entrypoint.sh: there is no CUDA to set up here, so it
# only runs the command it is given, as the real one does once it has set CUDA up.
set -euo pipefail
(($# > 0)) || { echo "nvidia_entrypoint (stand-in): no command given" >&2; exit 2; }
exec "$@"
