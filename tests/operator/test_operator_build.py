"""Builders: one test group per object, plus build_all's set of children."""

from __future__ import annotations

from typing import Any

import pytest
from testsupport.manifests import manifest
from voiceops_contract import metrics, pod
from voiceops_operator import build, model_update, names
from voiceops_operator.build import Routing
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import ModelRef, VoiceService, parse_voiceservice

TIER_LABELS = {
    "app.kubernetes.io/name": "voiceops-service",
    "app.kubernetes.io/instance": "tts",
    "app.kubernetes.io/part-of": "voiceops",
    "app.kubernetes.io/managed-by": "voiceops-operator",
}


def vs_of(spec: dict[str, Any] | None = None, uid: str = "") -> VoiceService:
    body = manifest(spec)
    if uid:
        body["metadata"]["uid"] = uid
    return parse_voiceservice(body)


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_gpu_deployment_names_labels_and_selector(settings: OperatorSettings) -> None:
    dep = build.build_gpu_deployment(vs_of(), settings)
    assert dep["metadata"]["name"] == "tts-gpu"
    assert dep["metadata"]["labels"] == {
        **TIER_LABELS,
        "app.kubernetes.io/component": "gpu-tier",
        "voiceops.io/tier": "gpu",
    }
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/instance": "tts",
        "voiceops.io/tier": "gpu",
    }
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert "ownerReferences" not in dep["metadata"]


def test_gpu_deployment_requests_gpus_and_places_on_gpu_nodes(settings: OperatorSettings) -> None:
    dep = build.build_gpu_deployment(
        vs_of(
            {
                "gpu": {
                    "count": 2,
                    "nodeSelector": {"gpu": "h100"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                }
            }
        ),
        settings,
    )
    resources = container_of(dep)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["requests"]["nvidia.com/gpu"] == "2"
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"gpu": "h100"}
    assert pod_spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod_spec["tolerations"][0]["operator"] == "Exists"
    assert container_of(dep)["image"] == settings.service_gpu_image


def started_model_path(vs: VoiceService, settings: OperatorSettings) -> str:
    """VOICEOPS_MODEL_PATH a GPU pod starts with: its env's ConfigMap key, resolved."""
    ref = env_of(build.build_gpu_deployment(vs, settings))[pod.ENV_MODEL_PATH]["configMapKeyRef"]
    config_map = build.build_model_config_map(vs)
    assert ref["name"] == config_map["metadata"]["name"]
    return config_map["data"][ref["key"]]


def test_gpu_count_zero_requests_no_gpu(settings: OperatorSettings) -> None:
    dep = build.build_gpu_deployment(vs_of({"gpu": {"count": 0}}), settings)
    assert "nvidia.com/gpu" not in container_of(dep)["resources"].get("limits", {})
    assert env_of(dep)[pod.ENV_DEVICE] == "cpu"


def test_gpu_env_follows_the_contract(settings: OperatorSettings) -> None:
    dep = build.build_gpu_deployment(
        vs_of({"serving": {"port": 9000, "maxConcurrency": 3, "batch": {"maxSize": 2}}}), settings
    )
    env = env_of(dep)
    assert env[pod.ENV_ENGINE] == "vits"
    assert env[pod.ENV_VOICE] == "en_US-joe-medium"
    assert env[pod.ENV_TIER] == "gpu"
    assert env[pod.ENV_PORT] == "9000"
    assert env[pod.ENV_MAX_CONCURRENCY] == "3"
    assert env[pod.ENV_BATCH_MAX_SIZE] == "2"
    assert env[pod.ENV_BATCH_MAX_DELAY_MS] == "10"
    assert env[pod.ENV_MAX_QUEUE] == "64"
    assert env[pod.ENV_REQUEST_TIMEOUT_SECONDS] == "30"
    assert env[pod.ENV_MAX_INPUT_CHARS] == "4096"
    assert env[pod.ENV_FALLBACK_ENGINE] == "espeak"
    assert env[pod.ENV_FAULT_INJECTION] == "false"
    assert pod.ENV_FAULT_TOKEN not in env
    assert env[pod.ENV_FP16] == "false"
    assert container_of(dep)["ports"] == [
        {"name": "http", "containerPort": 9000, "protocol": "TCP"}
    ]


def test_fp16_precision_reaches_the_gpu_tier_only(settings: OperatorSettings) -> None:
    voice_service = vs_of({"model": {"precision": "fp16"}})
    assert env_of(build.build_gpu_deployment(voice_service, settings))[pod.ENV_FP16] == "true"
    fallback = build.build_fallback_deployment(voice_service, Routing(), settings)
    assert env_of(fallback)[pod.ENV_FP16] == "false"


def test_pvc_model_is_mounted_read_only(settings: OperatorSettings) -> None:
    dep = build.build_gpu_deployment(vs_of({"model": {"uri": "pvc://models/piper/joe"}}), settings)
    pod_spec = dep["spec"]["template"]["spec"]
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "model")
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mount = next(m for m in container_of(dep)["volumeMounts"] if m["name"] == "model")
    assert mount["readOnly"] is True
    assert started_model_path(vs_of({"model": {"uri": "pvc://models/piper/joe"}}), settings) == (
        mount["mountPath"] + "/piper/joe"
    )


def test_file_model_sets_path_without_volume(settings: OperatorSettings) -> None:
    voice_service = vs_of({"model": {"uri": "file:///opt/voices/x"}})
    dep = build.build_gpu_deployment(voice_service, settings)
    assert started_model_path(voice_service, settings) == "/opt/voices/x"
    assert [v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]] == ["tmp"]


def test_probes_hit_the_service_paths_with_overrides(settings: OperatorSettings) -> None:
    dep = build.build_gpu_deployment(
        vs_of({"probes": {"liveness": {"periodSeconds": 30, "failureThreshold": 7}}}), settings
    )
    container = container_of(dep)
    assert container["livenessProbe"]["httpGet"]["path"] == pod.PATH_LIVE
    assert container["readinessProbe"]["httpGet"]["path"] == pod.PATH_READY
    assert container["startupProbe"]["httpGet"]["path"] == pod.PATH_READY
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    assert container["livenessProbe"]["periodSeconds"] == 30
    assert container["livenessProbe"]["failureThreshold"] == 7
    assert container["startupProbe"]["failureThreshold"] == 60


@pytest.mark.parametrize("tier", ["gpu", "fallback"])
def test_pods_drain_before_they_stop(settings: OperatorSettings, tier: str) -> None:
    """A preStop sleep while the endpoint leaves the proxies, then the service's drain
    (SIGTERM: finish in flight, up to the request timeout) fits in the grace period."""
    vs = vs_of({"serving": {"requestTimeoutSeconds": 45}})
    if tier == "gpu":
        dep = build.build_gpu_deployment(vs, settings)
    else:
        dep = build.build_fallback_deployment(vs, Routing(), settings)
    sleep = container_of(dep)["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert sleep == build.PRE_STOP_SLEEP_SECONDS
    assert grace == sleep + 45 + build.SHUTDOWN_MARGIN_SECONDS


def test_prometheus_annotations_and_spread(settings: OperatorSettings) -> None:
    dep = build.build_gpu_deployment(vs_of(), settings)
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": pod.PATH_METRICS,
        # Rolling (the default): the model's revision, so a model change rolls the pods.
        model_update.REVISION_ANNOTATION: model_update.revision(ModelRef(version="bundled")),
    }
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == names.tier_selector("tts", "gpu")


def test_replicas_follow_autoscaling(settings: OperatorSettings) -> None:
    on = vs_of({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}, "replicas": 7})
    off = vs_of({"autoscaling": {"enabled": False}, "replicas": 3})
    assert build.build_gpu_deployment(on, settings)["spec"]["replicas"] == 2
    assert build.build_gpu_deployment(off, settings)["spec"]["replicas"] == 3


def test_fallback_deployment_runs_on_cpu(settings: OperatorSettings) -> None:
    dep = build.build_fallback_deployment(vs_of(), Routing(), settings)
    assert dep["metadata"]["name"] == "tts-fallback"
    assert dep["metadata"]["labels"]["voiceops.io/tier"] == "fallback"
    assert dep["metadata"]["labels"]["app.kubernetes.io/component"] == "fallback-tier"
    env = env_of(dep)
    assert env[pod.ENV_ENGINE] == "espeak"
    assert env[pod.ENV_DEVICE] == "cpu"
    assert env[pod.ENV_FALLBACK_ENGINE] == ""
    resources = container_of(dep)["resources"]
    assert not any(k.endswith("/gpu") for k in resources.get("limits", {}))
    pod_spec = dep["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec
    assert "tolerations" not in pod_spec
    assert container_of(dep)["image"] == settings.service_image
    assert dep["spec"]["replicas"] == 1


@pytest.mark.parametrize(("wanted", "expected"), [(None, 2), (1, 2), (3, 3), (50, 5)])
def test_fallback_replicas_follow_routing_within_bounds(
    settings: OperatorSettings, wanted: int | None, expected: int
) -> None:
    vs = vs_of({"fallback": {"standbyReplicas": 2, "maxReplicas": 5}})
    routing = Routing(active_tier="fallback", fallback_replicas=wanted)
    assert build.build_fallback_deployment(vs, routing, settings)["spec"]["replicas"] == expected
    assert build.build_fallback_hpa(vs, routing)["spec"]["minReplicas"] == expected
    assert build.build_fallback_hpa(vs, routing)["spec"]["maxReplicas"] == 5


@pytest.mark.parametrize(
    ("tier", "selector"),
    [
        ("gpu", {"voiceops.io/tier": "gpu"}),
        ("fallback", {"voiceops.io/tier": "fallback"}),
        ("both", {}),
    ],
)
def test_front_service_selects_the_active_tier(tier: str, selector: dict) -> None:
    svc = build.build_front_service(vs_of(), Routing(active_tier=tier))  # type: ignore[arg-type]
    assert svc["metadata"]["name"] == "tts"
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "voiceops-service",
        "app.kubernetes.io/instance": "tts",
        **selector,
    }
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_front_service_ignores_fallback_routing_when_fallback_is_off() -> None:
    svc = build.build_front_service(
        vs_of({"fallback": {"enabled": False}}), Routing(active_tier="fallback")
    )
    assert svc["spec"]["selector"]["voiceops.io/tier"] == "gpu"


def test_tier_services() -> None:
    for tier in ("gpu", "fallback"):
        svc = build.build_tier_service(vs_of(), tier)  # type: ignore[arg-type]
        assert svc["metadata"]["name"] == f"tts-{tier}"
        assert svc["spec"]["selector"] == names.tier_selector("tts", tier)  # type: ignore[arg-type]


def test_gpu_hpa_uses_in_flight_metric_when_declared() -> None:
    hpa = build.build_gpu_hpa(
        vs_of({"autoscaling": {"metric": "inFlight", "targetInFlightPerPod": 6, "maxReplicas": 9}})
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tts-gpu",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 9)
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == metrics.HPA_IN_FLIGHT_METRIC
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "6"}


def test_gpu_hpa_falls_back_to_cpu_utilisation() -> None:
    hpa = build.build_gpu_hpa(vs_of({"autoscaling": {"targetCPUUtilizationPercentage": 55}}))
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 55}


def test_fallback_hpa_scales_on_cpu() -> None:
    hpa = build.build_fallback_hpa(vs_of(), Routing())
    assert hpa["metadata"]["name"] == "tts-fallback"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tts-fallback"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_pdb_per_tier() -> None:
    for tier in ("gpu", "fallback"):
        pdb = build.build_pdb(vs_of(), tier)  # type: ignore[arg-type]
        assert pdb["metadata"]["name"] == f"tts-{tier}"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == names.tier_selector("tts", tier)  # type: ignore[arg-type]


DNS_ONLY = [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]


def test_network_policy_names_labels_and_default_rules() -> None:
    policy = build.build_network_policy(vs_of({"serving": {"port": 9000}}, uid="u-1"))
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "tts"
    assert policy["metadata"]["namespace"] == "default"
    assert policy["metadata"]["labels"] == {
        **TIER_LABELS,
        "app.kubernetes.io/component": "network-policy",
    }
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # One ingress rule: TCP on the serving port only, from any source (no `from`).
    assert spec["ingress"] == [{"ports": [{"port": 9000, "protocol": "TCP"}]}]
    assert spec["egress"] == DNS_ONLY


def test_network_policy_selects_the_pods_of_both_tiers(settings: OperatorSettings) -> None:
    vs = vs_of()
    selector = build.build_network_policy(vs)["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}
    wanted = selector["matchLabels"].items()
    for deployment in (
        build.build_gpu_deployment(vs, settings),
        build.build_fallback_deployment(vs, Routing(), settings),
    ):
        assert wanted <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # ...and no other VoiceService's pods.
    assert not wanted <= names.labels("other", "gpu").items()


def test_network_policy_ingress_from_the_declared_peers() -> None:
    peers = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}},
        {
            "namespaceSelector": {},
            "podSelector": {
                "matchLabels": {"app": "gateway"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["edge", "api"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            },
        },
        {"podSelector": {}},
        {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.99.0/24"]}},
        {"ipBlock": {"cidr": "fd00::/8"}},
    ]
    policy = build.build_network_policy(vs_of({"networkPolicy": {"allowFrom": peers}}))
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}},
        {
            "podSelector": {
                "matchLabels": {"app": "gateway"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["edge", "api"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            },
            "namespaceSelector": {},  # {} = every namespace, kept as such
        },
        {"podSelector": {}},
        {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.99.0/24"]}},
        {"ipBlock": {"cidr": "fd00::/8"}},
    ]


def test_metrics_readers_are_let_in_when_allow_from_restricts() -> None:
    readers = ("voiceops-system", "monitoring")
    gateway = {"podSelector": {"matchLabels": {"app": "gateway"}}}
    restricted = vs_of({"networkPolicy": {"allowFrom": [gateway]}})
    (rule,) = build.build_network_policy(restricted, readers)["spec"]["ingress"]
    assert rule["from"] == [
        gateway,
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "voiceops-system"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    (open_rule,) = build.build_network_policy(vs_of(), readers)["spec"]["ingress"]
    assert "from" not in open_rule  # any source already includes the readers


def test_build_all_passes_the_settings_metrics_readers() -> None:
    settings = OperatorSettings(metrics_reader_namespaces="voiceops-system")
    restricted = vs_of({"networkPolicy": {"allowFrom": [{"podSelector": {}}]}})
    policy = next(
        o for o in build.build_all(restricted, Routing(), settings) if o["kind"] == "NetworkPolicy"
    )
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[-1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "voiceops-system"}}
    }


@pytest.mark.parametrize(("allow", "egress"), [(False, DNS_ONLY), (True, [{}])])
def test_network_policy_egress_is_dns_only_unless_allowed(allow: bool, egress: list) -> None:
    policy = build.build_network_policy(vs_of({"networkPolicy": {"allowEgress": allow}}))
    assert policy["spec"]["egress"] == egress
    assert "Egress" in policy["spec"]["policyTypes"]


def kinds_and_names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_build_all_default_set(settings: OperatorSettings) -> None:
    assert kinds_and_names(build.build_all(vs_of(), Routing(), settings)) == {
        ("Deployment", "tts-gpu"),
        ("Deployment", "tts-fallback"),
        ("Service", "tts"),
        ("Service", "tts-gpu"),
        ("Service", "tts-fallback"),
        ("HorizontalPodAutoscaler", "tts-gpu"),
        ("HorizontalPodAutoscaler", "tts-fallback"),
        ("PodDisruptionBudget", "tts-gpu"),
        ("PodDisruptionBudget", "tts-fallback"),
        ("NetworkPolicy", "tts"),
        ("ConfigMap", "tts-model"),
    }


def test_build_all_puts_the_network_policy_first(settings: OperatorSettings) -> None:
    # Pods never start before the policy that confines them exists.
    assert build.build_all(vs_of(), Routing(), settings)[0]["kind"] == "NetworkPolicy"


def test_build_all_without_network_policy(settings: OperatorSettings) -> None:
    off = build.build_all(vs_of({"networkPolicy": {"enabled": False}}), Routing(), settings)
    assert "NetworkPolicy" not in {o["kind"] for o in off}
    assert len(off) == len(build.build_all(vs_of(), Routing(), settings)) - 1


def test_build_all_without_autoscaling_or_fallback(settings: OperatorSettings) -> None:
    off = kinds_and_names(
        build.build_all(vs_of({"autoscaling": {"enabled": False}}), Routing(), settings)
    )
    assert not {k for k, _ in off} & {"HorizontalPodAutoscaler"}
    gpu_only = kinds_and_names(
        build.build_all(vs_of({"fallback": {"enabled": False}}), Routing(), settings)
    )
    assert not any(name.endswith("-fallback") for _, name in gpu_only)
    assert ("Service", "tts") in gpu_only


def test_build_all_adds_owner_references_when_uid_known(settings: OperatorSettings) -> None:
    for obj in build.build_all(vs_of(uid="1234"), Routing(), settings):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == "1234"
        assert ref["kind"] == "VoiceService"
        assert ref["controller"]


def test_every_possible_child_is_listed_for_cleanup(settings: OperatorSettings) -> None:
    possible = {(k, n) for _, k, n in build.possible_children("tts")}
    assert kinds_and_names(build.build_all(vs_of(), Routing(), settings)) <= possible


def test_hpa_targets() -> None:
    objects = [build.build_gpu_hpa(vs_of()), build.build_fallback_hpa(vs_of(), Routing())]
    assert build.hpa_targets(objects) == {"tts-gpu", "tts-fallback"}


def test_routing_from_status() -> None:
    from voiceops_operator.spec import parse_spec, parse_status

    spec_on, spec_off = parse_spec({}), parse_spec({"fallback": {"enabled": False}})
    status = parse_status({"activeTier": "fallback", "fallback": {"desiredReplicas": 3}})
    assert build.routing_from_status(status, spec_on) == Routing("fallback", 3)
    assert build.routing_from_status(status, spec_off) == Routing("gpu", None)
    assert build.routing_from_status(parse_status({}), spec_on) == Routing("gpu", None)


# --- what reaches the pods and the API server ------------------------------------------------

ROUTING_SEED = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 bytes, base64


def test_a_gpu_pod_with_a_gpu_looks_for_it_and_fault_injection_reaches_both_tiers() -> None:
    settings = OperatorSettings(_env_file=None, routing_key=ROUTING_SEED)
    vs = vs_of(
        {
            "gpu": {"count": 1},
            "faultInjection": {
                "enabled": True,
                "tokenSecretRef": {"name": "chaos", "key": "bearer"},
            },
            "fallback": {"voice": "de"},
        }
    )
    gpu_dep = build.build_gpu_deployment(vs, settings)
    fallback_dep = build.build_fallback_deployment(vs, Routing(), settings)
    assert container_of(gpu_dep)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env_of(gpu_dep)[pod.ENV_DEVICE] == "auto"
    assert env_of(fallback_dep)[pod.ENV_VOICE] == "de"
    for dep in (gpu_dep, fallback_dep):
        env = env_of(dep)
        assert env[pod.ENV_FAULT_INJECTION] == "true"
        assert env[pod.ENV_FAULT_TOKEN] == {"secretKeyRef": {"name": "chaos", "key": "bearer"}}
        assert env[pod.ENV_POD_NAME] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env[pod.ENV_ROUTING_PUBLIC_KEY] == settings.routing_public_key != ""
    assert env_of(build.build_gpu_deployment(vs_of(), settings))[pod.ENV_FAULT_INJECTION] == (
        "false"
    )


@pytest.mark.parametrize(
    ("spec", "engines"),
    [
        ({}, ("vits", "espeak")),
        ({"fallback": {"enabled": False}}, ("vits",)),
        ({"model": {"engine": "espeak", "voice": "en-us"}}, ("espeak",)),
    ],
)
def test_both_tiers_advertise_every_tier_s_engine_once(spec: dict, engines: tuple) -> None:
    assert build.service_engines(vs_of(spec).spec) == engines


def test_gpu_tolerations_reach_the_pods_as_kubernetes_spells_them(
    settings: OperatorSettings,
) -> None:
    vs = vs_of(
        {
            "gpu": {
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "maintenance", "value": "soon", "effect": "NoExecute",
                     "tolerationSeconds": 60},
                ]
            }
        }
    )  # fmt: skip
    tolerations = build.build_gpu_deployment(vs, settings)["spec"]["template"]["spec"][
        "tolerations"
    ]
    assert tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": "", "effect": "NoSchedule"},
        {
            "key": "maintenance",
            "operator": "Equal",
            "value": "soon",
            "effect": "NoExecute",
            "tolerationSeconds": 60,
        },
    ]


def test_every_child_is_owned_by_its_voiceservice_and_deleted_with_it(
    settings: OperatorSettings,
) -> None:
    for obj in build.build_all(vs_of(uid="1234"), Routing(), settings):
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "voiceops.io/v1alpha1",
                "kind": "VoiceService",
                "name": "tts",
                "uid": "1234",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_every_tier_child_carries_its_tier_labels(settings: OperatorSettings) -> None:
    vs = vs_of()
    routing = Routing()
    children = {
        "gpu": [
            build.build_gpu_deployment(vs, settings),
            build.build_tier_service(vs, "gpu"),
            build.build_gpu_hpa(vs),
            build.build_pdb(vs, "gpu"),
        ],
        "fallback": [
            build.build_fallback_deployment(vs, routing, settings),
            build.build_tier_service(vs, "fallback"),
            build.build_fallback_hpa(vs, routing),
            build.build_pdb(vs, "fallback"),
        ],
    }
    for tier, objects in children.items():
        for obj in objects:
            assert obj["metadata"]["labels"] == {
                **TIER_LABELS,
                "app.kubernetes.io/component": f"{tier}-tier",
                "voiceops.io/tier": tier,
            }, obj["kind"]
        template = objects[0]["spec"]["template"]["metadata"]["labels"]
        assert template["voiceops.io/tier"] == tier


def test_services_are_cluster_ip_http_on_the_serving_port() -> None:
    vs = vs_of({"serving": {"port": 9000}})
    for svc in (build.build_front_service(vs, Routing()), build.build_tier_service(vs, "gpu")):
        assert (svc["apiVersion"], svc["kind"]) == ("v1", "Service")
        assert svc["spec"]["type"] == "ClusterIP"
        assert svc["spec"]["ports"] == [
            {
                "name": "http",
                "port": 9000,
                "targetPort": "http",
                "protocol": "TCP",
                "appProtocol": "http",
            }
        ]


def test_the_fallback_hpa_targets_the_declared_cpu_utilisation() -> None:
    vs = vs_of({"autoscaling": {"targetCPUUtilizationPercentage": 55}})
    hpa = build.build_fallback_hpa(vs, Routing())
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 55},
            },
        }
    ]


def test_cleanup_knows_every_child_by_api_version_kind_and_name(
    settings: OperatorSettings,
) -> None:
    possible = set(build.possible_children("tts"))
    for vs in (vs_of(), vs_of({"fallback": {"enabled": False}})):
        built = {
            (o["apiVersion"], o["kind"], o["metadata"]["name"])
            for o in build.build_all(vs, Routing(), settings)
        }
        assert built <= possible
    assert len(possible) == 11


def test_the_in_process_fallback_is_espeak_on_gpu_pods_that_do_not_run_it(
    settings: OperatorSettings,
) -> None:
    def fallback_engine(spec: dict) -> str:
        return env_of(build.build_gpu_deployment(vs_of(spec), settings))[pod.ENV_FALLBACK_ENGINE]

    assert fallback_engine({}) == "espeak"
    assert fallback_engine({"serving": {"inProcessFallback": False}}) == ""
    assert fallback_engine({"model": {"engine": "espeak", "voice": "en-us"}}) == ""


def test_pods_listen_on_every_interface_and_know_every_tier_s_engine(
    settings: OperatorSettings,
) -> None:
    for dep in (
        build.build_gpu_deployment(vs_of(), settings),
        build.build_fallback_deployment(vs_of(), Routing(), settings),
    ):
        env = env_of(dep)
        assert env[pod.ENV_HOST] == "0.0.0.0"
        assert env[pod.ENV_SERVICE_ENGINES] == "vits,espeak"
        assert container_of(dep)["name"] == "service"


def test_only_gpu_pods_mount_the_model(settings: OperatorSettings) -> None:
    vs = vs_of({"model": {"uri": "pvc://models/joe"}})
    fallback = build.build_fallback_deployment(vs, Routing(), settings)
    assert pod.ENV_MODEL_PATH not in env_of(fallback)  # the service's default: bundled
    assert [v["name"] for v in fallback["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    assert started_model_path(vs_of(), settings) == ""
