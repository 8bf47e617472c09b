"""Sample Revisions for the demo and the tests."""

from __future__ import annotations

from typing import Any

SAMPLE_COMMAND = ["localsched-sampleapp"]


def sample_revision(
    name: str,
    namespace: str,
    *,
    container_concurrency: int = 0,
    annotations: dict[str, str] | None = None,
    startup_delay: float = 0.0,
    port: int = 8080,
    cpu: str = "100m",
    memory: str = "64Mi",
    pod_spec_extra: dict[str, Any] | None = None,
    timeout_seconds: int = 300,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """A ``serving.knative.dev/v1`` Revision running the sample app (or ``command``, another app that reads
    ``PORT`` and ``POD_IP`` and answers ``GET /healthz``)."""
    container: dict[str, Any] = {
        "name": "user-container",
        "image": "localsched/sampleapp:dev",
        "command": command or SAMPLE_COMMAND,
        "ports": [{"containerPort": port, "name": "user-port"}],
        "env": [
            {"name": "STARTUP_DELAY", "value": str(startup_delay)},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "resources": {"requests": {"cpu": cpu, "memory": memory}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1},
    }
    spec: dict[str, Any] = {
        "containerConcurrency": container_concurrency,
        "timeoutSeconds": timeout_seconds,
        "containers": [container],
        **(pod_spec_extra or {}),
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"serving.knative.dev/configuration": name.rsplit("-", 1)[0]},
            "annotations": annotations or {},
        },
        "spec": spec,
    }
