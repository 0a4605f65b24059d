"""The SMTP protocol of the relay: aiosmtpd's ``SMTP`` with three parts of its own.

* AUTH PLAIN/LOGIN (RFC 4954, RFC 4616): the password check is argon2 (slow on purpose), so it must not run
  on the event loop; aiosmtpd's authenticator hook is synchronous, hence our own ``smtp_AUTH``. Response
  lines are read here and never logged.
* DATA: read into a ``MessageSpool`` (no 35 MB bytes objects joined from lists), with the limits answered by
  their own replies: 552 5.3.4 for size, 554 5.6.0 for lines over 1000 octets. Only CRLF.CRLF ends the data
  (RFC 5321 §4.1.1.4), so bare-LF "smuggling" cannot split one message into two.
* Input hygiene: CR, LF or NUL inside a HELO/EHLO/MAIL/RCPT argument is refused outright.

Policy (who may relay, recipients, queueing) lives in ``smtp_handler.RelayHandler``.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import contextlib
import re
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, syntax

from . import smtp_replies as R
from .smtp_message import MessageSpool

if TYPE_CHECKING:
    from .smtp_handler import RelayHandler

READ_LIMIT = 64 * 1024  # StreamReader buffer: large reads for big messages; text lines are checked below
MAX_TEXT_LINE = 1000  # RFC 5321 §4.5.3.1.6, CRLF included, the transparency dot not counted
MAX_AUTH_LINE = 12288  # RFC 4954 §4
COMMAND_LIMIT = 512  # RFC 5321 §4.5.3.1.4
MAIL_COMMAND_LIMIT = COMMAND_LIMIT + 26 + 14 + 10  # + SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531)
MECHANISMS = ("PLAIN", "LOGIN")
# The everyday path of MAIL FROM/RCPT TO: <dot-atom@domain> (UTF-8 allowed, RFC 6531). Anything else goes to
# aiosmtpd's full RFC 5322 parser, which costs ~100 times more.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_SIMPLE_PATH = re.compile(rf"<({_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})*)>")
_GONE = object()  # the client went away mid-exchange


def _has_control(arg: str | None) -> bool:
    return arg is not None and any(ch in arg for ch in "\r\n\x00")


class RelaySMTP(SMTP):
    line_length_limit = READ_LIMIT

    def __init__(self, handler: RelayHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.relay = handler
        # aiosmtpd keeps these limits in a dict shared by all instances and grows it on every EHLO.
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LIMIT, {"MAIL": MAIL_COMMAND_LIMIT})

    # -- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.relay.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.relay.closed(self)
        super().connection_lost(error)

    def close_for_shutdown(self) -> None:
        """Say goodbye (RFC 5321 §3.8: 421) and close; used when the server stops."""
        transport = self.transport
        if transport is None:
            return
        with contextlib.suppress(Exception):
            self._writer.write(R.SHUTTING_DOWN().encode() + b"\r\n")
        transport.close()

    # -- input hygiene ------------------------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if _has_control(hostname):
            await self.push(R.COMMAND_CONTROL_CHARACTERS())
            return
        await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        if _has_control(hostname):
            await self.push(R.COMMAND_CONTROL_CHARACTERS())
            return
        await super().smtp_EHLO(hostname)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if _has_control(arg):
            await self.push(R.COMMAND_CONTROL_CHARACTERS())
            return
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if _has_control(arg):
            await self.push(R.COMMAND_CONTROL_CHARACTERS())
            return
        await super().smtp_RCPT(arg)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if self._tls_protocol is not None:  # aiosmtpd would wrap the TLS session in TLS again
            await self.push(R.TLS_ALREADY_ACTIVE())
            return
        await super().smtp_STARTTLS(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        simple = _SIMPLE_PATH.match(arg) if arg else None
        if simple is not None:
            return simple.group(1), arg[simple.end() :]
        found: tuple[str | None, str | None] = super()._getaddr(arg)
        return found

    # -- AUTH ---------------------------------------------------------------------------------------

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        session = self.session
        assert session is not None and self.envelope is not None
        if not session.host_name or not session.extended_smtp:
            await self.push(R.SEND_EHLO_FIRST())
            return
        if session.authenticated:
            await self.push(R.AUTH_ALREADY_DONE())
            return
        if self.envelope.mail_from:  # RFC 4954 §4: not during a mail transaction
            await self.push(R.AUTH_IN_TRANSACTION())
            return
        if not self.relay.offers_auth(session):
            await self.push(R.AUTH_ENCRYPTION_REQUIRED())
            return
        parts = (arg or "").split()
        if not 1 <= len(parts) <= 2:
            await self.push(R.AUTH_SYNTAX())
            return
        mechanism = parts[0].upper()
        if mechanism not in MECHANISMS:
            await self.push(R.AUTH_MECHANISM_UNKNOWN())
            return
        blocked = self.relay.login_blocked(session)
        if blocked is not None:
            await self.push(blocked)
            return
        credentials = await self._credentials(mechanism, parts[1] if len(parts) == 2 else None)
        if credentials is not None:
            await self.push(await self.relay.authenticate(session, *credentials))

    async def _credentials(self, mechanism: str, initial: str | None) -> tuple[str, str] | None:
        """(username, password) from the client, or None once a reply explaining why not has been sent."""
        if mechanism == "PLAIN":
            blob = await self._initial(initial) if initial is not None else await self._response(R.AUTH_CHALLENGE_EMPTY)
            if not isinstance(blob, bytes):
                return None
            fields = blob.split(b"\x00")
            if len(fields) != 3:
                await self.push(R.AUTH_MALFORMED(mechanism="PLAIN"))
                return None
            authzid, login, password = fields
            if authzid not in (b"", login):
                login = b""  # acting for another identity (RFC 4616 authzid) is not supported: fails as invalid
        else:
            first = (
                await self._initial(initial) if initial is not None else await self._response(R.AUTH_CHALLENGE_USERNAME)
            )
            if not isinstance(first, bytes):
                return None
            second = await self._response(R.AUTH_CHALLENGE_PASSWORD)
            if not isinstance(second, bytes):
                return None
            login, password = first, second
        try:
            return login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            await self.push(R.AUTH_MALFORMED(mechanism=mechanism))
            return None

    async def _initial(self, text: str) -> bytes | object:
        """An initial response given with the AUTH command; "=" stands for an empty one (RFC 4954 §4)."""
        return await self._decode(text.encode("ascii", "replace"))

    async def _response(self, challenge: str) -> bytes | object:
        await self.push(challenge)
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            await self._discard_line(exc.consumed)
            await self.push(R.AUTH_LINE_TOO_LONG())
            return _GONE
        except asyncio.IncompleteReadError:
            return _GONE
        line = line.rstrip(b"\r\n")
        if len(line) > MAX_AUTH_LINE:
            await self.push(R.AUTH_LINE_TOO_LONG())
            return _GONE
        if line == b"*":
            await self.push(R.AUTH_ABORTED())
            return _GONE
        return await self._decode(line)

    async def _decode(self, data: bytes) -> bytes | object:
        if data == b"=":
            return b""
        try:
            return b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            await self.push(R.AUTH_BAD_BASE64())
            return _GONE

    async def _discard_line(self, consumed: int) -> None:
        await self._reader.readexactly(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)

    # -- DATA ---------------------------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push(R.BAD_SEQUENCE_NEED_RCPT())
            return
        if arg:
            await self.push(R.DATA_SYNTAX())
            return
        await self.push(R.START_MAIL_INPUT)
        spool = MessageSpool()
        try:
            problem = await self._receive(spool)
        except BaseException:
            spool.close()
            raise
        if problem is _GONE:
            spool.close()
            return
        self.relay.replying(True)
        try:
            if isinstance(problem, str):
                spool.close()
                reply = problem
            else:
                reply = await self.relay.accept(self.session, self.envelope, spool)  # closes the spool
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(reply)
        finally:
            self.relay.replying(False)

    async def _receive(self, spool: MessageSpool) -> str | object | None:
        """Read the message up to CRLF.CRLF into ``spool``; a refusal reply once the data has been read to its
        end (RFC 5321 §4.2.5: reply only after the final dot), ``_GONE`` if the client left, else None."""
        reader = self._reader
        state = _DataState(self.relay.max_message_bytes, spool)
        while True:
            try:
                line: bytes = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                await reader.readexactly(exc.consumed)
                state.overlong()
                continue
            except asyncio.IncompleteReadError:
                return _GONE
            if state.take(line):
                return state.refusal()
            if not state.lines % 1024:
                self._reset_timeout()  # RFC 5321 §4.5.3.2.6: the timeout is per data block, not per message


class _DataState:
    """The lines of one DATA phase, with its limits. After a limit is hit, lines are read and dropped so
    the reply can follow the final dot."""

    def __init__(self, limit: int, spool: MessageSpool) -> None:
        self.limit = limit
        self.spool = spool
        self.lines = 0
        self.too_big = self.too_long = self.mid_line = self.bare_newline = False

    def overlong(self) -> None:
        """Part of a line longer than the read buffer was dropped; the rest of it comes next."""
        self.too_long = self.mid_line = True

    def take(self, line: bytes) -> bool:
        """Store one CRLF-terminated line; True at the end-of-data line."""
        if self.mid_line:  # the end of a line longer than the read buffer
            self.mid_line = False
            return False
        if line == b".\r\n":
            return True
        if line[:1] == b".":  # RFC 5321 §4.5.2: remove the transparency dot
            line = line[1:]
        self.lines += 1
        if self.too_big or self.too_long:
            return False
        if len(line) > MAX_TEXT_LINE:
            # Many "lines" in one: the client ends its lines with a bare LF (or CR), which is the real fault.
            self.bare_newline = self.bare_newline or b"\n" in line[:-2] or b"\r" in line[:-2]
            self.too_long = True
        elif self.spool.size + len(line) > self.limit:
            self.too_big = True
        else:
            self.spool.write(line)
        return False

    def refusal(self) -> str | None:
        if self.too_big:
            return R.MESSAGE_TOO_BIG(limit=self.limit)
        if self.too_long and self.bare_newline:
            return R.HEADER_BARE_NEWLINE()
        if self.too_long:
            return R.LINE_TOO_LONG()
        return None
