"""What the GPU tier looks like: pod status classification and metrics scraping.

Pure parts (parse Prometheus text, classify pod status dicts, assemble an
``Observation``) are separate from the I/O edge (concurrent scraping of
``podIP:port/metrics``, or one Prometheus instant query). A pod whose metrics
cannot be read maps to ``None``: unknown, never healthy.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from voiceops_contract import metrics as m
from voiceops_contract.pod import DEFAULT_PORT, PATH_METRICS

from voiceops_operator.names import HTTP_PORT_NAME
from voiceops_operator.policy import GPUFault, GPUMetrics, Observation, PodObservation

# The kubelet's reason for a container waiting to restart (read, never written: not ours).
CRASH_LOOP_WAITING_REASON = "CrashLoopBackOff"
ERROR_TERMINATIONS = frozenset({"OOMKilled", "Error", "ContainerCannotRun", "StartError"})
# A container running again after an error exit is still crash-looping until it has run
# this long: the kubelet's own measure (its restart back-off resets after 10 minutes up).
CRASH_LOOP_MEMORY_SECONDS = 600.0

_READ = frozenset(spec.name for spec in m.OPERATOR_READS)


class MetricsParseError(ValueError):
    """The /metrics body is not Prometheus text."""


# --- metrics ------------------------------------------------------------------


def parse_gpu_metrics(text: str) -> GPUMetrics:
    """Prometheus text → the few numbers the policy reads.

    Memory ratio is the highest used/total over the pod's GPUs; no GPU gauges
    (no GPU visible) gives ``memory_used_ratio=None``.
    """
    used: dict[str, float] = {}
    total: dict[str, float] = {}
    oom = in_flight = 0.0
    degraded = False
    faults: list[GPUFault] = []
    relevant, ours = _relevant_lines(text)
    if not ours:
        raise MetricsParseError("not Prometheus text from a voiceops pod: no voiceops_ samples")
    try:
        for family in text_string_to_metric_families(relevant):
            for sample in family.samples:
                name = sample.name
                if name not in _READ:
                    continue
                value = float(sample.value)
                if math.isnan(value):
                    continue
                if name == m.GPU_MEMORY_USED_BYTES.name:
                    used[sample.labels.get("gpu", "")] = value
                elif name == m.GPU_MEMORY_TOTAL_BYTES.name:
                    total[sample.labels.get("gpu", "")] = value
                elif name == m.CUDA_OOM_TOTAL.name:
                    oom += value
                elif name == m.REQUESTS_IN_FLIGHT.name:
                    in_flight += value
                elif name == m.DEGRADED.name:
                    degraded = degraded or value >= 0.5
                elif name == m.GPU_HEALTHY.name and value < 0.5:
                    labels = sample.labels
                    faults.append(
                        GPUFault(labels.get("gpu", ""), labels.get("uuid", ""),
                                 labels.get("reason", "unknown"))
                    )  # fmt: skip
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsParseError(f"not Prometheus text: {exc}") from exc
    return GPUMetrics(
        memory_used_ratio=_max_ratio(used, total),
        oom_total=oom,
        in_flight=in_flight,
        degraded=degraded,
        faults=tuple(sorted(faults, key=lambda f: f.gpu)),
    )


def _relevant_lines(text: str) -> tuple[str, bool]:
    """Only the sample lines the operator reads (a whole page costs far more: bench/README.md).

    Also says whether any line is a voiceops sample at all, so that a 200 answer
    from something else (an HTML page, another exporter) counts as unreadable.
    """
    keep: list[str] = []
    ours = False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        cut = len(line)
        for sep in ("{", " "):
            at = line.find(sep)
            if 0 <= at < cut:
                cut = at
        name = line[:cut]
        if name.startswith(m.PREFIX):
            ours = True
            if name in _READ:
                keep.append(line)
    return "\n".join(keep) + "\n", ours


def _max_ratio(used: Mapping[str, float], total: Mapping[str, float]) -> float | None:
    ratios = [used[g] / total[g] for g in used if total.get(g, 0) > 0]
    return max(ratios) if ratios else None


# --- pod status ----------------------------------------------------------------


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return None


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    cond = _condition(pod.get("status") or {}, "Ready")
    return bool(cond and cond.get("status") == "True")


def pod_metrics_url(pod: Mapping[str, Any]) -> str | None:
    """``http://podIP:port/metrics`` with the container port named ``http``."""
    base = pod_base_url(pod)
    return None if base is None else f"{base}{PATH_METRICS}"


def pod_base_url(pod: Mapping[str, Any]) -> str | None:
    """``http://podIP:port`` of the container port named ``http``; None before the pod has
    an address."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    port = DEFAULT_PORT
    for container in (pod.get("spec") or {}).get("containers") or ():
        for p in container.get("ports") or ():
            if p.get("name") == HTTP_PORT_NAME and p.get("containerPort"):
                port = int(p["containerPort"])
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def classify_pod(
    pod: Mapping[str, Any], now: float, metrics: GPUMetrics | None = None
) -> PodObservation:
    """A pod dict (as the API returns it) → a PodObservation."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    ready = pod_is_ready(pod)
    restarts = 0
    crash_looping = False
    last_reason = ""
    for cs in status.get("containerStatuses") or ():
        restarts = max(restarts, int(cs.get("restartCount") or 0))
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        if waiting.get("reason") == CRASH_LOOP_WAITING_REASON:
            crash_looping = True
        if _failed(terminated):
            crash_looping = True
            last_reason = str(terminated.get("reason") or "Error")
        last_terminated = (cs.get("lastState") or {}).get("terminated") or {}
        if last_terminated.get("reason") and not last_reason:
            last_reason = str(last_terminated["reason"])
        if "running" in state and not cs.get("ready") and _failed(last_terminated):
            # Between two crashes the container runs, not yet ready. One its kubelet says
            # is ready (the pod unready for its node) or that has run long since its
            # last failure is not crash-looping.
            finished = _timestamp(last_terminated.get("finishedAt"))
            if finished is not None and now - finished < CRASH_LOOP_MEMORY_SECONDS:
                crash_looping = True
    unschedulable_since = None
    message = ""
    scheduled = _condition(status, "PodScheduled")
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        since = _timestamp(scheduled.get("lastTransitionTime"))
        if since is None:
            since = _timestamp(meta.get("creationTimestamp"))
        unschedulable_since = since if since is not None else now
        message = str(scheduled.get("message") or "")
    return PodObservation(
        name=str(meta.get("name") or ""),
        phase=phase,
        ready=ready,
        restarts=restarts,
        crash_looping=crash_looping,
        unschedulable_since=unschedulable_since,
        unschedulable_message=message,
        last_termination_reason=last_reason,
        metrics=metrics if ready else None,
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        gpu_faults=metrics.faults if metrics is not None else (),
    )


def _failed(terminated: Mapping[str, Any]) -> bool:
    return terminated.get("reason") in ERROR_TERMINATIONS or bool(terminated.get("exitCode"))


def live_pods(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods that are not being deleted (terminating pods take no new traffic)."""
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]


def build_observation(
    now: float,
    gpu_pods: Sequence[Mapping[str, Any]],
    fallback_pods: Sequence[Mapping[str, Any]],
    gpu_metrics: Mapping[str, GPUMetrics | None],
    gpu_replicas: int,
) -> Observation:
    """Assemble what the policy sees; ``gpu_metrics`` maps pod name → metrics or None."""
    gpu = tuple(
        classify_pod(p, now, gpu_metrics.get((p.get("metadata") or {}).get("name", "")))
        for p in sorted(live_pods(gpu_pods), key=lambda p: p["metadata"]["name"])
    )
    return Observation(
        time=now,
        gpu_pods=gpu,
        gpu_replicas=gpu_replicas,
        fallback_ready=sum(1 for p in live_pods(fallback_pods) if pod_is_ready(p)),
    )


# --- I/O edge: scraping ------------------------------------------------------------


@dataclass
class ScrapeResult:
    metrics: dict[str, GPUMetrics | None]
    errors: dict[str, str]  # pod name → why its metrics are unknown


class PodScraper:
    """Scrapes many pods' /metrics concurrently, bounded, with a short timeout.

    One instance per operator process (its session and semaphore are shared by
    every VoiceService's loop, so a slow pod cannot starve the others).
    """

    def __init__(
        self, session: aiohttp.ClientSession, timeout_seconds: float, concurrency: int = 64
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._limit = asyncio.Semaphore(concurrency)

    async def scrape_one(self, url: str) -> GPUMetrics:
        async with (
            self._limit,
            self._session.get(url, timeout=self._timeout) as resp,
        ):
            if resp.status != 200:
                raise MetricsParseError(f"HTTP {resp.status} from {url}")
            return parse_gpu_metrics(await resp.text())

    async def scrape(self, pods: Sequence[Mapping[str, Any]]) -> ScrapeResult:
        """Metrics of every running pod in ``pods``; failures become unknown (None).

        Unready pods too: a GPU hardware fault makes its pod unready, and the operator
        must still see the fault to replace the pod. Their failures are not errors
        (a starting pod does not answer yet).
        """
        targets: dict[str, str] = {}
        errors: dict[str, str] = {}
        unready: set[str] = set()
        for pod in live_pods(pods):
            name = pod["metadata"]["name"]
            if not pod_is_ready(pod):
                if (pod.get("status") or {}).get("phase") != "Running":
                    continue
                unready.add(name)
            url = pod_metrics_url(pod)
            if url is None:
                errors[name] = "pod has no IP"
                continue
            targets[name] = url
        results = await asyncio.gather(
            *(self.scrape_one(url) for url in targets.values()), return_exceptions=True
        )
        out: dict[str, GPUMetrics | None] = dict.fromkeys(errors)
        for name, result in zip(targets, results, strict=True):
            if isinstance(result, GPUMetrics):
                out[name] = result
            elif isinstance(result, Exception):
                out[name] = None
                if name not in unready:
                    errors[name] = f"{type(result).__name__}: {result}".rstrip(": ")
            else:  # CancelledError and friends: not ours to swallow
                raise result
        return ScrapeResult(out, errors)


class PrometheusSource:
    """Reads the same metrics from a Prometheus server (``/api/v1/query``)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, timeout_seconds: float
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    @staticmethod
    def query_for(namespace: str, pod_names: Sequence[str]) -> str:
        names = "|".join(sorted(pod_names))
        wanted = "|".join(sorted(_READ))
        return f'{{__name__=~"{wanted}",namespace="{namespace}",pod=~"{names}"}}'

    async def scrape(self, namespace: str, pods: Sequence[Mapping[str, Any]]) -> ScrapeResult:
        ready = [p["metadata"]["name"] for p in live_pods(pods) if pod_is_ready(p)]
        if not ready:
            return ScrapeResult({}, {})
        try:
            async with self._session.get(
                self._url,
                params={"query": self.query_for(namespace, ready)},
                timeout=self._timeout,
            ) as resp:
                body = await resp.json()
                if resp.status != 200 or body.get("status") != "success":
                    raise MetricsParseError(f"Prometheus said {resp.status}: {body.get('error')}")
        except (aiohttp.ClientError, TimeoutError, MetricsParseError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            return ScrapeResult(dict.fromkeys(ready), dict.fromkeys(ready, why))
        return parse_prometheus_vector(body, ready)


def parse_prometheus_vector(body: Mapping[str, Any], pod_names: Sequence[str]) -> ScrapeResult:
    """An instant-query vector result → metrics per pod (no samples: unknown)."""
    lines: dict[str, list[str]] = {}
    for item in (body.get("data") or {}).get("result") or ():
        labels = item.get("metric") or {}
        pod = labels.get("pod")
        name = labels.get("__name__")
        value = (item.get("value") or [None, None])[1]
        if pod not in pod_names or name not in _READ or value is None:
            continue
        gpu = labels.get("gpu")
        label = f'{{gpu="{gpu}"}}' if gpu is not None else ""
        lines.setdefault(pod, []).append(f"{name}{label} {value}")
    out: dict[str, GPUMetrics | None] = {}
    errors: dict[str, str] = {}
    for pod in pod_names:
        if pod in lines:
            out[pod] = parse_gpu_metrics("\n".join(lines[pod]) + "\n")
        else:
            out[pod] = None
            errors[pod] = "no samples in Prometheus"
    return ScrapeResult(out, errors)
