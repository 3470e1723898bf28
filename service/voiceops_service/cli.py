"""`voiceops-service`: run the server. Every flag is also a `VOICEOPS_*` environment variable."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

import uvicorn
from pydantic import ValidationError

from voiceops_service.app import create_app
from voiceops_service.settings import ServiceSettings
from voiceops_service.state import ServiceState

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
    server = DrainingServer(config, app.state.service)
    app.state.service.routing.close_connections = lambda: _close_after_answer(server)
    server.run()
    if fatal:
        print(f"voiceops-service: {fatal[0]}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn that drains on SIGTERM before its own graceful shutdown.

    The first SIGTERM turns the pod not ready (``/readyz``: draining), makes every
    answer close its connection and closes idle ones, and keeps accepting: a proxy
    whose rules lag still gets answers. The server exits once no speech request is
    running or queued, or after ``request_timeout_seconds``. A second signal, or
    SIGINT, exits as uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self.state = state
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + self.state.settings.request_timeout_seconds
            self.state.routing.start_draining()
            logging.getLogger(__name__).info(
                "SIGTERM: draining %d speech requests", self.state.speech_in_flight()
            )
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self.drain_deadline is None:
            return False
        return self.state.speech_in_flight() == 0 or time.monotonic() > self.drain_deadline


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
