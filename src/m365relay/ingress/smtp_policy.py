"""Who may do what on the SMTP relay, decided from the client's address: relay without AUTH (the
allowlist), AUTH without TLS (loopback), and the per-address limit on failed AUTH attempts.

Pure functions of the peer address and the settings, so tests can exercise every branch without having
the addresses they name.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FAILURE_WINDOW_SECONDS = 60.0
MAX_TRACKED_CLIENTS = 100_000  # bounds the limiter's memory under a scan from many addresses


def peer_address(peer: Any) -> IPAddress | None:
    """The client's IP from asyncio's ``peername`` (IPv4-mapped IPv6 is read as the IPv4 address)."""
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValidationError(
                "smtp_allowed_networks",
                f"{value!r} is not a network; use CIDR notation such as 10.0.0.0/24 or 2001:db8::/64",
                key="smtp_allowed_networks",
            ) from exc
    return tuple(networks)


@dataclass(frozen=True)
class ClientRules:
    """The settings that depend on where a client connects from."""

    allowed_networks: tuple[Network, ...] = ()
    auth_require_tls: bool = True
    allow_loopback_plain: bool = True

    @classmethod
    def from_settings(cls, networks: list[str], auth_require_tls: bool, allow_loopback_plain: bool) -> ClientRules:
        return cls(parse_networks(networks), auth_require_tls, allow_loopback_plain)

    def may_relay_without_auth(self, address: IPAddress | None) -> bool:
        """Only an explicit allowlist lets a client relay without AUTH: never an open relay."""
        return address is not None and any(address in net for net in self.allowed_networks)

    def may_auth_without_tls(self, address: IPAddress | None) -> bool:
        """AUTH before STARTTLS sends the password in clear text (RFC 4954 §4): only on loopback, where no
        one else sees the traffic, and only while ``smtp_auth_allow_loopback_plain`` allows it."""
        if not self.auth_require_tls:
            return True
        return self.allow_loopback_plain and address is not None and address.is_loopback


def limiter_key(address: IPAddress | None) -> str:
    """IPv6 clients are counted per /64: one host usually owns the whole prefix and could rotate through it."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class AuthFailureLimiter:
    """At most ``per_minute`` failed AUTH attempts per client address in any 60 seconds (sliding window).
    While a client is over the limit its AUTH commands are answered 454 4.7.0 without checking a password,
    so guessing costs the guesser time and costs the relay nothing. ``per_minute <= 0`` disables the limit."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _checking: dict[str, int] = field(default_factory=dict)  # attempts being verified right now

    def blocked_for(self, key: str) -> int:
        """Whole seconds until this client may try again; 0 if it may now. Attempts still being checked
        count as failures until they are known, so parallel connections cannot all slip through."""
        if self.per_minute <= 0:
            return 0
        recent = self._recent(key)
        if len(recent) + self._checking.get(key, 0) < self.per_minute:
            return 0
        oldest = recent[0] if recent else self.clock()
        return max(1, math.ceil(oldest + FAILURE_WINDOW_SECONDS - self.clock()))

    def begin(self, key: str) -> int:
        """Reserve an attempt (check and reserve in one step, with no await between them). Returns the seconds
        to wait instead when the client is over its limit; 0 when the attempt may proceed (call ``end``)."""
        wait = self.blocked_for(key)
        if not wait and self.per_minute > 0:
            self._checking[key] = self._checking.get(key, 0) + 1
        return wait

    def end(self, key: str, *, failed: bool) -> None:
        if self.per_minute <= 0:
            return
        remaining = self._checking.get(key, 1) - 1
        if remaining > 0:
            self._checking[key] = remaining
        else:
            self._checking.pop(key, None)
        if failed:
            self.failed(key)

    def failed(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        if key not in self._failures and len(self._failures) >= MAX_TRACKED_CLIENTS:
            self._forget_idle()
        recent = self._recent(key)
        recent.append(self.clock())
        self._failures[key] = recent

    def _recent(self, key: str) -> deque[float]:
        recent = self._failures.get(key) or deque()
        cutoff = self.clock() - FAILURE_WINDOW_SECONDS
        while recent and recent[0] <= cutoff:
            recent.popleft()
        if not recent:
            self._failures.pop(key, None)
        return recent

    def _forget_idle(self) -> None:
        for key in list(self._failures):
            self._recent(key)
        if len(self._failures) >= MAX_TRACKED_CLIENTS:  # still full: drop the oldest entries
            oldest = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in oldest[: len(oldest) // 2]:
                del self._failures[key]
