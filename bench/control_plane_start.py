"""Local control plane: start → every component healthy, and what the binaries cost.

Real parts: etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from
Go modules (``voiceops_localcluster.kube_binaries``), started by
``voiceops_localcluster.control_plane`` (CA and certificates made fresh each time, as
the launcher does). Reports the median and spread of start → healthy over ``--runs``
starts, the binaries' sizes and the cold build time recorded when they were built (a
cached build takes no time).

    .venv/bin/python bench/control_plane_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from voiceops_localcluster.control_plane import ControlPlane
from voiceops_localcluster.kube_binaries import build, build_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    started = time.monotonic()
    binaries = build()
    cached = time.monotonic() - started
    seconds = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            plane = ControlPlane(Path(tmp), binaries)
            plane.start()
            seconds.append(plane.seconds_to_healthy)
            plane.stop()
    info_file = build_folder() / "build-info.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    result = {
        "start → healthy, median (s)": round(statistics.median(seconds), 2),
        "start → healthy, min..max (s)": [round(min(seconds), 2), round(max(seconds), 2)],
        "runs": args.runs,
        "binaries found in the cache (s)": round(cached, 3),
        "cold build (s)": info.get("build_seconds"),
        "sizes (MiB)": {
            name: round(size / 2**20, 1) for name, size in info.get("sizes_bytes", {}).items()
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
