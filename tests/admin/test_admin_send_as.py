"""The connector page's "Also send from" box (issue 17 item 1): saved with the CLI's rules, shown again one
a line, an error next to the box in plain words that changes nothing, and an empty box clears the list."""

from __future__ import annotations

import re
from html import unescape

from admin_support import AdminClient
from test_admin_connector_form import PAGE, sandbox_form

from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer


def box(page: str) -> str:
    found = re.search(
        r'<label for="f-send_as">Also send from</label>.*?<textarea id="f-send_as"[^>]*>(.*?)</textarea>', page, re.S
    )
    assert found, "no labelled Also send from box"
    return unescape(found.group(1))


def test_also_send_from_is_saved_shown_validated_and_cleared(
    signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer
) -> None:
    response = signed_in.post(
        PAGE, sandbox_form(sandbox, send_as="Billing@Contoso.com\r\n@fabrikam.com, alerts@contoso.com")
    )
    assert response.status_code == 303
    assert runtime.connectors.get("default").send_as == ("billing@contoso.com", "@fabrikam.com", "alerts@contoso.com")
    assert box(signed_in.get(PAGE).text) == "billing@contoso.com\n@fabrikam.com\nalerts@contoso.com"

    refused = signed_in.post(PAGE, sandbox_form(sandbox, send_as="billing@contoso.com\nnot an address"))
    assert refused.status_code == 422
    error = re.search(r'<p class="error" id="send_as-error">(.*?)</p>', refused.text, re.S)
    assert error and "&#39;not an address&#39; is not a mailbox address" in error.group(1)
    assert 'aria-describedby="send_as-help send_as-error"' in refused.text
    assert box(refused.text) == "billing@contoso.com\nnot an address", "what was typed comes back"
    assert runtime.connectors.get("default").send_as == ("billing@contoso.com", "@fabrikam.com", "alerts@contoso.com")

    without_box = {k: v for k, v in sandbox_form(sandbox).items() if k != "send_as"}
    assert signed_in.post(PAGE, without_box).status_code == 303
    assert len(runtime.connectors.get("default").send_as) == 3, "a form without the box keeps the list"
    assert signed_in.post(PAGE, sandbox_form(sandbox, send_as="")).status_code == 303
    assert runtime.connectors.get("default").send_as == ()
