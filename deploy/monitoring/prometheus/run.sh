#!/bin/sh
# Starts Prometheus on the mounted configuration with Triton's metrics address filled in:
# compose gives TRITON_METRICS_TARGET (host:port), which Prometheus's own files cannot read
# from the environment. The result goes to /tmp, the only writable place besides the data.
set -eu

template=/etc/prometheus/prometheus.yml.in
target="${TRITON_METRICS_TARGET:-}"
listen="${PROMETHEUS_LISTEN_ADDRESS:-127.0.0.1:9090}"

fail() {
    echo "prometheus-run: error: $*" >&2
    exit 2
}

[ -f "$template" ] || fail "$template is not mounted"
case "$target" in
    "" | *[!A-Za-z0-9.:_-]*) fail "TRITON_METRICS_TARGET='$target': expected host:port" ;;
    *) ;;
esac
sed "s|\${TRITON_METRICS_TARGET}|$target|g" "$template" > /tmp/prometheus.yml
exec /usr/bin/prometheus \
    --config.file=/tmp/prometheus.yml \
    --storage.tsdb.path=/prometheus \
    --storage.tsdb.retention.time=15d \
    --web.listen-address="$listen" \
    "$@"
