"""Issue 13, items 3 and 11, in the connectors layer every path goes through (admin UI, API, CLI): a stored
credential is never sent to a new endpoint or app without being entered again; a custom cloud cannot name a
link-local or metadata host; a CA file error does not tell whether a file exists."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from m365relay.connectors import ConnectorUpdate
from m365relay.doctor.config import check_config
from m365relay.errors import ValidationError
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SECRET_EXPIRES, connector_update

OTHER_TENANT = "0f5c6a7e-1b2d-4c3e-9f80-123456789abc"
OTHER_CLIENT = "4a1b2c3d-5e6f-4a8b-9c0d-abcdef012345"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (ConnectorUpdate(login_url="https://login.attacker.example"), "login URL"),
        (ConnectorUpdate(graph_url="https://graph.attacker.example"), "Graph URL"),
        (ConnectorUpdate(tenant_id=OTHER_TENANT), "tenant id"),
        (ConnectorUpdate(client_id=OTHER_CLIENT), "client id"),
        (ConnectorUpdate(cloud="global"), "cloud"),
    ],
)
def test_moving_the_connector_needs_the_secret_again(
    runtime: Runtime, sandbox: SandboxServer, change: ConnectorUpdate, named: str
) -> None:
    before = runtime.connectors.save("default", connector_update(sandbox))
    with pytest.raises(ValidationError) as refused:
        runtime.connectors.save("default", change)
    assert refused.value.key == "secret"
    assert f"changing the {named}" in refused.value.message
    assert "needs the client secret entered again" in refused.value.message
    after = runtime.connectors.get("default")
    assert after.config_version == before.config_version and after.cloud == before.cloud  # nothing changed
    assert after.tenant_id == before.tenant_id and after.client_id == before.client_id
    assert sandbox.demo_info is not None
    again = replace(change, secret=sandbox.demo_info["secret_value"], secret_expires=SECRET_EXPIRES)
    moved = runtime.connectors.save("default", again)
    assert moved.config_version > before.config_version


def test_unchanged_endpoints_and_other_fields_need_no_secret(runtime: Runtime, sandbox: SandboxServer) -> None:
    first = runtime.connectors.save("default", connector_update(sandbox))
    same = runtime.connectors.save("default", connector_update(sandbox, secret=None, secret_expires=None))
    assert same.config_version == first.config_version
    mailbox = runtime.connectors.save("default", ConnectorUpdate(user_name="other@contoso.onmicrosoft.com"))
    assert mailbox.user_name == "other@contoso.onmicrosoft.com"


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254",
        "https://[fe80::1]",
        "https://[fd00:ec2::254]",
        "https://metadata.google.internal",
        "https://[::ffff:169.254.169.254]",
    ],
)
def test_a_custom_cloud_cannot_name_a_metadata_or_link_local_host(
    runtime: Runtime, sandbox: SandboxServer, url: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        runtime.connectors.save("default", connector_update(sandbox, login_url=url))
    assert refused.value.key == "login_url"
    assert runtime.connectors.find("default") is None


def test_a_private_address_is_accepted_with_a_doctor_warning(runtime: Runtime, sandbox: SandboxServer) -> None:
    saved = runtime.connectors.save("default", connector_update(sandbox, graph_url="https://10.1.2.3"))
    outcome = check_config(saved).result
    assert outcome.status == "warn"
    assert "private address (10.1.2.3)" in outcome.detail


def test_ca_file_errors_do_not_tell_whether_a_file_exists(
    runtime: Runtime, sandbox: SandboxServer, tmp_path: Path
) -> None:
    unreadable = tmp_path / "secret.txt"
    unreadable.write_text("not a certificate")
    unreadable.chmod(0o000)
    answers = []
    for path in ("/nonexistent/ca.pem", str(tmp_path / "plain.txt"), str(tmp_path), str(unreadable), "/dev/zero"):
        if path.endswith("plain.txt"):
            Path(path).write_text("hello")
        with pytest.raises(ValidationError) as refused:
            runtime.connectors.save("default", connector_update(sandbox, ca_file=path))
        answers.append(refused.value.reason.replace(repr(path), "PATH"))
    assert set(answers) == {"PATH is not a readable PEM file of CA certificates"}
