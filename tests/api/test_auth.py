"""API keys: Bearer only, scopes, revocation, connector binding, and the CLI that shows a key once."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from api_support import Api
from sqlalchemy import select

from m365relay.access.api_keys import ApiKeyStore
from m365relay.db.models import ApiKeyRow
from m365relay.sandbox import SandboxServer
from support import connector_update

UNAUTHORIZED = "https://m365relay.dev/problems/unauthorized"
FORBIDDEN = "https://m365relay.dev/problems/forbidden"
MESSAGE = {"to": ["a@example.com"], "text": "x"}


def test_no_key_is_401_with_a_bearer_challenge(api: Api) -> None:
    response = api.client(None).get("/messages")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="m365relay"'
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == UNAUTHORIZED and "Authorization: Bearer" in response.json()["detail"]


def test_wrong_scheme_and_unknown_keys_are_invalid_tokens(api: Api) -> None:
    client = api.client(None)
    forged = "m365r_00000000_" + "A" * 43
    for header in ("Basic dXNlcjpwYXNz", "Bearer nonsense", f"Bearer {forged}"):
        response = client.get("/messages", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.json()["type"] == UNAUTHORIZED
        assert forged not in response.text


def test_keys_in_the_url_are_refused_even_when_valid(api: Api) -> None:
    response = api.client(None).get("/messages", params={"api_key": api.tokens["admin"]})
    assert response.status_code == 401
    assert "never in the URL" in response.json()["detail"]
    assert api.tokens["admin"] not in response.text


def test_revoked_key_is_401(api: Api) -> None:
    client = api.client("reader")
    assert client.get("/connectors").status_code == 200
    ApiKeyStore(api.runtime.db).revoke("reader")
    response = client.get("/connectors")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_wrong_scope_is_403_naming_the_scope(api: Api) -> None:
    reader_post = api.client("reader").post("/messages", json=MESSAGE)
    assert reader_post.status_code == 403
    assert reader_post.json()["type"] == FORBIDDEN and "'send'" in reader_post.json()["detail"]
    assert 'error="insufficient_scope", scope="send"' in reader_post.headers["www-authenticate"]
    assert api.client("sender").get("/messages").status_code == 403
    assert api.client("sender").get("/connectors").status_code == 403
    assert api.runtime.outbox.pending_count() == 0
    admin = api.client("admin")
    assert admin.post("/messages", json=MESSAGE).status_code == 202
    assert admin.get("/messages").status_code == 200 and admin.get("/connectors").status_code == 200


def test_connector_bound_key(api: Api, sandbox: SandboxServer) -> None:
    other = api.runtime.connectors.save("other", connector_update(sandbox))
    api.add_key("bound", "send", connector_id=other.id)
    client = api.client("bound")
    message_id = client.post("/messages", json=MESSAGE).json()["id"]
    assert api.runtime.outbox.get(message_id).connector_id == other.id
    assert client.post("/messages", json={**MESSAGE, "connector": "other"}).status_code == 202
    refused = client.post("/messages", json={**MESSAGE, "connector": "default"})
    assert refused.status_code == 403 and "'default'" in refused.json()["detail"]


def test_keys_are_stored_as_digests_and_last_use_is_recorded(api: Api) -> None:
    token = api.tokens["app"]
    assert api.client().get("/messages").status_code == 200
    with api.runtime.db.read() as session:
        row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == "app"))
        assert row is not None
        assert row.key_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token.split("_", 2)[2] not in json.dumps([row.name, row.prefix, row.key_hash, row.scopes])
        assert row.last_used_at is not None


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "m365relay", "--home", str(home), "api-key", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "COLUMNS": "200"},
    )


def test_cli_shows_the_key_once_lists_without_it_and_revokes(api: Api) -> None:
    home = api.runtime.settings.home
    created = cli(home, "create", "--name", "crm", "--scope", "send", "--scope", "read")
    assert created.returncode == 0, created.stderr
    token = next(word for word in created.stdout.split() if word.startswith("m365r_") and len(word) > 50)
    assert api.client(None).get("/messages", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listed = cli(home, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert token not in listed.stdout and token.split("_", 2)[2] not in listed.stdout
    crm = next(k for k in json.loads(listed.stdout) if k["name"] == "crm")
    assert crm["scopes"] == ["send", "read"] and crm["last_used_at"] is not None
    assert token not in cli(home, "ls").stdout
    duplicate = cli(home, "create", "--name", "crm", "--scope", "send")
    assert duplicate.returncode != 0 and "exists" in duplicate.stderr
    bad_scope = cli(home, "create", "--name", "x", "--scope", "write")
    assert bad_scope.returncode == 65 and "unknown scope" in bad_scope.stderr
    revoked = cli(home, "revoke", "crm")
    assert revoked.returncode == 0, revoked.stderr
    assert api.client(None).get("/messages", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert cli(home, "revoke", "nobody").returncode != 0


def test_a_key_bound_to_one_connector_sees_only_its_mail(api: Api, sandbox: object) -> None:
    from support import connector_update

    other = api.runtime.connectors.save("other", connector_update(sandbox))  # type: ignore[arg-type]
    api.add_key("bound", "send", "read", connector_id=other.id)
    mine = api.client("bound").post("/messages", json={**MESSAGE, "connector": "other"})
    theirs = api.client("app").post("/messages", json=MESSAGE)
    assert mine.status_code == 202 and theirs.status_code == 202
    client = api.client("bound")
    assert client.get(f"/messages/{mine.json()['id']}").status_code == 200
    assert client.get(f"/messages/{theirs.json()['id']}").status_code == 404, "not even its existence"
    assert [m["id"] for m in client.get("/messages").json()["items"]] == [mine.json()["id"]]
    assert client.get("/messages", params={"connector": "default"}).json()["items"] == []


def test_a_new_key_with_a_revoked_keys_name_does_not_own_its_mail(api: Api) -> None:
    api.add_key("worker", "send")
    sent = api.client("worker").post("/messages", json=MESSAGE).json()["id"]
    ApiKeyStore(api.runtime.db).revoke("worker")
    api.add_key("worker", "send")  # a new key, same name
    assert api.client("worker").delete(f"/messages/{sent}").status_code == 403


def test_no_body_is_read_before_the_key_is_checked(api: Api) -> None:
    import httpx as _httpx

    broken = b"{" * 2_000_000  # a parser would answer 422 for this; an unread body cannot
    response = _httpx.post(f"{api.base}/messages", content=broken, headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.headers["content-type"].startswith("application/problem+json")
    forged = "m365r_deadbeef_" + "A" * 43
    response = _httpx.post(
        f"{api.base}/messages",
        content=broken,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {forged}"},
    )
    assert response.status_code == 401 and response.json()["detail"] == "The API key is not valid."
