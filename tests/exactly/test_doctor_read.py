"""Doctor check 7: the optional mailbox read permission — present or not, and whether it is scoped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.doctor.result import CheckResult
from m365relay.doctor.run import run_checks
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update, make_settings

OTHER = "ceo@contoso.onmicrosoft.com"


def read_check(runtime: Runtime, connector: ConnectorConfig) -> CheckResult:
    async def go() -> list[CheckResult]:
        try:
            return await run_checks(runtime, connector)
        finally:
            await runtime.sender.aclose()  # its connections belong to this event loop

    return next(r for r in asyncio.run(go()) if r.id == "read")


def test_without_a_read_permission_it_warns_and_says_what_it_would_buy(
    runtime: Runtime, connector: ConnectorConfig
) -> None:
    found = read_check(runtime, connector)
    assert found.status == "warn" and found.data["granted"] is False
    assert "may arrive twice" in found.detail
    assert "Mail.ReadBasic.All" in found.remedy
    assert "New-ManagementRoleAssignment -App" in found.remedy and '"Application Mail.ReadBasic"' in found.remedy
    assert f"PrimarySmtpAddress -eq '{connector.user_name}'" in found.remedy


def test_a_tenant_wide_permission_is_found_by_reading_the_first_other_user(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.put_mailbox(OTHER)
    admin.grant("Mail.Send", "Mail.ReadBasic.All", "User.Read.All")
    found = read_check(runtime, connector)
    assert found.status == "warn" and found.data["scoped"] is False and found.data["probe"] == OTHER
    assert "tenant-wide" in found.detail and "New-ManagementScope" in found.remedy


def test_a_scoped_permission_passes_when_the_other_mailbox_answers_403(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.put_mailbox(OTHER)
    admin.grant("Mail.Send", "Mail.ReadBasic.All", "User.Read.All")
    admin.put_policy([connector.user_name])  # the app reaches only the sending mailbox
    found = read_check(runtime, connector)
    assert found.status == "pass" and found.data["scoped"] is True, found.detail
    assert OTHER in found.detail and "403" in found.detail


def test_the_probe_mailbox_can_be_configured_and_is_skipped_without_one(
    tmp_path: Path, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    admin.put_mailbox(OTHER)
    admin.grant("Mail.Send", "Mail.ReadBasic.All")  # no User.Read.All: no way to find another user
    plain = Runtime(make_settings(tmp_path / "plain"))
    configured = Runtime(make_settings(tmp_path / "configured", doctor_probe_mailbox=OTHER))
    try:
        unchecked = read_check(plain, plain.connectors.save("default", connector_update(sandbox)))
        assert unchecked.status == "pass" and "not checked" in unchecked.detail
        probed = read_check(configured, configured.connectors.save("default", connector_update(sandbox)))
        assert probed.status == "warn" and probed.data["probe"] == OTHER
    finally:
        plain.close()
        configured.close()


def test_an_app_that_reads_bounces_is_scoped_with_mail_read_over_every_sending_mailbox(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    """Bounce intake needs Mail.Read (docs/delivery.md): the RBAC commands then assign "Application Mail.Read",
    and the scope names the send-as mailboxes too, so that limiting the app never cuts one of them off."""
    admin.put_mailbox(OTHER)
    admin.put_mailbox("billing@contoso.onmicrosoft.com")
    admin.grant("Mail.Send", "Mail.Read", "User.Read.All")
    connector = runtime.connectors.save("default", ConnectorUpdate(send_as=("billing@contoso.onmicrosoft.com",)))
    found = read_check(runtime, connector)
    assert found.status == "warn" and found.data["scoped"] is False
    assert '"Application Mail.Read"' in found.remedy and '"Application Mail.ReadBasic"' not in found.remedy
    assert "PrimarySmtpAddress -eq 'billing@contoso.onmicrosoft.com'" in found.remedy
    assert f"PrimarySmtpAddress -eq '{connector.user_name}'" in found.remedy
