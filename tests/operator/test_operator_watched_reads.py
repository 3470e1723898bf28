"""The spec reconcile reading from the watches (kopf indexes): what it sends, and when.

An in-memory API server (``FakeApi``) records every call; the "watch" is either
its store itself (no lag) or a copy taken earlier (a watch that has not caught
up). The real API server and kopf's real indexes are in
test_operator_spec_reconcile.py (zero reads and writes in steady state, none
after a restart).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from voiceops_operator import build
from voiceops_operator.events import Note
from voiceops_operator.kube import KubeError
from voiceops_operator.reconcile import Reconciler
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import API_VERSION, KIND
from voiceops_operator.watched import WatchedObjects, index_entry

NS = "default"
Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
KINDS = [*build.CHILD_KINDS, (API_VERSION, KIND)]


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeApi:
    """Objects by (apiVersion, kind, namespace, name); every call recorded as (verb, kind, name)."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self._versions = itertools.count(1)
        self.closed = False

    def _stamp(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as someone else would (no call recorded)."""
        stored = copy.deepcopy(obj)
        meta = stored["metadata"]
        meta.setdefault("uid", f"uid-{meta['name']}-{stored['kind']}")
        self._stamp(stored)
        self.objects[(stored["apiVersion"], stored["kind"], meta["namespace"], meta["name"])] = (
            stored
        )
        return copy.deepcopy(stored)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.calls.append(("create", obj["kind"], meta["name"]))
        if (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]) in self.objects:
            raise KubeError(409, "already exists")
        return self.put(obj)

    async def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str = "",
    ) -> dict[str, Any]:
        stored = self.objects.get((api_version, kind, namespace, name))
        self.calls.append(("patch", f"{kind}/{subresource}" if subresource else kind, name))
        if stored is None:
            raise KubeError(404, "not found")
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != stored["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        if subresource == "status":
            _merge(stored, {"status": patch.get("status") or {}})
        else:
            _merge(stored, patch)
        self._stamp(stored)
        return copy.deepcopy(stored)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.calls.append(("delete", kind, name))
        return self.objects.pop((api_version, kind, namespace, name), None) is not None


class StoreIndex(Mapping[tuple[str, str], list[dict[str, Any]]]):
    """One kind of a FakeApi's objects by (namespace, name): a watch with no lag."""

    def __init__(self, api: FakeApi, api_version: str, kind: str) -> None:
        self.api, self.api_version, self.kind = api, api_version, kind

    def _keys(self) -> list[tuple[str, str]]:
        return [(k[2], k[3]) for k in self.api.objects if k[:2] == (self.api_version, self.kind)]

    def __getitem__(self, key: tuple[str, str]) -> list[dict[str, Any]]:
        found = self.api.objects.get((self.api_version, self.kind, *key))
        if found is None:
            raise KeyError(key)
        return [found]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


def live(api: FakeApi) -> WatchedObjects:
    return WatchedObjects({kind: StoreIndex(api, *kind) for kind in KINDS})


def snapshot(
    api: FakeApi, shown: tuple[dict[str, Any], ...] = (), hidden: tuple[Key, ...] = ()
) -> WatchedObjects:
    """The watch frozen as it is now, except that it shows ``shown`` in place of the
    stored objects of those names and has not seen ``hidden`` yet."""
    objects = {k: v for k, v in api.objects.items() if k not in hidden}
    for obj in shown:
        meta = obj["metadata"]
        objects[(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])] = obj
    indexes: dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]] = {
        kind: {} for kind in KINDS
    }
    for (api_version, kind, namespace, name), obj in objects.items():
        indexes[(api_version, kind)][(namespace, name)] = [copy.deepcopy(obj)]
    return WatchedObjects(indexes)


async def no_events(body: Mapping[str, Any], note: Note) -> None:
    """Events are not what these tests are about (the API calls are)."""


def voiceservice(api: FakeApi) -> dict[str, Any]:
    return api.put(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "tts", "namespace": NS, "uid": "vs-uid", "generation": 1},
            "spec": {},
        }
    )


def stored_vs(api: FakeApi) -> dict[str, Any]:
    return api.objects[(API_VERSION, KIND, NS, "tts")]


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(_env_file=None, self_healing=True)


async def built(api: FakeApi, settings: OperatorSettings) -> Reconciler:
    """A VoiceService whose children and status the reconciler has just written."""
    voiceservice(api)
    reconciler = Reconciler(api, settings, no_events, live(api))
    result = await reconciler.request(NS, "tts")
    assert result is not None
    assert result.created
    assert result.status_written
    return reconciler


async def test_a_pass_over_an_unchanged_object_sends_nothing(settings: OperatorSettings) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    api.calls.clear()
    result = await reconciler.request(NS, "tts")
    assert result is not None
    assert result.writes == 0
    assert api.calls == []


async def test_the_first_pass_reads_nothing_and_creates_every_child(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    await built(api, settings)
    verbs = {verb for verb, _, _ in api.calls}
    assert "get" not in verbs
    created = [(kind, name) for verb, kind, name in api.calls if verb == "create"]
    assert len(created) == 11  # the default spec's children


async def test_a_view_older_than_our_status_write_is_read_again_and_not_written(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    before = voiceservice(api)  # the body the first pass read
    reconciler = Reconciler(api, settings, no_events, live(api))
    await reconciler.request(NS, "tts")
    written = copy.deepcopy(stored_vs(api))
    # The VoiceService's watch event of that write has not come yet.
    reconciler.reads = snapshot(api, shown=(before,))
    api.calls.clear()
    result = await reconciler.reconcile_body(before)
    assert result.writes == 0
    assert api.calls == [
        ("patch", "VoiceService/status", "tts"),  # 409: computed from the older object
        ("get", "VoiceService", "tts"),  # the fresh status already says it all
    ]
    assert stored_vs(api) == written


async def test_a_status_view_older_than_the_object_is_read_again_on_conflict_only(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    stale = copy.deepcopy(stored_vs(api))
    # The healing loop writes its part of the status; a Deployment's counts change.
    stored_vs(api)["status"]["phase"] = "Degraded"
    api._stamp(stored_vs(api))
    gpu = api.objects[("apps/v1", "Deployment", NS, "tts-gpu")]
    gpu["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    api.calls.clear()
    await reconciler.reconcile_body(stale)
    assert api.calls == [
        ("patch", "VoiceService/status", "tts"),  # 409: computed from an older object
        ("get", "VoiceService", "tts"),
        ("patch", "VoiceService/status", "tts"),
    ]
    status = stored_vs(api)["status"]
    assert status["phase"] == "Degraded", "the other writer's field is kept"
    assert status["gpu"]["readyReplicas"] == 1


async def test_a_child_missing_from_the_view_is_created(settings: OperatorSettings) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    del api.objects[("policy/v1", "PodDisruptionBudget", NS, "tts-gpu")]  # deleted by hand
    api.calls.clear()
    result = await reconciler.request(NS, "tts")
    assert result is not None
    assert result.created == ["PodDisruptionBudget tts-gpu"]
    assert api.calls == [("create", "PodDisruptionBudget", "tts-gpu")]


async def test_our_create_not_seen_yet_is_read_once_and_not_written_again(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    children = tuple(k for k in api.objects if k[1] != KIND)
    reconciler.reads = snapshot(api, hidden=children)  # their watch events are still coming
    api.calls.clear()
    result = await reconciler.reconcile_body(copy.deepcopy(stored_vs(api)))
    assert result.writes == 0
    assert {verb for verb, _, _ in api.calls} == {"create", "get"}
    creates = [c for c in api.calls if c[0] == "create"]
    gets = [c for c in api.calls if c[0] == "get"]
    assert len(creates) == len(gets) == 11  # refused (409) and read once each


async def test_a_drifted_view_of_a_repaired_child_sends_the_same_patch_once(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    key = ("v1", "Service", NS, "tts-gpu")
    drifted = copy.deepcopy(api.objects[key])
    drifted["spec"]["selector"] = {"hand": "edited"}
    reconciler.reads = snapshot(api, shown=(drifted,))  # repaired since
    repaired = copy.deepcopy(api.objects[key]["spec"])
    api.calls.clear()
    result = await reconciler.request(NS, "tts")
    assert result is not None
    assert api.calls == [("patch", "Service", "tts-gpu")]
    assert api.objects[key]["spec"] == repaired, "it sets what is stored already"


async def test_an_undesired_child_is_deleted_from_the_view(settings: OperatorSettings) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    _merge(stored_vs(api), {"spec": {"autoscaling": {"enabled": False}}})
    api._stamp(stored_vs(api))
    api.calls.clear()
    result = await reconciler.request(NS, "tts")
    assert result is not None
    assert sorted(result.deleted) == [
        "HorizontalPodAutoscaler tts-fallback",
        "HorizontalPodAutoscaler tts-gpu",
    ]
    assert not [c for c in api.calls if c[0] == "get"]


async def test_a_request_for_an_object_the_watch_lacks_sends_nothing(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    reconciler = Reconciler(api, settings, no_events, live(api))
    assert await reconciler.request(NS, "gone") is None
    assert api.calls == []


def test_an_index_keeps_the_body_by_namespace_and_name_without_managed_fields() -> None:
    body = {
        "kind": "Service",
        "metadata": {"name": "tts", "namespace": NS, "managedFields": [{"manager": "x"}]},
        "spec": {"selector": {}},
    }
    assert index_entry(body) == {
        (NS, "tts"): {
            "kind": "Service",
            "metadata": {"name": "tts", "namespace": NS},
            "spec": {"selector": {}},
        }
    }
    assert "managedFields" in body["metadata"], "the watched body itself is left alone"


# --- routing: the healing loop decides, the reconcile writes the children -----------------


def front_tier(api: FakeApi) -> str | None:
    service = api.objects[("v1", "Service", NS, "tts")]
    return service["spec"]["selector"].get("voiceops.io/tier")


def fallback_scale(api: FakeApi) -> tuple[int, int]:
    """(the fallback HPA's minimum, the fallback Deployment's replicas)."""
    hpa = api.objects[("autoscaling/v2", "HorizontalPodAutoscaler", NS, "tts-fallback")]
    deployment = api.objects[("apps/v1", "Deployment", NS, "tts-fallback")]
    return hpa["spec"]["minReplicas"], deployment["spec"]["replicas"]


def record_decision(api: FakeApi, routing: build.Routing) -> None:
    """What the healing loop writes before it asks for a reconcile: its status fields."""
    _merge(
        stored_vs(api),
        {
            "status": {
                "activeTier": routing.active_tier,
                "fallback": {"desiredReplicas": routing.fallback_replicas},
            }
        },
    )
    api._stamp(stored_vs(api))


async def test_a_routing_decision_moves_the_children_and_a_lagging_view_keeps_it(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    assert (front_tier(api), fallback_scale(api)) == ("gpu", (1, 1))
    before_decision = copy.deepcopy(stored_vs(api))
    failed_over = build.Routing("fallback", fallback_replicas=3)
    record_decision(api, failed_over)
    # The VoiceService's watch has not delivered the decision yet.
    reconciler.reads = snapshot(api, shown=(before_decision,))
    api.calls.clear()
    result = await reconciler.route(NS, "tts", failed_over)
    assert result is not None
    assert sorted(result.updated) == [
        "Deployment tts-fallback",  # raised to the HPA's new minimum at once
        "HorizontalPodAutoscaler tts-fallback",
        "Service tts",
    ]
    assert (front_tier(api), fallback_scale(api)) == ("fallback", (3, 3))
    # Drift repair woken by those writes: the children's watches have caught up, the
    # VoiceService's still lags. Nothing is undone.
    reconciler.reads = snapshot(api, shown=(before_decision,))
    api.calls.clear()
    result = await reconciler.request(NS, "tts")
    assert result is not None
    assert result.created == result.updated == result.deleted == []
    assert (front_tier(api), fallback_scale(api)) == ("fallback", (3, 3))


async def test_back_to_standby_lowers_the_minimum_and_leaves_scaling_down_to_the_hpa(
    settings: OperatorSettings,
) -> None:
    api = FakeApi()
    reconciler = await built(api, settings)
    for routing in (build.Routing("fallback", 3), build.Routing("gpu", 1)):
        record_decision(api, routing)
        await reconciler.route(NS, "tts", routing)
    assert front_tier(api) == "gpu"
    assert fallback_scale(api) == (1, 3), "the HPA scales the Deployment down, not the operator"


async def test_a_restarted_operator_routes_from_the_status(settings: OperatorSettings) -> None:
    api = FakeApi()
    await built(api, settings)
    record_decision(api, build.Routing("both", 2))
    restarted = Reconciler(api, settings, no_events, live(api))  # no decision in memory
    await restarted.request(NS, "tts")
    assert (front_tier(api), fallback_scale(api)) == (None, (2, 2))
