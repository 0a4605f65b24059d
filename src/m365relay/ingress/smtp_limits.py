"""What one SMTP client may cost the relay: how many connections, how long it may sit idle, how slowly it
may send a message, how many commands it may send without sending mail.

A relay on the internet meets clients that open hundreds of idle connections, keep one alive for ever with
NOOP, or drip a message at one byte a second. Each of these holds a socket, a coroutine and (in DATA) a spool
file; the limits below bound them, with defaults close to Postfix's (``smtpd_client_connection_count_limit``,
``smtpd_timeout``, ``smtpd_junk_command_limit``, ``smtpd_min_data_rate``).

    gate = ConnectionGate(limits)
    key = gate.admit(peer)        # None: refused (answer 421 4.7.0 and close)
    ...
    gate.release(key)

docs/security.md lists every limit with its setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .smtp_policy import limiter_key, peer_address

if TYPE_CHECKING:
    from ..settings import Settings

# Commands that do no work towards a message. RFC 5321 §4.5.3.2.7 lets the server time out a client that
# sends nothing useful; after ``idle_resets`` of them in a row the idle timer is no longer pushed back.
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "HELP", "VRFY", "EXPN"})


@dataclass(frozen=True)
class SessionLimits:
    max_connections: int = 200  # whole relay; 0 = no limit
    max_connections_per_client: int = 20  # per IPv4 address / IPv6 /64; 0 = no limit
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: at least 5 minutes
    idle_resets: int = 10  # junk commands in a row that still push the idle timer back
    max_commands_without_mail: int = 100  # commands (RCPT not counted) between two messages
    min_data_rate: int = 500  # bytes per second in DATA, after the first command_timeout seconds' grace
    data_timeout: float = 1800.0  # the whole DATA phase, however fast

    @classmethod
    def from_settings(cls, s: Settings) -> SessionLimits:
        return cls(
            max_connections=s.smtp_max_connections,
            max_connections_per_client=s.smtp_max_connections_per_client,
            command_timeout=s.smtp_command_timeout,
            idle_resets=s.smtp_idle_command_resets,
            max_commands_without_mail=s.smtp_max_commands_without_mail,
            min_data_rate=s.smtp_min_data_rate,
            data_timeout=s.smtp_data_timeout,
        )


class ConnectionGate:
    """Counts open connections, in total and per client (IPv6 per /64, like the AUTH limiter: one host
    usually owns the whole prefix). Runs on the event loop only, so no lock is needed."""

    def __init__(self, limits: SessionLimits) -> None:
        self.limits = limits
        self.total = 0
        self._per_client: dict[str, int] = {}

    def admit(self, peer: Any) -> str | None:
        """The client's key when it may connect (call ``release`` with it later); None when over a cap."""
        key = limiter_key(peer_address(peer))
        limits = self.limits
        if limits.max_connections and self.total >= limits.max_connections:
            return None
        count = self._per_client.get(key, 0)
        if limits.max_connections_per_client and count >= limits.max_connections_per_client:
            return None
        self.total += 1
        self._per_client[key] = count + 1
        return key

    def release(self, key: str) -> None:
        self.total -= 1
        remaining = self._per_client.get(key, 1) - 1
        if remaining > 0:
            self._per_client[key] = remaining
        else:
            self._per_client.pop(key, None)


class DataDeadline:
    """When the DATA phase must be over: after a grace of ``command_timeout`` seconds the client must have
    sent ``min_data_rate`` bytes for every further second, and the whole phase ends after ``data_timeout``.
    A fast 35 MB upload is never cut short (its credit grows with what it sent); a drip runs out."""

    def __init__(self, limits: SessionLimits, started: float) -> None:
        self.rate = max(limits.min_data_rate, 0)
        self.grace_end = started + limits.command_timeout
        self.hard_end = started + limits.data_timeout
        self.received = 0

    def at(self) -> float:
        """The loop time by which the phase must be over, given the bytes received so far."""
        earned = self.received / self.rate if self.rate else float("inf")
        return min(self.hard_end, self.grace_end + earned)
