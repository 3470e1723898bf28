"""The real kubectl (``make tools`` puts it in .tools/bin) as a cluster's admin."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from voiceops_localcluster.control_plane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
CRD = ROOT / "crds" / "voiceservice.yaml"
CRD_NAME = "voiceservices.voiceops.io"


class Kubectl:
    """The real kubectl as the cluster's admin."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.plane.admin_kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    def json(self, *args: str) -> dict[str, Any]:
        return json.loads(self(*args, "-o", "json").stdout)

    def apply_crd(self, path: Path = CRD, within: float = 60.0) -> None:
        """Apply the CRD server-side (the API server compiles its CEL rules and checks their
        cost here) and wait until it is Established.

        Polled with ``get``: ``kubectl wait --for=condition=Established`` fails at once
        ("accessor error") when it reads the CRD before its first condition is written.
        """
        self("apply", "--server-side", "-f", str(path))
        deadline = time.monotonic() + within
        while True:
            conditions = (self.json("get", "crd", CRD_NAME).get("status") or {}).get(
                "conditions"
            ) or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{CRD_NAME} not Established within {within:g}s")
            time.sleep(0.1)
