"""The metric and env-var contract is well-formed (Prometheus naming rules)."""

import re

from voiceops_contract import metrics, pod

PROM_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def test_every_metric_has_prefix_and_valid_name() -> None:
    for spec in metrics.ALL:
        assert spec.name.startswith(metrics.PREFIX), spec.name
        assert PROM_NAME.match(spec.name), spec.name


def test_counters_end_in_total_and_nothing_else_does() -> None:
    for spec in metrics.ALL:
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name


def test_names_are_unique() -> None:
    names = [spec.name for spec in metrics.ALL]
    assert len(names) == len(set(names))


def test_operator_reads_only_contract_metrics() -> None:
    assert set(metrics.OPERATOR_READS) <= set(metrics.ALL)
    assert {spec.name for spec in metrics.ALL} >= metrics.GPU_ONLY


def test_env_names_share_prefix() -> None:
    env_names = [v for k, v in vars(pod).items() if k.startswith("ENV_") and k != "ENV_PREFIX"]
    assert env_names
    assert all(name.startswith(pod.ENV_PREFIX) for name in env_names)
    assert len(env_names) == len(set(env_names))


def test_gpu_health_reasons_name_fatal_xids_and_nothing_else() -> None:
    assert metrics.GPU_HEALTHY.labels == ("gpu", "uuid", "reason")
    assert metrics.GPU_XID_ERRORS_TOTAL.labels == ("gpu", "xid")
    assert {metrics.GPU_HEALTHY.name, metrics.GPU_XID_ERRORS_TOTAL.name} <= metrics.GPU_ONLY
    assert metrics.gpu_health_xid(79) == "xid_79"
    assert metrics.gpu_health_fatal_xid(metrics.gpu_health_xid(79)) == 79
    for reason in (
        metrics.GPU_HEALTH_OK,
        metrics.GPU_HEALTH_GPU_LOST,
        metrics.GPU_HEALTH_NVML_ERROR,
        metrics.GPU_HEALTH_ECC_UNCORRECTABLE,
        "xid_",
        "xid_7x",
    ):
        assert metrics.gpu_health_fatal_xid(reason) is None
