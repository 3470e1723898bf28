"""The console script: render, crd, api-docs, and clear errors on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from testsupport.manifests import REPO
from voiceops_operator.cli import main

CLI = [sys.executable, "-m", "voiceops_operator.cli"]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_render_prints_a_yaml_stream_of_children() -> None:
    result = run_cli("render", str(REPO / "examples" / "voiceservice.yaml"))
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert [o["kind"] for o in objects].count("Deployment") == 2
    assert {o["metadata"]["name"] for o in objects} == {
        "tts",
        "tts-gpu",
        "tts-fallback",
        "tts-model",
    }


def test_render_reads_stdin_and_skips_other_kinds() -> None:
    text = (REPO / "examples" / "local.yaml").read_text()
    result = run_cli("render", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    kinds = [o["kind"] for o in yaml.safe_load_all(result.stdout)]
    assert "Secret" not in kinds
    assert "Deployment" in kinds


def test_render_refuses_bad_specs_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: voiceops.io/v1alpha1\nkind: VoiceService\nmetadata: {name: tts}\n"
        "spec: {model: {uri: 'hf://rhasspy/piper'}}\n"
    )
    result = run_cli("render", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "spec.model.uri" in result.stderr
    assert "hf://" in result.stderr


def test_render_errors(tmp_path: Path, capsys: object) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["render", str(missing)]) == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    assert main(["render", str(broken)]) == 2
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["render", str(empty)]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "cannot read" in err
    assert "not valid YAML" in err
    assert "no VoiceService" in err


def test_crd_command_prints_the_committed_crd() -> None:
    result = run_cli("crd")
    assert result.returncode == 0
    assert result.stdout == (REPO / "crds" / "voiceservice.yaml").read_text()


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "voiceops-operator"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    for command in ("run", "render", "crd"):
        assert command in result.stdout


def test_run_flags_reach_the_settings() -> None:
    from voiceops_operator.cli import _settings_from_args, make_parser

    args = make_parser().parse_args(["run", "-n", "a", "-n", "b", "--service-image", "x:1"])
    settings = _settings_from_args(args)
    assert settings.namespaces == ("a", "b")
    assert settings.service_image == "x:1"
    assert settings.standalone
    args = make_parser().parse_args(["run", "--all-namespaces", "--peering", "p"])
    settings = _settings_from_args(args)
    assert settings.namespaces == ()
    assert not settings.standalone
