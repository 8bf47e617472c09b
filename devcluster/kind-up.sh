#!/usr/bin/env bash
# localsched on kind, for machines with a container engine: build the image, create the cluster, install.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tag the kustomize base pins (manifests/kustomization.yaml `images:`): the image built here is the one it runs.
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE=${IMAGE:-ghcr.io/localsched/localsched:$VERSION}
CLUSTER=${CLUSTER:-localsched}
command -v kind >/dev/null || { echo "kind is not installed: see https://kind.sigs.k8s.io" >&2; exit 1; }
docker build --build-arg VERSION="$VERSION" -t "$IMAGE" .
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config devcluster/kind-config.yaml
kind load docker-image --name "$CLUSTER" "$IMAGE"
kubectl apply -k manifests/  # the CRD, the namespace, RBAC, both daemons (docs/install.md)
kubectl wait --for=condition=Established crd/activationendpoints.activation.localsched.dev --timeout=60s
kubectl -n localsched-system rollout status daemonset/activator --timeout=120s
kubectl -n localsched-system rollout status deployment/endpointsctl --timeout=120s
echo "localsched is installed. Run the integration suite against it with:"
echo "  LOCALSCHED_TEST_KUBECONFIG=\$HOME/.kube/config .venv/bin/pytest tests/integration"
