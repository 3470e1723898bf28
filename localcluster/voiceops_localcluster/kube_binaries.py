"""The real Kubernetes control plane's binaries: built once from Go modules, then cached.

Kubernetes' release binaries cannot be downloaded on the machines this project runs
on, but every component builds from the Go module proxy: ``k8s.io/kubernetes`` with
each ``k8s.io/*`` staging module pinned to the matching ``v0.x.y`` (the kubernetes
module's own go.mod points them at ``./staging``, which a dependent module cannot
use), and etcd from ``go.etcd.io/etcd/server/v3``. ``build()`` writes a small Go
module of ours into the cache folder and builds etcd, kube-apiserver,
kube-controller-manager and kube-scheduler there; a second call finds them and
returns at once. ``build_metrics_server()`` does the same for metrics-server (the
resource metrics API an HPA reads), from its own module with its own dependencies.

Versions are pinned here and nowhere else. ``VOICEOPS_KUBE_BIN_DIR`` points at
binaries you already have (``setup-envtest``, a Kubernetes release, a kind node):
they are used as they are. ``VOICEOPS_KUBE_CACHE`` moves the cache (default
``~/.cache/voiceops/kube``).

    python -m voiceops_localcluster.kube_binaries          # build or find all; print the folder
    python -m voiceops_localcluster.kube_binaries --check  # only say whether they are there
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "1.35.4"
ETCD_VERSION = "3.6.5"  # what k8s.io/kubernetes v1.35.4 itself requires
METRICS_SERVER_VERSION = "0.8.0"
METRICS_SERVER = "metrics-server"
MIN_GO = (1, 26)
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
ENV_BIN_DIR = "VOICEOPS_KUBE_BIN_DIR"
ENV_CACHE = "VOICEOPS_KUBE_CACHE"

# Staging modules of k8s.io/kubernetes (its go.mod replaces them with ./staging/...).
STAGING = (
    "api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime",
    "client-go", "cloud-provider", "cluster-bootstrap", "code-generator", "component-base",
    "component-helpers", "controller-manager", "cri-api", "cri-client", "csi-translation-lib",
    "dynamic-resource-allocation", "endpointslice", "externaljwt", "kms", "kube-aggregator",
    "kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl", "kubelet", "metrics",
    "mount-utils", "pod-security-admission", "sample-apiserver", "sample-cli-plugin",
    "sample-controller",
)  # fmt: skip

ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


class BinariesError(RuntimeError):
    """What is missing or failed, and what to do about it."""


@dataclass(frozen=True)
class Binaries:
    folder: Path

    def path(self, component: str) -> Path:
        return self.folder / component

    def missing(self) -> list[str]:
        return [c for c in COMPONENTS if not os.access(self.path(c), os.X_OK)]


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "voiceops" / "kube")


def build_folder() -> Path:
    return cache_root() / f"k8s-v{KUBERNETES_VERSION}-etcd-v{ETCD_VERSION}"


def find() -> Binaries | None:
    """Binaries from ``VOICEOPS_KUBE_BIN_DIR``, else the cache; None when not built yet."""
    given = os.environ.get(ENV_BIN_DIR)
    if given:
        binaries = Binaries(Path(given))
        if missing := binaries.missing():
            raise BinariesError(
                f"{ENV_BIN_DIR}={given} lacks {', '.join(missing)} (executables named "
                f"{', '.join(COMPONENTS)}); unset it to build them from Go modules"
            )
        return binaries
    binaries = Binaries(build_folder() / "bin")
    return None if binaries.missing() else binaries


def metrics_server_folder() -> Path:
    return cache_root() / f"metrics-server-v{METRICS_SERVER_VERSION}"


def find_metrics_server() -> Path | None:
    """metrics-server from ``VOICEOPS_KUBE_BIN_DIR`` when it has one, else the cache."""
    given = os.environ.get(ENV_BIN_DIR)
    for folder in ([Path(given)] if given else []) + [metrics_server_folder() / "bin"]:
        if os.access(folder / METRICS_SERVER, os.X_OK):
            return folder / METRICS_SERVER
    return None


def build_metrics_server(log: bool = True) -> Path:
    """metrics-server, built into the cache first when it is not there."""
    found = find_metrics_server()
    if found is not None:
        return found
    go = _go()
    folder = metrics_server_folder()
    partial = folder / ".partial-bin"
    partial.mkdir(parents=True, exist_ok=True)
    package = f"sigs.k8s.io/metrics-server/cmd/metrics-server@v{METRICS_SERVER_VERSION}"
    if log:
        print(f"building {METRICS_SERVER} ({package}) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    # `go install pkg@version` builds with the module's own go.mod (its k8s.io versions).
    _run_go(
        [go, "install", "-trimpath", "-ldflags", "-s -w", package],
        cwd=folder,
        env={**os.environ, "CGO_ENABLED": "0", "GOBIN": str(partial), "GOFLAGS": ""},
        what=package,
    )
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    (partial / METRICS_SERVER).rename(bin_dir / METRICS_SERVER)  # whole or not at all
    partial.rmdir()
    info = {"metrics-server": f"v{METRICS_SERVER_VERSION}",
            "build_seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    (folder / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    return bin_dir / METRICS_SERVER


def _run_go(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BinariesError(
            f"go build {what} failed (exit {done.returncode}); its output ends:\n"
            + "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            + f"\nset {ENV_BIN_DIR} to use binaries you already have"
        )


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BinariesError(
            "no Go toolchain on the PATH: install Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]} to build the control plane once, or set {ENV_BIN_DIR} "
            f"to a folder with {', '.join(COMPONENTS)}"
        )
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"go(\d+)\.(\d+)", out)
    if found is None or (int(found[1]), int(found[2])) < MIN_GO:
        raise BinariesError(
            f"{out.strip() or 'go version failed'}: Go >= {MIN_GO[0]}.{MIN_GO[1]} is needed "
            f"to build Kubernetes v{KUBERNETES_VERSION}, or set {ENV_BIN_DIR}"
        )
    return go


def go_mod() -> str:
    minor = KUBERNETES_VERSION.split(".", 1)[1]
    replaces = "\n".join(f"\tk8s.io/{m} => k8s.io/{m} v0.{minor}" for m in STAGING)
    return (
        "module voiceops.local/kubebuild\n\n"
        f"go {MIN_GO[0]}.{MIN_GO[1]}\n\n"
        "require (\n"
        f"\tk8s.io/kubernetes v{KUBERNETES_VERSION}\n"
        f"\tgo.etcd.io/etcd/server/v3 v{ETCD_VERSION}\n"
        ")\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def _version_flags() -> str:
    major, minor, _ = KUBERNETES_VERSION.split(".")
    pkg = "k8s.io/component-base/version"
    pairs = {
        "gitVersion": f"v{KUBERNETES_VERSION}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    return " ".join(f"-X {pkg}.{k}={v}" for k, v in pairs.items())


def build(log: bool = True) -> Binaries:
    """The binaries, built into the cache first when they are not there."""
    found = find()
    if found is not None:
        return found
    go = _go()
    folder = build_folder()
    src = folder / "src"
    (src / "cmd" / "etcd").mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(go_mod())
    (src / "cmd" / "etcd" / "main.go").write_text(ETCD_MAIN)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    targets = {
        "etcd": "./cmd/etcd",
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    }
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    seconds: dict[str, float] = {}
    for name, package in targets.items():
        if log:
            print(f"building {name} ({package}) ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        _run_go(
            [go, "build", "-trimpath", "-ldflags", f"-s -w {_version_flags()}", "-o",
             str(bin_dir / f".{name}.partial"), package],
            cwd=src, env=env, what=package,
        )  # fmt: skip
        (bin_dir / f".{name}.partial").rename(bin_dir / name)  # whole or not at all
        seconds[name] = round(time.monotonic() - started, 1)
    info = {
        "kubernetes": f"v{KUBERNETES_VERSION}",
        "etcd": f"v{ETCD_VERSION}",
        "go": subprocess.run([go, "version"], capture_output=True, text=True).stdout.strip(),
        "build_seconds": seconds,
        "sizes_bytes": {n: (bin_dir / n).stat().st_size for n in COMPONENTS},
    }
    (folder / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    return Binaries(bin_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build (once) or find the control plane's binaries and metrics-server; "
        "print their folder."
    )
    parser.add_argument("--check", action="store_true", help="only report, never build")
    args = parser.parse_args(argv)
    try:
        binaries = find() if args.check else build()
        metrics_server = find_metrics_server() if args.check else build_metrics_server()
    except BinariesError as error:
        print(f"kube binaries: {error}", file=sys.stderr)
        return 2
    if binaries is None:
        print(f"kube binaries: not built yet (would go to {build_folder() / 'bin'})")
        return 1
    if metrics_server is None:
        print(f"metrics-server: not built yet (would go to {metrics_server_folder() / 'bin'})")
        return 1
    print(binaries.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
