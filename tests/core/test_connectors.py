"""Connector configuration: stored in the database, secrets encrypted at rest, never shown."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from m365relay.connectors import ConnectorUpdate
from m365relay.connectors.secretbox import SecretBox, SecretKeyError
from m365relay.db.models import AuditRow, CredentialRow
from m365relay.errors import ValidationError
from m365relay.runtime import Runtime

SECRET = "wY8Q~1wA5l~RCKuDZC1qCH46Xik7-wKjvFZ_lu3S"
GOOD = ConnectorUpdate(
    client_id="4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71",
    tenant_id="9b2f6c41-7d3e-4a58-b1c9-2e8d5f0a7c36",
    user_name="noreply@contoso.com",
    secret=SECRET,
    secret_expires="2027-06-30",
)


def test_saved_secret_is_encrypted_at_rest_and_never_in_views(runtime: Runtime) -> None:
    saved = runtime.connectors.save("default", GOOD)
    assert saved.credential is not None and saved.credential.secret is not None
    assert saved.credential.secret.reveal() == SECRET
    assert SECRET not in repr(saved) and SECRET not in str(saved.public_view())
    with runtime.db.read() as session:
        row = session.scalar(select(CredentialRow))
        assert row is not None and row.secret_ciphertext is not None
        assert SECRET.encode() not in row.secret_ciphertext
        audits = list(session.scalars(select(AuditRow)))
    assert audits and all(SECRET not in str(a.detail) for a in audits)
    db_file = Path(runtime.settings.effective_database_url.removeprefix("sqlite:///"))
    assert SECRET.encode() not in db_file.read_bytes()


def test_key_file_is_created_private(runtime: Runtime) -> None:
    key_file = runtime.settings.home / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretBox.from_settings(None, runtime.settings.home).decrypt(runtime.box.encrypt("x")).reveal() == "x"


def test_key_from_environment_is_used_instead_of_a_file(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    box = SecretBox.from_settings(key, tmp_path)
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(SecretKeyError, match="wrong key"):
        SecretBox.from_settings(None, tmp_path).decrypt(box.encrypt("x"))


def test_empty_secret_field_keeps_the_stored_secret(runtime: Runtime) -> None:
    first = runtime.connectors.save("default", GOOD)
    second = runtime.connectors.save("default", ConnectorUpdate(user_name="alerts@contoso.com"))
    assert second.user_name == "alerts@contoso.com"
    assert second.credential is not None and first.credential is not None
    assert second.credential.id == first.credential.id
    assert second.config_version > first.config_version


def test_manual_order_ids_first_secret_later(runtime: Runtime) -> None:
    ids_only = ConnectorUpdate(client_id=GOOD.client_id, tenant_id=GOOD.tenant_id, user_name=GOOD.user_name)
    saved = runtime.connectors.save("default", ids_only)
    assert saved.credential is None
    saved = runtime.connectors.save("default", ConnectorUpdate(secret=SECRET, secret_expires="2027-06-30"))
    assert saved.credential is not None and saved.credential.hint == SECRET[:3]
    assert str(saved.credential.expires_on) == "2027-06-30"


def test_all_bad_fields_are_reported_together_and_nothing_changes(runtime: Runtime) -> None:
    with pytest.raises(ValidationError) as caught:
        runtime.connectors.save(
            "default",
            ConnectorUpdate(
                client_id="x",
                tenant_id="common",
                user_name="nobody",
                secret=GOOD.client_id,
                secret_expires="2020-01-01",
            ),
        )
    keys = {e.key for e in caught.value.all_errors}
    assert keys == {"client_id", "tenant_id", "user_name", "secret", "secret_expires"}
    assert runtime.connectors.find("default") is None


def test_custom_cloud_needs_https_urls(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        runtime.connectors.save(
            "default", ConnectorUpdate(**{**GOOD.__dict__, "cloud": "custom", "login_url": "http://127.0.0.1:1"})
        )
    assert {e.key for e in caught.value.all_errors} == {"login_url"}
    with pytest.raises(ValidationError, match="unknown cloud"):
        runtime.connectors.save("default", ConnectorUpdate(**{**GOOD.__dict__, "cloud": "mars"}))
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    with pytest.raises(ValidationError, match="is not a readable PEM file"):
        runtime.connectors.save(
            "default",
            ConnectorUpdate(
                **{
                    **GOOD.__dict__,
                    "cloud": "custom",
                    "login_url": "https://a.example",
                    "graph_url": "https://b.example",
                    "ca_file": str(not_pem),
                }
            ),
        )


def test_national_cloud_endpoints(runtime: Runtime) -> None:
    saved = runtime.connectors.save("default", ConnectorUpdate(**{**GOOD.__dict__, "cloud": "usgov-dod"}))
    assert saved.cloud.login_url == "https://login.microsoftonline.us"
    assert saved.cloud.scope == "https://dod-graph.microsoft.us/.default"


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "M365RELAY_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "m365relay", *args], input=stdin, text=True, capture_output=True, env=env, timeout=60
    )


def test_cli_set_and_show_never_print_the_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = cli(
        home,
        "connector",
        "set",
        "--client-id",
        GOOD.client_id or "",
        "--tenant-id",
        GOOD.tenant_id or "",
        "--user-name",
        "noreply@contoso.com",
        "--secret-stdin",
        "--secret-expires",
        "2027-06-30",
        stdin=SECRET,
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    shown = cli(home, "connector", "show", "--json")
    assert shown.returncode == 0
    assert SECRET not in shown.stdout and '"expires_on": "2027-06-30"' in shown.stdout


def test_cli_refuses_the_secret_id_with_the_specific_message(tmp_path: Path) -> None:
    done = cli(
        tmp_path / "home",
        "connector",
        "set",
        "--client-id",
        GOOD.client_id or "",
        "--tenant-id",
        GOOD.tenant_id or "",
        "--user-name",
        "noreply@contoso.com",
        "--secret-stdin",
        "--secret-expires",
        "2027-06-30",
        stdin="5fc1fcb4-6da0-4b69-8c08-073728528263",
    )
    assert done.returncode == 65
    assert "this looks like the Secret ID; paste the secret's Value" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    done = cli(tmp_path / "home", "connector", "show", "--name", "missing")
    assert done.returncode == 1
    assert done.stderr.startswith("error: no connector 'missing'")
    assert "Traceback" not in done.stderr
