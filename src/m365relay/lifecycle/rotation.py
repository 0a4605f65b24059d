"""Zero-downtime credential rotation: stage the new secret or certificate in the ``next`` slot, prove it
gets a token carrying Mail.Send, then promote it in one transaction (current → old, next → current).

Why it cannot lose mail: the credential in use is never touched until the new one has been proven, and
promotion only bumps ``config_version``: token providers build a new MSAL application on their next call,
while sends already in flight finish with tokens they hold (an access token stays valid until it expires,
even after its secret is deleted in Azure). The old credential is kept until the admin confirms, with
``remove_old``, that it was deleted in Azure too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..auth.tokens import AccessToken, TokenProvider
from ..connectors import ConnectorConfig, ConnectorStore, ConnectorUpdate, Credential
from ..errors import ConsentMissingError, DeliveryError, NotFoundError, PermissionMissingError

MAIL_SEND = "Mail.Send"
KEPT = (
    "The new credential stays staged and the current one stays in use: nothing changed for mail. Fix the "
    "cause, then run `m365relay connector rotate` again (a secret created a moment ago can take a minute or "
    "two to be accepted everywhere)."
)


@dataclass(frozen=True)
class RotationResult:
    connector: ConnectorConfig  # as it is after the rotation
    credential: Credential  # the credential that was verified (now current when promoted)
    roles: tuple[str, ...] | None  # the verified token's application permissions (None: unreadable token)
    promoted: bool


def require_mail_send(token: AccessToken) -> None:
    """Raise unless the token's ``roles`` include Mail.Send (PROTOCOL.md §2). An unreadable token passes:
    Graph is then the judge."""
    if token.roles is None:
        return
    if not token.roles:
        raise ConsentMissingError("the token carries no application permissions (roles claim absent)")
    if MAIL_SEND not in token.roles:
        raise PermissionMissingError(f"the token's permissions ({', '.join(token.roles)}) do not include Mail.Send")


class Rotation:
    def __init__(self, connectors: ConnectorStore, tokens: TokenProvider) -> None:
        self.connectors = connectors
        self.tokens = tokens

    async def rotate(
        self,
        ref: str | int,
        change: ConnectorUpdate | None = None,
        *,
        promote: bool = True,
        actor: str = "cli",
        remote_addr: str | None = None,
    ) -> RotationResult:
        """Stage ``change`` (or take the credential staged before, when None), verify it, promote it."""
        if change is not None:
            self.connectors.stage_next(ref, change, actor=actor, remote_addr=remote_addr)
        staged, token = await self.verify(ref)
        if not promote:
            return RotationResult(self.connectors.get(ref), staged, token.roles, promoted=False)
        promoted = self.connectors.promote_next(ref, expected_id=staged.id, actor=actor, remote_addr=remote_addr)
        return RotationResult(promoted, staged, token.roles, promoted=True)

    async def verify(self, ref: str | int) -> tuple[Credential, AccessToken]:
        """Get a token with the staged credential (a throwaway MSAL app: the connector's cache is untouched)
        and require Mail.Send. Failures raise the typed error with a remedy that says nothing changed."""
        connector = self.connectors.get(ref)
        staged = connector.next_credential
        if staged is None:
            raise NotFoundError(
                f"connector {connector.name} has no staged (next) credential",
                remedy="Give the new one: m365relay connector rotate --secret-stdin --secret-expires YYYY-MM-DD "
                "(or --certificate PEM --private-key PEM).",
            )
        try:
            token = await self.tokens.acquire_async(connector, credential=staged)
            require_mail_send(token)
        except DeliveryError as exc:
            raise _kept(exc, staged) from exc
        self.connectors.mark_verified(staged.id)
        return staged, token

    def remove_old(self, ref: str | int, *, actor: str = "cli", remote_addr: str | None = None) -> Credential:
        """Forget the previous credential (the admin confirms it was deleted in Azure). Returns what was removed."""
        connector = self.connectors.get(ref)
        old = connector.old_credential
        if old is None:
            raise NotFoundError(f"connector {connector.name} keeps no old credential")
        self.connectors.remove_old(ref, actor=actor, remote_addr=remote_addr)
        return old

    async def still_accepted(self, connector: ConnectorConfig, credential: Credential) -> bool:
        """Whether Microsoft still issues tokens for ``credential`` (an old secret not yet deleted in Azure stays
        usable by whoever holds a copy until it expires). Any failure counts as "no"."""
        try:
            await self.tokens.acquire_async(connector, credential=credential)
        except DeliveryError:
            return False
        return True


def _kept(error: DeliveryError, staged: Credential) -> DeliveryError:
    """The same error class (so exit codes and pauses mean the same), worded for a rotation."""
    remedy = f"{error.remedy} {KEPT}".strip()
    return type(error)(
        f"the new {staged.describe()} did not work: {error.message}",
        diagnostics=error.diagnostics,
        remedy=remedy,
        retry_after=error.retry_after,
    )
