"""The relay's policy for one SMTP server: who may relay (AUTH or the allowlist — never anyone else), which
recipients and how many, which connector, and queueing: ``250`` only once the outbox has committed the
message; ``451`` whenever the relay itself cannot take it (database down, queue full, no connector yet).

The aiosmtpd hooks (``handle_EHLO``, ``handle_MAIL``, ``handle_RCPT``, ``handle_exception``) are called by
the protocol; ``offers_auth``, ``login_blocked``, ``authenticate`` and ``accept`` by ``RelaySMTP``. (No
method here may start with ``auth_``: aiosmtpd would take it for a SASL mechanism.)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from ..access.relay_users import RelayUser, RelayUserStore
from ..addresses import deliverable
from ..connectors import DEFAULT_NAME, ConnectorConfig, ConnectorStore
from ..errors import NotFoundError, StoreError, ValidationError
from ..graph.acceptance import SenderRules
from ..outbox.backpressure import Backpressure
from ..runtime import Runtime
from . import smtp_replies as R
from .smtp_message import (
    MessageSpool,
    ReceivedStamp,
    apply_sender_rules,
    check_header_block,
    prepend_received,
    read_message,
    with_protocol,
)
from .smtp_policy import AuthFailureLimiter, ClientRules, IPAddress, limiter_key, peer_address
from .smtp_replies import SmtpRefusal

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope, Session

    from .smtp_protocol import RelaySMTP

log = logging.getLogger("m365relay.smtp")
CONNECTOR_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Client:
    ip: IPAddress | None
    user: RelayUser | None
    allowlisted: bool

    @property
    def authorized(self) -> bool:
        return self.user is not None or self.allowlisted

    @property
    def address(self) -> str:
        return str(self.ip) if self.ip is not None else "unknown"

    @property
    def source(self) -> str:
        """``source_detail`` of queued mail: the relay user, else the client's address."""
        return (self.user.username if self.user is not None else self.address)[:128]

    @property
    def who(self) -> str:
        return f"relay user {self.user.username!r}" if self.user is not None else f"client {self.address}"


class Backlog:
    """The shared backpressure check (``Runtime.backpressure``: queue depth and age, read from the database at
    most once a second), asked off the event loop and answered as an SMTP refusal."""

    def __init__(self, pressure: Backpressure) -> None:
        self._pressure = pressure

    async def check(self) -> None:
        """Raise a 451 refusal if the outbox is over its bounds or cannot be read."""
        try:
            found = await asyncio.to_thread(self._pressure.check)
        except StoreError as exc:
            log.warning("cannot read the queue depth: %s", exc.message)
            raise SmtpRefusal(R.STORE_UNAVAILABLE()) from exc
        if found is not None:
            raise SmtpRefusal(R.QUEUE_FULL(reason=found.reason))


class ConnectorCache:
    """Connectors by id or name, read at most every few seconds (they change rarely; mail arrives often)."""

    def __init__(self, store: ConnectorStore, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str | int, tuple[float, ConnectorConfig]] = {}

    async def get(self, ref: str | int) -> ConnectorConfig:
        hit = self._cache.get(ref)
        if hit is not None and self._clock() - hit[0] < CONNECTOR_CACHE_SECONDS:
            return hit[1]
        try:
            connector = await asyncio.to_thread(self._store.get, ref)
        except NotFoundError as exc:
            raise SmtpRefusal(R.NO_CONNECTOR(name=ref if isinstance(ref, str) else f"#{ref}")) from exc
        except StoreError as exc:
            raise SmtpRefusal(R.STORE_UNAVAILABLE()) from exc
        self._cache[ref] = (self._clock(), connector)
        return connector


class RelayHandler:
    def __init__(
        self,
        runtime: Runtime,
        users: RelayUserStore,
        rules: ClientRules,
        *,
        hostname: str,
        committers: Executor,
        verify_concurrency: int = 4,
    ) -> None:
        s = runtime.settings
        self.settings = s
        self.runtime = runtime
        self.users = users
        self.rules = rules
        self.hostname = hostname
        # The threads that parse and commit messages: they mostly wait for the outbox's group commit, so
        # many of them mean bigger batches (one fsync for many messages), not more CPU.
        self.committers = committers
        self.max_message_bytes = s.smtp_max_message_bytes
        self.limiter = AuthFailureLimiter(s.smtp_auth_failures_per_minute, runtime.clock.monotonic)
        self.backlog = Backlog(runtime.backpressure)
        self.connectors = ConnectorCache(runtime.connectors, runtime.clock.monotonic)
        self.connections: set[RelaySMTP] = set()
        self.no_connections = asyncio.Event()
        self.no_connections.set()
        self.no_replies_pending = asyncio.Event()  # no message between its final dot and its reply
        self.no_replies_pending.set()
        self._replies_pending = 0
        # argon2 takes 64 MiB per check: bound how many run at once, whatever the number of clients.
        self._verify_slots = asyncio.Semaphore(verify_concurrency)

    # -- connections (for a clean shutdown) -------------------------------------------------------------

    def opened(self, connection: RelaySMTP) -> None:
        self.connections.add(connection)
        self.no_connections.clear()

    def closed(self, connection: RelaySMTP) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self.no_connections.set()

    def replying(self, started: bool) -> None:
        self._replies_pending += 1 if started else -1
        if self._replies_pending:
            self.no_replies_pending.clear()
        else:
            self.no_replies_pending.set()

    # -- who is the client ------------------------------------------------------------------------

    def client(self, session: Session) -> Client:
        ip = peer_address(session.peer)
        user = session.auth_data if isinstance(session.auth_data, RelayUser) else None
        return Client(ip, user, self.rules.may_relay_without_auth(ip))

    def offers_auth(self, session: Session) -> bool:
        return session.ssl is not None or self.rules.may_auth_without_tls(peer_address(session.peer))

    # -- aiosmtpd hooks -----------------------------------------------------------------------------

    async def handle_EHLO(
        self, server: RelaySMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's lines plus PIPELINING (RFC 2920) and SIZE (RFC 1870); AUTH only where it is allowed."""
        session.host_name = hostname
        kept = [line for line in responses[1:-1] if not line[4:].upper().startswith("AUTH")]
        auth = ["250-AUTH PLAIN LOGIN"] if self.offers_auth(session) else []
        extra = ["250-PIPELINING", f"250-SIZE {self.max_message_bytes}"]
        return [responses[0], *extra, *kept, *auth, responses[-1]]

    async def handle_MAIL(
        self, server: RelaySMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not _full_address(address):
            return R.SENDER_NOT_FULL_ADDRESS()
        if not _utf8(address):
            return R.ADDRESS_NOT_UTF8()
        if not address.isascii() and not envelope.smtp_utf8:
            return R.NON_ASCII_WITHOUT_SMTPUTF8()
        declared = next((opt[5:] for opt in mail_options if opt.startswith("SIZE=")), None)
        if declared is not None and int(declared) > self.max_message_bytes:  # aiosmtpd checked the digits
            return R.MESSAGE_TOO_BIG(limit=self.max_message_bytes)
        client = self.client(session)
        if client.authorized:  # the others are told at RCPT (530), as RFC 5321 §3.3 expects
            try:
                await self.backlog.check()
                await self._connector(client)
            except SmtpRefusal as refusal:
                return refusal.reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return R.SENDER_OK()

    async def handle_RCPT(
        self, server: RelaySMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        client = self.client(session)
        if not client.authorized:
            log.info("relay refused for unauthenticated client %s (RCPT)", client.address)
            return R.AUTH_REQUIRED()
        if not _full_address(address):
            return R.RECIPIENT_NOT_FULL_ADDRESS()
        if not _utf8(address):
            return R.ADDRESS_NOT_UTF8()
        if not address.isascii() and not envelope.smtp_utf8:
            return R.NON_ASCII_WITHOUT_SMTPUTF8()
        if (problem := deliverable(address)) is not None:  # the one rule of every path (addresses.py)
            return R.RECIPIENT_INVALID(reason=problem)
        if address.lower() in (known.lower() for known in envelope.rcpt_tos):
            return R.RECIPIENT_OK()  # a repeated RCPT names no new recipient
        if len(envelope.rcpt_tos) >= self.settings.smtp_max_recipients:
            return R.TOO_MANY_RECIPIENTS(limit=self.settings.smtp_max_recipients)
        if (suppressed := await self._suppressed(client, address)) is not None:
            return suppressed
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return R.RECIPIENT_OK()

    async def handle_exception(self, error: Exception) -> str:
        """Anything unexpected is the relay's problem, so a 4xx: the client keeps the message and retries."""
        if type(error).__name__ == "TLSSetupException":
            log.info("STARTTLS handshake failed: %s", type(error.__cause__).__name__)
        else:
            log.error("SMTP session error: %s", type(error).__name__, exc_info=error)
        return R.LOCAL_ERROR()

    # -- AUTH ---------------------------------------------------------------------------------------

    def login_blocked(self, session: Session) -> str | None:
        ip = peer_address(session.peer)
        wait = self.limiter.blocked_for(limiter_key(ip))
        if not wait:
            return None
        log.warning("AUTH refused for %s: too many failed attempts in the last minute", ip)
        return R.AUTH_RATE_LIMITED(address=ip, seconds=wait)

    async def authenticate(self, session: Session, username: str, password: str) -> str:
        """Check the credentials off the event loop. Failed attempts count against the client's address;
        the attempted username is not logged (people type passwords into username fields)."""
        ip = peer_address(session.peer)
        key = limiter_key(ip)
        if wait := self.limiter.begin(key):  # parallel connections are counted before their passwords are checked
            log.warning("AUTH refused for %s: too many failed attempts in the last minute", ip)
            return R.AUTH_RATE_LIMITED(address=ip, seconds=wait)
        user, checked = None, False
        try:
            async with self._verify_slots:
                user = await asyncio.to_thread(self.users.authenticate, username, password)
            checked = True
        except StoreError as exc:
            log.warning("AUTH from %s could not be checked: %s", ip, exc.message)
            return R.AUTH_TEMPORARY_FAILURE()
        finally:
            self.limiter.end(key, failed=checked and user is None)  # an outage is not the client's failure
        if user is None:
            log.warning("AUTH failed from %s", ip)
            return R.AUTH_INVALID()
        session.authenticated = True
        session.auth_data = user  # type: ignore[assignment]
        log.info("AUTH as %s from %s", user.username, ip)
        return R.AUTH_SUCCEEDED()

    # -- the message ----------------------------------------------------------------------------------

    async def accept(self, session: Session, envelope: Envelope, spool: MessageSpool) -> str:
        """Check, rewrite and queue the message; the reply. Takes ownership of ``spool`` (closes it)."""
        handed_over = False
        client = self.client(session)
        try:
            if not client.authorized:  # cannot happen (RCPT refused them), but never relay by accident
                raise SmtpRefusal(R.AUTH_REQUIRED())
            await self.backlog.check()
            connector = await self._connector(client)
            rules = self._sender_rules(client, connector)
            stamp = self._stamp(session, envelope, client)
            handed_over = True
            work = partial(
                self._queue, spool, connector.id, rules, stamp, list(envelope.rcpt_tos), envelope.mail_from, client
            )
            message_id = await asyncio.get_running_loop().run_in_executor(self.committers, work)
        except SmtpRefusal as refusal:
            log.info("message from %s refused: %s", client.source, refusal.reply)
            return refusal.reply
        finally:
            if not handed_over:
                spool.close()
        self.runtime.metrics.messages_accepted.labels("smtp").inc()
        return R.QUEUED(id=message_id)

    def _queue(
        self,
        spool: MessageSpool,
        connector_id: int,
        rules: SenderRules,
        stamp: ReceivedStamp,
        recipients: list[str],
        mail_from: str | None,
        client: Client,
    ) -> int:
        """In a worker thread: parse the header block, apply the From policy, stamp, commit."""
        try:
            size = spool.size
            stream = spool.finish()
            message = read_message(stream, size, check_header_block(stream, size))
            apply_sender_rules(message, rules)
            prepend_received(message, stamp)
            try:
                result = self.runtime.outbox.enqueue(
                    connector_id,
                    message,
                    envelope=recipients,
                    envelope_from=mail_from,
                    source="smtp",
                    source_detail=client.source,
                )
            except StoreError as exc:
                log.warning("cannot queue a message from %s: %s", client.source, exc.message)
                raise SmtpRefusal(R.STORE_UNAVAILABLE()) from exc
            except ValidationError as exc:
                raise SmtpRefusal(R.MESSAGE_REFUSED(reason=exc.message)) from exc
            except SmtpRefusal:
                raise
            except Exception as exc:  # an unknown failure is treated as temporary: the client keeps the mail
                log.error("queueing a message from %s failed", client.source, exc_info=exc)
                raise SmtpRefusal(R.LOCAL_ERROR()) from exc
            log.info(
                "queued message %s (%s) from %s [%s]: %d recipient(s), %d bytes",
                result.id, stamp.session_id, client.source, client.address, len(recipients), size,
            )  # fmt: skip
            return result.id
        finally:
            spool.close()

    async def _suppressed(self, client: Client, address: str) -> str | None:
        """550 5.1.1 for a recipient on the connector's suppression list (the rest of the message still goes)."""
        try:
            connector = await self._connector(client)
            found = await asyncio.to_thread(self.runtime.suppressions.find, connector.id, [address])
        except (NotFoundError, StoreError):
            return None  # DATA reports a missing connector or database with its own reply
        entry = found.get(address.lower())
        if entry is None:
            return None
        self.runtime.metrics.suppressions.labels(connector.name, "refused").inc()
        log.info("RCPT %s refused for %s: suppressed since %s", address, client.address, entry.bounced_at.date())
        return R.RECIPIENT_SUPPRESSED(why=entry.refusal())

    async def _connector(self, client: Client) -> ConnectorConfig:
        user = client.user
        ref: str | int = user.connector_id if user is not None and user.connector_id is not None else DEFAULT_NAME
        return await self.connectors.get(ref)

    def _sender_rules(self, client: Client, connector: ConnectorConfig) -> SenderRules:
        allowed = client.user.allowed_from if client.user is not None else ()
        policy = self.settings.smtp_from_policy
        return SenderRules(connector.user_name, allowed, policy, client.who, connector.send_as)

    def _stamp(self, session: Session, envelope: Envelope, client: Client) -> ReceivedStamp:
        recipients = envelope.rcpt_tos
        return ReceivedStamp(
            helo=session.host_name or "unknown",
            peer_ip=client.address,
            hostname=self.hostname,
            protocol=with_protocol(
                session.extended_smtp, envelope.smtp_utf8, session.ssl is not None, client.user is not None
            ),
            session_id=secrets.token_hex(6),
            recipient=recipients[0] if len(recipients) == 1 else None,
            when=datetime.now(UTC),
        )


def _full_address(address: str) -> bool:
    """local-part@domain (RFC 5321 §4.1.2 Mailbox); Graph cannot deliver to anything less."""
    local, at, domain = address.rpartition("@")
    return bool(local and at and domain) and not any(ch.isspace() for ch in address)


def _utf8(text: str) -> bool:
    """aiosmtpd decodes arguments with surrogateescape: a lone surrogate means the bytes were not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
