"""``m365relay cert new`` end to end: the CLI (a subprocess, as an admin runs it) creates the pair, the
printed certificate is registered in the sandbox as an admin uploads it in Azure, the doctor passes, and
mail goes out signed with the certificate. Its expiry is watched like a secret's."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from m365relay.connectors import ConnectorConfig
from m365relay.lifecycle import ExpiryWatch
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update


def m365relay(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "M365RELAY_HOME": str(runtime.settings.home), "COLUMNS": "300", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "m365relay", *args], capture_output=True, text=True, env=env, timeout=120
    )


def created_file(stdout: str) -> Path:
    found = re.search(r"certificate file to upload: (\S+)", stdout)
    assert found, stdout
    return Path(found.group(1))


def test_cert_new_upload_doctor_send(
    runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin, tmp_path: Path
) -> None:
    # The manual's order: ids first; the certificate takes the place of the secret.
    runtime.connectors.save("default", connector_update(sandbox, secret=None, secret_expires=None))
    done = m365relay(runtime, "cert", "new", "--days", "365", "--out", str(tmp_path / "certs"))
    assert done.returncode == 0, done.stderr
    path = created_file(done.stdout)
    pem = path.read_text()
    assert path.parent == (tmp_path / "certs").resolve() and "PRIVATE KEY" not in pem
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=365)
    printed = re.search(r"SHA-1 thumbprint \(as the Azure portal shows it\): ([0-9A-F]{40})\b", done.stdout)
    assert printed, done.stdout
    assert "now uses this certificate" in done.stdout

    before = m365relay(runtime, "doctor")
    assert before.returncode == 78 and "AADSTS700027" in before.stdout  # not uploaded yet

    uploaded = admin.add_certificate(pem)  # Certificates & secrets > Certificates > Upload certificate
    assert uploaded["thumbprint_sha1"].upper() == printed.group(1)
    doctor = m365relay(runtime, "doctor", "--send-test", "cert@example.com")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "certificate " + printed.group(1) in doctor.stdout
    sent = admin.only_message()
    assert sent["to"] == ["cert@example.com"]

    send = m365relay(runtime, "send", "--to", "app@example.com", "--subject", "signed", "--text", "x", "--now")
    assert send.returncode == 0, send.stderr
    assert admin.messages(limit=1)[0]["subject"] == "signed"
    stored = runtime.connectors.get("default").credential
    assert stored is not None and stored.kind == "certificate" and stored.thumbprint_sha1 == printed.group(1)


def test_cert_new_next_to_a_working_secret_is_staged_then_rotated_in(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, tmp_path: Path
) -> None:
    done = m365relay(runtime, "cert", "new", "--days", "5", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "staged" in done.stdout and "connector rotate" in done.stdout
    staged = runtime.connectors.get("default")
    assert staged.credential == connector.credential, "mail keeps flowing with the secret until the switch"
    assert staged.next_credential is not None and staged.next_credential.kind == "certificate"

    not_yet = m365relay(runtime, "connector", "rotate")
    assert not_yet.returncode == 78 and "AADSTS700027" in not_yet.stderr and "stays staged" in not_yet.stderr

    admin.add_certificate(created_file(done.stdout).read_text())
    rotated = m365relay(runtime, "connector", "rotate")
    assert rotated.returncode == 0 and "promoted" in rotated.stdout, rotated.stderr
    now_in_use = runtime.connectors.get("default")
    assert now_in_use.credential is not None and now_in_use.credential.kind == "certificate"

    # Certificate expiry is watched like a secret's: 5 days left → the 7-day warning.
    watch = ExpiryWatch(runtime.connectors, runtime.outbox, runtime.settings, clock=runtime.clock)
    notices = asyncio.run(watch.check())
    assert [n.threshold for n in notices] == [7]
    assert notices[0].payload()["credential"]["kind"] == "certificate"


def test_cert_new_needs_the_connector_first(runtime: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    done = m365relay(runtime, "cert", "new", "--out", str(out))
    assert done.returncode == 1 and "no connector 'default'" in done.stderr and "connector set" in done.stderr
    assert not out.exists(), "nothing is written when the command fails"
    bad = m365relay(runtime, "cert", "new", "--days", "0")
    assert bad.returncode == 65 and "--days" in bad.stderr
