"""The SMTP protocol of the relay: aiosmtpd's ``SMTP`` with three parts of its own.

* AUTH PLAIN/LOGIN (RFC 4954, RFC 4616): the password check is argon2 (slow on purpose), so it must not run
  on the event loop; aiosmtpd's authenticator hook is synchronous, hence our own ``smtp_AUTH``. Response
  lines are read here and never logged.
* DATA: read into a ``MessageSpool`` (no 35 MB bytes objects joined from lists), with the limits answered by
  their own replies: 552 5.3.4 for size, 554 5.6.0 for lines over 1000 octets. Only CRLF.CRLF ends the data
  (RFC 5321 §4.1.1.4), so bare-LF "smuggling" cannot split one message into two.
* Input hygiene: CR, LF or NUL inside a HELO/EHLO/MAIL/RCPT argument is refused outright, and a command
  line ends with CRLF only (RFC 5321 §2.3.8): aiosmtpd splits commands at a bare LF, which let
  ``MAIL FROM:<a>\nRCPT TO:<b>\r\n`` smuggle a second command past the checks; ``_CommandReader`` reads up
  to CRLF and the whole line is refused with 501.
* Session limits (``smtp_limits``): connection caps (421 4.7.0), an idle timer that NOOP and friends stop
  pushing back, a cap on commands without mail, and a minimum data rate in DATA (421 4.4.2).

Policy (who may relay, recipients, queueing) lives in ``smtp_handler.RelayHandler``.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import contextlib
import functools
import re
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, syntax

from . import smtp_replies as R
from .smtp_limits import JUNK_COMMANDS, ConnectionGate, DataDeadline, SessionLimits
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
DATA_CHECK_LINES = 64  # how often (in lines) DATA checks its deadline: often enough for a drip, cheap for 35 MB


def _has_control(arg: str | None) -> bool:
    return arg is not None and any(ch in arg for ch in "\r\n\x00")


class BareLineEnd(Exception):
    """A command line held a CR or LF that was not part of its final CRLF (RFC 5321 §2.3.8)."""


class _CommandReader(asyncio.StreamReader):
    """aiosmtpd reads each command with ``readuntil()`` — no argument, so up to the next LF. Called that way,
    this reader reads up to CRLF instead and refuses a line with a bare CR or LF inside: an LF alone never
    ends a command, so nothing after it can run as a command of its own. Calls naming a separator (DATA,
    AUTH responses) are untouched."""

    async def readuntil(self, separator: bytes | None = None) -> bytes:  # type: ignore[override]
        if separator is not None:
            return await super().readuntil(separator)
        line = await super().readuntil(b"\r\n")
        body = line[:-2]
        if b"\n" in body or b"\r" in body:
            raise BareLineEnd()
        return line


class RelaySMTP(SMTP):
    line_length_limit = READ_LIMIT

    def __init__(self, handler: RelayHandler, *, limits: SessionLimits, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        # aiosmtpd builds its reader in __init__; build the protocol's reader again as a _CommandReader
        # before any connection exists (StreamReaderProtocol keeps nothing else from the first one).
        asyncio.StreamReaderProtocol.__init__(
            self,
            _CommandReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=self.loop,
        )
        self.relay = handler
        self.limits = limits
        self.gate = gate
        self._gate_key: str | None = None
        self._refused = False
        self._commands = 0  # since the last message (RCPT not counted: it has its own limit)
        self._junk = 0  # junk commands in a row
        self._deadline = self._previous_deadline = 0.0
        self._data_deadline: DataDeadline | None = None
        # aiosmtpd keeps these limits in a dict shared by all instances and grows it on every EHLO.
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LIMIT, {"MAIL": MAIL_COMMAND_LIMIT})
        # Every recognised command runs through _counted first (aiosmtpd dispatches from this dict).
        self._smtp_methods = {name: self._counted(name, method) for name, method in self._smtp_methods.items()}

    # -- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # a new connection, not the TLS layer after STARTTLS
            peer = transport.get_extra_info("peername")
            self._gate_key = self.gate.admit(peer)
            if self._gate_key is None:
                self._refuse(transport)
                return
        super().connection_made(transport)
        self.relay.opened(self)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        """Over a connection cap: 421 4.7.0 instead of the greeting (RFC 5321 §3.1), then close."""
        self._refused = True
        scope = "from your address" if self.gate.total < self.limits.max_connections else "on this relay"
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(R.TOO_MANY_CONNECTIONS(scope=scope).encode() + b"\r\n")
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._gate_key is not None:
            self.gate.release(self._gate_key)
            self._gate_key = None
        if self._refused:  # aiosmtpd never saw this connection
            asyncio.StreamReaderProtocol.connection_lost(self, error)
            return
        self.relay.closed(self)
        super().connection_lost(error)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BareLineEnd):
            return R.COMMAND_BARE_LINE_END()
        status: str = await super().handle_exception(error)
        return status

    # -- timers and command counts --------------------------------------------------------------------

    def _counted(self, command: str, method: Any) -> Any:
        @functools.wraps(method)  # keeps aiosmtpd's @syntax attributes, which HELP and EHLO read
        async def run(arg: str | None) -> None:
            if await self._over_limits(command):
                return
            await method(arg)

        return run

    async def _over_limits(self, command: str) -> bool:
        """Count the command; True (after 421 and closing) once the session sent too many without mail."""
        limits = self.limits
        self._junk = self._junk + 1 if command in JUNK_COMMANDS else 0
        if self._junk > limits.idle_resets:  # aiosmtpd just pushed the idle timer back: undo that
            self._arm(self._previous_deadline)
        if command != "RCPT":
            self._commands += 1
        if limits.max_commands_without_mail and self._commands > limits.max_commands_without_mail:
            await self.push(R.TOO_MANY_COMMANDS())
            if self.transport is not None:
                self.transport.close()
            return True
        return False

    def _reset_timeout(self, duration: float | None = None) -> None:
        self._previous_deadline = self._deadline
        self._arm(self.loop.time() + (duration or self._timeout_duration))

    def _arm(self, at: float) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._deadline = at
        self._timeout_handle = self.loop.call_at(at, self._timeout_cb)

    def _timeout_cb(self) -> None:
        """RFC 5321 §4.5.3.2: the server may close an idle client; say so with 421 first."""
        if self.transport is not None and not self.transport.is_closing():
            data = self._data_deadline
            reply = R.DATA_TOO_SLOW(rate=data.rate) if data is not None else R.TIMED_OUT()
            with contextlib.suppress(Exception):
                self._writer.write(reply.encode() + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

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
        self._data_deadline = DataDeadline(self.limits, self.loop.time())
        try:
            problem = await self._receive(spool, self._data_deadline)
        except BaseException:
            spool.close()
            raise
        finally:
            self._data_deadline = None
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
            if reply.startswith("2"):  # a message sent: the session did useful work
                self._commands = self._junk = 0
            self._reset_timeout()
            await self.push(reply)
        finally:
            self.relay.replying(False)

    async def _receive(self, spool: MessageSpool, deadline: DataDeadline) -> str | object | None:
        """Read the message up to CRLF.CRLF into ``spool``; a refusal reply once the data has been read to its
        end (RFC 5321 §4.2.5: reply only after the final dot), ``_GONE`` if the client left, else None.
        The protocol's timer closes the connection at ``deadline`` (or after a silent command_timeout)."""
        reader = self._reader
        state = _DataState(self.relay.max_message_bytes, spool)
        self._arm(min(deadline.at(), self.loop.time() + self._timeout_duration))
        while True:
            try:
                line: bytes = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                await reader.readexactly(exc.consumed)
                state.overlong()
                continue
            except asyncio.IncompleteReadError:
                return _GONE
            deadline.received += len(line)
            if state.take(line):
                return state.refusal()
            if not state.lines % DATA_CHECK_LINES:
                # RFC 5321 §4.5.3.2.6: the timeout is per data block, not per message — but a block must also
                # keep up the minimum rate, or one client could hold a spool for hours.
                self._arm(min(deadline.at(), self.loop.time() + self._timeout_duration))


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
