"""The Dockerfile installs exactly what README.md's install block (and docs/deploy.md's) says."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from testsupport.chart import REPO_ROOT, missing

BEGIN, END = "<!-- install:begin -->", "<!-- install:end -->"
# Options of `pip install` that take a value; the index decides which torch build comes.
VALUE_OPTIONS = {
    "--index-url",
    "-i",
    "--extra-index-url",
    "--find-links",
    "-f",
    "--constraint",
    "-c",
}
InstallStep = tuple[frozenset[str], str]  # (requirements, index URL or "" for PyPI)


def parse_pip_install(command: str) -> InstallStep:
    words = shlex.split(command)
    start = words.index("install") + 1
    requirements: set[str] = set()
    index_url = ""
    position = start
    while position < len(words):
        word = words[position]
        if word in VALUE_OPTIONS:
            if word in ("--index-url", "-i"):
                index_url = words[position + 1]
            position += 2
            continue
        if word.startswith("--index-url="):
            index_url = word.split("=", 1)[1]
        elif not word.startswith("-"):
            requirements.add(word.rstrip("/"))
        position += 1
    return frozenset(requirements), index_url


def markdown_install_steps(path: Path) -> set[InstallStep]:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        missing(f"the {BEGIN} … {END} block in {path.name}", "see docs/deploy.md for its format")
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    commands = [
        line.strip() for line in block.splitlines() if line.strip().startswith("pip install")
    ]
    assert commands, f"{path.name}: the install block has no `pip install` line"
    return {parse_pip_install(command) for command in commands}


def dockerfile_install_steps(path: Path) -> set[InstallStep]:
    text = path.read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.MULTILINE))
    steps = set()
    for line in text.splitlines():
        if line.startswith("RUN ") and "pip install" in line:
            command = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], line.removeprefix("RUN "))
            for part in command.split("&&"):
                if "pip install" in part:
                    steps.add(parse_pip_install(part))
    return steps


DOCKERFILE_STEPS = dockerfile_install_steps(REPO_ROOT / "Dockerfile")


def test_parser_reads_requirements_and_index() -> None:
    assert parse_pip_install(
        'pip install --no-cache-dir --index-url https://x/cpu "torch==2.13.0"'
    ) == (frozenset({"torch==2.13.0"}), "https://x/cpu")
    assert parse_pip_install("pip install -q ./contract ./service/") == (
        frozenset({"./contract", "./service"}), "",
    )  # fmt: skip


def test_dockerfile_installs_each_distribution_and_torch_builds() -> None:
    requirements = {req for reqs, _ in DOCKERFILE_STEPS for req in reqs}
    assert {"./contract", "./operator", "./service", "torch==2.13.0"} <= requirements
    torch_indexes = {index for reqs, index in DOCKERFILE_STEPS if "torch==2.13.0" in reqs}
    assert torch_indexes == {"https://download.pytorch.org/whl/cpu", ""}


def test_dockerfile_torch_is_the_version_the_service_pins() -> None:
    service = tomllib.loads((REPO_ROOT / "service" / "pyproject.toml").read_text())
    pins = [d for d in service["project"]["dependencies"] if d.startswith("torch")]
    assert pins
    assert all(f"{pin}" in {r for reqs, _ in DOCKERFILE_STEPS for r in reqs} for pin in pins)


@pytest.mark.parametrize("document", ["README.md", "docs/deploy.md"])
def test_dockerfile_and_docs_name_the_same_packages_and_versions(document: str) -> None:
    path = REPO_ROOT / document
    if not path.is_file():
        missing(document, "the repository's documentation is incomplete")
    assert markdown_install_steps(path) == DOCKERFILE_STEPS
