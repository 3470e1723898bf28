"""``make demo``: the whole product on a local cluster (no Docker, no GPU).

Real: the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler: ``voiceops_localcluster.control_plane``), kubectl, the ``voiceops-operator
run`` process, the ``voiceops-service`` processes of both tiers (vits on CPU for the
GPU tier, espeak for the fallback tier), every HTTP call. Test doubles
(``voiceops_localcluster``): the nodes (``node_agent``: kubelet and kube-proxy, pods as local
processes with probes, one ``nvidia.com/gpu`` on ``local-gpu-0``) and, for pods on
loopback addresses (no root), a Prometheus stand-in the operator reads metrics
through. GPU memory pressure comes in through the service's token-guarded
``/admin/faults``, so the operator sees it the way it would on a real GPU: in the
pod's ``/metrics``.

Usage: ``python -m voiceops_localcluster.demo [--scenario basic|all] [--output DIR] [--keep-running]
[--pod-network auto|namespaces|loopback]``.

Modules, each depending only on those above it:

- ``options``: the command line (``DemoOptions``, ``parse_args``) and the repository paths.
- ``errors``: ``DemoError``, a step that missed its deadline or failed.
- ``facts``: pure helpers over WAV bytes and Kubernetes objects, and plain tables.
- ``report``: what the terminal shows and ``timeline.json`` keeps (``Timeline``,
  ``say``, ``ClusterWatcher``, fed by the API server's watches).
- ``prometheus``: ``PrometheusStandIn``, the operator's metrics queries answered by
  scraping pods on loopback addresses.
- ``cluster``: ``DemoCluster``, one run's control plane, node agent and operator:
  start, stop, apply the CRD and the example with kubectl, wait for and read state.
- ``scenario``: ``Demo``, the scenarios on that cluster: speech through the front
  Service, GPU faults, the final report.
- ``runner``: ``run_demo`` (signals, exit codes, cleanup) and ``main`` (logging).
- ``__main__``: ``python -m voiceops_localcluster.demo``.
"""

from .errors import DemoError
from .facts import WavFacts, printer_value, wav_facts
from .options import CRD_FILE, EXAMPLE_FILE, DemoOptions, parse_args
from .runner import main, run_demo
from .scenario import Demo

__all__ = [
    "CRD_FILE",
    "EXAMPLE_FILE",
    "Demo",
    "DemoError",
    "DemoOptions",
    "WavFacts",
    "main",
    "parse_args",
    "printer_value",
    "run_demo",
    "wav_facts",
]
