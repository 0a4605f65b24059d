"""The same endpoint rules through the CLI and the JSON API: URLs checked, the secret shown once, test,
replay and removal; and nothing secret in the logs while deliveries run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))
from api_support import Api, serve_api
from webhook_support import add_active, receiver, run_loops

from m365relay.client import verify_webhook
from m365relay.connectors import ConnectorConfig
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update, make_settings

BAD_URLS = ["ftp://hooks.example.com/x", "http://", "hooks.example.com/x", "https://exa mple.com/"]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "M365RELAY_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "m365relay", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def home(tmp_path: Path, sandbox: SandboxServer) -> Path:
    home = tmp_path / "home"
    runtime = Runtime(make_settings(home))
    runtime.connectors.save("default", connector_update(sandbox))
    runtime.close()
    return home


@pytest.mark.parametrize("url", BAD_URLS[:2])
def test_the_cli_refuses_a_bad_url_and_changes_nothing(home: Path, url: str) -> None:
    done = cli(home, "webhook", "add", url, "--events", "sent")
    assert done.returncode == 65, done.stderr
    assert "URL" in done.stderr and "Traceback" not in done.stderr
    assert json.loads(cli(home, "webhook", "ls", "--json").stdout) == []


def test_the_cli_refuses_unknown_events_and_connectors(home: Path) -> None:
    done = cli(home, "webhook", "add", "https://hooks.example.com/x", "--events", "sent,opened", "--connector", "nope")
    assert done.returncode == 65
    assert "opened" in done.stderr and "nope" in done.stderr, "every mistake named at once"


def test_cli_add_shows_the_secret_once_then_test_replay_and_rm(home: Path) -> None:
    with receiver() as hook:
        url = hook.url.replace("http://", "http://user:hunter2@")
        added = cli(home, "webhook", "add", url, "--events", "sent", "--events", "bounced")
        assert added.returncode == 0, added.stderr
        secret = next(w for w in added.stdout.split() if w.startswith("whsec_"))
        listed = cli(home, "webhook", "ls")
        listed_json = json.loads(cli(home, "webhook", "ls", "--json").stdout)
        assert secret not in listed.stdout + json.dumps(listed_json)
        assert "hunter2" not in listed.stdout + json.dumps(listed_json), "the URL's credentials are masked"
        assert listed_json[0]["events"] == ["sent", "bounced"] and listed_json[0]["connector"] == "default"
        endpoint_id = str(listed_json[0]["id"])
        tested = cli(home, "webhook", "test", endpoint_id)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        (request,) = hook.accepted()
        assert verify_webhook(request.body, request.headers, secret)["type"] == "webhook.test"
        assert request.headers["authorization"].startswith("Basic "), "sent to the URL as entered"
    failed = cli(home, "webhook", "test", endpoint_id)  # the receiver is gone now
    assert failed.returncode == 1 and "ConnectError" in failed.stdout
    replayed = cli(home, "webhook", "replay", endpoint_id, "--since", "1h")
    assert replayed.returncode == 0 and "0 event(s)" in replayed.stdout
    assert cli(home, "webhook", "rm", endpoint_id).returncode == 0
    gone = cli(home, "webhook", "rm", endpoint_id)
    assert gone.returncode == 1 and "no webhook endpoint" in gone.stderr


@pytest.fixture
def api(runtime: Runtime, connector: ConnectorConfig) -> Iterator[Api]:
    yield from serve_api(runtime, connector)


def test_the_api_manages_endpoints_with_the_same_rules(api: Api) -> None:
    admin = api.client("admin")
    for url in BAD_URLS:
        refused = admin.post("/webhooks", json={"url": url, "events": ["sent"]})
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert admin.get("/webhooks").json() == {"items": []}
    assert api.client("reader").get("/webhooks").status_code == 403, "webhooks need the admin scope"
    with receiver() as hook:
        created = admin.post("/webhooks", json={"url": hook.url, "events": ["accepted", "failed"]})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        endpoint_id = created.json()["id"]
        listed = admin.get("/webhooks")
        assert secret not in listed.text and listed.json()["items"][0]["events"] == ["accepted", "failed"]
        tested = admin.post(f"/webhooks/{endpoint_id}/test")
        assert tested.json()["ok"] is True and tested.json()["status"] == 204
        assert verify_webhook(hook.accepted()[0].body, hook.accepted()[0].headers, secret)["type"] == "webhook.test"
    replayed = admin.post(f"/webhooks/{endpoint_id}/replay", json={"since_seconds": 3600})
    assert replayed.json() == {"endpoint": endpoint_id, "requeued": 0}
    assert admin.post(f"/webhooks/{endpoint_id}/replay", json={"delivery_id": 999}).status_code == 404
    assert admin.delete(f"/webhooks/{endpoint_id}").status_code == 204
    assert admin.delete(f"/webhooks/{endpoint_id}").status_code == 404
    spec = admin.get("/openapi.json").json()
    assert {"/webhooks", "/webhooks/{endpoint_id}", "/webhooks/{endpoint_id}/replay"} <= set(spec["paths"])


def test_no_secret_url_or_credential_reaches_the_log(
    runtime: Runtime, connector: ConnectorConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with receiver(status=500) as hook:
        url = hook.url.replace("http://", "http://user:hunter2@") + "?token=sesame"
        issued = add_active(runtime, url, "accepted")
        Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="s", text="x")
        run_loops(runtime, lambda: len(hook.requests) >= 2, dispatch=False)
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for secret in (issued.secret, "hunter2", "sesame", "/hooks/m365relay"):
        assert secret not in logged
