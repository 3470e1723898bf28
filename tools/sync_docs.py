"""Regenerate every file derived from the VoiceService model (`make docs`).

The pydantic spec in ``voiceops_operator.spec`` is the one source of truth:
the CRD, the chart's copy of it, the API reference and the README's field
table are all generated from it. Tests fail when any of them drifts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from voiceops_operator import apidoc
from voiceops_operator.cli import crd_yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIELDS_BEGIN = "<!-- fields:begin -->"
FIELDS_END = "<!-- fields:end -->"


def readme_fields_block() -> str:
    """The spec table of the API reference: every field with its default."""
    page = apidoc.render_markdown()
    match = re.search(r"^## spec\n\n(.*?)\n\n## ", page, flags=re.S | re.M)
    if match is None:
        raise RuntimeError("apidoc.render_markdown() has no '## spec' table")
    return match.group(1).strip()


def readme_with_fields(readme: str) -> str:
    head, sep, rest = readme.partition(FIELDS_BEGIN)
    _, sep2, tail = rest.partition(FIELDS_END)
    if not sep or not sep2:
        raise RuntimeError(f"README.md lacks the {FIELDS_BEGIN} … {FIELDS_END} markers")
    return f"{head}{FIELDS_BEGIN}\n{readme_fields_block()}\n{FIELDS_END}{tail}"


def main() -> int:
    crd_text = crd_yaml()
    outputs = {
        ROOT / "crds" / "voiceservice.yaml": crd_text,
        ROOT / "charts" / "voiceops" / "crds" / "voiceservice.yaml": crd_text,
        ROOT / "docs" / "voiceservice-api.md": apidoc.render_markdown(),
        README: readme_with_fields(README.read_text()),
    }
    for path, text in outputs.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
