"""The admin-consent link for a connector's app (PROTOCOL.md §4), in the connector's own cloud.

A Global Administrator opens the link, sees the app's requested application permissions (Mail.Send) and
accepts; Entra then redirects to ``redirect_uri`` — the connector page the manual tells admins to register
("<Application Admin URL>/connectors/SMTP.aspx"). The ``tenant`` in that redirect must not be trusted for
anything; ``state`` is what ties the answer to a request we made. ``consent_state`` makes one that any
process sharing the secret key can check (Fernet: encrypted and authenticated), so the callback needs no
server-side session; the token's ``roles`` remain the only proof that consent was granted.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from urllib.parse import urlencode

from ..connectors.model import ConnectorConfig
from ..connectors.secretbox import SecretBox
from ..errors import M365RelayError, ValidationError
from ..settings import Settings

CONSENT_PATH = "/admin/connectors/SMTP.aspx"
STATE_MAX_AGE = timedelta(hours=24)


def consent_redirect_uri(settings: Settings) -> str:
    """The redirect URI registered on the app (the manual's Register Application step, (C) Redirect URL)."""
    return settings.effective_public_base_url + CONSENT_PATH


def admin_consent_url(connector: ConnectorConfig, redirect_uri: str, state: str) -> str:
    """``https://{login-host}/{tenant}/v2.0/adminconsent?client_id=…&scope={graph}/.default&redirect_uri=…&state=…``.

    The tenant is the connector's own (a GUID or verified domain; validation refuses ``common``), and the
    scope is the connector's cloud's Graph ``/.default``, so a GCC High connector gets a login.microsoftonline.us
    link asking for https://graph.microsoft.us/.default.
    """
    query = urlencode(
        {
            "client_id": connector.client_id,
            "scope": connector.cloud.scope,
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{connector.cloud.admin_consent_url(connector.tenant_id)}?{query}"


def consent_state(box: SecretBox, connector: ConnectorConfig, now: datetime) -> str:
    """An opaque ``state`` naming the connector and the time, which only holders of the secret key can make."""
    plain = json.dumps({"connector": connector.id, "issued": int(now.timestamp())})
    return box.encrypt(plain).decode("ascii")


def read_consent_state(box: SecretBox, state: str, now: datetime, max_age: timedelta = STATE_MAX_AGE) -> int:
    """The connector id a ``state`` from ``consent_state`` names. Forged, foreign or stale → ValidationError."""
    try:
        data = json.loads(box.decrypt(state.encode("ascii")).reveal())
        connector_id, issued = int(data["connector"]), int(data["issued"])
    except (M365RelayError, UnicodeEncodeError, ValueError, KeyError, TypeError) as exc:
        raise ValidationError("state", "was not issued by this relay (forged, or made with another key)") from exc
    age = now.timestamp() - issued
    if age < -300 or age > max_age.total_seconds():
        raise ValidationError("state", "has expired; start the admin consent again from the connector page")
    return connector_id
