"""The one way a demo step fails: ``DemoError`` names the step and what went wrong."""

from __future__ import annotations


class DemoError(Exception):
    """A step missed its deadline or failed; ``step`` names it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step, self.detail = step, message
