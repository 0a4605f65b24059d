"""The doctor against the sandbox: every setup mistake of the manual is produced for real, and each one
must show as the right check's failure, with words an administrator can act on, the later checks skipped
with the reason, and the CLI's line, remedy and exit status to match."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from doctor_support import WRONG_SECRET, checks, cli, statuses
from sqlalchemy import update

from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.db.models import CredentialRow
from m365relay.errors import ValidationError
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update


def reconfigure(runtime: Runtime, sandbox: SandboxServer, **changes: Any) -> ConnectorConfig:
    return runtime.connectors.save("default", connector_update(sandbox, **changes))


def assert_rest_skipped(results: dict[str, Any], after: str, reason: str) -> None:
    keys = list(results)
    for key in keys[keys.index(after) + 1 :]:
        assert results[key].status == "skip", f"{key} should be skipped: {results[key]}"
        assert reason in results[key].detail


# -- a good setup ------------------------------------------------------------------------------------


def test_a_good_setup_passes_every_check_and_the_test_message_arrives(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.grant("Mail.Send", "Mail.ReadWrite")
    results = checks(runtime, connector, send_test_to="helpdesk@example.com")
    assert statuses(results) == dict.fromkeys(results, "pass"), [r.detail for r in results.values()]
    mailbox = results["mailbox"]
    found = admin.messages(message_id=mailbox.data["message_id"])
    assert len(found) == 1 and found[0]["to"] == ["helpdesk@example.com"]
    assert found[0]["request_id"] == mailbox.data["request_id"] and mailbox.data["request_id"] in mailbox.detail
    assert runtime.connectors.get("default").credential.verified_at is not None  # type: ignore[union-attr]

    run = cli(runtime, "doctor")
    assert run.code == 0, run.stdout + run.stderr
    for number in range(1, 6):
        assert run.line(number).startswith("✓"), run.stdout
    assert run.line(6).startswith("-") and "not run" in run.line(6)
    assert admin.demo["secret_value"] not in run.stdout + run.stderr


def test_without_send_test_the_mailbox_check_is_not_run_never_a_fake_pass(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    results = checks(runtime, connector)
    assert results["mailbox"].status == "skip" and "--send-test" in results["mailbox"].detail
    assert admin.messages() == []
    # The manual's setup grants only Mail.Send: fine, with a note about large mail.
    permission = results["permission"]
    assert permission.status == "warn" and "Mail.ReadWrite" in permission.detail and "3 MB" in permission.detail


def test_cli_send_test_delivers_and_reports_the_graph_request_id(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    run = cli(runtime, "doctor", "--send-test", "ops@example.com", "--json")
    assert run.code == 0, run.stdout + run.stderr
    report = run.json()
    mailbox = report["checks"][5]
    assert mailbox["id"] == "mailbox" and mailbox["status"] == "pass"
    captured = admin.only_message()
    assert captured["to"] == ["ops@example.com"] and captured["request_id"] == mailbox["data"]["request_id"]
    assert report["ok"] is True and report["exit_status"] == 0


def test_a_bad_send_test_address_is_refused_before_anything_happens(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    with pytest.raises(ValidationError, match="--send-test"):
        checks(runtime, connector, send_test_to="not an address")
    assert admin.stats()["token"] == 0 and admin.messages() == []
    run = cli(runtime, "doctor", "--send-test", "a@b@c")
    assert run.code == 65 and "--send-test" in run.stderr


# -- check 1: configuration --------------------------------------------------------------------------


def test_missing_secret_fails_check_one_with_the_manuals_step_and_still_finds_the_app(
    runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    demo = admin.demo
    connector = runtime.connectors.save(
        "default",
        connector_update(sandbox, secret=None, secret_expires=None),
    )
    assert connector.credential is None
    results = checks(runtime, connector)
    config = results["config"]
    assert config.status == "fail" and "no client secret or certificate" in config.detail
    assert "Certificates & secrets > New client secret" in config.remedy and "Value" in config.remedy
    assert results["tenant"].status == "pass"
    assert results["app"].status == "pass" and "without a credential" in results["app"].detail
    assert_rest_skipped(results, "app", "no usable credential")

    results = checks(runtime, runtime.connectors.save("default", ConnectorUpdate(client_id=str(uuid.uuid4()))))
    assert results["app"].status == "fail" and "AADSTS700016" in results["app"].detail
    run = cli(runtime, "doctor")
    assert run.code == 78 and run.line(1).startswith("✗") and "New client secret" in run.remedy_after(1)
    assert demo["tenant_id"] in run.stdout


# -- check 2: tenant ---------------------------------------------------------------------------------


def test_unknown_tenant(runtime: Runtime, sandbox: SandboxServer) -> None:
    connector = reconfigure(runtime, sandbox, tenant_id=str(uuid.uuid4()))
    results = checks(runtime, connector)
    tenant = results["tenant"]
    assert tenant.status == "fail" and "AADSTS90002" in tenant.detail and tenant.data["code"] == "AADSTS90002"
    assert "Check the Directory (tenant) ID and the cloud" in tenant.remedy
    assert_rest_skipped(results, "tenant", "tenant check failed")
    run = cli(runtime, "doctor")
    assert run.code == 78
    assert run.line(2).startswith("✗") and "AADSTS90002" in run.line(2)
    assert "Check the Directory (tenant) ID and the cloud" in run.remedy_after(2)
    assert run.line(3).startswith("-")


def test_tenant_by_verified_domain_shows_its_directory_id(
    runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    connector = reconfigure(runtime, sandbox, tenant_id="contoso.onmicrosoft.com")
    tenant = checks(runtime, connector)["tenant"]
    assert tenant.status == "pass" and admin.demo["tenant_id"] in tenant.detail


# -- check 3: app ------------------------------------------------------------------------------------


def test_unknown_app(runtime: Runtime, sandbox: SandboxServer) -> None:
    connector = reconfigure(runtime, sandbox, client_id=str(uuid.uuid4()))
    results = checks(runtime, connector)
    app = results["app"]
    assert app.status == "fail" and app.data["code"] == "AADSTS700016"
    assert "Application (client) ID" in app.remedy
    assert_rest_skipped(results, "app", "app was not found")
    run = cli(runtime, "doctor")
    assert run.code == 78 and run.line(3).startswith("✗") and "AADSTS700016" in run.line(3)
    assert "Application (client) ID" in run.remedy_after(3)


# -- check 4: credential -----------------------------------------------------------------------------


def test_wrong_secret(runtime: Runtime, sandbox: SandboxServer) -> None:
    connector = reconfigure(runtime, sandbox, secret=WRONG_SECRET)
    results = checks(runtime, connector)
    assert results["app"].status == "pass", "a credential error proves the app exists"
    credential = results["credential"]
    assert credential.status == "fail" and credential.data["code"] == "AADSTS7000215"
    assert "Value (not the Secret ID)" in credential.remedy and "secret_id_pasted" not in credential.data
    assert_rest_skipped(results, "credential", "no token")
    run = cli(runtime, "doctor", "--json")
    assert run.code == 78 and WRONG_SECRET not in run.stdout + run.stderr
    assert run.json()["checks"][3]["data"]["code"] == "AADSTS7000215"


def test_secret_id_pasted_by_an_older_version(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    # Our own input validation refuses a GUID-shaped secret, so write the row as an older version would have.
    secret_id = admin.demo["secret_id"]
    assert connector.credential is not None
    with runtime.db.write() as session:
        session.execute(
            update(CredentialRow)
            .where(CredentialRow.id == connector.credential.id)
            .values(secret_ciphertext=runtime.box.encrypt(secret_id), hint=secret_id[:3])
        )
    connector = runtime.connectors.get("default")
    results = checks(runtime, connector)
    assert results["config"].status == "warn" and "Secret ID" in results["config"].detail
    credential = results["credential"]
    assert credential.status == "fail" and credential.data["secret_id_pasted"] is True
    assert "Secret ID" in credential.detail and "AADSTS7000215" in credential.detail
    assert "Value column (not the Secret ID" in credential.remedy
    run = cli(runtime, "doctor")
    assert run.code == 78 and run.line(4).startswith("✗") and "Secret ID" in run.line(4)
    assert secret_id not in run.stdout + run.stderr


def test_expired_secret(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.expire_secret()
    results = checks(runtime, connector)
    credential = results["credential"]
    assert credential.status == "fail" and credential.data["code"] == "AADSTS7000222"
    assert "has expired" in credential.detail and "the date recorded here is wrong" in credential.detail
    assert "New client secret" in credential.remedy
    run = cli(runtime, "doctor")
    assert run.code == 78 and "AADSTS7000222" in run.line(4) and "New client secret" in run.remedy_after(4)


def test_local_expiry_date_warns_within_thirty_days_and_fails_when_past(
    runtime: Runtime, connector: ConnectorConfig
) -> None:
    assert connector.credential is not None and connector.credential.expires_at is not None
    expires = connector.credential.expires_at
    from datetime import timedelta

    soon = checks(runtime, connector, now=expires - timedelta(days=20))["credential"]
    assert soon.status == "warn" and "20 days" in soon.detail and "connector rotate" in soon.remedy
    past = checks(runtime, connector, now=expires + timedelta(days=2))["credential"]
    assert past.status == "fail" and "expired" in past.detail
    fine = checks(runtime, connector, now=expires - timedelta(days=31))["credential"]
    assert fine.status == "pass" and "in 31 days" in fine.detail


def test_certificate_not_registered(runtime: Runtime, sandbox: SandboxServer) -> None:
    from m365relay.connectors.certificates import generate_self_signed

    cert = generate_self_signed("not uploaded", days=30)
    connector = reconfigure(runtime, sandbox, secret=None, secret_expires=None, certificate=cert)
    credential = checks(runtime, connector)["credential"]
    assert credential.status == "fail" and credential.data["code"] == "AADSTS700027"
    assert cert.thumbprint_sha1 in credential.detail and "Upload certificate" in credential.remedy


# -- check 5: permission -----------------------------------------------------------------------------


def test_no_consent_gives_the_exact_consent_url(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, sandbox: SandboxServer
) -> None:
    admin.grant()
    results = checks(runtime, connector, send_test_to="x@example.com")
    permission = results["permission"]
    assert permission.status == "fail" and "admin consent has not been granted" in permission.detail
    url = permission.data["consent_url"]
    expected_prefix = f"{sandbox.url}/{connector.tenant_id}/v2.0/adminconsent?client_id={connector.client_id}"
    assert url.startswith(expected_prefix) and url in permission.remedy
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8025%2Fadmin%2Fconnectors%2FSMTP.aspx" in url
    assert results["mailbox"].status == "skip" and admin.messages() == []
    run = cli(runtime, "doctor")
    assert run.code == 78 and run.line(5).startswith("✗") and "admin consent" in run.line(5)
    assert "adminconsent?client_id=" in run.remedy_after(5)


def test_consent_without_mail_send(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.grant("User.Read.All")
    permission = checks(runtime, connector)["permission"]
    assert permission.status == "fail" and "Mail.Send is not among them" in permission.detail
    assert "Application permissions > Mail.Send (not the Delegated one)" in permission.remedy
    run = cli(runtime, "doctor")
    assert run.code == 78 and "User.Read.All" in run.line(5)


# -- check 6: mailbox --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code", "detail_words", "remedy_words"),
    [
        ("unknown", "ErrorInvalidUser", "is not a mailbox", "User Name is not a mailbox"),
        ("unlicensed", "MailboxNotEnabledForRESTAPI", "unlicensed", "Exchange Online licence"),
        ("policy", "ErrorAccessDenied", "application access policy", "Test-ApplicationAccessPolicy"),
    ],
)
def test_mailbox_failures(
    runtime: Runtime,
    sandbox: SandboxServer,
    admin: SandboxAdmin,
    case: str,
    code: str,
    detail_words: str,
    remedy_words: str,
) -> None:
    connector = reconfigure(runtime, sandbox)
    if case == "unknown":
        connector = reconfigure(runtime, sandbox, user_name="nobody@contoso.onmicrosoft.com")
    elif case == "unlicensed":
        admin.put_mailbox(connector.user_name, licensed=False)
    else:
        admin.put_policy(["someone-else@contoso.onmicrosoft.com"])
    results = checks(runtime, connector, send_test_to="x@example.com")
    mailbox = results["mailbox"]
    assert [r.status for r in list(results.values())[:4]] == ["pass"] * 4
    assert mailbox.status == "fail" and mailbox.data["code"] == code and mailbox.data["request_id"]
    assert detail_words in mailbox.detail and remedy_words in mailbox.remedy
    run = cli(runtime, "doctor", "--send-test", "x@example.com")
    assert run.code == 78 and run.line(6).startswith("✗") and code in run.line(6)
    assert remedy_words in run.remedy_after(6)
    assert admin.messages() == []


# -- temporary trouble -------------------------------------------------------------------------------


def test_temporary_trouble_is_a_failure_that_says_try_again(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.faults({"token": {"count": 50, "status": 503}})
    results = checks(runtime, connector)
    assert results["app"].status == "fail" and results["app"].transient
    run = cli(runtime, "doctor")
    assert run.code == 75, run.stdout  # EX_TEMPFAIL: nothing to fix, run it again
