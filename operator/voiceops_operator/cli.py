"""`voiceops-operator`: run the operator, render a VoiceService's children, print the CRD."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from voiceops_operator import __version__, apidoc, build, crd
from voiceops_operator.settings import OperatorSettings
from voiceops_operator.spec import KIND, InvalidSpec, parse_voiceservice


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=100, allow_unicode=True)


def dump_yaml_stream(objects: Sequence[Any]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=100, allow_unicode=True)


def crd_yaml() -> str:
    """The CRD exactly as committed in crds/voiceservice.yaml."""
    header = "# Generated from voiceops_operator.spec by `voiceops-operator crd`; do not edit.\n"
    return header + dump_yaml(crd.build_crd())


class RenderError(Exception):
    """Input `render` cannot turn into objects; the message says where and why."""


def render_documents(text: str, source: str, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Every object the operator would create for the VoiceServices in `text`."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RenderError(f"{source}: not valid YAML: {exc}") from None
    if not documents:
        raise RenderError(f"{source}: no VoiceService found")
    objects: list[dict[str, Any]] = []
    found = 0
    for index, document in enumerate(documents, start=1):
        if _is_other_kubernetes_object(document):
            continue  # e.g. the Secret next to a VoiceService in examples/local.yaml
        found += 1
        try:
            vs = parse_voiceservice(document)
        except InvalidSpec as exc:
            details = "\n  ".join(str(e) for e in exc.errors)
            raise RenderError(f"{source}: document {index} is invalid:\n  {details}") from None
        objects.extend(build.build_all(vs, build.Routing(), settings))
    if not found:
        raise RenderError(f"{source}: no VoiceService found")
    return objects


def _is_other_kubernetes_object(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("apiVersion"), str)
        and isinstance(document.get("kind"), str)
        and document["kind"] != KIND
    )


def _settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    overrides: dict[str, Any] = {}
    for name in ("service_image", "service_gpu_image", "peering", "priority", "log_format"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "all_namespaces", False):
        overrides["namespaces"] = ()
    elif getattr(args, "namespace", None):
        overrides["namespaces"] = tuple(args.namespace)
    for name in ("health_port", "metrics_port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return OperatorSettings(**overrides)


def _cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = _settings_from_args(args)
    source = args.file
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        err.write(f"error: cannot read {source}: {exc.strerror or exc}\n")
        return 2
    try:
        objects = render_documents(text, source, settings)
    except RenderError as exc:
        err.write(f"error: {exc}\n")
        return 2
    out.write(dump_yaml_stream(objects))
    return 0


def _cmd_crd(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    out.write(crd_yaml())
    return 0


def _cmd_api_docs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    out.write(apidoc.render_markdown())
    return 0


def build_registry(settings: OperatorSettings) -> Any:
    """A kopf registry with the spec handlers and, with SELF_HEALING on, the healing loop's."""
    import kopf

    from voiceops_operator import handlers

    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    if settings.self_healing:
        from voiceops_operator import healing_handlers

        healing_handlers.register(registry)
    return registry


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import kopf

    settings = _settings_from_args(args)
    json_logs = settings.log_format == "json"
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.PLAIN,
        # "[namespace/name] ..." on each object's lines (JSON logs carry it as fields).
        log_prefix=not json_logs,
    )
    registry = build_registry(settings)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    namespaces = list(settings.namespaces)
    logging.getLogger(__name__).info(
        "voiceops-operator %s watching %s",
        __version__,
        ", ".join(namespaces) if namespaces else "all namespaces",
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=settings.standalone,
            priority=settings.priority,
            peering_name=settings.peering or None,
            liveness_endpoint=liveness,
            memo=kopf.Memo(),
        )
    )
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voiceops-operator",
        description="Kubernetes operator for self-healing text-to-speech services.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator (kopf) against the current cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    run.add_argument("--service-image", help="CPU service image (fallback tier)")
    run.add_argument("--service-gpu-image", help="GPU service image")
    run.add_argument("--peering", help="kopf peering name (default: standalone)")
    run.add_argument("--priority", type=int, help="kopf peering priority")
    run.add_argument("--health-port", type=int, help="liveness /healthz port (0 = off)")
    run.add_argument("--metrics-port", type=int, help="operator /metrics port (0 = off)")
    run.add_argument("--log-format", choices=["plain", "json"])
    run.add_argument("--verbose", "-v", action="store_true", help="more logging")
    run.set_defaults(handler=_cmd_run)

    render = commands.add_parser(
        "render", help="print the objects the operator would create for a manifest (no cluster)"
    )
    render.add_argument("file", help="VoiceService manifest (YAML, may hold several); - = stdin")
    render.add_argument("--service-image", help="CPU service image (fallback tier)")
    render.add_argument("--service-gpu-image", help="GPU service image")
    render.set_defaults(handler=_cmd_render)

    crd_cmd = commands.add_parser("crd", help="print the VoiceService CRD")
    crd_cmd.set_defaults(handler=_cmd_crd)

    docs = commands.add_parser("api-docs", help="print the VoiceService field reference")
    docs.set_defaults(handler=_cmd_api_docs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.handler(args, sys.stdout, sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
