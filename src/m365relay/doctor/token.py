"""Checks 3, 4 and 5 from one token request — the request any send would make.

Entra checks a token request in a fixed order: tenant, app, scope, then the credential (PROTOCOL.md §1).
So an error about the credential proves the app exists (check 3 passes, check 4 fails), AADSTS700016 fails
check 3, and a token that comes back is decoded for check 5: ``roles`` absent means no admin consent.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from ..auth.tokens import AccessToken
from ..auth.translate import translate_token_error, translate_token_http_error
from ..connectors import ConnectorConfig
from ..connectors.expiry import expiry_state
from ..connectors.validation import GUID
from ..errors import (
    AppDisabledError,
    AppNotFoundError,
    AssertionTimeError,
    CertificateNotRegisteredError,
    ConsentMissingError,
    CrossCloudError,
    DeliveryError,
    InvalidSecretError,
    MissingCredentialError,
    PermissionMissingError,
    SecretExpiredError,
    TenantNotFoundError,
    TransientError,
)
from ..net import translate_transport_error
from ..runtime import Runtime
from .result import CheckResult, result, skipped
from .tenant import Discovery, cross_cloud_result, failure_result

MAIL_SEND, MAIL_READWRITE = "Mail.Send", "Mail.ReadWrite"
APP_FAULTS = (AppNotFoundError, AppDisabledError)
CREDENTIAL_FAULTS = (
    InvalidSecretError,
    SecretExpiredError,
    MissingCredentialError,
    CertificateNotRegisteredError,
    AssertionTimeError,
)
PASTED_ID_REMEDY = (
    "The Secret ID was stored instead of the secret's Value. In the Azure portal open the app > Certificates & "
    "secrets > Client secrets: the Value is shown only right after a secret is created, so create a new client "
    "secret, copy its Value column (not the Secret ID next to it) and store it: printf '%s' \"$VALUE\" | "
    "m365relay connector set --secret-stdin --secret-expires YYYY-MM-DD."
)
ROTATE_REMEDY = (
    "Renew it now, without interrupting mail: create a new client secret in the Azure portal (Certificates & "
    "secrets > New client secret), then printf '%s' \"$VALUE\" | m365relay connector rotate --secret-stdin "
    "--secret-expires YYYY-MM-DD (or m365relay cert new for a certificate)."
)


@dataclass(frozen=True)
class TokenOutcome:
    app: CheckResult
    credential: CheckResult
    permission: CheckResult
    tenant: CheckResult | None = None  # replaces check 2 when the token request blamed the tenant's cloud
    can_send: bool = False  # a token with Mail.Send (or an unreadable one) was issued
    blocked_by: str = ""  # why check 6 cannot run, when it cannot


async def token_checks(
    runtime: Runtime, connector: ConnectorConfig, now: datetime, discovery: Discovery | None, consent_url: str
) -> TokenOutcome:
    runtime.tokens.invalidate(connector.id)  # a fresh request, not a token cached before the admin's fix
    try:
        token = await runtime.tokens.acquire_async(connector)
    except DeliveryError as exc:
        return _refused(exc, connector, now, discovery)
    assert connector.credential is not None
    await asyncio.to_thread(runtime.connectors.mark_verified, connector.credential.id)
    app = result("app", "pass", f"app {connector.client_id} exists in tenant {connector.tenant_id}")
    permission, can_send = permission_result(token, consent_url)
    blocked = "" if can_send else "Mail.Send is not granted (check 5)"
    return TokenOutcome(app, credential_works(connector, now), permission, can_send=can_send, blocked_by=blocked)


def _refused(
    exc: DeliveryError, connector: ConnectorConfig, now: datetime, discovery: Discovery | None
) -> TokenOutcome:
    data: dict[str, Any] = {"code": exc.code, "request_id": exc.request_id}
    if isinstance(exc, TransientError):
        reason = "the token request failed (check 3)"
        app = result("app", "fail", f"the token request failed: {exc.message}", exc.remedy, transient=True, **data)
        return TokenOutcome(app, skipped("credential", reason), skipped("permission", reason), blocked_by=reason)
    if isinstance(exc, CrossCloudError | TenantNotFoundError):
        tenant = (
            cross_cloud_result(connector, discovery, None)
            if isinstance(exc, CrossCloudError)
            else failure_result(exc, connector)
        )
        reason = "the tenant check failed (check 2)"
        return TokenOutcome(
            skipped("app", reason), skipped("credential", reason), skipped("permission", reason), tenant, False, reason
        )
    if isinstance(exc, APP_FAULTS):
        reason = "the app was not found (check 3)"
        app = result("app", "fail", exc.message, exc.remedy, **data)
        return TokenOutcome(app, skipped("credential", reason), skipped("permission", reason), blocked_by=reason)
    if isinstance(exc, CREDENTIAL_FAULTS):
        app = result(
            "app",
            "pass",
            f"app {connector.client_id} exists in tenant {connector.tenant_id} "
            "(Microsoft went on to check its credential)",
        )
    else:
        app = result("app", "warn", f"not confirmed: the token request was refused first ({exc.code})")
    reason = "no token was issued (check 4)"
    return TokenOutcome(app, credential_refused(exc, connector, now), skipped("permission", reason), blocked_by=reason)


def credential_refused(exc: DeliveryError, connector: ConnectorConfig, now: datetime) -> CheckResult:
    cred = connector.credential
    assert cred is not None
    data: dict[str, Any] = {"code": exc.code, "request_id": exc.request_id}
    recorded = _recorded(connector, now)
    secret = cred.secret.reveal() if cred.secret else ""
    if isinstance(exc, InvalidSecretError) and GUID.match(secret.strip()):
        detail = (
            f"Microsoft refused the client secret ({exc.code}): the stored value is a GUID — that is the "
            "Secret ID, not the secret's Value"
        )
        return result("credential", "fail", detail, PASTED_ID_REMEDY, secret_id_pasted=True, **data)
    if isinstance(exc, SecretExpiredError):
        detail = f"Microsoft says the client secret has expired ({exc.code}); {recorded}"
        if cred.expires_at is not None and cred.expires_at > now:
            detail += " — the date recorded here is wrong"
        return result("credential", "fail", detail, exc.remedy, **data)
    if isinstance(exc, CertificateNotRegisteredError):
        detail = f"{exc.message}; in Certificates & secrets > Certificates look for thumbprint {cred.thumbprint_sha1}"
        return result("credential", "fail", detail, exc.remedy, thumbprint_sha1=cred.thumbprint_sha1, **data)
    if isinstance(exc, InvalidSecretError):
        detail = (
            f"Microsoft refused the client secret {cred.describe()} ({exc.code}): it is not a current secret of the app"
        )
        return result("credential", "fail", detail, exc.remedy, **data)
    return result("credential", "fail", exc.message, exc.remedy, **data)


def credential_works(connector: ConnectorConfig, now: datetime) -> CheckResult:
    """The token came back; now the local expiry date: warn within 30 days, fail once past."""
    state = expiry_state(connector, now)
    cred = connector.credential
    assert cred is not None
    staged = ""
    if connector.next_credential is not None:
        staged = (
            f"; a new credential is staged ({connector.next_credential.describe()}): promote it with "
            "m365relay connector rotate"
        )
    data: dict[str, Any] = {
        "expires_on": cred.expires_on.isoformat() if cred.expires_on else None,
        "days_left": state.days_left,
    }
    if state.level == "expired":
        detail = f"Microsoft accepted the {cred.describe()}, but its recorded expiry date has passed: {state.message}"
        remedy = (
            "If it really expired, create a new one in the Azure portal and store it; if the date recorded here is "
            "wrong, correct it: m365relay connector set --secret-expires YYYY-MM-DD."
        )
        return result("credential", "fail", detail + staged, remedy, **data)
    if state.level in ("warning", "critical"):
        return result(
            "credential",
            "warn",
            f"Microsoft accepted the {cred.describe()}. {state.message}{staged}",
            ROTATE_REMEDY,
            **data,
        )
    return result(
        "credential",
        "pass",
        f"Microsoft issued a token for the {cred.describe()}; {_recorded(connector, now)}{staged}",
        **data,
    )


def _recorded(connector: ConnectorConfig, now: datetime) -> str:
    cred = connector.credential
    if cred is None or cred.expires_at is None:
        return "its expiry date is not recorded"
    days = cred.days_left(now)
    assert days is not None
    when = f"in {days} days" if days > 0 else "today" if days == 0 else f"{-days} days ago"
    return f"recorded expiry {cred.expires_at.date().isoformat()} ({when})"


def permission_result(token: AccessToken, consent_url: str) -> tuple[CheckResult, bool]:
    """Check 5: decode ``roles`` (PROTOCOL.md §2). Absent → no admin consent; present without Mail.Send → the
    wrong permission (often the Delegated one) was added."""
    roles = token.roles
    link = f" A Global Administrator can grant it by opening: {consent_url}"
    if roles is None:
        detail = "the access token could not be decoded, so its permissions are unknown"
        return result("permission", "warn", detail, "Run the doctor with --send-test ADDRESS to prove Mail.Send."), True
    if not roles:
        detail = "the access token carries no application permissions: admin consent has not been granted"
        remedy = ConsentMissingError.default_remedy + link
        return result("permission", "fail", detail, remedy, consent_url=consent_url, roles=[]), False
    if MAIL_SEND not in roles:
        detail = f"the token's application permissions are {', '.join(roles)}; Mail.Send is not among them"
        remedy = PermissionMissingError.default_remedy + link
        return result("permission", "fail", detail, remedy, consent_url=consent_url, roles=list(roles)), False
    if MAIL_READWRITE not in roles:
        detail = (
            "Mail.Send is granted. Optional: Mail.ReadWrite is not, and it is needed for messages over ~3 MB "
            "(attachments are then uploaded in chunks)"
        )
        remedy = (
            "Only if your application sends mail larger than about 3 MB: add Microsoft Graph > Application "
            f"permissions > Mail.ReadWrite and grant admin consent again.{link}"
        )
        return result("permission", "warn", detail, remedy, consent_url=consent_url, roles=list(roles)), True
    return result("permission", "pass", "Mail.Send and Mail.ReadWrite are granted", roles=list(roles)), True


async def probe_app(client: httpx.AsyncClient, connector: ConnectorConfig) -> CheckResult:
    """Check 3 with no credential stored yet (the manual saves the ids before creating the secret): a token
    request without one. Entra looks the app up before it asks for a credential, so AADSTS7000218 ("neither
    secret nor assertion") proves the app exists and AADSTS700016 that it does not."""
    form = {"grant_type": "client_credentials", "client_id": connector.client_id, "scope": connector.cloud.scope}
    try:
        response = await client.post(connector.cloud.token_url(connector.tenant_id), data=form)
    except httpx.TransportError as exc:
        error: DeliveryError = translate_transport_error(exc, "token request")
        return result("app", "fail", error.message, error.remedy, transient=error.transient or None)
    if response.status_code >= 500 or response.status_code == 429:
        error = translate_token_http_error(response)
        return result("app", "fail", error.message, error.remedy, transient=True)
    try:
        body = json.loads(response.content)
    except ValueError:
        body = {}
    error = translate_token_error(body if isinstance(body, dict) else {}, connector)
    if isinstance(error, APP_FAULTS):
        return result("app", "fail", error.message, error.remedy, code=error.code)
    if isinstance(error, CREDENTIAL_FAULTS):
        detail = f"app {connector.client_id} exists in tenant {connector.tenant_id} (checked without a credential)"
        return result("app", "pass", detail)
    return result("app", "warn", f"not confirmed: {error.message}", error.remedy, code=error.code)
