"""Desired children of a VoiceService, as plain dicts. Pure: no API, no I/O.

Every function takes the parsed VoiceService (and, where routing matters, a
:class:`Routing` read from the object's status, so a spec reconcile never undoes
what the self-healing loop decided) and returns Kubernetes manifests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from voiceops_contract import metrics, pod

from voiceops_operator import model_update
from voiceops_operator.names import (
    COMPONENT_NETWORK_POLICY,
    HOSTNAME_TOPOLOGY_KEY,
    HTTP_PORT_NAME,
    NAMESPACE_NAME_LABEL,
    deployment_name,
    front_selector,
    front_service_name,
    hpa_name,
    labels,
    model_config_name,
    network_policy_name,
    pdb_name,
    pods_selector,
    tier_selector,
    tier_service_name,
)
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import (
    API_VERSION,
    KIND,
    MODEL_MOUNT_PATH,
    JobsSpec,
    LabelSelector,
    ModelStatus,
    NetworkPolicyPeer,
    ResourceRequirements,
    ServingSpec,
    VoiceService,
    VoiceServiceSpec,
    VoiceServiceStatus,
    parse_model_uri,
)
from voiceops_operator.tiers import TIERS, ActiveTier, Tier

# A deleted pod keeps serving this long before SIGTERM, while its endpoint leaves every
# proxy's rules; then the service drains what is in flight (up to the request timeout).
PRE_STOP_SLEEP_SECONDS = 5
SHUTDOWN_MARGIN_SECONDS = 5
RUN_AS_USER = 10001
TMP_VOLUME = "tmp"
MODEL_VOLUME = "model"
DNS_PORT = 53
REDIS_DEFAULT_PORT = 6379


@dataclass(frozen=True)
class Routing:
    """What the self-healing loop decided; the builders follow it.

    ``fallback_replicas`` is the fallback tier's minimum (None = standby count).
    """

    active_tier: ActiveTier = "gpu"
    fallback_replicas: int | None = None


def routing_from_status(status: VoiceServiceStatus, spec: VoiceServiceSpec) -> Routing:
    """Routing recorded in status; defaults to the GPU tier with a standby fallback."""
    desired = status.fallback.desired_replicas if status.fallback else None
    return routing_within(Routing(status.active_tier or "gpu", desired), spec)


def routing_within(routing: Routing, spec: VoiceServiceSpec) -> Routing:
    """The routing the spec allows: the GPU tier alone when there is no fallback tier."""
    return routing if spec.fallback.enabled else Routing(active_tier="gpu")


# --- metadata ----------------------------------------------------------------------


def owner_reference(vs: VoiceService) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": vs.name,
        "uid": vs.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    vs: VoiceService, name: str, tier: Tier | None, component: str = ""
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": vs.namespace,
        "labels": labels(vs.name, tier, component),
    }
    if vs.uid:
        meta["ownerReferences"] = [owner_reference(vs)]
    return meta


# --- replicas ----------------------------------------------------------------------


def fallback_replicas(spec: VoiceServiceSpec, routing: Routing) -> int:
    """Fallback minimum: what healing wants, within [standbyReplicas, maxReplicas]."""
    wanted = routing.fallback_replicas or spec.fallback.standby_replicas
    return max(spec.fallback.standby_replicas, min(wanted, spec.fallback.max_replicas))


def gpu_replicas(spec: VoiceServiceSpec) -> int:
    """GPU replicas to create with (the HPA owns the count afterwards)."""
    return spec.autoscaling.min_replicas if spec.autoscaling.enabled else spec.replicas


# --- pods ----------------------------------------------------------------------------


def _resources(requirements: ResourceRequirements, extra_limits: dict[str, str]) -> dict:
    limits = {**requirements.limits, **extra_limits}
    # The API server defaults a missing request to its limit; doing it here keeps
    # the desired object equal to the stored one (no endless "drift").
    requests = {**limits, **requirements.requests}
    for key in extra_limits:
        requests[key] = extra_limits[key]
    found: dict[str, Any] = {}
    if limits:
        found["limits"] = dict(sorted(limits.items()))
    if requests:
        found["requests"] = dict(sorted(requests.items()))
    return found


def _http_get(path: str) -> dict[str, Any]:
    return {"path": path, "port": HTTP_PORT_NAME, "scheme": "HTTP"}


def termination_grace_seconds(serving: ServingSpec) -> int:
    """The preStop sleep, the longest request's drain, and a margin for the exit itself."""
    return PRE_STOP_SLEEP_SECONDS + serving.request_timeout_seconds + SHUTDOWN_MARGIN_SECONDS


def _probes(spec: VoiceServiceSpec) -> dict[str, Any]:
    startup, ready, live = spec.probes.startup, spec.probes.readiness, spec.probes.liveness
    return {
        "startupProbe": {
            "httpGet": _http_get(pod.PATH_READY),
            "initialDelaySeconds": startup.initial_delay_seconds,
            "periodSeconds": startup.period_seconds,
            "timeoutSeconds": startup.timeout_seconds,
            "failureThreshold": startup.failure_threshold,
            "successThreshold": 1,
        },
        "readinessProbe": {
            "httpGet": _http_get(pod.PATH_READY),
            "initialDelaySeconds": ready.initial_delay_seconds,
            "periodSeconds": ready.period_seconds,
            "timeoutSeconds": ready.timeout_seconds,
            "failureThreshold": ready.failure_threshold,
            "successThreshold": ready.success_threshold,
        },
        "livenessProbe": {
            "httpGet": _http_get(pod.PATH_LIVE),
            "initialDelaySeconds": live.initial_delay_seconds,
            "periodSeconds": live.period_seconds,
            "timeoutSeconds": live.timeout_seconds,
            "failureThreshold": live.failure_threshold,
            "successThreshold": 1,
        },
    }


def service_engines(spec: VoiceServiceSpec) -> tuple[str, ...]:
    """Every tier's engine, GPU tier first: the model ids both tiers advertise."""
    engines = [spec.model.engine]
    if spec.fallback.enabled and spec.fallback.engine not in engines:
        engines.append(spec.fallback.engine)
    return tuple(engines)


def _model_env(name: str, spec: VoiceServiceSpec) -> list[dict[str, Any]]:
    """The GPU container's model: from the ConfigMap, read when the container starts
    (model_update), and under InPlace the model admin API the operator commands."""

    def from_config_map(env: str, key: str) -> dict[str, Any]:
        ref = {"name": model_config_name(name), "key": key}
        return {"name": env, "valueFrom": {"configMapKeyRef": ref}}

    env = [
        from_config_map(pod.ENV_MODEL_PATH, model_update.KEY_MODEL_PATH),
        from_config_map(pod.ENV_MODEL_VERSION, model_update.KEY_MODEL_VERSION),
    ]
    if spec.model.update_strategy == "InPlace":
        ratio = str(spec.failover.memory_critical_ratio)
        env += [
            {"name": pod.ENV_MODEL_ADMIN, "value": "true"},
            {"name": pod.ENV_MODEL_SWAP_MEMORY_CRITICAL_RATIO, "value": ratio},
        ]
    return env


def _env(
    spec: VoiceServiceSpec,
    tier: Tier,
    engine: str,
    voice: str,
    routing_public_key: str,
) -> list[dict[str, Any]]:
    serving = spec.serving
    if tier == "gpu":
        device = "auto" if spec.gpu.count > 0 else "cpu"
        in_process = "espeak" if serving.in_process_fallback and engine != "espeak" else ""
        fp16 = spec.model.precision == "fp16"
    else:
        device, in_process, fp16 = "cpu", "", False
    values = [
        (pod.ENV_TIER, tier),
        (pod.ENV_ENGINE, engine),
        (pod.ENV_VOICE, voice),
        (pod.ENV_DEVICE, device),
        (pod.ENV_FP16, "true" if fp16 else "false"),
        (pod.ENV_HOST, "0.0.0.0"),
        (pod.ENV_PORT, str(serving.port)),
        (pod.ENV_MAX_CONCURRENCY, str(serving.max_concurrency)),
        (pod.ENV_MAX_QUEUE, str(serving.max_queue)),
        (pod.ENV_BATCH_MAX_SIZE, str(serving.batch.max_size)),
        (pod.ENV_BATCH_MAX_DELAY_MS, str(serving.batch.max_delay_ms)),
        (pod.ENV_REQUEST_TIMEOUT_SECONDS, str(serving.request_timeout_seconds)),
        (pod.ENV_MAX_INPUT_CHARS, str(serving.max_input_chars)),
        (pod.ENV_FALLBACK_ENGINE, in_process),
        (pod.ENV_FAULT_INJECTION, "true" if spec.fault_injection.enabled else "false"),
        # One service to its clients: both tiers advertise the GPU tier's voice.
        (pod.ENV_SERVICE_ENGINES, ",".join(service_engines(spec))),
        (pod.ENV_SERVICE_VOICE, spec.model.voice),
        (pod.ENV_ROUTING_PUBLIC_KEY, routing_public_key),
        # Libraries that want a writable home get the scratch emptyDir.
        ("HOME", "/tmp"),
    ]
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values]
    env.append(
        {"name": pod.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    if spec.fault_injection.enabled:
        ref = spec.fault_injection.token_secret_ref
        env.append(
            {
                "name": pod.ENV_FAULT_TOKEN,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    return env


def jobs_key_prefix(namespace: str, name: str) -> str:
    """Each VoiceService's jobs under their own keys, so several may share one Redis."""
    return f"voiceops:{namespace}/{name}:"


def jobs_env(namespace: str, name: str, jobs: JobsSpec) -> list[dict[str, Any]]:
    """The job settings, the same on both tiers (docs/jobs.md); none while jobs are off."""
    if not jobs.enabled:
        return []
    if jobs.redis_url:
        url: dict[str, Any] = {"name": pod.ENV_JOBS_REDIS_URL, "value": jobs.redis_url}
    else:
        ref = jobs.redis_secret_ref
        url = {
            "name": pod.ENV_JOBS_REDIS_URL,
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
        }
    return [
        url,
        {"name": pod.ENV_JOBS_KEY_PREFIX, "value": jobs_key_prefix(namespace, name)},
        {"name": pod.ENV_JOBS_TTL_SECONDS, "value": str(jobs.ttl_seconds)},
        {"name": pod.ENV_JOBS_MAX_INPUT_CHARS, "value": str(jobs.max_input_chars)},
    ]


def redis_port(jobs: JobsSpec) -> int:
    """The port the pods reach Redis on: the URL's, or Redis' default (a URL in a Secret)."""
    if jobs.redis_url:
        return urlsplit(jobs.redis_url).port or REDIS_DEFAULT_PORT
    return REDIS_DEFAULT_PORT


def restricted_security_context() -> dict[str, Any]:
    """Container securityContext meeting the restricted Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_template(
    vs: VoiceService,
    tier: Tier,
    *,
    image: str,
    engine: str,
    voice: str,
    resources: dict[str, Any],
    routing_public_key: str,
    model_revision: str | None = None,
) -> dict[str, Any]:
    spec = vs.spec
    source = parse_model_uri(spec.model.uri) if tier == "gpu" else None
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    if source and source.scheme == "pvc":
        volumes.append(
            {
                "name": MODEL_VOLUME,
                "persistentVolumeClaim": {"claimName": source.claim_name, "readOnly": True},
            }
        )
        mounts.append({"name": MODEL_VOLUME, "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
    container = {
        "name": "service",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": spec.serving.port, "protocol": "TCP"}],
        "env": _env(spec, tier, engine, voice, routing_public_key)
        + (_model_env(vs.name, spec) if tier == "gpu" else [])
        + jobs_env(vs.namespace, vs.name, spec.jobs),
        "resources": resources,
        **_probes(spec),
        "securityContext": restricted_security_context(),
        "volumeMounts": mounts,
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(spec.serving),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": HOSTNAME_TOPOLOGY_KEY,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": tier_selector(vs.name, tier)},
            }
        ],
    }
    if tier == "gpu":
        if spec.gpu.node_selector:
            pod_spec["nodeSelector"] = dict(spec.gpu.node_selector)
        if spec.gpu.tolerations:
            pod_spec["tolerations"] = [
                t.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False)
                for t in spec.gpu.tolerations
            ]
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.serving.port),
        "prometheus.io/path": pod.PATH_METRICS,
    }
    if model_revision is not None:
        annotations[model_update.REVISION_ANNOTATION] = model_revision
    return {
        "metadata": {"labels": labels(vs.name, tier), "annotations": annotations},
        "spec": pod_spec,
    }


def _deployment(
    vs: VoiceService, tier: Tier, replicas: int, template: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(vs, deployment_name(vs.name, tier), tier),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": tier_selector(vs.name, tier)},
            # Surge one pod and keep the old one serving until the new one is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "template": template,
        },
    }


def build_gpu_deployment(
    vs: VoiceService, settings: OperatorSettings, model: ModelStatus | None = None
) -> dict[str, Any]:
    """The GPU tier; ``model``: status.model (what an InPlace update has done)."""
    spec = vs.spec
    gpu_limits = {spec.gpu.resource_name: str(spec.gpu.count)} if spec.gpu.count > 0 else {}
    template = _pod_template(
        vs,
        "gpu",
        image=spec.image or settings.service_gpu_image,
        engine=spec.model.engine,
        voice=spec.model.voice,
        resources=_resources(spec.resources, gpu_limits),
        routing_public_key=settings.routing_public_key,
        model_revision=model_update.template_revision(spec.model, model),
    )
    return _deployment(vs, "gpu", gpu_replicas(spec), template)


def build_model_config_map(vs: VoiceService, model: ModelStatus | None = None) -> dict[str, Any]:
    """The model a GPU pod loads when it starts (model_update.pods_start_with)."""
    ref = model_update.pods_start_with(vs.spec.model, model)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(vs, model_config_name(vs.name), "gpu"),
        "data": {
            model_update.KEY_MODEL_PATH: parse_model_uri(ref.uri).container_path,
            model_update.KEY_MODEL_VERSION: ref.version,
            model_update.KEY_MODEL_URI: ref.uri,
        },
    }


def build_fallback_deployment(
    vs: VoiceService, routing: Routing, settings: OperatorSettings
) -> dict[str, Any]:
    fallback = vs.spec.fallback
    template = _pod_template(
        vs,
        "fallback",
        image=fallback.image or settings.service_image,
        engine=fallback.engine,
        voice=fallback.voice,
        resources=_resources(fallback.resources, {}),
        routing_public_key=settings.routing_public_key,
    )
    return _deployment(vs, "fallback", fallback_replicas(vs.spec, routing), template)


def _service(vs: VoiceService, name: str, tier: Tier | None, selector: dict) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(vs, name, tier),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": HTTP_PORT_NAME,
                    "port": vs.spec.serving.port,
                    "targetPort": HTTP_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def build_front_service(vs: VoiceService, routing: Routing) -> dict[str, Any]:
    """The address clients use; its selector follows the active tier."""
    active = routing.active_tier if vs.spec.fallback.enabled else "gpu"
    return _service(vs, front_service_name(vs.name), None, front_selector(vs.name, active))


def build_tier_service(vs: VoiceService, tier: Tier) -> dict[str, Any]:
    return _service(vs, tier_service_name(vs.name, tier), tier, tier_selector(vs.name, tier))


def _hpa(
    vs: VoiceService, tier: Tier, min_replicas: int, max_replicas: int, metric: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(vs, hpa_name(vs.name, tier), tier),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(vs.name, tier),
            },
            "minReplicas": min_replicas,
            "maxReplicas": max(min_replicas, max_replicas),
            "metrics": [metric],
        },
    }


def _cpu_metric(percent: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": percent},
        },
    }


def build_gpu_hpa(vs: VoiceService) -> dict[str, Any]:
    """GPU tier HPA: in-flight requests per pod when declared, else CPU utilisation."""
    scaling = vs.spec.autoscaling
    if scaling.metric == "inFlight":
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": metrics.HPA_IN_FLIGHT_METRIC},
                "target": {
                    "type": "AverageValue",
                    "averageValue": str(scaling.target_in_flight_per_pod),
                },
            },
        }
    else:
        metric = _cpu_metric(scaling.target_cpu_utilization_percentage)
    return _hpa(vs, "gpu", scaling.min_replicas, scaling.max_replicas, metric)


def build_fallback_hpa(vs: VoiceService, routing: Routing) -> dict[str, Any]:
    """Fallback HPA on CPU; its minimum is what the self-healing loop wants."""
    fallback = vs.spec.fallback
    metric = _cpu_metric(vs.spec.autoscaling.target_cpu_utilization_percentage)
    return _hpa(vs, "fallback", fallback_replicas(vs.spec, routing), fallback.max_replicas, metric)


def build_pdb(vs: VoiceService, tier: Tier) -> dict[str, Any]:
    """At most one pod of a tier down for voluntary disruptions (drains)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(vs, pdb_name(vs.name, tier), tier),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": tier_selector(vs.name, tier)},
            # Crash-looping pods must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _label_selector(selector: LabelSelector) -> dict[str, Any]:
    """A LabelSelector as Kubernetes stores it (empty parts left out; {} = everything)."""
    found: dict[str, Any] = {}
    if selector.match_labels:
        found["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        found["matchExpressions"] = [
            {
                "key": r.key,
                "operator": r.operator,
                **({"values": list(r.values)} if r.values else {}),
            }
            for r in selector.match_expressions
        ]
    return found


def _peer(peer: NetworkPolicyPeer) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if peer.pod_selector is not None:
        found["podSelector"] = _label_selector(peer.pod_selector)
    if peer.namespace_selector is not None:
        found["namespaceSelector"] = _label_selector(peer.namespace_selector)
    if peer.ip_block is not None:
        found["ipBlock"] = {"cidr": peer.ip_block.cidr}
        if peer.ip_block.except_:
            found["ipBlock"]["except"] = list(peer.ip_block.except_)
    return found


def build_network_policy(vs: VoiceService, metrics_readers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Ingress to the pods of both tiers on the serving port only; egress DNS only (or all).

    No ``from`` = any source. With ``allowFrom`` set, the ``metrics_readers``
    namespaces (the operator's, Prometheus') are added as peers: the operator
    reads GPU memory from each pod's /metrics on the same port, and a pod it
    cannot read would count as GPU-tier pressure and cause a failover.
    """
    policy = vs.spec.network_policy
    ingress: dict[str, Any] = {"ports": [{"port": vs.spec.serving.port, "protocol": "TCP"}]}
    if policy.allow_from:
        ingress["from"] = [_peer(p) for p in policy.allow_from] + [
            {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}
            for namespace in metrics_readers
        ]
    if policy.allow_egress:
        egress: list[dict[str, Any]] = [{}]  # one empty rule: any destination, any port
    else:
        egress = [
            {
                "ports": [
                    {"port": DNS_PORT, "protocol": "UDP"},
                    {"port": DNS_PORT, "protocol": "TCP"},
                ]
            }
        ]
        if vs.spec.jobs.enabled:  # the pods keep job checkpoints in Redis
            egress.append({"ports": [{"port": redis_port(vs.spec.jobs), "protocol": "TCP"}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(
            vs, network_policy_name(vs.name), None, component=COMPONENT_NETWORK_POLICY
        ),
        "spec": {
            "podSelector": {"matchLabels": pods_selector(vs.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [ingress],
            "egress": egress,
        },
    }


def build_all(
    vs: VoiceService,
    routing: Routing,
    settings: OperatorSettings,
    model: ModelStatus | None = None,
) -> list[dict[str, Any]]:
    """Every child the VoiceService should have, in creation order; ``model``:
    status.model, which a model update moves (model_update)."""
    spec = vs.spec
    fallback_on = spec.fallback.enabled
    objects: list[dict[str, Any]] = []
    if spec.network_policy.enabled:
        # First: pods start behind their policy, never open.
        objects.append(build_network_policy(vs, settings.metrics_reader_namespaces))
    objects.append(build_model_config_map(vs, model))  # before the pods that read it
    objects.append(build_gpu_deployment(vs, settings, model))
    if fallback_on:
        objects.append(build_fallback_deployment(vs, routing, settings))
    objects.append(build_tier_service(vs, "gpu"))
    if fallback_on:
        objects.append(build_tier_service(vs, "fallback"))
    objects.append(build_front_service(vs, routing))
    if spec.autoscaling.enabled:
        objects.append(build_gpu_hpa(vs))
        if fallback_on:
            objects.append(build_fallback_hpa(vs, routing))
    objects.append(build_pdb(vs, "gpu"))
    if fallback_on:
        objects.append(build_pdb(vs, "fallback"))
    return objects


# --- what the reconciler needs to know about children -------------------------------

# (apiVersion, kind) of every kind the operator owns, in reconcile order.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)


def possible_children(name: str) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of every child any spec could produce (for cleanup)."""
    found = []
    for tier in TIERS:
        found.append(("apps/v1", "Deployment", deployment_name(name, tier)))
        found.append(("v1", "Service", tier_service_name(name, tier)))
        found.append(("autoscaling/v2", "HorizontalPodAutoscaler", hpa_name(name, tier)))
        found.append(("policy/v1", "PodDisruptionBudget", pdb_name(name, tier)))
    found.append(("v1", "Service", front_service_name(name)))
    found.append(("networking.k8s.io/v1", "NetworkPolicy", network_policy_name(name)))
    found.append(("v1", "ConfigMap", model_config_name(name)))
    return found


def hpa_targets(objects: list[dict[str, Any]]) -> set[str]:
    """Names of the Deployments an HPA in `objects` scales (their replicas are the HPA's)."""
    return set(hpa_minimums(objects))


def hpa_minimums(objects: list[dict[str, Any]]) -> dict[str, int]:
    """Each HPA's minReplicas in `objects`, by the name of the Deployment it scales."""
    return {
        obj["spec"]["scaleTargetRef"]["name"]: int(obj["spec"]["minReplicas"])
        for obj in objects
        if obj["kind"] == "HorizontalPodAutoscaler"
    }
