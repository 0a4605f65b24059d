"""The doctor checks each listed send-as mailbox by sending through it, and says that ``@domain`` entries
are checked when first used; the CLI sets, shows and clears the list with the same rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sendas_support import ALERTS, BILLING

from m365relay.runtime import Runtime
from support import SandboxAdmin

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "doctor"))
from doctor_support import CliRun, checks  # tests/doctor is put on the path just above


def cli(runtime: Runtime, *args: str) -> CliRun:
    """The real CLI in a subprocess, on the runtime's home and database."""
    env = {
        **os.environ,
        "M365RELAY_HOME": str(runtime.settings.home),
        "M365RELAY_DATABASE_URL": runtime.settings.effective_database_url,
        "COLUMNS": "400",
        "NO_COLOR": "1",
    }
    command = [sys.executable, "-m", "m365relay", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    return CliRun(done.returncode, done.stdout, done.stderr)


def test_the_doctor_reports_all_three_mailboxes(
    sendas_runtime: Runtime, admin: SandboxAdmin, mailboxes: list[str]
) -> None:
    connector = sendas_runtime.connectors.get("default")
    mailbox = checks(sendas_runtime, connector, send_test_to="helpdesk@example.com")["mailbox"]
    assert mailbox.status == "pass", mailbox.detail
    assert [m["address"] for m in mailbox.data["mailboxes"]] == mailboxes
    assert all(m["status"] == "pass" for m in mailbox.data["mailboxes"])
    assert all(address in mailbox.detail for address in mailboxes)
    assert sorted(m["mailbox"].lower() for m in admin.messages()) == sorted(mailboxes)


def test_the_doctor_names_a_missing_send_as_mailbox_and_explains_domains(
    sendas_runtime: Runtime, admin: SandboxAdmin, mailboxes: list[str], sandbox: object
) -> None:
    run = cli(sendas_runtime, "connector", "set", "--send-as", BILLING, "--send-as", "nobody@contoso.onmicrosoft.com",
              "--send-as", "@fabrikam.com")  # fmt: skip
    assert run.code == 0, run.stderr
    connector = sendas_runtime.connectors.get("default")
    mailbox = checks(sendas_runtime, connector, send_test_to="helpdesk@example.com")["mailbox"]
    assert mailbox.status == "fail"
    assert "nobody@contoso.onmicrosoft.com (send-as): fail" in mailbox.detail
    assert f"{BILLING} (send-as): pass" in mailbox.detail
    assert "@fabrikam.com: any mailbox of the domain, checked when mail From one is first sent" in mailbox.detail


def test_cli_sets_shows_and_clears_the_list(sendas_runtime: Runtime) -> None:
    run = cli(sendas_runtime, "connector", "set", "--send-as", "Sales@Contoso.com", "--send-as", "@contoso.com")
    assert run.code == 0, run.stderr
    assert "also sends from" in run.stdout and "sales@contoso.com, @contoso.com" in run.stdout
    bad = cli(sendas_runtime, "connector", "set", "--send-as", "not-an-address")
    assert bad.code != 0 and "Also send from" in bad.stderr
    assert sendas_runtime.connectors.get("default").send_as == ("sales@contoso.com", "@contoso.com")
    cleared = cli(sendas_runtime, "connector", "set", "--no-send-as")
    assert cleared.code == 0, cleared.stderr
    assert sendas_runtime.connectors.get("default").send_as == ()
    both = cli(sendas_runtime, "connector", "set", "--send-as", ALERTS, "--no-send-as")
    assert both.code != 0 and "not both" in both.stderr
