#!/usr/bin/env bash
# localsched on kind, for machines with a container engine: build the image, create the cluster, install.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-ghcr.io/localsched/localsched:latest}
CLUSTER=${CLUSTER:-localsched}
command -v kind >/dev/null || { echo "kind is not installed: see https://kind.sigs.k8s.io" >&2; exit 1; }
docker build -t "$IMAGE" .
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config devcluster/kind-config.yaml
kind load docker-image --name "$CLUSTER" "$IMAGE"
kubectl apply -f crds/
kubectl apply -k manifests/
kubectl -n localsched-system rollout status daemonset/activator --timeout=120s
echo "localsched is installed. Run the integration suite against it with:"
echo "  LOCALSCHED_TEST_KUBECONFIG=\$HOME/.kube/config .venv/bin/pytest tests/integration"
