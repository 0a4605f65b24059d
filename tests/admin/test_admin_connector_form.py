"""The connector screen's form: the manual's fields saved through the core's rules, errors next to each field in
plain words, everything typed kept except the secret, and the secret written once and never shown again."""

from __future__ import annotations

import re
from datetime import date, timedelta
from html import unescape
from typing import Any

import pytest
from admin_support import AdminClient
from sqlalchemy import select

from m365relay.connectors.certificates import generate_self_signed
from m365relay.db.models import AuditRow
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer

PAGE = "/admin/connectors/smtp"
SECRET_ID = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


def sandbox_form(sandbox: SandboxServer, **changes: str) -> dict[str, str]:
    demo = sandbox.demo_info
    assert demo is not None
    form = {
        "client_id": demo["client_id"],
        "tenant_id": demo["tenant_id"],
        "user_name": demo["mailbox"],
        "secret": demo["secret_value"],
        "secret_expires": (date.today() + timedelta(days=200)).isoformat(),
        "cloud": "custom",
        "login_url": sandbox.url,
        "graph_url": sandbox.url,
        "ca_file": str(sandbox.ca_file),
    }
    form.update(changes)
    return form


def field_error(page: str, name: str) -> str:
    """The error shown next to a field, and proof that the input points at it (aria-describedby)."""
    found = re.search(rf'<p class="error" id="{name}-error">(.*?)</p>', page, re.S)
    assert found, f"no error next to {name}"
    control = re.search(rf'<(?:input|select)[^>]* id="f-{name}"[^>]*>', page)
    assert control, f"no control f-{name}"
    assert f"{name}-error" in control.group(0) and 'aria-invalid="true"' in control.group(0)
    return unescape(re.sub(r"<[^>]+>", "", found.group(1))).replace("Error: ", "").strip()


def value_of(page: str, name: str) -> str:
    found = re.search(rf'<input[^>]* id="f-{name}"[^>]*value="([^"]*)"', page)
    assert found, f"no value for {name}"
    return unescape(found.group(1))


def save(client: AdminClient, form: dict[str, Any], **kw: Any) -> Any:
    return client.post(PAGE, form, **kw)


def test_save_the_manuals_fields_and_never_show_the_secret(
    signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer
) -> None:
    form = sandbox_form(sandbox)
    response = save(signed_in, form)
    assert response.status_code == 303 and response.headers["location"] == f"{PAGE}#settings"
    page = signed_in.follow(response).text
    assert "Saved." in page
    stored = runtime.connectors.get("default")
    assert stored.client_id == form["client_id"] and stored.user_name == form["user_name"]
    assert stored.credential is not None and stored.credential.secret is not None
    assert stored.credential.secret.reveal() == form["secret"]
    today = runtime.clock.now().date().isoformat()
    line = f"set on {today}, expires on {form['secret_expires']} (200 days)"
    assert line in page, "the page says when the secret was set and when it expires"
    assert form["secret"] not in page
    assert 'name="secret" type="password" value=""' in page, "the secret field is always empty"
    # The other fields come back as stored.
    assert value_of(page, "client_id") == form["client_id"] and value_of(page, "tenant_id") == form["tenant_id"]
    with runtime.db.read() as session:
        entry = session.scalars(select(AuditRow).where(AuditRow.action == "connector.save")).one()
    assert entry.actor == "web:alice" and entry.remote_addr == "127.0.0.1"
    assert "secret" in entry.detail["changed"] and form["secret"] not in repr(entry.detail)


def test_an_empty_secret_keeps_the_stored_one(signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer) -> None:
    assert save(signed_in, sandbox_form(sandbox)).status_code == 303
    before = runtime.connectors.get("default").credential
    response = save(signed_in, sandbox_form(sandbox, secret="", secret_expires="", user_name="alerts@contoso.com"))
    assert response.status_code == 303
    after = runtime.connectors.get("default")
    assert after.user_name == "alerts@contoso.com"
    assert after.credential == before, "the same secret, untouched"


def test_nothing_changed_says_so(signed_in: AdminClient, sandbox: SandboxServer) -> None:
    assert save(signed_in, sandbox_form(sandbox)).status_code == 303
    again = save(signed_in, sandbox_form(sandbox, secret="", secret_expires=""))
    assert "Nothing changed." in signed_in.follow(again).text


def test_the_manual_order_ids_first_secret_later(
    signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer
) -> None:
    """Register Application ends with Save on the ids alone; the secret comes in the next part."""
    first = save(signed_in, sandbox_form(sandbox, secret="", secret_expires=""))
    assert first.status_code == 303
    page = signed_in.follow(first).text
    assert "No client secret or certificate is stored yet." in page
    assert "Next, Create Client Secret" in page
    assert runtime.connectors.get("default").credential is None
    second = save(signed_in, {"client_id": "", "tenant_id": "", "user_name": ""} | sandbox_form(sandbox))
    assert "Next, API Permissions" in signed_in.follow(second).text


def test_the_secret_id_pasted_gets_the_specific_message(
    signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer
) -> None:
    form = sandbox_form(sandbox, secret=SECRET_ID, user_name="noreply@contoso.onmicrosoft.com")
    response = save(signed_in, form)
    assert response.status_code == 422
    page = response.text
    message = field_error(page, "secret")
    assert "this looks like the Secret ID; paste the secret's Value" in message
    assert message.startswith("Public Key (secret)")
    assert SECRET_ID not in page, "not even a wrong secret is written back"
    assert value_of(page, "client_id") == form["client_id"], "what was typed stays"
    assert value_of(page, "user_name") == form["user_name"]
    assert value_of(page, "secret_expires") == form["secret_expires"]
    assert "The secret you pasted was not kept" in page
    assert runtime.connectors.find("default") is None, "nothing was saved"


def test_every_bad_field_is_named_at_once(signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer) -> None:
    form = sandbox_form(
        sandbox,
        client_id="not-a-guid",
        tenant_id="common",
        user_name="noreply",
        secret_expires=(date.today() + timedelta(days=800)).isoformat(),
        login_url="http://insecure.example",
    )
    response = save(signed_in, form)
    assert response.status_code == 422
    page = response.text
    assert "must be a GUID" in field_error(page, "client_id")
    assert "'common' is not allowed" in field_error(page, "tenant_id")
    assert "one mailbox address" in field_error(page, "user_name")
    assert "more than 24 months ahead" in field_error(page, "secret_expires")
    assert "must be an https:// URL" in field_error(page, "login_url")
    summary = re.search(r'<div class="error-summary".*?</div>', page, re.S)
    assert summary and summary.group(0).count("<li>") == 5, "a summary links to each field"
    assert 'href="#f-client_id"' in summary.group(0)
    assert runtime.connectors.find("default") is None


def test_required_fields_explain_where_to_find_them(signed_in: AdminClient) -> None:
    page = save(signed_in, {"cloud": "global"}).text
    assert "copy the Application (client) ID from the app's Overview" in field_error(page, "client_id")
    assert "copy the Directory (tenant) ID from the app's Overview" in field_error(page, "tenant_id")
    assert "the address of the system mailbox" in field_error(page, "user_name")


def test_a_new_secret_needs_its_expiry_date(signed_in: AdminClient, sandbox: SandboxServer) -> None:
    page = save(signed_in, sandbox_form(sandbox, secret_expires="")).text
    assert "the Expires date shown in Certificates & secrets" in field_error(page, "secret_expires")


def test_a_script_typed_into_a_field_is_shown_as_text(signed_in: AdminClient, sandbox: SandboxServer) -> None:
    script = "<script>alert(1)</script>"
    response = save(signed_in, sandbox_form(sandbox, user_name=script, tenant_id='"><img src=x onerror=alert(1)>'))
    assert response.status_code == 422
    page = response.text
    assert script not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert value_of(page, "user_name") == script, "shown back as the text that was typed"


@pytest.mark.parametrize("pasted", ["", "x" * 300])
def test_help_beside_each_field_says_where_it_is_in_the_portal(signed_in: AdminClient, pasted: str) -> None:
    page = unescape(signed_in.get(PAGE).text)
    for name, words in {
        "client_id": "Overview: the Application (client) ID",
        "tenant_id": "the Directory (tenant) ID",
        "user_name": "Exchange Online mailbox",
        "secret": "Certificates & secrets › Client secrets › the Value column — not the Secret ID",
        "secret_expires": "The Expires date",
    }.items():
        found = re.search(rf'<p class="help" id="{name}-help">(.*?)</p>', page, re.S)
        assert found and words in found.group(1), name
        assert re.search(rf'<label for="f-{name}">', page), f"{name} has a label tied to its input"
    assert re.search(r'<label for="f-secret">Public Key \(secret\)</label>', page), "the manual's label"
    if pasted:
        response = save(signed_in, {"cloud": "global", "secret": pasted})
        assert "does not look like a client secret Value" in field_error(response.text, "secret")


def test_a_certificate_instead_of_a_secret(signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer) -> None:
    pair, other = generate_self_signed("m365relay-test"), generate_self_signed("someone-else")
    form = sandbox_form(sandbox, secret="", secret_expires="")
    mismatched = {
        "certificate": ("cert.pem", pair.certificate_pem.encode(), "application/x-pem-file"),
        "private_key": ("key.pem", other.private_key_pem.encode(), "application/x-pem-file"),
    }
    refused = signed_in.post(PAGE, form, files=mismatched)
    assert refused.status_code == 422
    assert "does not belong to the certificate" in field_error(refused.text, "private_key")
    assert other.private_key_pem.split("\n")[1] not in refused.text
    huge = {"certificate": ("cert.pem", b"x" * 70_000, "text/plain"), "private_key": mismatched["private_key"]}
    assert "larger than 64 kB" in field_error(signed_in.post(PAGE, form, files=huge).text, "certificate")
    only_one = signed_in.post(PAGE, form, files={"certificate": mismatched["certificate"]})
    assert "choose the private key file" in field_error(only_one.text, "private_key")
    files = {
        "certificate": ("cert.pem", pair.certificate_pem.encode(), "application/x-pem-file"),
        "private_key": ("key.pem", pair.private_key_pem.encode(), "application/x-pem-file"),
    }
    accepted = signed_in.post(PAGE, form, files=files)
    assert accepted.status_code == 303
    cred = runtime.connectors.get("default").credential
    assert cred is not None and cred.kind == "certificate" and cred.thumbprint_sha1 == pair.thumbprint_sha1
    page = signed_in.follow(accepted).text
    assert pair.thumbprint_sha1 in page and pair.private_key_pem.split("\n")[1] not in page
    both = signed_in.post(PAGE, sandbox_form(sandbox), files=files)
    assert "give a client secret or a certificate, not both" in field_error(both.text, "secret")
