"""The chaos suite's devcluster and the handles it pulls: faults, metrics, logs, revisions and their activators.

One devcluster at a time on a machine: while the suite's cluster is up it holds the integration tests' lock
(``/tmp/localsched-test-devcluster.lock``, an exclusive ``flock``), so a test session and a chaos run wait for each
other. Its own ports (``CHAOS_PORT_BASE``) and addresses (10.247.x on the netns network, else 127.40.x), a
temporary state directory, and everything stopped afterwards, also on an error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devcluster import controlplane, network
from devcluster.controlplane import ClusterSpec
from devcluster.daemons import container_pid, poll_until
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.watching import Event, WatchCache
from localsched.predicates import is_ready

LOCK = Path("/tmp/localsched-test-devcluster.lock")
CHAOS_PORT_BASE = int(os.environ.get("LOCALSCHED_CHAOS_PORT_BASE", "37000"))
SYSTEM_NAMESPACE = "localsched-system"
ACTIVATORS = "app.kubernetes.io/name=activator"
ENDPOINTSCTL = "app.kubernetes.io/name=endpointsctl"
SLICES = "endpointslice.kubernetes.io/managed-by=endpointsctl.localsched.dev"
LEASE = "endpointsctl"
T = TypeVar("T")


class HarnessError(RuntimeError):
    """The suite itself could not do what it set out to do: no table is printed from that."""


def say(message: str) -> None:
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def chaos_devcluster() -> Iterator[ClusterSpec]:
    """A fresh devcluster under the machine-wide devcluster lock; down (and its state removed) afterwards. There is
    no keeping it up: the lock goes with this process, and a cluster left up would run beside the next one."""
    state_dir = Path(tempfile.mkdtemp(prefix="localsched-chaos-"))
    mode, ip_base = network.layout(
        os.environ.get("LOCALSCHED_CHAOS_NETWORK", "auto"),
        os.environ.get("LOCALSCHED_CHAOS_IP_BASE"),
        loopback="127.40",
        netns="10.247",
    )
    spec = ClusterSpec(state_dir=state_dir, nodes=3, port_base=CHAOS_PORT_BASE, ip_base=ip_base, network=mode)
    # SIGTERM (a CI timeout, say) unwinds like Ctrl-C, so the cluster goes down with the suite.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    with LOCK.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another devcluster holds {LOCK} (an integration test session?): waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            controlplane.up(spec, fresh=True)
            yield spec
        finally:
            leftover = controlplane.down(state_dir, quiet=True)
            if leftover:
                say(f"warning: devcluster down left processes behind: {leftover}")
            shutil.rmtree(state_dir, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)


def save_logs(spec: ClusterSpec) -> Path:
    """Copy the cluster's logs (components, and every container's) out of its state directory, which goes away."""
    target = Path(tempfile.mkdtemp(prefix=f"localsched-chaos-logs-{time.strftime('%Y%m%d-%H%M%S')}-"))
    for path in [*spec.state_dir.glob("logs/*.log"), *spec.state_dir.glob("nodes/*/pods/*/*.log")]:
        copy = target / path.relative_to(spec.state_dir)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return target


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- the control plane's faults (blocking: call them through asyncio.to_thread) ------------------------------------


def stop_apiserver(state_dir: Path) -> None:
    state = controlplane.State(state_dir)
    info = state.processes["kube-apiserver"]
    controlplane.stop_group(info["pid"])
    info["status"] = "stopped"
    state.save()


def start_apiserver(state_dir: Path) -> None:
    """Start kube-apiserver again on its port, and wait until it is ready."""
    controlplane.start_apiserver_again(state_dir)


async def compact_etcd(http: httpx.AsyncClient, spec: ClusterSpec) -> int:
    """Compact etcd at its current revision (physically), through its v3 JSON gateway; the revision."""
    base = f"http://127.0.0.1:{spec.etcd_port}/v3/kv"
    key = base64.b64encode(b"/").decode()
    answer = await http.post(f"{base}/range", json={"key": key, "range_end": key, "count_only": True})
    answer.raise_for_status()
    revision = int(answer.json()["header"]["revision"])
    compacted = await http.post(f"{base}/compaction", json={"revision": str(revision), "physical": True})
    compacted.raise_for_status()
    return revision


# -- reading the daemons ------------------------------------------------------------------------------------------


async def scrape(http: httpx.AsyncClient, ip: str, port: int = 9090) -> str | None:
    """A daemon's ``/metrics`` text, or None when it does not answer within 2 s."""
    try:
        answer = await http.get(f"http://{ip}:{port}/metrics", timeout=2)
    except httpx.HTTPError:
        return None
    return answer.text if answer.status_code == 200 else None


@dataclass(frozen=True)
class Counters:
    """One counter over the activators, by pod and label value: (address, process id, label value) -> value."""

    values: dict[tuple[str, int, str], float]
    unreachable: tuple[str, ...]

    def delta(self, before: Counters) -> dict[str, float]:
        """The increase since ``before``, by label value; a process that started since counts from zero."""
        total: dict[str, float] = {}
        for key, value in self.values.items():
            earlier = before.values.get(key, 0.0)
            total[key[2]] = total.get(key[2], 0.0) + (value - earlier if value >= earlier else value)
        return total


async def activator_pods(kube: KubeClient) -> list[Obj]:
    result = await kube.list(r.PODS, SYSTEM_NAMESPACE, label_selector=ACTIVATORS)
    return [p for p in result.get("items", []) if not p["metadata"].get("deletionTimestamp")]


async def activator_counter(kube: KubeClient, http: httpx.AsyncClient, name: str, by: str) -> Counters:
    """The samples of counter ``name`` of every activator that answers, by the value of its label ``by``."""
    values: dict[tuple[str, int, str], float] = {}
    unreachable = []
    for pod in await activator_pods(kube):
        ip = pod.get("status", {}).get("podIP")
        if not ip or not pod["status"].get("containerStatuses"):
            continue
        text = await scrape(http, ip)
        if text is None:
            unreachable.append(pod["metadata"]["name"])
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    key = (ip, container_pid(pod), sample.labels.get(by, ""))
                    values[key] = values.get(key, 0.0) + sample.value
    return Counters(values, tuple(unreachable))


def container_logs(state_dir: Path, namespace: str = SYSTEM_NAMESPACE) -> list[Path]:
    """The container logs of every pod of ``namespace`` the simulated kubelets have run."""
    return sorted((state_dir / "nodes").glob(f"*/pods/{namespace}_*/*.log"))


def log_marks(state_dir: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in container_logs(state_dir)}


def log_lines_since(state_dir: Path, marks: dict[Path, int], needle: str) -> dict[str, int]:
    """Per container (``activator``, ``endpointsctl``): log lines written since ``marks`` that contain ``needle``."""
    counts: dict[str, int] = {}
    for path in container_logs(state_dir):
        with path.open("rb") as fh:
            fh.seek(marks.get(path, 0))
            text = fh.read().decode(errors="replace")
        counts[path.stem] = counts.get(path.stem, 0) + sum(1 for line in text.splitlines() if needle in line)
    return counts


# -- revisions and their activators -------------------------------------------------------------------------------


def spread_revision(name: str, namespace: str, replicas: int, **kwargs: Any) -> Obj:
    """A sample revision pinned at ``replicas`` pods (Knative's min and max scale), never two on one node."""
    pinned = {"autoscaling.knative.dev/min-scale": str(replicas), "autoscaling.knative.dev/max-scale": str(replicas)}
    label = {"matchLabels": {"serving.knative.dev/revision": name}}
    anti = {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": label, "topologyKey": "kubernetes.io/hostname"}]}}}  # fmt: skip
    return sample_revision(name, namespace, annotations=pinned, pod_spec_extra=anti, **kwargs)


@dataclass
class Slices:
    """The namespace's ``{revision}-activationendpoints`` EndpointSlices, as a gateway watching them sees them
    (its cache keeps the last content while the API server is away)."""

    cache: WatchCache
    modified: dict[str, list[float]] = field(default_factory=dict)  # slice name -> loop times of its changes

    @classmethod
    @contextlib.asynccontextmanager
    async def watching(cls, kube: KubeClient, namespace: str) -> AsyncIterator[Slices]:
        cache = WatchCache(kube, await kube.endpointslice_resource(), namespace=namespace, label_selector=SLICES,
                           timeout_seconds=30, max_backoff=1.0)  # fmt: skip
        slices = cls(cache)
        cache.add_handler(slices._on_event)
        cache.start()
        try:
            await cache.wait_synced(30)
            yield slices
        finally:
            await cache.stop()

    def _on_event(self, event: Event) -> None:
        name = event.obj["metadata"]["name"]
        self.modified.setdefault(name, []).append(asyncio.get_running_loop().time())

    def addresses(self, revision: str) -> list[str]:
        """``ip:port`` of the ready activators the slice lists for ``revision``."""
        return slice_addresses(self.cache.get(f"{revision}-activationendpoints", self.namespace))

    @property
    def namespace(self) -> str:
        return self.cache.namespace or ""

    def content(self, revision: str) -> tuple[str, list[Any]]:
        obj = self.cache.get(f"{revision}-activationendpoints", self.namespace) or {}
        return obj.get("metadata", {}).get("resourceVersion", ""), obj.get("endpoints") or []


def slice_addresses(obj: Obj | None) -> list[str]:
    if obj is None:
        return []
    port = next((p.get("port") for p in obj.get("ports") or [] if p.get("port")), 8012)
    return sorted(f"{address}:{port}" for ep in obj.get("endpoints") or []
                  if (ep.get("conditions") or {}).get("ready") is not False
                  for address in ep.get("addresses") or [])  # fmt: skip


async def wait_pods_ready(kube: KubeClient, namespace: str, revision: str, count: int, timeout: float) -> list[Obj]:
    cache = WatchCache(kube, r.PODS, namespace=namespace, label_selector=f"serving.knative.dev/revision={revision}")
    cache.start()
    try:
        return await cache.wait_for(lambda c: _at_least([p for p in c if is_ready(p)], count), timeout)
    except TimeoutError:
        raise HarnessError(f"{namespace}/{revision}: {count} pods not Ready within {timeout:.0f}s") from None
    finally:
        await cache.stop()


def _at_least(items: list[T], count: int) -> list[T] | None:
    return items if items and len(items) >= count else None


async def wait_deployment(kube: KubeClient, namespace: str, revision: str, timeout: float = 30) -> None:
    cache = WatchCache(kube, r.DEPLOYMENTS, namespace=namespace)
    cache.start()
    try:
        await cache.wait_for(lambda c: c.get(f"{revision}-deployment", namespace), timeout)
    except TimeoutError:
        raise HarnessError(f"{namespace}/{revision}: no Deployment within {timeout:.0f}s") from None
    finally:
        await cache.stop()


async def wait_slice(slices: Slices, revision: str, at_least: int, timeout: float) -> list[str]:
    try:
        return await slices.cache.wait_for(lambda _: _at_least(slices.addresses(revision), at_least), timeout)
    except TimeoutError:
        raise HarnessError(f"{revision}-activationendpoints: not {at_least} ready activators within "
                           f"{timeout:.0f}s (now {slices.addresses(revision)})") from None  # fmt: skip


async def lease_holder(kube: KubeClient) -> str:
    lease = await kube.get(r.LEASES, LEASE, SYSTEM_NAMESPACE)
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def endpointsctl_pods(kube: KubeClient) -> list[Obj]:
    result = await kube.list(r.PODS, SYSTEM_NAMESPACE, label_selector=ENDPOINTSCTL)
    return [p for p in result.get("items", []) if not p["metadata"].get("deletionTimestamp")]


def holder_pod(holder: str, pods: list[Obj]) -> Obj | None:
    """The pod whose process holds the Lease (identities are ``<pod name>_<random>``)."""
    return next((p for p in pods if holder.startswith(p["metadata"]["name"] + "_")), None)


async def poll(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """:func:`devcluster.daemons.poll_until`, failing the harness (HarnessError) rather than a check."""
    return await poll_until(check, timeout, what, interval, error=HarnessError)
