"""``run_checks``: the six checks in the manual's order, then the optional read permission (check 7), each
later one skipped (with the reason) when an earlier one it depends on failed. The CLI (``m365relay doctor``),
the API (``GET /api/v1/connectors/{id}/checks``) and the admin UI's Test connection all call this.
"""

from __future__ import annotations

from datetime import datetime

from ..connectors import ConnectorConfig
from ..lifecycle.consent import admin_consent_url, consent_redirect_uri, consent_state
from ..net import async_client
from ..runtime import Runtime
from .config import check_config
from .mailbox import check_mailbox, test_address
from .read_access import check_read_access
from .result import CheckResult, skipped
from .tenant import check_tenant
from .token import probe_app, token_checks

DISCOVERY_TIMEOUT = 30.0


async def run_checks(
    runtime: Runtime,
    connector: ConnectorConfig,
    *,
    send_test_to: str | None = None,
    now: datetime | None = None,
) -> list[CheckResult]:
    """Run every check against Microsoft (or the sandbox) and return six results, in order.

    Only ``send_test_to`` sends mail. The token request uses ``runtime.tokens`` after forgetting the
    connector's cached token, so what passes is what a send made now would meet. Raises only for bad input
    (``ValidationError`` for the address); everything Microsoft says becomes a result.
    """
    to = test_address(send_test_to) if send_test_to is not None else None
    now = now or runtime.clock.now()
    config = check_config(connector, runtime.settings.home)
    if not config.fields_ok:
        reason = "the configuration is incomplete (check 1)"
        return [
            config.result,
            *(skipped(c, reason) for c in ("tenant", "app", "credential", "permission", "mailbox", "read")),
        ]
    async with async_client(connector.cloud.ca_file, DISCOVERY_TIMEOUT) as client:
        tenant = await check_tenant(connector, client)
        if not tenant.ok:
            reason = "the tenant check failed (check 2)"
            return [
                config.result,
                tenant.result,
                *(skipped(c, reason) for c in ("app", "credential", "permission", "mailbox", "read")),
            ]
        if not config.credential_ok:
            reason = "no usable credential is stored (check 1)"
            app = await probe_app(client, connector)
            return [
                config.result,
                tenant.result,
                app,
                *(skipped(c, reason) for c in ("credential", "permission", "mailbox", "read")),
            ]
    redirect = consent_redirect_uri(runtime.settings)
    consent_url = admin_consent_url(connector, redirect, consent_state(runtime.box, connector, now))
    token = await token_checks(runtime, connector, now, tenant.discovery, consent_url)
    if token.can_send:
        mailbox = await check_mailbox(runtime, connector, to)
        read = await check_read_access(runtime, connector)
    else:
        mailbox = skipped("mailbox", token.blocked_by)
        read = skipped("read", token.blocked_by)
    return [config.result, token.tenant or tenant.result, token.app, token.credential, token.permission, mailbox, read]
