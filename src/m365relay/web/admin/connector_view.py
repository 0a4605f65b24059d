"""What the eMail (SMTP) connector page shows: the manual's fields with help on where each value is found in
the Azure portal, the stored credential (never its value), the connector's state, and the manual's three
parts as a checklist with what m365relay knows about each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ...clouds import CLOUDS, DEFAULT_GRAPH_RESOURCE
from ...connectors import DEFAULT_NAME, ConnectorConfig, Credential
from ...connectors.expiry import expiry_state
from ...lifecycle import consent_redirect_uri
from .audit_log import last_consent

if TYPE_CHECKING:
    from ...runtime import Runtime

PAGE = "/admin/connectors/smtp"
ALIAS = "/admin/connectors/SMTP.aspx"  # the manual's Redirect URL path (lifecycle.consent.CONSENT_PATH)
LIST = "/admin/connectors"
NAMED = "/admin/connectors/edit"  # + /{name}: the page of any connector (``default`` also answers at PAGE)
NEW = "/admin/connectors/new"


def page_url(name: str) -> str:
    """The page of connector ``name``: the manual's address for ``default``, ``/admin/connectors/edit/NAME``
    for the others (names are ``[a-z0-9._-]``, so they need no quoting)."""
    return PAGE if name == DEFAULT_NAME else f"{NAMED}/{name}"


CONSENT_KINDS = ("ConsentMissingError", "PermissionMissingError")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    help: str
    kind: str = "text"  # text | password | date | select | file
    placeholder: str = ""
    autocomplete: str = "off"


APP_FIELDS = (
    FieldSpec(
        "client_id",
        "OAuth Client ID",
        "Azure portal › App registrations › your app › Overview: the Application (client) ID, a GUID such as "
        "11111111-2222-3333-4444-555555555555.",
        placeholder="Application (client) ID",
    ),
    FieldSpec(
        "tenant_id",
        "Tenant ID",
        "The same Overview page: the Directory (tenant) ID (a GUID). A verified domain such as "
        "contoso.onmicrosoft.com works too.",
        placeholder="Directory (tenant) ID",
    ),
    FieldSpec(
        "user_name",
        "User Name",
        "The Exchange Online mailbox that sends the system mail, e.g. noreply@contoso.com (the manual's "
        "prerequisite). It needs an Exchange Online licence.",
        placeholder="noreply@contoso.com",
        autocomplete="email",
    ),
)
SEND_AS_FIELD = FieldSpec(
    "send_as",
    "Also send from",
    "Optional: further mailboxes of the tenant this app sends from, one a line — an address such as "
    "billing@contoso.com, or @contoso.com for any mailbox of the domain. Mail whose From is one of them is sent "
    "through that mailbox (Mail.Send covers every mailbox unless an access policy limits it); any other From "
    "goes through the User Name mailbox. Leave empty for none.",
    kind="textarea",
    placeholder="billing@contoso.com",
)
SECRET_FIELDS = (
    FieldSpec(
        "secret",
        "Public Key (secret)",
        "Despite its name, this is the client secret: Certificates & secrets › Client secrets › the Value "
        "column — not the Secret ID next to it. Azure shows the Value only once, right after you click Add; if "
        "it is hidden now, create a new secret. Leave this field empty to keep the stored secret; it is never "
        "shown again.",
        kind="password",
        autocomplete="new-password",
    ),
    FieldSpec(
        "secret_expires",
        "Secret expires",
        "The Expires date shown next to the secret in Certificates & secrets (24 months at most). Needed with "
        "a new secret; m365relay warns on every page from 30 days before, and in red from 7.",
        kind="date",
    ),
)
CLOUD_FIELDS = (
    FieldSpec(
        "login_url",
        "Login URL",
        f"The https:// base of the sign-in service, e.g. {CLOUDS['global'].login_url}.",
        placeholder="https://",
    ),
    FieldSpec(
        "graph_url",
        "Graph URL",
        f"The https:// base of Microsoft Graph, e.g. {CLOUDS['global'].graph_url}.",
        placeholder="https://",
    ),
    FieldSpec(
        "graph_resource",
        "Graph resource",
        f"The resource tokens are asked for: leave empty for {DEFAULT_GRAPH_RESOURCE}. Behind a proxy or API "
        "gateway the Graph URL changes but this does not (Entra answers AADSTS500011 to a scope built from the "
        f"proxy's URL); a national cloud's Graph behind a proxy keeps its own, e.g. {CLOUDS['usgov-high'].graph_url}.",
        placeholder=DEFAULT_GRAPH_RESOURCE,
    ),
    FieldSpec(
        "ca_file",
        "CA file",
        "Optional: a PEM file on this server with the certificate authority to trust for these URLs (a proxy "
        "or the m365relay sandbox).",
        placeholder="/path/to/ca.pem",
    ),
)


def redirect_info(runtime: Runtime, request_base: str) -> dict[str, Any]:
    """The Redirect URL to register, and warnings when it will not work as it stands."""
    settings = runtime.settings
    uri = consent_redirect_uri(settings)
    notes: list[str] = []
    if settings.public_base_url is None:
        notes.append(
            "This URL comes from the default address (M365RELAY_PUBLIC_BASE_URL is not set). If administrators "
            "reach this server under another name, set M365RELAY_PUBLIC_BASE_URL to it and restart."
        )
    scheme, host = urlsplit(uri).scheme, urlsplit(uri).hostname or ""
    if scheme != "https" and host not in ("localhost", "127.0.0.1", "::1"):
        notes.append("Microsoft Entra accepts http:// redirect URLs only for localhost; serve this page over https.")
    seen = urlsplit(request_base)
    if (seen.scheme, seen.netloc) != (scheme, urlsplit(uri).netloc):
        notes.append(
            f"You opened this page at {seen.scheme}://{seen.netloc}, but Microsoft will send you back to "
            f"{scheme}://{urlsplit(uri).netloc}; sign in there (or fix M365RELAY_PUBLIC_BASE_URL) before granting "
            "consent."
        )
    return {"uri": uri, "notes": notes}


def form_values(connector: ConnectorConfig | None) -> dict[str, str]:
    if connector is None:
        return {"cloud": "global"}
    custom = connector.cloud.name == "custom"
    resource = connector.cloud.resource
    return {
        "client_id": connector.client_id,
        "tenant_id": connector.tenant_id,
        "user_name": connector.user_name,
        "send_as": "\n".join(connector.send_as),
        "cloud": connector.cloud.name,
        "login_url": connector.cloud.login_url if custom else "",
        "graph_url": connector.cloud.graph_url if custom else "",
        "graph_resource": resource if custom and resource != DEFAULT_GRAPH_RESOURCE else "",
        "ca_file": str(connector.cloud.ca_file) if custom and connector.cloud.ca_file else "",
    }


def credential_line(cred: Credential | None, now: datetime) -> str:
    """ "set on DATE, expires on DATE (N days)" — what the page says instead of the value."""
    if cred is None:
        return "No client secret or certificate is stored yet."
    if cred.kind == "secret":
        what = f"Client secret {cred.hint}…" if cred.hint else "Client secret"
    else:
        what = f"Certificate (thumbprint {cred.thumbprint_sha1})"
    line = f"{what} set on {cred.created_at.date().isoformat()}"
    if cred.expires_at is not None:
        days = cred.days_left(now)
        left = f"{days} days" if days is not None and days >= 0 else "expired"
        line += f", expires on {cred.expires_at.date().isoformat()} ({left})"
    if cred.verified_at is not None:
        line += f"; Microsoft accepted it on {cred.verified_at.date().isoformat()}"
    return line + "."


def checklist(runtime: Runtime, connector: ConnectorConfig | None, now: datetime) -> list[dict[str, str]]:
    """The manual's three parts, each: todo | done | check (m365relay cannot see it) | warn, with a sentence."""
    if connector is None:
        return [
            _step("Register Application", "todo", "Not saved yet: enter the OAuth Client ID and Tenant ID below."),
            _step("Create Client Secret", "todo", "No client secret stored yet."),
            _step("API Permissions", "todo", "Save the connector first, then grant admin consent."),
        ]
    cred = connector.credential
    verified = cred is not None and cred.verified_at is not None
    register = (
        _step("Register Application", "done", f"App {connector.client_id} answered with a token.")
        if verified
        else _step(
            "Register Application",
            "check",
            "IDs saved. Test connection checks that the app exists in the tenant.",
        )
    )
    if cred is None:
        secret = _step("Create Client Secret", "todo", "No client secret stored yet.")
    else:
        level = expiry_state(connector, now).level
        status = "warn" if level in ("warning", "critical", "expired") else "done" if verified else "check"
        secret = _step("Create Client Secret", status, credential_line(cred, now))
    return [register, secret, _permission_step(runtime, connector)]


def _permission_step(runtime: Runtime, connector: ConnectorConfig) -> dict[str, str]:
    title = "API Permissions"
    if connector.paused and connector.state_error_kind in CONSENT_KINDS:
        return _step(title, "todo", f"Not granted: {connector.state_reason}. Mail waits until it is.")
    entry = last_consent(runtime, connector.name)
    if entry is not None:
        when = entry.at.date().isoformat()
        outcome = entry.detail.get("outcome")
        if outcome == "granted" and entry.detail.get("mail_send"):
            return _step(title, "done", f"Admin consent granted on {when}; the token carries Mail.Send.")
        if outcome == "granted":
            return _step(title, "warn", f"Consent granted on {when}, but the token did not show Mail.Send yet.")
        return _step(title, "todo", f"Admin consent was not granted on {when} ({outcome}).")
    if connector.consent_granted_at is not None:
        return _step(title, "done", f"Admin consent granted on {connector.consent_granted_at.date().isoformat()}.")
    return _step(
        title,
        "check",
        "m365relay cannot see the API permissions page. Grant admin consent below, or run Test connection: it "
        "reads the token's permissions.",
    )


def _step(title: str, status: str, text: str) -> dict[str, str]:
    return {"title": title, "status": status, "text": text}


def clouds() -> list[tuple[str, str]]:
    return [(c.name, c.title) for c in CLOUDS.values()] + [("custom", "Custom endpoints (proxy or sandbox)")]


def portal_url(connector: ConnectorConfig | None) -> str:
    if connector is not None and connector.cloud.portal_url:
        return connector.cloud.portal_url
    return CLOUDS["global"].portal_url
