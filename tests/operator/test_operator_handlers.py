"""kopf wiring: what gets registered and how kopf is configured."""

from __future__ import annotations

import kopf
from voiceops_operator import build, handlers, spec
from voiceops_operator.cli import build_registry
from voiceops_operator.settings import OperatorSettings


def test_configure_kopf_uses_our_prefixes_and_standalone() -> None:
    kopf_settings = kopf.OperatorSettings()
    handlers.configure_kopf(kopf_settings, OperatorSettings(_env_file=None, peering=""))
    assert kopf_settings.persistence.finalizer == "voiceops.io/finalizer"
    assert isinstance(kopf_settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert kopf_settings.persistence.progress_storage.prefix == "voiceops.io"
    assert kopf_settings.persistence.diffbase_storage.prefix == "voiceops.io"
    assert kopf_settings.peering.standalone is True
    assert kopf_settings.watching.server_timeout == 300
    # A deletion waits for a running timer at most about this long, not kopf's minute.
    assert kopf_settings.background.cancellation_polling <= 1
    peered = kopf.OperatorSettings()
    handlers.configure_kopf(peered, OperatorSettings(_env_file=None, peering="voiceops"))
    assert peered.peering.standalone is False
    assert peered.peering.name == "voiceops"


def handler_ids(registry: kopf.OperatorRegistry) -> set[str]:
    found = set()  # kopf has no public listing of a registry's handlers
    for sub in (
        registry._activities,
        registry._changing,
        registry._watching,
        registry._spawning,
    ):
        found |= {h.id for h in sub.get_all_handlers()}
    return found


def test_spec_handlers_are_registered() -> None:
    registry = build_registry(OperatorSettings(_env_file=None, self_healing=False))
    ids = handler_ids(registry)
    for plural in (
        "deployments",
        "services",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
        "networkpolicies",
    ):
        assert f"drift-{plural}" in ids
    assert any("reconcile_voiceservice" in i for i in ids)
    assert any("resync" in i for i in ids)
    assert any("login" in i for i in ids)
    assert not any("healing" in i for i in ids)


def test_self_healing_plugs_into_the_same_registry() -> None:
    registry = build_registry(OperatorSettings(_env_file=None, self_healing=True))
    assert any("healing" in i for i in handler_ids(registry))


def test_every_kind_the_reconcile_reads_has_an_index() -> None:
    registry = build_registry(OperatorSettings(_env_file=None, self_healing=False))
    index_ids = {h.id for h in registry._indexing.get_all_handlers()}
    kinds = handlers.indexed_kinds()
    assert set(kinds) == {*build.CHILD_KINDS, (spec.API_VERSION, spec.KIND)}
    assert set(kinds.values()) <= index_ids
    # The children's indexes see what their drift watches see: our labelled objects.
    for group, version, plural in handlers.CHILD_RESOURCES:
        (handler,) = [
            h for h in registry._indexing.get_all_handlers() if h.id == handlers.index_id(plural)
        ]
        assert (handler.selector.group, handler.selector.version) == (group, version)
        assert handler.selector.any_name == plural
        assert handler.labels == handlers.MANAGED
