"""The admin-consent link the doctor (and the admin UI) hands out: it works on the sandbox's consent page,
comes back to the registered redirect URI with a state only this relay can have made, and after the
Global Administrator accepts, the doctor's permission check passes."""

from __future__ import annotations

import re
import ssl
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from doctor_support import checks

from m365relay.connectors import ConnectorConfig
from m365relay.connectors.secretbox import SecretBox
from m365relay.errors import ValidationError
from m365relay.lifecycle import admin_consent_url, consent_redirect_uri, consent_state, read_consent_state
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin


def test_the_doctors_consent_link_grants_mail_send_on_the_consent_page(
    runtime: Runtime,
    connector: ConnectorConfig,
    admin: SandboxAdmin,
    sandbox: SandboxServer,
    sandbox_ssl_context: ssl.SSLContext,
) -> None:
    redirect = consent_redirect_uri(runtime.settings)
    assert redirect == "http://127.0.0.1:8025/admin/connectors/SMTP.aspx"
    admin.patch_app(granted_roles=[], redirect_uris=[redirect])  # the manual's (C) Redirect URL, no consent yet
    url = checks(runtime, connector)["permission"].data["consent_url"]
    with httpx.Client(verify=sandbox_ssl_context) as browser:
        page = browser.get(url)
        assert page.status_code == 200 and "Mail.Send" in page.text
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        answer = browser.post(
            url.split("?")[0], data={**{k: unescape(v) for k, v in fields.items()}, "action": "accept"}
        )
    assert answer.status_code == 302
    back = urlsplit(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == redirect
    query = parse_qs(back.query)
    assert query["admin_consent"] == ["True"] and query["tenant"] == [connector.tenant_id]
    assert read_consent_state(runtime.box, query["state"][0], runtime.clock.now()) == connector.id
    after = checks(runtime, connector)["permission"]
    assert after.status != "fail" and "Mail.Send is granted" in after.detail


def test_consent_state_is_bound_to_the_key_and_expires(runtime: Runtime, connector: ConnectorConfig) -> None:
    now = runtime.clock.now()
    state = consent_state(runtime.box, connector, now)
    assert read_consent_state(runtime.box, state, now + timedelta(hours=1)) == connector.id
    with pytest.raises(ValidationError, match="expired"):
        read_consent_state(runtime.box, state, now + timedelta(hours=25))
    from cryptography.fernet import Fernet

    other = SecretBox(Fernet.generate_key())
    with pytest.raises(ValidationError, match="not issued by this relay"):
        read_consent_state(other, state, now)
    for forged in ("", "connector-1", "é", state[:-4] + "AAAA"):
        with pytest.raises(ValidationError):
            read_consent_state(runtime.box, forged, now)
    url = admin_consent_url(connector, "https://relay.example/admin/connectors/SMTP.aspx", state)
    assert parse_qs(urlsplit(url).query)["state"] == [state], "the state survives URL encoding"
