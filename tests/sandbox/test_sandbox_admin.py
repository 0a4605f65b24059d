"""The /_sandbox admin API, the viewer, the PKI on disk and the command line."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sandbox_support import make_certificate, send_json, simple_message, token, token_request

from m365relay.sandbox import SandboxServer


def test_state_round_trip(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    state = sandbox_api.get("/_sandbox/state").json()
    assert state["token_lifetime"] == 3599
    assert state["tenants"][0]["domains"] == ["contoso.onmicrosoft.com"]
    app = state["apps"][0]
    assert app["granted_roles"] == ["Mail.Send"]
    secret = app["secrets"][0]["value"]
    assert 37 <= len(secret) <= 40 and secret[3:5] == "Q~" and any(c.isdigit() for c in secret)
    assert state["mailboxes"][0]["max_message_size"] == 36_700_160
    state["token_lifetime"] = 1200
    assert sandbox_api.put("/_sandbox/state", json=state).status_code == 200
    assert token_request(sandbox_api, sandbox).json()["expires_in"] == 1200
    assert sandbox_api.put("/_sandbox/state", json={"tenants": [{"id": "nope"}]}).status_code == 400
    assert sandbox_api.get("/_sandbox/state").json()["token_lifetime"] == 1200
    sandbox_api.post("/_sandbox/reset")
    assert sandbox_api.get("/_sandbox/state").json()["token_lifetime"] == 3599


def test_secrets_lifecycle(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    client_id = sandbox.demo_info["client_id"]
    created = sandbox_api.post(f"/_sandbox/apps/{client_id}/secrets", json={})
    assert created.status_code == 201
    secret = created.json()
    assert secret["value"][3:5] == "Q~" and secret["secret_id"] and secret["expires_at"]
    assert token_request(sandbox_api, sandbox, client_secret=secret["value"]).status_code == 200
    path = f"/_sandbox/apps/{client_id}/secrets/{secret['secret_id']}"
    assert sandbox_api.delete(path).status_code == 204
    assert token_request(sandbox_api, sandbox, client_secret=secret["value"]).status_code == 401
    assert sandbox_api.delete(path).status_code == 404
    chosen = sandbox_api.post(f"/_sandbox/apps/{client_id}/secrets", json={"value": "abcQ~chosen1"}).json()
    assert chosen["value"] == "abcQ~chosen1"


def test_seeded_secret_defaults(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    app = sandbox_api.post("/_sandbox/apps", json={"granted_roles": ["Mail.Send"], "secrets": [{"value": "abcQ~x1"}]})
    assert app.status_code == 201, app.text
    [secret] = app.json()["secrets"]
    assert secret["secret_id"] and secret["expires_at"] > "2027"
    response = token_request(sandbox_api, sandbox, client_id=app.json()["client_id"], client_secret="abcQ~x1")
    assert response.status_code == 200


def test_certificate_delete(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    client_id = sandbox.demo_info["client_id"]
    cert = make_certificate()
    added = sandbox_api.post(f"/_sandbox/apps/{client_id}/certificates", json={"pem": cert.cert_pem}).json()
    assert len(added["thumbprint_sha1"]) == 40 and len(added["thumbprint_sha256"]) == 64
    assert sandbox_api.delete(f"/_sandbox/apps/{client_id}/certificates/{added['thumbprint_sha1']}").status_code == 204
    assert sandbox_api.post(f"/_sandbox/apps/{client_id}/certificates", json={"pem": "junk"}).status_code == 400


def test_new_tenant_app_and_mailbox(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    tid = str(uuid.uuid4())
    assert sandbox_api.post("/_sandbox/tenants", json={"id": tid, "domains": ["fabrikam.com"]}).status_code == 201
    app = sandbox_api.post("/_sandbox/apps", json={"tenant": tid, "granted_roles": ["Mail.Send"]}).json()
    secret = sandbox_api.post(f"/_sandbox/apps/{app['client_id']}/secrets", json={}).json()
    assert sandbox_api.put("/_sandbox/mailboxes/alerts@fabrikam.com", json={}).json()["tenant"] == tid
    access_token = token(
        sandbox_api, sandbox, tenant="fabrikam.com", client_id=app["client_id"], client_secret=secret["value"]
    )
    assert send_json(sandbox_api, "alerts@fabrikam.com", access_token, simple_message()).status_code == 202
    # the demo tenant's mailbox is invisible to this tenant's app
    assert send_json(sandbox_api, sandbox.demo_info["mailbox"], access_token, simple_message()).status_code == 404
    assert sandbox_api.delete("/_sandbox/mailboxes/alerts@fabrikam.com").status_code == 204


def test_messages_filters_and_delete(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    access_token = token(sandbox_api, sandbox)
    mailbox = sandbox.demo_info["mailbox"]
    for subject in ("one", "two", "three"):
        send_json(sandbox_api, mailbox, access_token, simple_message(subject=subject))
    listed = sandbox_api.get("/_sandbox/messages", params={"limit": 2}).json()
    assert [m["subject"] for m in listed] == ["three", "two"]
    assert sandbox_api.get("/_sandbox/messages", params={"mailbox": "x@y.z"}).json() == []
    assert sandbox_api.get("/_sandbox/messages/unknown").status_code == 404
    assert sandbox_api.delete("/_sandbox/messages").status_code == 204
    assert sandbox_api.get("/_sandbox/messages").json() == []


def test_stats_clock_latency_ca_demo(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    token_request(sandbox_api, sandbox, client_secret="wrong")
    stats = sandbox_api.get("/_sandbox/stats").json()
    assert stats["token"] == 1 and stats["token_failures"] == {"AADSTS7000215": 1}
    assert sandbox_api.delete("/_sandbox/stats").json()["token"] == 0
    assert sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 42.5}).json()["offset_seconds"] == 42.5
    assert sandbox_api.put("/_sandbox/latency", json={"ms": 5}).json() == {"ms": 5.0}
    assert sandbox_api.get("/_sandbox/ca.pem").text.startswith("-----BEGIN CERTIFICATE-----")
    assert sandbox_api.get("/_sandbox/demo").json()["client_id"] == sandbox.demo_info["client_id"]
    sandbox_api.post("/_sandbox/reset")
    assert sandbox_api.get("/_sandbox/clock").json()["offset_seconds"] == 0
    assert sandbox_api.get("/_sandbox/latency").json() == {"ms": 0.0}


def test_viewer_escapes_html(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    access_token = token(sandbox_api, sandbox)
    evil = "<script>alert(1)</script>"
    send_json(sandbox_api, sandbox.demo_info["mailbox"], access_token, simple_message(subject=evil))
    page = sandbox_api.get("/")
    assert page.status_code == 200
    assert evil not in page.text and "&lt;script&gt;" in page.text
    message_id = sandbox_api.get("/_sandbox/messages").json()[0]["id"]
    detail = sandbox_api.get(f"/messages/{message_id}")
    assert detail.status_code == 200
    assert evil not in detail.text and "/raw" in detail.text


def test_pki_is_reused_and_private(tmp_path: Path) -> None:
    with SandboxServer(tmp_path, demo=True) as first:
        ca = first.ca_file.read_bytes()
        secret = first.demo_info["secret_value"]
    for name in ("ca.key", "server.key", "token-signing.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    with SandboxServer(tmp_path, demo=True) as second:
        assert second.ca_file.read_bytes() == ca
        assert second.demo_info["secret_value"] == secret
        demo_file = json.loads((tmp_path / "demo.json").read_text())
        assert demo_file["url"] == second.url and demo_file["tenant_domain"] == "contoso.onmicrosoft.com"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(second.ca_file))) as client:
            for host in ("127.0.0.1", "localhost"):
                assert client.get(f"https://{host}:{second.port}/_sandbox/stats").status_code == 200


def test_seed_file_and_lifetime(tmp_path: Path) -> None:
    tid, client_id = str(uuid.uuid4()), str(uuid.uuid4())
    seed = {
        "tenants": [{"id": tid, "domains": ["seeded.example"]}],
        "apps": [
            {
                "tenant": tid,
                "client_id": client_id,
                "secrets": [
                    {"secret_id": str(uuid.uuid4()), "value": "abcQ~seeded1", "expires_at": "2099-01-01T00:00:00Z"}
                ],
            }
        ],
    }
    seed_path = tmp_path / "seed.json"
    seed_path.write_text(json.dumps(seed))
    with SandboxServer(tmp_path / "data", seed=seed_path, token_lifetime=900) as server:
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": "abcQ~seeded1",
            "scope": "https://graph.microsoft.com/.default",
        }
        response = httpx.post(f"{server.url}/{tid}/oauth2/v2.0/token", data=form, verify=ctx)
        assert response.json()["expires_in"] == 900
    toml_seed = tmp_path / "seed.toml"
    toml_seed.write_text(f'[[tenants]]\nid = "{tid}"\ndomains = ["toml.example"]\n')
    with SandboxServer(tmp_path / "data", seed=toml_seed) as server:
        doc = httpx.get(f"{server.url}/toml.example/v2.0/.well-known/openid-configuration", verify=ctx)
        assert doc.json()["issuer"].endswith(f"/{tid}/v2.0")


def test_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "m365relay.sandbox", "--port", "0", "--demo", "--data", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "demo.json").exists():
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads((tmp_path / "demo.json").read_text())
        assert set(info) >= {"url", "ca_file", "tenant_id", "client_id", "secret_value", "secret_id", "mailbox"}
        with httpx.Client(verify=ssl.create_default_context(cafile=info["ca_file"])) as client:
            assert client.get(f"{info['url']}/_sandbox/demo").status_code == 200
    finally:
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    text = out.decode()
    assert info["url"] in text and info["secret_value"] in text and info["client_id"] in text
    assert child.returncode in (0, -signal.SIGTERM)


@pytest.mark.parametrize("args", [["--cloud", "mars"], ["--seed", "/nonexistent.json"]])
def test_command_line_errors(tmp_path: Path, args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "m365relay.sandbox", "--data", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr
