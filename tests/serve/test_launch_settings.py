"""The server is launched with one typed settings object, refused whole before granian starts when
a value is bad, and the worker builds its app from exactly that object (no environment variables)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from recops_operator.render import Owner, desired_objects
from recops_serve.cli import parse_settings
from recops_serve.settings import LaunchSettings
from tests.support.redis_server import free_port
from tests.support.serving import BIN, ServerProc, metric
from tests.support.specs import spec

#: the environment of a launched server: nothing RECOPS_* from whoever runs the tests
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}


def _serve(*args: str) -> subprocess.CompletedProcess:
    """``recops-serve serve ARGS``; a process that starts serving instead of refusing times out."""
    argv = [str(BIN / "recops-serve"), "serve", "--host", "127.0.0.1", "--port", str(free_port()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=CLEAN_ENV)


def test_an_unknown_setting_is_refused_by_name_in_the_worker_too():
    with pytest.raises(ValidationError, match="nosuch"):
        LaunchSettings.from_json(json.dumps({"config": "/etc/recops/config.json", "nosuch": 1}))
    with pytest.raises(ValidationError, match=r"overrides\.top_kk"):
        LaunchSettings.from_json(json.dumps({"overrides": {"top_kk": 5}}))


def test_settings_cross_to_the_worker_unchanged_and_only_the_given_overrides_count():
    s = parse_settings(
        ["--config", "/c.json", "--set", "top_k=7", "--set", 'exclude={"seen": true}', "--bundle", "/b"]
    )
    again = LaunchSettings.from_json(s.to_json())
    assert again == s
    # merged over the file key by key: a key not given must not reset the file's value to a default
    assert again.override_values() == {"top_k": 7, "exclude": {"seen": True}, "model_uri": "/b"}
    assert again.config == Path("/c.json") and again.port == 8080 and again.backpressure == 512


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--set", "nosuch=1"], "--set nosuch: Extra inputs are not permitted"),
        (["--set", "top_k=0"], "--set top_k: Input should be greater than or equal to 1"),
        (["--set", "track=blue"], "--set track: Input should be 'stable' or 'canary'"),
        (
            ["--redis-url", "http://cache:6379"],
            "--redis-url: Value error, unsupported Redis URL scheme 'http'",
        ),
        (["--redis-url", "redis://cache:port"], "--redis-url: Value error, Port could not be cast"),
        (["--redis-url-file", "/nonexistent/url"], "redis_url_file /nonexistent/url: No such file"),
        (["--port", "70000"], "--port: Input should be less than or equal to 65535"),
        (["--backpressure", "0"], "--backpressure: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_setting_exits_2_before_the_server_starts(args, says):
    out = _serve(*args)
    assert out.returncode == 2 and says in out.stderr, out.stderr


def test_a_bad_url_in_the_secret_file_is_refused_without_showing_it(tmp_path):
    secret = tmp_path / "url"
    secret.write_text("redis://default:hunter2@tair.internal:notaport/0\n")
    out = _serve("--redis-url-file", str(secret))
    assert out.returncode == 2 and "Port could not be cast" in out.stderr, out.stderr
    assert "hunter2" not in out.stdout + out.stderr


def test_the_operators_pod_arguments_are_the_servers_settings():
    """What the operator renders into the container's args is what recops-serve parses."""
    objs = desired_objects(Owner("shop", "ns", "uid-1"), spec())
    pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[0] == "serve"
    s = parse_settings(args[1:])
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert s.config is not None and s.config.parent == Path(mounts["config"])
    assert s.redis_url_file is not None and s.redis_url_file.parent == Path(mounts["feature-store"])
    assert s.attribution_key_file is not None
    assert s.attribution_key_file.parent == Path(mounts["attribution-key"])


@pytest.mark.integration
def test_the_worker_serves_with_the_secret_files_and_overrides_it_was_launched_with(
    bundles, redis_server, tmp_path
):
    """Feature store from the Secret file, the HMAC key from its file (a token from one server
    verifies on another with the same file), the track from ``--set``: all through the settings."""
    url_file, key_file = tmp_path / "url", tmp_path / "key"
    url_file.write_text(redis_server.url + "\n")
    key_file.write_text("the-services-key\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_uri": str(bundles["v1"]), "reload_seconds": 0.5}))

    def start(name: str, *extra: str) -> ServerProc:
        log = tmp_path / f"{name}.log"
        return ServerProc(config, None, log, key_file, ["--redis-url-file", str(url_file), *extra], CLEAN_ENV)

    canary = start("canary", "--set", "track=canary")
    stable = start("stable")
    try:
        assert canary.get("/readyz").json()["feature_store"] == "on"
        answer = canary.get("/v1/recommendations", user_id="u3").json()
        assert answer["feature_store"] == "on" and answer["attribution_token"].split(":")[1] == "canary"
        event = {
            "user_id": "u3",
            "item_id": 1,
            "type": "view",
            "attribution_token": answer["attribution_token"],
        }
        assert stable.post("/v1/events", event).status_code == 200
        assert metric(stable, "recops_attributed_events_total", answer_track="canary") == 1
        assert metric(stable, "recops_attribution_rejected_total") == 0
    finally:
        canary.stop()
        stable.stop()
