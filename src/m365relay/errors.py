"""The one exception tree of m365relay.

Every failure the relay can meet is translated once, at the boundary where it happens (MSAL's result
dicts in ``auth``, Graph responses in ``graph``, SQLAlchemy in ``outbox``), into one of these classes,
with ``raise … from`` so the cause stays inspectable. Each error knows three things the caller needs:

* ``transient`` — try again later (the message stays queued) or not;
* ``pauses_connector`` — the connector's configuration is at fault: stop sending with it, keep its mail
  queued, probe until an administrator has fixed it (a bad secret must not burn through the queue);
* ``remedy`` — one paragraph, in the administrator's words, pointing at the setup manual's step.

::

    M365RelayError
    ├── ValidationError            a value given to m365relay is malformed (names the field)
    ├── StoreError                 the database is unreachable or refused the write (transient)
    ├── NotFoundError              an id names nothing (message, connector, user, key)
    ├── ConflictError              an idempotency key was reused with different content, etc.
    └── DeliveryError              sending through Microsoft 365 failed; carries status, code, request ids
        ├── TransientError         retry later, the message is fine
        │   ├── ThrottledError             429 TooManyRequests / ApplicationThrottled, with Retry-After
        │   ├── ServiceUnavailableError    503, 504, other 5xx from Graph
        │   ├── NetworkError               connection refused/reset, timeout, DNS
        │   │   └── SendInDoubtError       the send was written, no answer came: it may have been sent
        │   ├── TokenServiceError          the token endpoint is down (5xx, unreachable)
        │   └── PermissionNeededError      > 4 MB without Mail.ReadWrite: held until the admin grants it
        ├── ConnectorError         the connector's setup is wrong → pause it
        │   ├── TenantNotFoundError        AADSTS90002, AADSTS900023
        │   ├── CrossCloudError            AADSTS900382 (tenant lives in another national cloud)
        │   ├── AppNotFoundError           AADSTS700016
        │   ├── AppDisabledError           AADSTS7000112
        │   ├── InvalidSecretError         AADSTS7000215 (wrong secret, or the Secret ID pasted)
        │   ├── SecretExpiredError         AADSTS7000222
        │   ├── MissingCredentialError     AADSTS7000218, or no credential stored
        │   ├── CertificateNotRegisteredError  AADSTS700027
        │   ├── AssertionTimeError         AADSTS700024 (this host's clock is off)
        │   ├── InvalidScopeError          AADSTS70011, AADSTS1002012, AADSTS500011
        │   ├── TokenRequestError          any other AADSTS error
        │   ├── ConsentMissingError        token without ``roles`` → 401 NoPermissionsInAccessToken
        │   ├── PermissionMissingError     403 ErrorAccessDenied: roles present, Mail.Send missing
        │   ├── AccessPolicyError          403 ErrorAccessDenied [RAOP]: application access policy
        │   ├── MailboxNotFoundError       404 ErrorInvalidUser
        │   ├── MailboxNotEnabledError     404 MailboxNotEnabledForRESTAPI
        │   ├── TokenRejectedError         401 InvalidAuthenticationToken (audience, signature)
        │   ├── EndpointError              the Graph URL answered a redirect or something not Graph
        │   ├── CredentialUnreadableError  the stored secret cannot be decrypted (wrong key)
        │   └── TlsTrustError              the server's certificate is not trusted (CA file)
        └── MessageError           this message can never be sent as it is → fail it, keep the others going
            ├── InvalidRecipientsError     400 ErrorInvalidRecipients, or no recipients at all
            ├── TooManyRecipientsError     more than 500 recipients
            ├── InvalidHeaderError         400 InvalidInternetMessageHeader
            ├── MessageTooLargeError       400 ErrorMessageSizeExceeded, 413, or > 4 MB without Mail.ReadWrite
            ├── SendAsDeniedError          403 ErrorSendAsDenied
            ├── MalformedMessageError      400 ErrorMimeContentInvalidBase64String, unparseable MIME, other 400s
            └── CorruptMessageError        the stored row or bytes are damaged (checksum mismatch)

Messages (``str(error)``) are one line and never contain a secret, a token or a message body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


class M365RelayError(Exception):
    """Base of every error m365relay raises on purpose."""

    transient: ClassVar[bool] = False
    pauses_connector: ClassVar[bool] = False
    default_remedy: ClassVar[str] = ""

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy if remedy is not None else self.default_remedy

    @property
    def kind(self) -> str:
        """Stable name for logs, metrics and the outbox (the class name)."""
        return type(self).__name__


class ValidationError(M365RelayError):
    """A value given to m365relay is malformed.

    ``field`` names it as the user knows it ("OAuth Client ID"), ``key`` as the code does ("client_id").
    A form with several bad fields raises one error whose ``related`` holds the others.
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        key: str | None = None,
        remedy: str | None = None,
        related: list[ValidationError] | None = None,
    ) -> None:
        super().__init__(f"{field}: {message}", remedy=remedy)
        self.field = field
        self.key = key or field
        self.reason = message
        self.related = related or []

    @property
    def all_errors(self) -> list[ValidationError]:
        return [self, *self.related]

    @classmethod
    def combine(cls, errors: list[ValidationError]) -> ValidationError:
        first, *rest = errors
        return cls(first.field, first.reason, key=first.key, remedy=first.remedy, related=rest)


class StoreError(M365RelayError):
    transient = True
    default_remedy = "The database could not be reached or refused the write. Check that it is running and has space."


class NotFoundError(M365RelayError):
    pass


class ConflictError(M365RelayError):
    pass


@dataclass(frozen=True)
class Diagnostics:
    """What Microsoft told us, kept for the outbox and the admin: never contains secrets."""

    status: int | None = None
    code: str | None = None  # Graph error code or "AADSTS7000215"
    request_id: str | None = None  # Graph request-id, or the token endpoint's trace id
    correlation_id: str | None = None  # client-request-id / correlation id
    detail: str | None = None  # Microsoft's own message, first line only
    extra: dict[str, Any] = field(default_factory=dict)


class DeliveryError(M365RelayError):
    """Sending through Microsoft 365 failed."""

    def __init__(
        self,
        message: str,
        *,
        diagnostics: Diagnostics | None = None,
        remedy: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.diagnostics = diagnostics or Diagnostics()
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        return self.diagnostics.code

    @property
    def request_id(self) -> str | None:
        return self.diagnostics.request_id


# -- transient --------------------------------------------------------------------------------------


class TransientError(DeliveryError):
    transient = True
    default_remedy = "Temporary trouble at Microsoft 365 or on the network; the message will be retried."


class ThrottledError(TransientError):
    default_remedy = (
        "Microsoft Graph is throttling this mailbox (429). m365relay waits as long as Retry-After says "
        "and retries; if this persists, lower max_in_flight_per_mailbox or spread mail over more mailboxes."
    )


class ServiceUnavailableError(TransientError):
    pass


class NetworkError(TransientError):
    default_remedy = (
        "Microsoft 365 could not be reached (connection or timeout). Check this host's outbound HTTPS "
        "access (firewall, proxy, DNS); the message will be retried."
    )


class SendInDoubtError(NetworkError):
    """A send request was written to Graph and no answer came back (reset, closed, read timeout): Exchange may
    have accepted it. Never simply retried: the dispatcher looks for it in Sent Items first (outbox/doubt.py)."""

    default_remedy = (
        "The connection to Microsoft Graph broke after the message was handed over, so it may have been sent. "
        "With Mail.ReadBasic.All granted, m365relay checks the mailbox's Sent Items before sending again; "
        "without it, sending again may deliver the message twice."
    )


class TokenServiceError(TransientError):
    default_remedy = "The Microsoft sign-in service did not answer properly; tokens will be requested again shortly."


class PermissionNeededError(TransientError):
    """This message needs an application permission the app lacks but the admin can grant (Mail.ReadWrite
    for mail over one Graph request): it waits, and goes once the permission is granted, instead of failing."""

    default_remedy = (
        "Add the Microsoft Graph application permission Mail.ReadWrite to the app (API permissions > Add a "
        "permission > Microsoft Graph > Application permissions > Mail.ReadWrite) and grant admin consent; the "
        "message waits and is sent once the permission shows in a fresh token."
    )


# -- connector (configuration) ----------------------------------------------------------------------


class ConnectorError(DeliveryError):
    """The connector's setup is wrong. Sending with it stops until it is fixed; its mail waits."""

    pauses_connector = True


class TenantNotFoundError(ConnectorError):
    default_remedy = (
        "The Directory (tenant) ID was not found in this cloud. Copy it again from the app's Overview page "
        "in the Azure portal (Directory (tenant) ID), and check the cloud setting (global, usgov-high, "
        "usgov-dod, china)."
    )


class CrossCloudError(ConnectorError):
    default_remedy = (
        "The tenant belongs to another national cloud than the one configured. Set the connector's cloud "
        "to the tenant's cloud; the app must be registered in that cloud's portal."
    )


class AppNotFoundError(ConnectorError):
    default_remedy = (
        "No app with this OAuth Client ID exists in the tenant. Copy the Application (client) ID from the "
        "app's Overview page in Azure (App registrations), and check that the Tenant ID is the same app's "
        "Directory (tenant) ID."
    )


class AppDisabledError(ConnectorError):
    default_remedy = (
        "The app registration is disabled in the tenant. In Entra ID > Enterprise applications > the app > "
        "Properties, set 'Enabled for users to sign in' to Yes."
    )


class InvalidSecretError(ConnectorError):
    default_remedy = (
        "The client secret is wrong. In the Azure portal open the app > Certificates & secrets, create a "
        "new client secret and copy its Value (not the Secret ID) into the 'Public Key (secret)' field, "
        "then Save."
    )


class SecretExpiredError(ConnectorError):
    default_remedy = (
        "The client secret has expired. In the Azure portal open the app > Certificates & secrets > New "
        "client secret, copy the new Value into the 'Public Key (secret)' field with its expiry date, and "
        "Save. Queued mail will then be sent."
    )


class MissingCredentialError(ConnectorError):
    default_remedy = (
        "No client secret or certificate is configured. Create one in the Azure portal (Certificates & "
        "secrets) and enter it in the connector's 'Public Key (secret)' field."
    )


class CertificateNotRegisteredError(ConnectorError):
    default_remedy = (
        "The certificate is not registered on the app. Upload its public certificate (.cer/.pem) in the "
        "Azure portal: the app > Certificates & secrets > Certificates > Upload certificate."
    )


class AssertionTimeError(ConnectorError):
    default_remedy = (
        "Microsoft rejected the signed client assertion's time window. This host's clock is probably wrong: "
        "enable NTP time synchronisation."
    )


class InvalidScopeError(ConnectorError):
    default_remedy = (
        "The token request's scope was refused. Check the connector's cloud: the Graph URL must be the "
        "tenant's cloud's Microsoft Graph endpoint."
    )


class TokenRequestError(ConnectorError):
    default_remedy = (
        "Microsoft refused the token request. Check the OAuth Client ID, Tenant ID and secret against the "
        "app registration in the Azure portal."
    )


class ConsentMissingError(ConnectorError):
    default_remedy = (
        "Mail.Send has not been granted: the token carries no application permissions. In the Azure portal "
        "open the app > API permissions > Add a permission > Microsoft Graph > Application permissions > "
        "Mail.Send, then 'Grant admin consent' (or use the Grant admin consent button on the connector page)."
    )


class PermissionMissingError(ConnectorError):
    default_remedy = (
        "The app has application permissions, but not Mail.Send. Add Microsoft Graph > Application "
        "permissions > Mail.Send (not the Delegated one) and grant admin consent."
    )


class AccessPolicyError(ConnectorError):
    default_remedy = (
        "An Exchange application access policy excludes this mailbox from the app. Ask the Exchange "
        "administrator to add the mailbox to the policy's group (Test-ApplicationAccessPolicy shows it), "
        "or use a mailbox the policy allows."
    )


class MailboxNotFoundError(ConnectorError):
    default_remedy = (
        "The User Name is not a mailbox in this tenant. Enter the address of the Exchange Online mailbox "
        "created as the system account (for example noreply@contoso.com)."
    )


class MailboxNotEnabledError(ConnectorError):
    default_remedy = (
        "The mailbox exists but cannot be used through Microsoft Graph: it is unlicensed, soft-deleted, "
        "inactive, a guest, or hosted on-premises. Assign it an Exchange Online licence or use a shared "
        "mailbox in Exchange Online."
    )


class TokenRejectedError(ConnectorError):
    default_remedy = (
        "Microsoft Graph rejected the access token. Check the connector's cloud: the login and Graph URLs "
        "must belong to the same cloud."
    )


class EndpointError(ConnectorError):
    default_remedy = (
        "The Graph URL answered with a redirect or something that is not Microsoft Graph. For a custom cloud, "
        "check the connector's Graph URL (no trailing path, the service itself rather than a login page or "
        "proxy); for a national cloud, check the cloud setting."
    )


class CredentialUnreadableError(ConnectorError):
    default_remedy = (
        "The connector's stored secret or private key cannot be decrypted with this server's key. Restore the "
        "original M365RELAY_SECRET_KEY (or home/secret.key; every host sharing the database needs the same "
        "key), or enter the secret again on the connector page."
    )


class TlsTrustError(ConnectorError):
    default_remedy = (
        "The server's TLS certificate is not trusted. For a custom cloud, set the CA file to the PEM "
        "that signed the server's certificate; otherwise check the system's CA store and any TLS-"
        "intercepting proxy."
    )


# -- message ----------------------------------------------------------------------------------------


class MessageError(DeliveryError):
    """This message cannot be sent as it is. It fails; other mail keeps flowing."""


class InvalidRecipientsError(MessageError):
    default_remedy = "At least one recipient address is not valid. Correct the addresses and send again."


class TooManyRecipientsError(MessageError):
    default_remedy = "Exchange Online accepts at most 500 recipients per message. Split the message."


class InvalidHeaderError(MessageError):
    default_remedy = (
        "Microsoft Graph accepts custom headers only when their names start with 'x-' or 'X-'. Rename or "
        "remove the header."
    )


class MessageTooLargeError(MessageError):
    default_remedy = (
        "The message is larger than the mailbox accepts (35 MB by default, up to 150 MB when the Exchange "
        "administrator raises the mailbox's limit). Send smaller attachments or a link."
    )


class SendAsDeniedError(MessageError):
    default_remedy = (
        "The From address is not the system mailbox and the mailbox has no Send As / Send on Behalf right "
        "for it. Send from the system mailbox, or have the Exchange administrator grant Send As."
    )


class MalformedMessageError(MessageError):
    default_remedy = "The message could not be understood as MIME. Check what the sending application produces."


class CorruptMessageError(MessageError):
    default_remedy = (
        "The stored copy was damaged after it was accepted (disk or database trouble, or a manual edit): its "
        "row cannot be read or its bytes no longer match their checksum. Nothing was sent. Restore the "
        "database from a backup, or have the application send the message again."
    )
