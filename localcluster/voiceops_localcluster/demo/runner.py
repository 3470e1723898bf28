"""Run the demo as a command: signals, exit codes, the cleanup, logging to a file."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import traceback
from collections.abc import Sequence

from .errors import DemoError
from .options import DemoOptions, parse_args
from .report import say
from .scenario import Demo


async def run_demo(options: DemoOptions) -> int:
    """Run the demo; 0 on success, 1 on a failed step, 130 when interrupted."""
    demo = Demo(options)
    started = time.monotonic()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C must not cut the cleanup short
            say("still stopping the cluster ...")
            return
        interrupted = True
        if task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    code = 0
    try:
        await demo.run()
        say(f"\ndemo passed in {time.monotonic() - started:.0f}s; output in {demo.out}")
    except DemoError as exc:
        say(f"\nDEMO FAILED at step '{exc.step}': {exc.detail}")
        say(await demo.diagnostics())
        code = 1
    except Exception:  # a bug or an unexpected answer: still the diagnostics and the cleanup
        say(f"\nDEMO FAILED with an unexpected error:\n{traceback.format_exc()}")
        say(await demo.diagnostics())
        code = 1
    except asyncio.CancelledError:
        if not interrupted:
            raise
        say("\ninterrupted: stopping the cluster")
        code = 130
    finally:
        await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        say("stopped: operator, pods, node agent and control plane")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # Library logs (node agent, Service proxy, watches) go to a file; the terminal shows the story.
    options.output.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=options.output / "demo.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run_demo(options))
