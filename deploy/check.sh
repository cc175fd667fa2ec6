#!/usr/bin/env bash
# What can be checked without a cluster: every overlay renders with `kubectl kustomize`,
# and the rendered objects and the examples validate against the Kubernetes schemas
# offline (kubernetes-validate, from PyPI). .ci/run installs both when missing.
#   deploy/check.sh [KUBERNETES_VERSION]   (default 1.30.0)
set -euo pipefail
version=${1:-1.30.0}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for overlay in "$here"/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  echo "rendered overlay $name: $(grep -c '^kind:' "$out/$name.yaml") objects"
done
# The Prometheus Operator's objects are custom resources (no schema here): rendered only;
# tests/integration/deploy.rs checks the alerts use metrics Gatehouse exports.
kubectl kustomize "$here/monitoring" > /dev/null
echo "rendered monitoring: PodMonitor and PrometheusRule"
# The Argo CD Application is a custom resource: no schema for it here.
kubernetes-validate --strict --quiet -k "$version" "$out"/*.yaml \
  "$here/examples/ingress-tls.yaml" "$here/examples/tcp-udp-services.yaml"
echo "deploy: every overlay and example validates against Kubernetes $version"
