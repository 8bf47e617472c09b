"""One-shot bootstrap run by ``devcluster up`` once the API server is ready: the Knative stand-in's CRD, Knative's
autoscaler configuration, localsched as a user installs it, and where its activators report demand here."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from devcluster.applying import apply, install, load_yaml
from localsched.kube import resources as r
from localsched.kube.client import KubeClient

HERE = Path(__file__).parent
SYSTEM_NAMESPACE = "localsched-system"
KNATIVE_NAMESPACE = "knative-serving"
# Knative's config-autoscaler as this cluster runs it. Revisions start at zero (as the revision stand-in creates
# them) instead of Knative's default initial scale of 1, so that every first request is a cold start; and an idle
# revision goes to zero after the shortest grace Knative allows (6 s) past its stable window (60 s unless the
# revision's autoscaling.knative.dev/window says otherwise).
AUTOSCALER_CONFIG = {
    "initial-scale": "0",
    "allow-zero-initial-scale": "true",
    "scale-to-zero-grace-period": "6s",
}


async def bootstrap() -> None:
    async with await KubeClient.from_environment() as client:
        for obj in load_yaml(HERE / "knative-revision-crd.yaml"):
            await apply(client, obj)
        await apply(client, {"kind": "Namespace", "metadata": {"name": KNATIVE_NAMESPACE}})
        # Wait for the CRD to be served before anyone creates Revisions.
        for _ in range(300):
            crd = await client.get(r.CRDS, "revisions.serving.knative.dev")
            conditions = crd.get("status", {}).get("conditions", [])
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the Revision CRD was not Established within 30s")
        autoscaling = {"name": "config-autoscaler", "namespace": KNATIVE_NAMESPACE}
        await apply(client, {"kind": "ConfigMap", "metadata": autoscaling, "data": AUTOSCALER_CONFIG})
        # localsched itself, as a user would install it: the kustomize base (the CRD first), as this server takes it.
        await install(client)
        # There is no cluster DNS here: the activators find the autoscaler stand-in through their optional
        # ConfigMap, as an operator would point them at a non-default autoscaler address.
        autoscaler = os.environ.get("DEVCLUSTER_AUTOSCALER_URL", "")
        config = {"kind": "ConfigMap", "metadata": {"name": "activator-config", "namespace": SYSTEM_NAMESPACE},
                  "data": {"LOCALSCHED_AUTOSCALER_URL": autoscaler}}  # fmt: skip
        await apply(client, config)


def main() -> None:
    asyncio.run(bootstrap())


if __name__ == "__main__":
    main()
