"""`voiceops-service`: run the server. Every flag is also a `VOICEOPS_*` environment variable."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from voiceops_service.app import create_app
from voiceops_service.settings import ServiceSettings

EXIT_BAD_SETTINGS = 2
EXIT_LOAD_FAILED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voiceops-service",
        description="OpenAI-compatible text-to-speech server. Flags override VOICEOPS_* env vars.",
    )
    fields = ServiceSettings.model_fields
    for name, field in fields.items():
        flag = "--" + name.replace("_", "-")
        env = "VOICEOPS_" + name.upper()
        annotation = field.annotation
        help_text = f"{field.description or name} (env {env})"
        if annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> ServiceSettings:
    """Environment first, flags on top; raises ValidationError naming the field."""
    args = vars(_parser().parse_args(argv))
    overrides = {name: value for name, value in args.items() if value is not None}
    return ServiceSettings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "settings"
            print(
                f"voiceops-service: invalid setting {field} (flag --{field.replace('_', '-')}, "
                f"env VOICEOPS_{field.upper()}): {problem['msg']}",
                file=sys.stderr,
            )
        return EXIT_BAD_SETTINGS
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, int(settings.request_timeout_seconds)),
    )
    server = uvicorn.Server(config)
    app.state.service.routing.close_connections = lambda: _close_after_answer(server)
    server.run()
    if fatal:
        print(f"voiceops-service: {fatal[0]}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    return 0


def _close_after_answer(server: uvicorn.Server) -> int:
    """Ask every open connection to close: idle ones now, busy ones after their answer.

    The same call uvicorn makes on each connection when it shuts down gracefully.
    """
    connections = list(server.server_state.connections)
    for connection in connections:
        connection.shutdown()
    return len(connections)


if __name__ == "__main__":
    sys.exit(main())
