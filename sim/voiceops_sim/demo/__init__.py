"""``make demo``: the whole product on a local simulated cluster (no Docker, no GPU).

Real: the ``voiceops-operator run`` process, the ``voiceops-service`` processes of
both tiers (vits on CPU for the GPU tier, espeak for the fallback tier), every
HTTP call. Test doubles (``voiceops_sim``): the Kubernetes API emulator, the
simulated kubelet (scheduler, Deployment controller, process pods on loopback
IPs, probes) and its Service proxy (kube-proxy stand-in). The "GPU" is a
simulated ``nvidia.com/gpu`` on a simulated node; GPU memory pressure comes in
through the service's token-guarded ``/admin/faults``, so the operator sees it
the way it would on a real GPU: in the pod's ``/metrics``.

Usage: ``python -m voiceops_sim.demo [--scenario basic|all] [--output DIR] [--keep-running]``.

Modules, each depending only on those above it:

- ``options``: the command line (``DemoOptions``, ``parse_args``) and the repository paths.
- ``errors``: ``DemoError``, a step that missed its deadline or failed.
- ``facts``: pure helpers over WAV bytes and Kubernetes objects, and plain tables.
- ``report``: what the terminal shows and ``timeline.json`` keeps (``Timeline``,
  ``say``, ``ClusterWatcher``).
- ``cluster``: ``DemoCluster``, one run's simulated cluster and operator: start,
  stop, apply the example, wait for and read its state.
- ``scenario``: ``Demo``, the scenarios on that cluster: speech through the front
  Service, GPU faults, the final report.
- ``runner``: ``run_demo`` (signals, exit codes, cleanup) and ``main`` (logging).
- ``__main__``: ``python -m voiceops_sim.demo``.
"""

from .errors import DemoError
from .facts import WavFacts, secret_data, wav_facts
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
    "run_demo",
    "secret_data",
    "wav_facts",
]
