"""A simulated kubelet: one process per devcluster node.

It registers a Node (zone labels, allocatable), keeps it alive with a Lease and status heartbeats, and runs the
pods bound to it as local processes: the container's ``command``/``args`` with its env (downward API included)
and a ``PORT``, each pod on its own address from the node's range (``POD_IP`` tells the process which address is
its own), routed to it by the node's network namespace or, on the loopback network, a loopback address
(``devcluster/network.py``). Readiness probes are really executed. Admission rejects pods that do not fit the node
(phase Failed, reason OutOfcpu / OutOfmemory / OutOfpods), as the kubelet does. Deletion sends SIGTERM and
honours the grace period, then SIGKILL.

What it reports, and when, follows a real kubelet (``devcluster/kubelet.py``, ``docs/kubelet-model.md``): the
first status of a pod carries no IP; container starts and exits are seen at the PLEG relist; each sync of a pod
waits for a relist newer than its previous one; statuses go out through one status manager; API calls pass a
client-side rate limit.

Pod processes share this process's process group and die with it (PR_SET_PDEATHSIG, through ``setpriv``), so
killing the group is a dead node and stopping it (SIGSTOP) a hung one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devcluster.kubelet import ObjectCache, Relister, StatusManager, Timing
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import STRATEGIC_PATCH, KubeClient, Obj, RateLimit
from localsched.kube.errors import AlreadyExists, KubeError, NotFound
from localsched.kube.watching import Event, WatchCache, key_of
from localsched.predicates import Resources, is_ready, pod_requests
from localsched.probes import http_status, is_success, tcp_open
from localsched.quantity import cpu_millis, memory_bytes

log = logging.getLogger("nodesim")

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
# Simulator knob standing in for Knative's queue-proxy, which polls a starting user container every 50 ms until it
# first answers (pkg/queue/readiness/probe.go) and so answers the kubelet's first probe as soon as the app is up:
# while a container is not ready, the kubelet here probes it every this many ms; once ready, every periodSeconds.
PROBE_PERIOD_ANNOTATION = "devcluster.localsched.dev/probe-period-ms"
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 2.0
STATUS_SECONDS = 10.0


# Pod processes die with their kubelet (PR_SET_PDEATHSIG), set by util-linux's setpriv in front of the command: a
# preexec_fn would do the same but forces a full fork() of this process for every container (about 14 ms each on
# an idle machine, far more under a burst, with the event loop blocked), where a plain spawn is a vfork.
SETPRIV = shutil.which("setpriv")
DIE_WITH_KUBELET = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
# Containers of ordinary pods run at a lower CPU priority than the control plane, the kubelets and the node's
# critical daemons (priority class system-node-critical or system-cluster-critical), standing in for the cgroups a
# real node puts them in (kubepods, below system-reserved and kube-reserved; critical daemons with their requests)
# and for the control plane's own machines: on one shared machine, a burst of container start-ups must not starve
# the API server or the node's daemons.
POD_NICENESS = 10
CRITICAL_PRIORITY_CLASSES = frozenset({"system-node-critical", "system-cluster-critical"})
NICE = shutil.which("nice")


def container_prefix(pod_spec: Obj) -> list[str]:
    """What runs in front of a container's command: its CPU priority, then death with its kubelet."""
    critical = pod_spec.get("priorityClassName") in CRITICAL_PRIORITY_CLASSES
    nice = [NICE, "-n", str(POD_NICENESS)] if NICE and not critical else []
    return nice + DIE_WITH_KUBELET


@dataclass(frozen=True)
class Seen:
    """A container as the kubelet last saw it at a relist: what its status reports."""

    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    restarts: int = 0
    pid: int | None = None


@dataclass
class Container:
    name: str
    spec: Obj
    proc: asyncio.subprocess.Process | None = None
    started_at: str = ""
    started_monotonic: float = 0.0
    finished_at: str = ""
    exit_code: int | None = None
    restarts: int = 0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    ready: bool = False  # the readiness prober's last verdict
    seen: Seen = field(default_factory=Seen)
    probe_now: asyncio.Event = field(default_factory=asyncio.Event)  # the prober's manual trigger

    def observe(self) -> Seen:
        """What a relist would see of this container right now."""
        if self.proc is not None and self.exit_code is None:
            return Seen("running", "", "", self.started_at, "", None, self.restarts, self.proc.pid)
        if self.exit_code is not None and self.waiting_reason != "CrashLoopBackOff":
            reason = "Completed" if self.exit_code == 0 else "Error"
            return Seen("terminated", reason, "", self.started_at, self.finished_at, self.exit_code, self.restarts)
        return Seen("waiting", self.waiting_reason, self.waiting_message, restarts=self.restarts)


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    ip: str
    requests: Resources
    restart_policy: str
    directory: Path
    containers: dict[str, Container] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: bool = False
    start_time: str = field(default_factory=timestamps.now)
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # condition -> (status, time)
    sandbox_seen: bool = False  # a relist has seen the sandbox: the pod IP goes into the status
    gates_open: bool = True  # readiness gates as of the last sync
    container_prefix: list[str] = field(default_factory=list)
    last_sync: float = float("-inf")

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def containers_ready(self) -> bool:
        return all(c.ready if c.spec.get("readinessProbe") else c.seen.state == "running"
                   for c in self.containers.values())  # fmt: skip


def gates_open(pod: Obj) -> bool:
    """Pod readiness gates: Ready also needs each gate's condition True (set by some other controller)."""
    conditions = {c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions") or []}
    return all(conditions.get(g["conditionType"]) == "True" for g in pod["spec"].get("readinessGates") or [])


def readiness_needs_reconcile(pod: Obj) -> bool:
    """The kubelet's NeedToReconcilePodReadiness: a pod with gates whose Ready condition the gates now change."""
    if not pod["spec"].get("readinessGates"):
        return False
    statuses = pod.get("status", {}).get("containerStatuses") or []
    containers_ready = bool(statuses) and all(s.get("ready") for s in statuses)
    return (containers_ready and gates_open(pod)) != is_ready(pod)


class NodeSim:
    def __init__(
        self,
        client: KubeClient,
        heartbeat_client: KubeClient,
        args: argparse.Namespace,
        server: str,
        ca_data: str,
        timing: Timing,
    ) -> None:
        self.client = client
        self.heartbeat_client = heartbeat_client  # the kubelet's own, never rate limited (heartbeatClientConfig)
        self.name: str = args.node
        self.zone: str = args.zone
        self.ip_prefix: str = args.ip_prefix
        self.allocatable = Resources(cpu_millis(args.cpu), memory_bytes(args.memory), int(args.pods))
        self.capacity_strings = {"cpu": args.cpu, "memory": args.memory, "pods": str(args.pods)}
        self.state_dir = Path(args.state_dir)
        self.server = server
        self.ca_data = ca_data
        self.timing = timing
        self.runtimes: dict[tuple[str, str], PodRuntime] = {}
        self.free_ips = [f"{self.ip_prefix}.{i}" for i in range(2, 255)]
        self.pods = WatchCache(client, r.PODS, field_selector=f"spec.nodeName={self.name}", name=f"pods@{self.name}")
        self.pods.add_handler(self._on_pod_event)
        self.relister = Relister(timing.relist_seconds, self._relist, self._on_pleg_events)
        self.status = StatusManager(client, timing)
        self.objects = ObjectCache(client)
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._dirty: set[tuple[str, str]] = set()

    # -- node --------------------------------------------------------------------------------------------------

    @property
    def node_ip(self) -> str:
        return f"{self.ip_prefix}.1"

    def _node_status(self) -> Obj:
        resources = {**self.capacity_strings, "ephemeral-storage": "100Gi"}
        stamp = timestamps.now()
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r_}", "message": m}
            for t, r_, m in (
                ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
            )
        ]
        conditions.append(
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "devcluster nodesim is ready"}
        )
        for c in conditions:
            c["lastHeartbeatTime"] = stamp
            c.setdefault("lastTransitionTime", stamp)
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": self.name, "systemUUID": self.name, "bootID": str(os.getpid()),
                "kernelVersion": os.uname().release, "osImage": "devcluster", "containerRuntimeVersion": "process://1",
                "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }  # fmt: skip

    async def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": self.zone,
            "failure-domain.beta.kubernetes.io/zone": self.zone,
            "topology.kubernetes.io/region": "devcluster",
            "node.localsched.dev/simulated": "true",
        }
        body = {"metadata": {"name": self.name, "labels": labels}, "spec": {}}
        try:
            await self.client.create(r.NODES, body)
        except AlreadyExists:
            await self.client.patch(r.NODES, self.name, {"metadata": {"labels": labels}})
        await self.client.patch(r.NODES, self.name, {"status": self._node_status()}, subresource="status",
                                content_type=STRATEGIC_PATCH)  # fmt: skip

    async def heartbeat(self) -> None:
        last_status = time.monotonic()
        while True:
            try:
                await self._renew_lease()
                if time.monotonic() - last_status >= STATUS_SECONDS:
                    await self.heartbeat_client.patch(r.NODES, self.name, {"status": self._node_status()},
                                            subresource="status", content_type=STRATEGIC_PATCH)  # fmt: skip
                    last_status = time.monotonic()
            except (KubeError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    async def _renew_lease(self) -> None:
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": timestamps.micro_now()}
        try:
            await self.heartbeat_client.patch(r.LEASES, self.name, {"spec": spec}, "kube-node-lease")
        except NotFound:
            node = await self.heartbeat_client.get(r.NODES, self.name)
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
            body = {"metadata": {"name": self.name, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                    "spec": spec}  # fmt: skip
            with contextlib.suppress(AlreadyExists):
                await self.heartbeat_client.create(r.LEASES, body)

    # -- pods: one worker per pod, each sync waiting for a relist newer than the pod's last sync ----------------

    def _on_pod_event(self, event: Event) -> None:
        key = key_of(event.obj)
        pod = event.obj
        rt = self.runtimes.get(key)
        if rt is None or event.type != "MODIFIED" or event.old is None or self._needs_sync(pod, event.old, rt):
            self._kick(key)
            return
        sent = self.status.last_sent(key)
        if not rt.stopping and sent is not None and is_ready({"status": sent}) != is_ready(pod):
            self.status.reconcile(key)  # the node controller marked it NotReady while we were away

    @staticmethod
    def _needs_sync(pod: Obj, old: Obj, rt: PodRuntime) -> bool:
        """What makes a kubelet sync a running pod on an API update: deletion, a new pod of the same name, a change
        of labels or annotations (``podsDifferSemantically``: an UPDATE), or a readiness gate that changes its Ready
        (``HandlePodReconcile``). Its own status echoes do not."""
        meta, before = pod["metadata"], old["metadata"]
        changed = any(meta.get(k) != before.get(k) for k in ("labels", "annotations", "deletionTimestamp"))
        return changed or meta["uid"] != rt.uid or readiness_needs_reconcile(pod)

    def _on_pleg_events(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            self._kick(key)

    def _relist(self) -> Iterator[tuple[str, str]]:
        """The PLEG relist: every pod whose containers (or sandbox) changed since the kubelet last looked."""
        for rt in self.runtimes.values():
            if rt.stopping:
                continue
            changed = not rt.sandbox_seen
            rt.sandbox_seen = True
            for container in rt.containers.values():
                seen = container.observe()
                if seen != container.seen:
                    container.seen = seen
                    if seen.state == "running":
                        container.probe_now.set()  # a running container without a result: probe it at once
                    else:
                        container.ready = False
                    changed = True
            if changed:
                yield rt.key

    def _kick(self, key: tuple[str, str]) -> None:
        if key in self._workers:
            self._dirty.add(key)
            return
        self._workers[key] = asyncio.create_task(self._worker(key), name=f"pod:{key[0]}/{key[1]}")

    async def _worker(self, key: tuple[str, str]) -> None:
        try:
            while True:
                self._dirty.discard(key)
                rt = self.runtimes.get(key)
                if rt is not None:
                    await self.relister.newer_than(rt.last_sync)
                try:
                    await self._sync(key)
                except (KubeError, OSError) as exc:
                    log.warning("pod %s/%s: %s; retrying", *key, exc)
                    await asyncio.sleep(1.0)
                    self._dirty.add(key)
                if key not in self._dirty:
                    return
        finally:
            self._workers.pop(key, None)

    async def _sync(self, key: tuple[str, str]) -> None:
        pod = self.pods.get(key[1], key[0])
        rt = self.runtimes.get(key)
        if rt is not None and (pod is None or pod["metadata"]["uid"] != rt.uid):
            await self._stop(rt, grace=0 if pod is None else 30)
            rt = None
        if pod is None:
            self.status.forget(key)
            return
        meta, status = pod["metadata"], pod.get("status", {})
        if meta.get("deletionTimestamp"):
            if rt is not None:
                await self._stop(rt, grace=float(meta.get("deletionGracePeriodSeconds") or 0))
            self.status.forget(key)
            with contextlib.suppress(NotFound):
                await self.client.delete(r.PODS, key[1], key[0], grace_period_seconds=0,
                                         preconditions={"uid": meta["uid"]})  # fmt: skip
            return
        if rt is None:
            if status.get("phase") in ("Succeeded", "Failed"):
                return
            rejection = self._admit(pod)
            if rejection is not None:
                reason, message = rejection
                log.info("pod %s/%s rejected: %s", *key, message)
                self.status.set(*key, meta["uid"], {"phase": "Failed", "reason": reason, "message": message})
                return
            await self._start(pod)
            return
        rt.gates_open = gates_open(pod)
        self._publish(rt)
        rt.last_sync = time.monotonic()

    def _admit(self, pod: Obj) -> tuple[str, str] | None:
        want = pod_requests(pod["spec"])
        used = Resources(
            sum(rt.requests.cpu_millis for rt in self.runtimes.values()),
            sum(rt.requests.memory_bytes for rt in self.runtimes.values()),
            len(self.runtimes),
        )
        for resource, need, have, cap in (
            ("cpu", want.cpu_millis, used.cpu_millis, self.allocatable.cpu_millis),
            ("memory", want.memory_bytes, used.memory_bytes, self.allocatable.memory_bytes),
            ("pods", 1, used.pods, self.allocatable.pods),
        ):
            if need + have > cap:
                return (
                    f"OutOf{resource}",
                    f"Pod Node didn't have enough resource: {resource}, requested: {need}, used: {have}, "
                    f"capacity: {cap}",
                )
        if not self.free_ips:
            return ("OutOfaddresses", f"node {self.name} has no free pod address left")
        return None

    # -- running containers ------------------------------------------------------------------------------------

    async def _start(self, pod: Obj) -> None:
        """The first sync of a pod: its status says Pending (no sandbox seen yet), then sandbox and containers."""
        meta, spec = pod["metadata"], pod["spec"]
        # A pod that ran here before this kubelet restarted keeps its address (the API refuses to change it).
        known = pod.get("status", {}).get("podIP")
        if known in self.free_ips:
            ip = known
        else:  # keep the addresses other pods of this node had before a restart for them
            taken = {p.get("status", {}).get("podIP") for p in self.pods if key_of(p) not in self.runtimes}
            ip = next((a for a in self.free_ips if a not in taken), self.free_ips[0])
        self.free_ips.remove(ip)
        directory = self.state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        rt = PodRuntime(
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], ip=ip,
            requests=pod_requests(spec), restart_policy=spec.get("restartPolicy", "Always"), directory=directory,
            gates_open=gates_open(pod), container_prefix=container_prefix(spec),
        )  # fmt: skip
        self.runtimes[rt.key] = rt
        for c in spec.get("containers", []):
            rt.containers[c["name"]] = Container(c["name"], c)
        self._publish(rt)
        base_env = await self._base_env(pod, rt)
        for container in rt.containers.values():
            env = await self._container_env(pod, container.spec, base_env)
            await self._spawn(rt, container, env)
            rt.tasks.append(asyncio.create_task(self._supervise(rt, container, env)))
            if container.spec.get("readinessProbe"):
                rt.tasks.append(asyncio.create_task(self._probe_loop(pod, rt, container, env)))
        rt.last_sync = time.monotonic()
        self.relister.changed()

    async def _spawn(self, rt: PodRuntime, container: Container, env: dict[str, str]) -> None:
        argv = [_expand(a, env) for a in (container.spec.get("command") or []) + (container.spec.get("args") or [])]
        if not container.spec.get("command"):
            container.waiting_reason = "CreateContainerError"
            container.waiting_message = "devcluster runs containers as local processes and needs a `command`"
            return
        executable = shutil.which(argv[0], path=env.get("PATH"))
        if executable is None:
            container.waiting_reason = "RunContainerError"
            container.waiting_message = f"cannot start {argv[0]!r}: executable file not found in $PATH"
            return
        log_file = (rt.directory / f"{container.name}.log").open("ab")
        try:
            container.proc = await asyncio.create_subprocess_exec(
                *rt.container_prefix, executable, *argv[1:], env=env, cwd=rt.directory,
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        except OSError as exc:
            container.waiting_reason = "RunContainerError"
            container.waiting_message = f"cannot start {argv[0]!r}: {exc}"
            return
        finally:
            log_file.close()
        container.started_at, container.exit_code, container.waiting_reason = timestamps.now(), None, ""
        container.started_monotonic = time.monotonic()
        container.ready = False

    async def _supervise(self, rt: PodRuntime, container: Container, env: dict[str, str]) -> None:
        while container.proc is not None:
            code = await container.proc.wait()
            container.exit_code, container.finished_at = code, timestamps.now()
            if rt.stopping:
                return
            self.relister.changed()
            restart = rt.restart_policy == "Always" or (rt.restart_policy == "OnFailure" and code != 0)
            if not restart:
                return
            container.waiting_reason = "CrashLoopBackOff"
            await asyncio.sleep(min(30.0, 0.5 * 2**container.restarts))
            if rt.stopping:
                return
            container.restarts += 1
            await self._spawn(rt, container, env)
            self.relister.changed()

    async def _probe_loop(self, pod: Obj, rt: PodRuntime, container: Container, env: dict[str, str]) -> None:
        """The kubelet's readiness worker: a probe every period, once the kubelet has seen the container run."""
        probe: Obj = container.spec["readinessProbe"]
        period_ms = (pod["metadata"].get("annotations") or {}).get(PROBE_PERIOD_ANNOTATION)
        steady = float(probe.get("periodSeconds", 10))
        starting = int(period_ms) / 1000 if period_ms else steady
        success_needed = int(probe.get("successThreshold", 1))
        failure_needed = int(probe.get("failureThreshold", 3))
        initial_delay = float(probe.get("initialDelaySeconds", 0))
        successes = failures = 0
        while not rt.stopping:
            running = container.seen.state == "running" and container.proc is not None
            if running and time.monotonic() - container.started_monotonic >= initial_delay:
                ok = container.exit_code is None and await self._probe(rt, container, env)
                if ok:
                    successes, failures = successes + 1, 0
                else:
                    successes, failures = 0, failures + 1
                ready = container.ready
                if ok and successes >= success_needed:
                    ready = True
                elif not ok and (failures >= failure_needed or container.exit_code is not None):
                    ready = False
                if ready != container.ready and not rt.stopping:
                    container.ready = ready
                    self._publish(rt)  # SetContainerReadiness: straight to the status manager
            elif not running:
                successes = failures = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(steady if container.ready else starting):
                    await container.probe_now.wait()
            container.probe_now.clear()

    async def _probe(self, rt: PodRuntime, container: Container, env: dict[str, str]) -> bool:
        probe: Obj = container.spec["readinessProbe"]
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                http = probe["httpGet"]
                headers = [(h["name"], h["value"]) for h in http.get("httpHeaders") or []]
                status = await http_status(http.get("host") or rt.ip, _port(http.get("port"), container.spec),
                                           http.get("path", "/"), timeout=timeout, headers=headers,
                                           https=str(http.get("scheme", "HTTP")).upper() == "HTTPS")  # fmt: skip
                return is_success(status)
            if "tcpSocket" in probe:
                tcp = probe["tcpSocket"]
                return await tcp_open(tcp.get("host") or rt.ip, _port(tcp.get("port"), container.spec), timeout)
            if "exec" in probe:
                proc = await asyncio.create_subprocess_exec(
                    *probe["exec"]["command"], env=env, cwd=rt.directory,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    async with asyncio.timeout(timeout):
                        return await proc.wait() == 0
                except TimeoutError:
                    proc.kill()
                    return False
        except (OSError, TimeoutError, ValueError):
            return False
        return False

    async def _stop(self, rt: PodRuntime, grace: float) -> None:
        """SIGTERM every container, SIGKILL after ``grace`` seconds, release the address."""
        rt.stopping = True
        procs = [c.proc for c in rt.containers.values() if c.proc is not None and c.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*(p.wait() for p in procs))
        except TimeoutError:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for task in rt.tasks:
            task.cancel()
        self.runtimes.pop(rt.key, None)
        self.free_ips.append(rt.ip)

    # -- status ------------------------------------------------------------------------------------------------

    def _publish(self, rt: PodRuntime) -> None:
        """The pod status from what the kubelet has seen (``generateAPIPodStatus``), to the status manager."""
        if rt.stopping:
            return
        statuses = []
        for c in rt.containers.values():
            seen = c.seen
            state: Obj
            if seen.state == "running":
                state = {"running": {"startedAt": seen.started_at}}
            elif seen.state == "terminated":
                state = {"terminated": {"exitCode": seen.exit_code, "reason": seen.reason,
                                        "startedAt": seen.started_at, "finishedAt": seen.finished_at}}  # fmt: skip
            else:
                state = {"waiting": {"reason": seen.reason, "message": seen.message}}
            ready = (c.ready if c.spec.get("readinessProbe") else True) and seen.state == "running"
            statuses.append({
                "name": c.name, "image": c.spec.get("image", ""), "imageID": "",
                "containerID": f"process://{seen.pid}" if seen.pid else "", "ready": ready,
                "started": seen.state == "running", "restartCount": seen.restarts, "state": state,
            })  # fmt: skip
        containers_ready = rt.containers_ready()
        all_ready = containers_ready and rt.gates_open
        states = [c.seen.state for c in rt.containers.values()]
        phase = "Running"
        if all(s == "terminated" for s in states) and rt.restart_policy != "Always":
            failed = any(c.seen.exit_code != 0 for c in rt.containers.values())
            phase = "Failed" if failed else "Succeeded"
        elif not rt.sandbox_seen or any(s == "waiting" and c.seen.restarts == 0
                                        for s, c in zip(states, rt.containers.values(), strict=True)):  # fmt: skip
            phase = "Pending"
        conditions = []
        for kind, value in (("Initialized", True), ("Ready", all_ready), ("ContainersReady", containers_ready),
                            ("PodScheduled", True)):  # fmt: skip
            text = "True" if value else "False"
            previous = rt.transitions.get(kind)
            if previous is None or previous[0] != text:
                rt.transitions[kind] = (text, timestamps.now())
            conditions.append({"type": kind, "status": text, "lastTransitionTime": rt.transitions[kind][1]})
        status: Obj = {"phase": phase, "hostIP": self.node_ip, "startTime": rt.start_time, "conditions": conditions,
                       "containerStatuses": statuses}  # fmt: skip
        if rt.sandbox_seen:
            status["podIP"] = rt.ip
            status["podIPs"] = [{"ip": rt.ip}]
        self.status.set(rt.namespace, rt.name, rt.uid, status)

    # -- environment -------------------------------------------------------------------------------------------

    async def _base_env(self, pod: Obj, rt: PodRuntime) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")}
        env.pop("KUBECONFIG", None)
        env.update({"POD_IP": rt.ip, "HOSTNAME": pod["metadata"]["name"]})
        kubeconfig = await self._service_account_kubeconfig(pod, rt)
        if kubeconfig:
            env["KUBECONFIG"] = kubeconfig
        return env

    async def _container_env(self, pod: Obj, container: Obj, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        ports = container.get("ports") or []
        if ports:
            env["PORT"] = str(ports[0]["containerPort"])
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for ref_key, resource in (("configMapRef", r.CONFIGMAPS), ("secretRef", r.SECRETS)):
                if ref_key in source:
                    ref = source[ref_key]
                    data = await self._data(resource, ref["name"], pod, bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            value = await self._env_value(pod, var, env)
            if value is not None:
                env[var["name"]] = value
        return env

    async def _env_value(self, pod: Obj, var: Obj, env: Mapping[str, str]) -> str | None:
        if "value" in var:
            return _expand(str(var["value"]), env)
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            return _field(pod, source["fieldRef"]["fieldPath"], self.runtimes[key_of(pod)].ip, self.node_ip)
        for ref_key, resource in (("configMapKeyRef", r.CONFIGMAPS), ("secretKeyRef", r.SECRETS)):
            if ref_key in source:
                ref = source[ref_key]
                data = await self._data(resource, ref["name"], pod, bool(ref.get("optional")))
                return data.get(ref["key"])
        if "resourceFieldRef" in source:
            return "0"
        return ""

    async def _data(self, resource: r.Resource, name: str, pod: Obj, optional: bool) -> dict[str, str]:
        try:
            obj = await self.objects.get(resource, name, pod["metadata"]["namespace"])
        except NotFound:
            if optional:
                return {}
            raise
        data: dict[str, str] = dict(obj.get("data") or {})
        if resource is r.SECRETS:
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return data

    async def _service_account_kubeconfig(self, pod: Obj, rt: PodRuntime) -> str | None:
        """A kubeconfig holding the pod's service-account token (the kubelet would mount it as files)."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = [m for c in pod["spec"].get("containers", []) for m in c.get("volumeMounts") or []]
        mount = next((m for m in mounts if m.get("mountPath") == SA_MOUNT), None)
        if mount is None or mount["name"] not in volumes:
            return None
        volume = volumes[mount["name"]]
        namespace = pod["metadata"]["namespace"]
        token: str | None = None
        if "secret" in volume:
            secret = await self.objects.get(r.SECRETS, volume["secret"]["secretName"], namespace)
            token = base64.b64decode(secret["data"]["token"]).decode()
        else:
            sa = pod["spec"].get("serviceAccountName", "default")
            request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": []}}
            result = await self.client.request("POST", r.SERVICEACCOUNTS.path(namespace, sa, "token"), body=request)
            token = result["status"]["token"]
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "c", "cluster": {"server": self.server, "certificate-authority-data": self.ca_data}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
        }  # fmt: skip
        path = rt.directory / "serviceaccount.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return str(path)

    # -- main --------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.register()
        tasks = [
            asyncio.create_task(self.heartbeat(), name="heartbeat"),
            asyncio.create_task(self.relister.run(), name="pleg"),
            asyncio.create_task(self.status.run(), name="status-manager"),
            self.pods.start(),
        ]
        log.info("node %s (zone %s, pods at %s.x) is up; kubelet timing: %s", self.name, self.zone,
                 self.ip_prefix, self.timing.describe())  # fmt: skip
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()


def _port(value: Any, container: Obj) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"unknown named port {value!r}")


_FIELD_LABEL = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _field(pod: Obj, path: str, pod_ip: str, node_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": node_ip,
    }  # fmt: skip
    if path in simple:
        return str(simple[path])
    match = _FIELD_LABEL.fullmatch(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ValueError(f"unsupported fieldRef {path!r}")


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in env values, command and args."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def main() -> None:
    parser = argparse.ArgumentParser(description="devcluster simulated kubelet (one node)")
    parser.add_argument("--node", required=True)
    parser.add_argument("--zone", required=True)
    parser.add_argument("--ip-prefix", required=True)
    parser.add_argument("--cpu", default="4")
    parser.add_argument("--memory", default="8Gi")
    parser.add_argument("--pods", default="110")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument(
        "--timing",
        default="realistic",
        choices=("realistic", "instant"),
        help="kubelet status timing (docs/kubelet-model.md)",
    )
    parser.add_argument("--relist-seconds", type=float, default=None, help="PLEG relist period (default 1)")
    args = parser.parse_args()
    timing = Timing.named(args.timing, args.relist_seconds)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kubeconfig = Path(os.environ["KUBECONFIG"])
    raw = yaml.safe_load(kubeconfig.read_text())
    cluster = raw["clusters"][0]["cluster"]

    async def run() -> None:
        limit = RateLimit(timing.api_qps, timing.api_burst) if timing.api_qps else None
        async with (
            await KubeClient.from_environment(user_agent=f"nodesim/{args.node}", rate_limit=limit) as client,
            await KubeClient.from_environment(user_agent=f"nodesim/{args.node}/heartbeat") as heartbeats,
        ):
            ca = cluster["certificate-authority-data"]
            await NodeSim(client, heartbeats, args, cluster["server"], ca, timing).run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
