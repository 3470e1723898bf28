"""What is wrong with a VoiceService, field by field. Pure: no I/O."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec the operator cannot act on; ``field`` names it (e.g. spec.model.uri)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message if message.startswith(field + " ") else f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidSpec(ValueError):
    """All the problems of one spec; str() lists them one per line."""

    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors

    @property
    def field(self) -> str:
        return self.errors[0].field
