"""A Prometheus stand-in for pods on loopback addresses (TEST DOUBLE of Prometheus' query API).

Without root the node agent cannot give pods real addresses: each pod listens on a
loopback address and ``status.podIP`` is its 10.244/14 twin, which nothing on this
machine routes (``node_agent``). The operator scrapes ``podIP:port/metrics``, so it
could not see the GPU tier, and must not try: packets to 10.244/14 would follow the
default route off the machine. Instead the demo points the operator's
``prometheus_url`` setting (what a cluster with Prometheus uses) at this server:
each instant query (``/api/v1/query``) scrapes the pods it names at the addresses the
node agent gave them and answers with a vector, as Prometheus would.

Only what the operator asks is understood: one selector of label matchers
(``{__name__=~"a|b",namespace="ns",pod=~"p1|p2"}``), ``=`` and ``=~``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from voiceops_contract import pod as pod_contract

Obj = dict[str, Any]
# The pods to consider, and where this machine reaches a pod's serving port ("host:port").
PodSource = Callable[[], list[Obj]]
AddressOf = Callable[[Obj], str | None]

MATCHER = re.compile(r'(\w+)\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')
SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SCRAPE_TIMEOUT_SECONDS = 1.0


def parse_selector(query: str) -> dict[str, tuple[str, str]]:
    """``{a="x",b=~"y|z"}`` → ``{"a": ("=", "x"), "b": ("=~", "y|z")}``; ValueError otherwise."""
    body = query.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError(f"only a bare selector {{...}} is understood, not {query!r}")
    matchers = {label: (op, value) for label, op, value in MATCHER.findall(body)}
    if not matchers:
        raise ValueError(f"no label matchers in {query!r}")
    return matchers


def selected(matchers: dict[str, tuple[str, str]], labels: dict[str, str]) -> bool:
    """Whether every matcher holds for ``labels`` (``=~`` is anchored, as in PromQL)."""
    for label, (op, wanted) in matchers.items():
        value = labels.get(label, "")
        if (op == "=" and value != wanted) or (op == "=~" and not re.fullmatch(wanted, value)):
            return False
    return True


def parse_samples(text: str) -> list[tuple[str, dict[str, str], str]]:
    """Prometheus text exposition → (metric name, labels, value as written) per sample."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        found = SAMPLE.match(line)
        if found is None:
            continue
        name, labels, value = found.groups()
        samples.append((name, dict(LABEL.findall(labels or "")), value))
    return samples


class PrometheusStandIn:
    """``/api/v1/query`` on a free loopback port (``url`` once started)."""

    def __init__(self, pods: PodSource, address_of: AddressOf) -> None:
        self.pods = pods
        self.address_of = address_of
        self.url = ""
        self.queries = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)
        )
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _query(self, request: web.Request) -> web.Response:
        self.queries += 1
        try:
            matchers = parse_selector(request.query.get("query", ""))
        except ValueError as error:
            body = {"status": "error", "errorType": "bad_data", "error": str(error)}
            return web.json_response(body, status=400)
        targets = [
            pod
            for pod in self.pods()
            if selected(
                {k: v for k, v in matchers.items() if k in ("namespace", "pod")},
                {"namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"]},
            )
        ]
        scraped = await asyncio.gather(*(self._scrape(pod) for pod in targets))
        now = time.time()
        result = []
        for pod, samples in zip(targets, scraped, strict=True):
            for name, labels, value in samples:
                series = {
                    **labels,
                    "__name__": name,
                    "namespace": pod["metadata"]["namespace"],
                    "pod": pod["metadata"]["name"],
                }
                if selected(matchers, series):
                    result.append({"metric": series, "value": [now, value]})
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    async def _scrape(self, pod: Obj) -> list[tuple[str, dict[str, str], str]]:
        """The pod's samples; none when it cannot be read (the operator: unknown)."""
        address = self.address_of(pod)
        if address is None or self._session is None:
            return []
        try:
            async with self._session.get(f"http://{address}{pod_contract.PATH_METRICS}") as resp:
                if resp.status != 200:
                    return []
                return parse_samples(await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            return []
