"""One-shot bootstrap run by ``devcluster up`` once the API server is ready: the Knative stand-in's CRD."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devcluster.applying import apply, load_yaml, project_objects
from localsched.kube import resources as r
from localsched.kube.client import KubeClient

HERE = Path(__file__).parent
KNATIVE_NAMESPACE = "knative-serving"


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
        # localsched itself, as a user would install it: the CRDs, then the kustomize base.
        for obj in project_objects():
            await apply(client, obj)


def main() -> None:
    asyncio.run(bootstrap())


if __name__ == "__main__":
    main()
