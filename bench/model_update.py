"""The same model change to 3 GPU pods, InPlace and Rolling, on the local cluster (issue 17).

Real parts: the Kubernetes control plane, the operator process, ``voiceops-service``
processes (VITS with model versions derived from the bundled joe voice, on CPU here;
espeak on the fallback tier), both client kinds through the front Service
(``voiceops_localcluster.traffic``: the ``openai`` client with its defaults, and a
plain client with no retries at most 5 requests a second). Test double: the node
agent (kubelet and kube-proxy; pods in network namespaces, needs root), as in
``bench/failover_clients.py``.

In one cluster, 3 GPU pods, steady load throughout:

1. **InPlace**: ``spec.model`` v1 → v2 with ``updateStrategy: InPlace``. Wall time
   from the spec change until ``status.model`` says every pod runs v2; each pod's
   swap time (its ModelSwapped Event); GPU pods started (new pod UIDs); failed
   requests per client kind.
2. **Rolling** (the baseline, same run): v2 → v3 with ``updateStrategy: Rolling``
   (one spec change; the Deployment replaces the 3 pods, maxSurge 1). The same
   numbers. The surge needs a 4th GPU: the GPU node has 4.

    .venv/bin/python bench/model_update.py [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voiceops_localcluster.failover_cluster import NAME, FailoverCluster, failover_cluster
from voiceops_localcluster.traffic import Traffic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # testsupport: the derived model versions
from testsupport.model_versions import file_uri, reexported  # noqa: E402

GPU_PODS = 3
NODES = ("local-gpu-0:4:8", "local-cpu-0:0:16")
SWAP_SECONDS = re.compile(r"in ([0-9.]+)s\)")
RESULTS = Path(__file__).parent / "results" / "model_update.json"


def current_version(c: FailoverCluster) -> str:
    model = c.status().get("model") or {}
    if model.get("state") != "Updated":
        return ""
    return str((model.get("current") or {}).get("version", ""))


async def change(
    c: FailoverCluster, model: dict[str, Any], version: str, traffic: Traffic
) -> dict[str, Any]:
    """Apply ``model``; measure until every GPU pod runs ``version``."""
    seen_uids = {p["metadata"]["uid"] for p in c.ready_pods("gpu")}
    before = set(seen_uids)
    events_before = await swap_events(c)
    path = f"/apis/voiceops.io/v1alpha1/namespaces/{c.namespace}/voiceservices/{NAME}"
    began = time.monotonic()
    await c.api.request("PATCH", path, {"spec": {"model": model}}, patch="merge")
    deadline = began + 600
    while current_version(c) != version or len(c.ready_pods("gpu")) < GPU_PODS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{version} not on every GPU pod within 600 s: {c.status()}")
        for pod in c.pods.items.values():
            if (pod["metadata"].get("labels") or {}).get("voiceops.io/tier") == "gpu":
                seen_uids.add(pod["metadata"]["uid"])
        await asyncio.sleep(0.05)
    wall = time.monotonic() - began
    ended = time.monotonic()
    await asyncio.sleep(1)
    swaps = [s for s in await swap_events(c) if s not in events_before]
    out: dict[str, Any] = {
        "wall seconds": round(wall, 1),
        "GPU pods started": len(seen_uids - before),
        "swap seconds per pod": sorted(
            float(m.group(1)) for s in swaps if (m := SWAP_SECONDS.search(s))
        ),
    }
    for kind in ("plain", "openai"):
        during = traffic.of(kind, since=began, until=ended)
        out[kind] = {
            "requests": len(during),
            "failed": sum(1 for r in during if not r.ok),
        }
    return out


async def swap_events(c: FailoverCluster) -> list[str]:
    found = await c.api.get(f"/api/v1/namespaces/{c.namespace}/events") or {}
    return [
        f"{e['metadata']['name']} {e.get('message', '')}"
        for e in found.get("items") or []
        if e.get("reason") == "ModelSwapped"
    ]


async def run(work: Path, models: Path) -> dict[str, Any]:
    versions = {
        "v1": reexported(models / "v1"),
        "v2": reexported(models / "v2", length_scale=1.1),
        "v3": reexported(models / "v3", length_scale=0.9),
    }

    def model(version: str, strategy: str) -> dict[str, Any]:
        uri = file_uri(versions[version])
        return {"uri": uri, "version": version, "updateStrategy": strategy}

    spec = {
        "autoscaling": {"minReplicas": GPU_PODS, "maxReplicas": GPU_PODS},
        "model": model("v1", "InPlace"),
    }
    async with failover_cluster(work, 5, spec=spec, nodes=NODES) as c:
        await c.until(lambda: len(c.ready_pods("gpu")) == GPU_PODS, 300, "3 ready GPU pods")
        await c.until(lambda: current_version(c) == "v1", 60, "v1 recorded")
        traffic = Traffic(c.front_url, plain_interval_seconds=0.2)
        await traffic.discover()
        traffic.start()
        try:
            await asyncio.sleep(3)
            in_place = await change(c, model("v2", "InPlace"), "v2", traffic)
            await asyncio.sleep(3)
            rolling = await change(c, model("v3", "Rolling"), "v3", traffic)
        finally:
            await traffic.stop()
    return {"gpu pods": GPU_PODS, "InPlace (v1 → v2)": in_place, "Rolling (v2 → v3)": rolling}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS, help="write the results here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="voiceops-bench-model-update-"))
    # Outside /tmp: a pod's /tmp is its own emptyDir.
    models = Path(tempfile.mkdtemp(prefix="voiceops-models-", dir="/var/tmp"))
    try:
        results = asyncio.run(run(work, models))
    finally:
        shutil.rmtree(models, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
