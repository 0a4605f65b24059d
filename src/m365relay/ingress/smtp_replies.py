"""Every reply the SMTP relay gives on purpose, one named constant each: the basic code (RFC 5321 §4.2.3),
the enhanced status code (RFC 3463, RFC 4954 §6 for AUTH, RFC 6531 for SMTPUTF8) and the text.

Tests compare against these constants, and docs/smtp.md lists them. A 4xx means "try again later, the
message is fine" (the client keeps it); a 5xx means "this will never work as it is" — the relay answers 5xx
only for what the client sent, never for its own temporary trouble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    code: int
    status: str  # enhanced status code, e.g. "5.3.4"
    text: str  # may hold {placeholders}

    def __call__(self, **values: Any) -> str:
        """The reply line, placeholders filled in."""
        return f"{self.code} {self.status} {self.text.format(**values)}"


class SmtpRefusal(Exception):
    """Raised inside the SMTP front end to answer with ``reply`` (a finished reply line)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


# -- session -----------------------------------------------------------------------------------------
GREETING_IDENT = "ESMTP m365relay"
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down; try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing; try again later")
SEND_EHLO_FIRST = Reply(503, "5.5.1", "Send EHLO first")
BAD_SEQUENCE_NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
COMMAND_CONTROL_CHARACTERS = Reply(
    501, "5.5.2", "Syntax error: CR, LF or NUL inside a command argument (header injection refused)"
)
COMMAND_BARE_LINE_END = Reply(
    501, "5.5.2", "Syntax error: bare LF or CR in a command; a command line ends with CRLF only (RFC 5321 §2.3.8)"
)
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections {scope}; try again later")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands without sending mail; closing connection")
TIMED_OUT = Reply(421, "4.4.2", "Timeout exceeded; closing connection")
DATA_TOO_SLOW = Reply(421, "4.4.2", "Message data too slow (at least {rate} bytes per second); closing connection")
HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: {verb} hostname")
DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
START_MAIL_INPUT = "354 End data with <CR><LF>.<CR><LF>"

# -- AUTH (RFC 4954) -------------------------------------------------------------------------------
AUTH_SUCCEEDED = Reply(235, "2.7.0", "Authentication successful")
AUTH_CHALLENGE_EMPTY = "334 "
AUTH_CHALLENGE_USERNAME = "334 VXNlcm5hbWU6"  # base64 "Username:" (draft-murchison-sasl-login)
AUTH_CHALLENGE_PASSWORD = "334 UGFzc3dvcmQ6"  # noqa: S105 - base64 "Password:", the LOGIN prompt
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_ALREADY_DONE = Reply(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
AUTH_MECHANISM_UNKNOWN = Reply(504, "5.5.4", "Unrecognized authentication type; use PLAIN or LOGIN")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode the base64 response")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed {mechanism} response")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_RATE_LIMITED = Reply(
    454, "4.7.0", "Too many failed authentication attempts from {address}; try again in {seconds} seconds"
)
AUTH_TEMPORARY_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure; try again later")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")

# -- envelope --------------------------------------------------------------------------------------
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
# A hard-bounced address on the suppression list (docs/delivery.md); {why} is Suppression.refusal().
RECIPIENT_SUPPRESSED = Reply(550, "5.1.1", "{why}")
SENDER_NOT_FULL_ADDRESS = Reply(553, "5.1.7", "Sender must be a full address (local-part@domain)")
RECIPIENT_NOT_FULL_ADDRESS = Reply(553, "5.1.3", "Recipient must be a full address (local-part@domain)")
ADDRESS_NOT_UTF8 = Reply(553, "5.6.7", "The address is not valid UTF-8 (RFC 6531)")
NON_ASCII_WITHOUT_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter (RFC 6531)")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients: at most {limit} per message")
SIZE_PARAMETER_INVALID = Reply(501, "5.5.4", "Syntax: SIZE=<number of octets>")
QUEUE_FULL = Reply(451, "4.3.0", "Too much mail is waiting ({reason}); try again later")
STORE_UNAVAILABLE = Reply(451, "4.3.0", "The relay cannot store mail right now; try again later")
NO_CONNECTOR = Reply(451, "4.3.5", "No connector {name!r} is configured yet; try again later")

# -- message ----------------------------------------------------------------------------------------
QUEUED = Reply(250, "2.0.0", "Ok: queued as {id}")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message too big for system: at most {limit} bytes")
LINE_TOO_LONG = Reply(
    554, "5.6.0", "Line too long: at most 998 characters plus CRLF (RFC 5321 §4.5.3.1.6); use quoted-printable"
)
MESSAGE_EMPTY = Reply(554, "5.6.0", "Empty message")
HEADER_BARE_NEWLINE = Reply(
    554, "5.6.0", "Bare CR or LF line ends (RFC 5321 §2.3.8 and RFC 5322 §2.2 need CRLF); header injection refused"
)
RECIPIENT_INVALID = Reply(553, "5.1.3", "Recipient address rejected: {reason}")
HEADER_ENTRY_INVALID = Reply(554, "5.6.0", "{reason}")
HEADER_MALFORMED = Reply(554, "5.6.0", "Malformed header block: {reason}")
HEADER_NOT_UTF8 = Reply(554, "5.6.0", "Header field {name} is neither ASCII nor UTF-8 (RFC 6532)")
HEADER_REPEATED = Reply(554, "5.6.0", "Header field {name} appears {count} times; RFC 5322 §3.6 allows one")
MESSAGE_REFUSED = Reply(554, "5.6.0", "{reason}")
FROM_MISSING = Reply(554, "5.6.0", "The message has no From header field (RFC 5322 §3.6)")
FROM_UNREADABLE = Reply(554, "5.6.0", "The From header field {detail}")  # detail: what and why, e.g. "holds …"
FROM_NOT_ALLOWED = Reply(550, "5.7.1", "From {address} is not allowed for {who}; it may send as {allowed}")
