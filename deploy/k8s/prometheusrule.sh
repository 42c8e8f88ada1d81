#!/bin/sh
# Prints the drift rules as a PrometheusRule for the Prometheus Operator (kube-prometheus-stack):
#
#   deploy/k8s/prometheusrule.sh release=<helm release> | kubectl apply -n <namespace> -f -
#
# Each KEY=VALUE argument becomes a label of the PrometheusRule: give the one your Prometheus's
# ruleSelector matches (kube-prometheus-stack: `release: <helm release>`). Delete with
# `kubectl delete prometheusrule deepfake-drift -n <namespace>`.
#
# Why a script and not a manifest in the kustomize base: the rules are written once, in
# deploy/monitoring/rules/deepfake-drift.yml, the file compose's Prometheus loads and
# `promtool test rules` tests. The operator reads rules only from PrometheusRule objects, whose
# spec.groups is that file's content as YAML: not a string in a ConfigMap, which is all a kustomize
# configMapGenerator can make of a file (and kustomize refuses files outside the kustomization's
# folder). A copy in the base would be a second text to keep equal; this script wraps the one file
# as it is, its `groups:` indented under `spec:`.
set -eu

rules="$(dirname "$0")/../monitoring/rules/deepfake-drift.yml"

fail() {
    echo "prometheusrule.sh: error: $*" >&2
    exit 2
}

[ -f "$rules" ] || fail "$rules is missing"
for label in "$@"; do
    case "$label" in
        *=*=* | =* | *= | *[!A-Za-z0-9./_=-]*)
            fail "'$label': expected KEY=VALUE of letters, digits and ./_-" ;;
        *=*) ;;
        *) fail "'$label': expected KEY=VALUE" ;;
    esac
done

cat <<'EOF'
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: deepfake-drift
  labels:
    app.kubernetes.io/name: deepfake-triton
    app.kubernetes.io/part-of: deepfake-detector
EOF
for label in "$@"; do
    printf '    %s: "%s"\n' "${label%%=*}" "${label#*=}"
done
echo "spec:"
sed 's/^/  /' "$rules"
