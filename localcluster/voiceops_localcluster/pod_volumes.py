"""A pod's volumes for the node agent: written into a folder, bind-mounted at their paths.

A real kubelet materializes each volume on the node and the container runtime mounts
it into the container's file system. The node agent's containers are processes on
this machine's file system, so:

* Volumes with content (``secret``, ``configMap``, ``downwardAPI``, ``projected``
  with ``serviceAccountToken``/``secret``/``configMap``/``downwardAPI`` sources) are
  written into ``<scratch>/volumes/<name>/`` (``items``, ``defaultMode`` and ``mode``
  honoured; Secrets decoded) and bind-mounted at each container's ``mountPath``
  (``readOnly`` honoured, ``subPath`` too) in a mount namespace of the container's
  own, so the process reads ``/var/run/secrets/kubernetes.io/serviceaccount/token``
  or ``/etc/voiceops/routing-key/seed`` where the pod spec says. Missing mount points
  are created as empty directories on this machine (the mount namespace is private;
  the directories stay).
* ``emptyDir`` is not mounted: the process already has this machine's file system
  (an empty ``/tmp`` over it would hide the virtualenv a test checkout keeps there).
* Other sources (``persistentVolumeClaim``, ``hostPath``, ...) are refused with a
  message naming the volume, as a kubelet's ``FailedMount`` would.

Mount namespaces need root; :func:`can_mount` says whether this process has it.
"""

from __future__ import annotations

import base64
import os
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_MODE = 0o644
# The kubelet's default for a projected token with no expirationSeconds (1 h + 7 s).
DEFAULT_TOKEN_SECONDS = 3607
CONTENT_SOURCES = ("secret", "configMap", "downwardAPI", "projected")
NOT_MOUNTED_SOURCES = ("emptyDir",)

# The API calls the volumes need, answered by the node agent's client.
GetObject = Callable[[str], Awaitable[Obj | None]]
RequestToken = Callable[[str, Obj], Awaitable[str]]
ResolveField = Callable[[str], str | None]


class VolumeError(Exception):
    """A volume that cannot be set up (the kubelet's FailedMount / CreateContainerConfigError)."""


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


def can_mount() -> bool:
    """Bind mounts in a private mount namespace need root."""
    return os.geteuid() == 0


def needs_mounts(pod: Obj) -> bool:
    """Whether any volume of the pod has content to mount."""
    return any(_source_kind(v) in CONTENT_SOURCES for v in pod["spec"].get("volumes") or [])


def _source_kind(volume: Obj) -> str:
    return next((k for k in volume if k != "name"), "")


def _write(folder: Path, relative: str, data: bytes, mode: int) -> None:
    target = (folder / relative).resolve()
    if folder.resolve() not in target.parents:
        raise VolumeError(f"path {relative!r} leaves the volume")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)


def _key_values(obj: Obj, kind: str) -> dict[str, bytes]:
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    values = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return values


class PodVolumes:
    """Writes one pod's volumes into ``folder`` and says where each container mounts them."""

    def __init__(
        self,
        pod: Obj,
        folder: Path,
        get_object: GetObject,
        request_token: RequestToken,
        resolve_field: ResolveField,
    ) -> None:
        self.pod = pod
        self.folder = folder
        self.get_object = get_object
        self.request_token = request_token
        self.resolve_field = resolve_field

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    async def write(self) -> None:
        """Every content volume into ``<folder>/<name>``; VolumeError names what fails."""
        for volume in self.pod["spec"].get("volumes") or []:
            kind = _source_kind(volume)
            if kind in NOT_MOUNTED_SOURCES:
                continue
            if kind not in CONTENT_SOURCES:
                raise VolumeError(
                    f'volume "{volume["name"]}": {kind} volumes are not supported by the '
                    "node agent (secret, configMap, downwardAPI, projected, emptyDir are)"
                )
            target = self.folder / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            source = volume[kind]
            mode = int(source.get("defaultMode", DEFAULT_MODE))
            if kind == "projected":
                for item in source.get("sources") or []:
                    await self._projection(target, item, mode)
            elif kind == "downwardAPI":
                self._downward(target, source.get("items") or [], mode)
            else:
                await self._keys(target, kind, source, mode)

    async def _keys(self, target: Path, kind: str, source: Obj, mode: int) -> None:
        """A Secret's or ConfigMap's keys as files (``items`` picks and renames)."""
        api_kind = "Secret" if kind == "secret" else "ConfigMap"
        name = source.get("secretName") if kind == "secret" else source.get("name")
        plural = "secrets" if kind == "secret" else "configmaps"
        obj = await self.get_object(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        if obj is None:
            if source.get("optional"):
                return
            raise VolumeError(f'{api_kind.lower()} "{name}" not found')
        values = _key_values(obj, api_kind)
        items = source.get("items")
        if not items:
            for key, data in values.items():
                _write(target, key, data, mode)
            return
        for item in items:
            if item["key"] not in values:
                if source.get("optional"):
                    continue
                raise VolumeError(f"couldn't find key {item['key']} in {api_kind} {name}")
            _write(target, item["path"], values[item["key"]], int(item.get("mode", mode)))

    def _downward(self, target: Path, items: list[Obj], mode: int) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise VolumeError(f"downwardAPI {item.get('path')}: only fieldRef is supported")
            value = self.resolve_field(item["fieldRef"].get("fieldPath", ""))
            if value is None:
                raise VolumeError(f"downwardAPI {item.get('path')}: unsupported fieldRef")
            _write(target, item["path"], value.encode(), int(item.get("mode", mode)))

    async def _projection(self, target: Path, item: Obj, mode: int) -> None:
        if "serviceAccountToken" in item:
            token_source = item["serviceAccountToken"]
            request: Obj = {
                "expirationSeconds": int(
                    token_source.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)
                ),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod["metadata"]["name"],
                    "uid": self.pod["metadata"]["uid"],
                },
            }
            if token_source.get("audience"):
                request["audiences"] = [token_source["audience"]]
            account = self.pod["spec"].get("serviceAccountName") or "default"
            token = await self.request_token(account, request)
            _write(target, token_source["path"], token.encode(), mode)
        elif "secret" in item:
            secret = {"secretName": item["secret"].get("name"), **item["secret"]}
            await self._keys(target, "secret", secret, mode)
        elif "configMap" in item:
            await self._keys(target, "configMap", item["configMap"], mode)
        elif "downwardAPI" in item:
            self._downward(target, item["downwardAPI"].get("items") or [], mode)
        else:
            raise VolumeError(f"projected source {sorted(item)} is not supported")

    def mounts(self, container: Obj) -> list[Mount]:
        """The container's mounts of content volumes, in its order."""
        kinds = {v["name"]: _source_kind(v) for v in self.pod["spec"].get("volumes") or []}
        found = []
        for mount in container.get("volumeMounts") or []:
            if kinds.get(mount["name"]) not in CONTENT_SOURCES:
                continue
            source = self.folder / mount["name"]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            found.append(Mount(source, mount["mountPath"], bool(mount.get("readOnly"))))
        return found


def mount_prefix(mounts: list[Mount]) -> list[str]:
    """A command prefix: a private mount namespace with ``mounts`` bound, then exec the rest."""
    if not mounts:
        return []
    steps = []
    for mount in mounts:
        source, target = shlex.quote(str(mount.source)), shlex.quote(mount.target)
        if mount.source.is_dir():
            make = f"mkdir -p {target}"
        else:
            make = f"mkdir -p {shlex.quote(str(Path(mount.target).parent))} && touch {target}"
        steps.append(f"{make} && mount --bind {source} {target}")
        if mount.read_only:
            steps.append(f"mount -o remount,bind,ro {target}")
    script = " && ".join([*steps, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
