"""Keep SMTP credentials out of the logs.

aiosmtpd logs every command line it reads (logger ``mail.log``: ``readline`` at DEBUG, ``>>`` at INFO),
unknown commands at WARNING, and echoes them in its replies (``<<`` at DEBUG). It masks the argument of an
``AUTH <mechanism> <initial-response>`` line itself, but not a base64 username or password that arrives as
a line of its own — as it does from a client that pipelines its AUTH LOGIN answers after AUTH was refused.
The relay's own AUTH dialogue reads its response lines without logging them; this filter covers the rest:
of every client line aiosmtpd logs, only a known, harmless verb and its argument survive.

aiosmtpd's own per-command log is shown only with ``log_level = "debug"`` (or when its logger ``mail.log`` is
configured explicitly); the relay logs AUTH results and queued messages itself (logger ``m365relay.smtp``).
"""

from __future__ import annotations

import logging
import re

AIOSMTPD_LOGGER = "mail.log"
# Verbs whose arguments are not secrets (addresses and host names are ordinary mail-log content).
HARMLESS_VERBS = frozenset({"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "STARTTLS", "HELP", "VRFY"})
# aiosmtpd 1.4 log templates whose argument at this index is a line the client sent.
_CLIENT_LINE_ARG = {
    "_handle_client readline: %r": 0,
    "%r >> %r": 1,
    "%r unrecognised: %s": 1,
    "%r can't decode base64: %s": 1,
    "DATA readline: %s": 0,
}
_ECHOING_REPLY = re.compile(rb'^500 Error: command ".*" not recognized', re.DOTALL)
_AUTH_LINE = re.compile(rb"^(\s*AUTH)(\s+\S+)?(\s+\S.*)?$", re.IGNORECASE | re.DOTALL)


def censor_line(line: bytes | str) -> bytes | str:
    """The part of a client line that may be logged (of the same type as ``line``)."""
    data = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else bytes(line)
    verb = data.strip().split(b" ", 1)[0].upper()
    auth = _AUTH_LINE.match(data.strip())
    if verb.decode("ascii", "replace") in HARMLESS_VERBS:
        kept = data
    elif auth is not None:
        kept = auth.group(1) + (auth.group(2) or b"") + (b" ********" if auth.group(3) else b"")
    else:
        kept = f"<{len(data)} bytes withheld>".encode()
    return kept.decode("utf-8", "surrogateescape") if isinstance(line, str) else kept


class CredentialFilter(logging.Filter):
    """Attached to aiosmtpd's logger while the relay runs; rewrites records, never drops them."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        index = _CLIENT_LINE_ARG.get(str(record.msg))
        if index is not None and index < len(args):
            line = args[index]
            kept = censor_line(line) if isinstance(line, bytes | str) else "<withheld>"
            record.args = (*args[:index], kept, *args[index + 1 :])
        elif (
            record.msg == "%r << %r" and len(args) == 2 and isinstance(args[1], bytes) and _ECHOING_REPLY.match(args[1])
        ):
            record.args = (args[0], b'500 Error: command "<withheld>" not recognized')
        return True


def _echoes_client(reply: object) -> bool:
    return isinstance(reply, bytes) and _ECHOING_REPLY.match(reply) is not None


def install(filter_: CredentialFilter, *, verbose: bool) -> int:
    """Attach the filter. Unless ``verbose`` (log_level=debug), aiosmtpd's line-by-line INFO log is quieted
    to warnings — if nobody configured its logger. Returns the level to restore."""
    logger = logging.getLogger(AIOSMTPD_LOGGER)
    logger.addFilter(filter_)
    previous = logger.level
    if not verbose and previous == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    return previous


def uninstall(filter_: CredentialFilter, level: int) -> None:
    logger = logging.getLogger(AIOSMTPD_LOGGER)
    logger.removeFilter(filter_)
    logger.setLevel(level)
