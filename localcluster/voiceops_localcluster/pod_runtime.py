"""The node agent's container runtime: each container of a pod is a local process.

A runtime owns the container states of one bound pod and reports changes
through a callback; the node agent turns :meth:`PodRuntime.status` into the
pod's status. Each container runs as a local process in its own process
group, on the pod's address, with stdout/stderr in a log file; probes
(startup, readiness, liveness: httpGet, tcpSocket, exec) drive readiness and
restarts; a process that exits is restarted with the kubelet's exponential
back-off (10 s doubling to 300 s, times ``time_scale``), shown as
``CrashLoopBackOff`` from the second failure on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

Obj = dict[str, Any]

BACKOFF_BASE_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 300.0
BACKOFF_RESET_SECONDS = 600.0  # a container that ran this long starts its back-off afresh


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """What the kubelet knows about one container (the source of containerStatuses)."""

    name: str
    image: str
    restart_count: int = 0
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str = ""
    ready: bool = False
    started: bool = False
    last_terminated: Obj | None = None

    def as_status(self, pod_name: str) -> Obj:
        if self.state == "running":
            state: Obj = {"running": {"startedAt": self.started_at}}
        elif self.state == "waiting":
            state = {"waiting": {"reason": self.reason}}
            if self.message:
                state["waiting"]["message"] = self.message
        else:
            state = {"terminated": dict(self.last_terminated or {})}
        return {
            "name": self.name,
            "image": self.image,
            "imageID": f"local://{self.image}",
            "containerID": f"local://{pod_name}/{self.name}/{self.restart_count}",
            "restartCount": self.restart_count,
            "ready": self.ready,
            "started": self.started,
            "state": state,
            "lastState": {"terminated": dict(self.last_terminated)} if self.last_terminated else {},
        }


def _condition(kind: str, ok: bool, since: str, reason: str = "") -> Obj:
    cond: Obj = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": since,
    }
    if not ok and reason:
        cond["reason"] = reason
    return cond


@dataclass
class RuntimeContext:
    """Everything a runtime needs from the kubelet."""

    pod: Obj
    node: str
    ip: str
    time_scale: float
    on_change: Callable[[], None]
    log_dir: Path
    image_commands: dict[str, list[str]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    resolve_env_ref: Callable[[Obj], str | None] = lambda ref: None
    grace_cap_seconds: float = 5.0
    inert_ready_delay: float = 0.2


class PodRuntime:
    """Base: container states, transition times and the pod status they make."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self.pod_name = ctx.pod["metadata"]["name"]
        self.namespace = ctx.pod["metadata"]["namespace"]
        self.start_time = now_rfc3339()
        self.containers = [
            ContainerState(c["name"], c.get("image", ""))
            for c in (ctx.pod.get("spec") or {}).get("containers") or []
        ]
        self._transitions: dict[str, tuple[bool, str]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    def changed(self) -> None:
        self.ctx.on_change()

    def _since(self, kind: str, ok: bool) -> str:
        before = self._transitions.get(kind)
        if before is None or before[0] != ok:
            self._transitions[kind] = (ok, now_rfc3339())
        return self._transitions[kind][1]

    def status(self) -> Obj:
        """The pod status as a real kubelet would report it."""
        ever_ran = any(c.restart_count or c.state == "running" for c in self.containers)
        ready = bool(self.containers) and all(c.ready for c in self.containers)
        reason = "" if ready else "ContainersNotReady"
        conditions = [
            _condition("PodReadyToStartContainers", True, self._since("ToStart", True)),
            _condition("Initialized", True, self._since("Initialized", True)),
            _condition("Ready", ready, self._since("Ready", ready), reason),
            _condition("ContainersReady", ready, self._since("ContainersReady", ready), reason),
            _condition("PodScheduled", True, self._since("PodScheduled", True)),
        ]
        return {
            "phase": "Running" if ever_ran else "Pending",
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ctx.ip,
            "podIPs": [{"ip": self.ctx.ip}],
            "startTime": self.start_time,
            "qosClass": (self.ctx.pod.get("status") or {}).get("qosClass", "BestEffort"),
            "containerStatuses": [c.as_status(self.pod_name) for c in self.containers],
        }

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        self.stopping.set()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            # asyncio.wait, unlike awaiting each task, never swallows our own cancellation.
            await asyncio.wait(self.tasks)

    def record_exit(self, state: ContainerState, exit_code: int, reason: str) -> None:
        state.last_terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": state.started_at or now_rfc3339(),
            "finishedAt": now_rfc3339(),
            "containerID": f"local://{self.pod_name}/{state.name}/{state.restart_count}",
        }
        state.restart_count += 1
        state.ready = False
        state.started = False

    def backoff_seconds(self, state: ContainerState, streak: int) -> float:
        """Delay before restart number ``streak`` (1 = first failure: immediate)."""
        if streak <= 1:
            return 0.0
        return min(BACKOFF_BASE_SECONDS * 2 ** (streak - 2), BACKOFF_CAP_SECONDS)

    async def sleep(self, seconds: float) -> bool:
        """Sleep (scaled); False if the runtime is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds * self.ctx.time_scale)
        return not self.stopping.is_set()


class ProcessPodRuntime(PodRuntime):
    """Each container is a real local process on the pod's loopback IP."""

    def __init__(self, ctx: RuntimeContext) -> None:
        super().__init__(ctx)
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.specs = {c["name"]: c for c in (ctx.pod.get("spec") or {}).get("containers") or []}
        self.scratch = ctx.log_dir / f"{self.namespace}_{self.pod_name}.scratch"

    async def start(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        for state in self.containers:
            self.tasks.append(asyncio.create_task(self._supervise(state)))

    def log_path(self, container: str) -> Path:
        return self.ctx.log_dir / f"{self.namespace}_{self.pod_name}_{container}.log"

    # ------------------------------------------------------------ launching
    def command_for(self, spec: Obj) -> list[str]:
        """argv from the container's command/args, else the image → command mapping."""
        image = spec.get("image", "")
        entry = list(spec.get("command") or [])
        if not entry:
            for fragment, argv in self.ctx.image_commands.items():
                if fragment in image:
                    entry = list(argv)
                    break
        if not entry:
            raise LookupError(
                f"no command for image {image!r}: set container.command or map the image in "
                "KubeletConfig.image_commands"
            )
        resolved = shutil.which(entry[0], path=self._path()) or entry[0]
        return [resolved, *entry[1:], *(spec.get("args") or [])]

    def _path(self) -> str:
        venv_bin = str(Path(sys.executable).parent)
        return os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")])

    def env_for(self, spec: Obj) -> dict[str, str]:
        env = {
            "PATH": self._path(),
            "HOME": str(self.scratch),
            "TMPDIR": str(self.scratch),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": self.pod_name,
            **self.ctx.extra_env,
        }
        for item in spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif "valueFrom" in item:
                value = self.ctx.resolve_env_ref(
                    {
                        **item["valueFrom"],
                        "_pod": self.ctx.pod,
                        "_ip": self.ctx.ip,
                        "_node": self.ctx.node,
                    }
                )
                if value is not None:
                    env[item["name"]] = value
        env["VOICEOPS_HOST"] = self.ctx.ip
        port = self._container_port(spec)
        if port is not None:
            env.setdefault("VOICEOPS_PORT", str(port))
        return env

    @staticmethod
    def _container_port(spec: Obj, name: Any = None) -> int | None:
        ports = spec.get("ports") or []
        if isinstance(name, int):
            return name
        if isinstance(name, str) and name.isdigit():
            return int(name)
        for port in ports:
            if name is None or port.get("name") == name:
                return int(port["containerPort"])
        return None

    async def _launch(self, state: ContainerState) -> asyncio.subprocess.Process:
        spec = self.specs[state.name]
        argv = self.command_for(spec)
        env = self.env_for(spec)
        # A tiny local file opened once per container start; the child inherits the descriptor.
        log_file = open(self.log_path(state.name), "ab")  # noqa: SIM115, ASYNC230
        try:
            log_file.write(f"--- start {now_rfc3339()} {' '.join(argv)}\n".encode())
            log_file.flush()
            return await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=str(self.scratch),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        finally:
            log_file.close()

    # ----------------------------------------------------------- supervising
    async def _supervise(self, state: ContainerState) -> None:
        streak = 0
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            try:
                proc = await self._launch(state)
            except (OSError, LookupError) as exc:
                state.state, state.reason, state.message = "waiting", "RunContainerError", str(exc)
                self.changed()
                streak += 1
                if not await self.sleep(max(self.backoff_seconds(state, streak), 1.0)):
                    return
                continue
            self.processes[state.name] = proc
            if self.stopping.is_set():
                await self.terminate(proc)
                return
            began = loop.time()
            state.state, state.reason, state.message = "running", "", ""
            state.started_at = now_rfc3339()
            self.changed()
            killed_by_probe = await self._watch_process(state, proc)
            if self.stopping.is_set():
                return
            code = proc.returncode if proc.returncode is not None else -9
            exit_code = 128 - code if code < 0 else code
            if killed_by_probe:
                reason = "Error"
            elif exit_code == 137:
                reason = "OOMKilled"
            else:
                reason = "Completed" if exit_code == 0 else "Error"
            self.record_exit(state, exit_code, reason)
            if loop.time() - began > BACKOFF_RESET_SECONDS * self.ctx.time_scale:
                streak = 0
            streak += 1
            delay = self.backoff_seconds(state, streak)
            if delay:
                state.state, state.reason = "waiting", "CrashLoopBackOff"
                state.message = (
                    f"back-off {int(delay)}s restarting failed "
                    f"container={state.name} pod={self.pod_name}"
                )
            else:
                state.state, state.reason, state.message = "waiting", "ContainerCreating", ""
            self.changed()
            if delay and not await self.sleep(delay):
                return

    async def _watch_process(self, state: ContainerState, proc: asyncio.subprocess.Process) -> bool:
        """Run probes until the process exits; True if a failing probe killed it."""
        probes = asyncio.create_task(self._probe(state, proc))
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {probes, exited, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
            if stopping in done:
                await self.terminate(proc)
                return False
            if probes in done and not exited.done() and probes.result():
                await self.terminate(proc)
                await exited
                return True
            await exited
            return False
        finally:
            for task in (probes, exited, stopping):
                task.cancel()
            state.ready = False

    async def terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the process group, SIGKILL after the (scaled, capped) grace period."""
        if proc.returncode is not None:
            return
        grace = float((self.ctx.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        grace = min(grace * self.ctx.time_scale, self.ctx.grace_cap_seconds)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def _probe(self, state: ContainerState, proc: asyncio.subprocess.Process) -> bool:
        """Probe loop; returns True when liveness/startup says the container must restart."""
        spec = self.specs[state.name]
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            startup = spec.get("startupProbe")
            if startup and not await self._until_success(session, spec, startup):
                return True
            state.started = True
            self.changed()
            readiness = asyncio.create_task(self._readiness(session, spec, state))
            try:
                liveness = spec.get("livenessProbe")
                if liveness is None:
                    await proc.wait()
                    return False
                return await self._liveness(session, spec, liveness, state)
            finally:
                readiness.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await readiness

    async def _until_success(self, session: aiohttp.ClientSession, spec: Obj, probe: Obj) -> bool:
        if not await self.sleep(probe.get("initialDelaySeconds", 0)):
            return False
        failures = 0
        while True:
            if await self.check(session, spec, probe):
                return True
            failures += 1
            if failures >= probe.get("failureThreshold", 3):
                return False
            if not await self.sleep(probe.get("periodSeconds", 10)):
                return False

    async def _readiness(
        self, session: aiohttp.ClientSession, spec: Obj, state: ContainerState
    ) -> None:
        probe = spec.get("readinessProbe")
        if probe is None:
            state.ready = True
            self.changed()
            return
        if not await self.sleep(probe.get("initialDelaySeconds", 0)):
            return
        successes = failures = 0
        while True:
            ok = await self.check(session, spec, probe)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            new = state.ready
            if ok and successes >= probe.get("successThreshold", 1):
                new = True
            elif not ok and failures >= probe.get("failureThreshold", 3):
                new = False
            if new != state.ready:
                state.ready = new
                self.changed()
            if not await self.sleep(probe.get("periodSeconds", 10)):
                return

    async def _liveness(
        self, session: aiohttp.ClientSession, spec: Obj, probe: Obj, state: ContainerState
    ) -> bool:
        if not await self.sleep(probe.get("initialDelaySeconds", 0)):
            return False
        failures = 0
        while True:
            if await self.check(session, spec, probe):
                failures = 0
            else:
                failures += 1
                if failures >= probe.get("failureThreshold", 3):
                    log.info(
                        "pod %s/%s container %s failed liveness; restarting",
                        self.namespace,
                        self.pod_name,
                        state.name,
                    )
                    return True
            if not await self.sleep(probe.get("periodSeconds", 10)):
                return False

    async def check(self, session: aiohttp.ClientSession, spec: Obj, probe: Obj) -> bool:
        """One probe attempt against the pod's IP."""
        limit = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                action = probe["httpGet"]
                port = self._container_port(spec, action.get("port"))
                scheme = action.get("scheme", "HTTP").lower()
                host = action.get("host") or self.ctx.ip
                url = f"{scheme}://{host}:{port}{action.get('path', '/')}"
                headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
                async with session.get(
                    url, headers=headers, timeout=aiohttp.ClientTimeout(total=limit)
                ) as rsp:
                    return 200 <= rsp.status < 400
            if "tcpSocket" in probe:
                port = self._container_port(spec, probe["tcpSocket"].get("port"))
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.ctx.ip, port), limit
                )
                writer.close()
                return True
            if "exec" in probe:
                command = probe["exec"].get("command") or []
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    env=self.env_for(spec),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    return await asyncio.wait_for(proc.wait(), limit) == 0
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
                    return False
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        log.warning("probe kind not supported by the node agent: %s", sorted(probe))
        return False

    async def stop(self) -> None:
        """Terminate every process; supervisors end on their own (a cancelled spawn could
        orphan a child), and are cancelled only if they overrun the grace period."""
        self.stopping.set()
        await self._terminate_all()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=self.ctx.grace_cap_seconds + 5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self._terminate_all()  # anything spawned while we were stopping

    async def _terminate_all(self) -> None:
        await asyncio.gather(
            *(self.terminate(p) for p in list(self.processes.values())), return_exceptions=True
        )

    def kill(self, container: str | None = None, sig: int = signal.SIGKILL) -> bool:
        """Chaos: signal a container's process group; False if nothing ran."""
        hit = False
        for name, proc in self.processes.items():
            if container in (None, name) and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                    hit = True
        return hit
