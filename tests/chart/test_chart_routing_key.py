"""The chart makes the operator's routing key and hands it over as a read-only file."""

from __future__ import annotations

import base64
from pathlib import Path

from testsupport.chart import by_kind, one, render
from voiceops_operator.settings import OperatorSettings


def test_the_routing_key_is_a_valid_seed_mounted_read_only_into_the_operator(
    tmp_path: Path,
) -> None:
    objects = render({})
    secret = next(s for s in by_kind(objects, "Secret") if s["metadata"]["name"].endswith("key"))
    seed = base64.b64decode(secret["data"]["seed"]).decode()
    (tmp_path / "seed").write_text(seed)
    settings = OperatorSettings(_env_file=None, routing_key_file=str(tmp_path / "seed"))
    assert settings.routing_public_key  # the operator accepts it and derives the public half

    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    path = env["VOICEOPS_OPERATOR_ROUTING_KEY_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"]))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert "VOICEOPS_OPERATOR_ROUTING_KEY" not in env  # never as an environment variable
