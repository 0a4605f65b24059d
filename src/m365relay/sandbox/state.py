"""The one object that holds a running sandbox's state; handlers receive it, nothing is global."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clock import Clock
from .directory import CLOUDS, Directory
from .drafts_store import DraftStore
from .faults import FaultPlan
from .inbox import Inbox
from .limits import LimitTracker
from .mailstore import MailStore
from .pki import SandboxPki
from .sentitems_store import DEFAULT_DELAY_SECONDS, SentItemsStore
from .stats import Stats
from .tokens import TokenIssuer


@dataclass(frozen=True)
class SandboxSettings:
    data_dir: Path
    cloud: str = "global"
    latency_ms: float = 0.0
    demo: bool = False
    sent_items_delay: float = DEFAULT_DELAY_SECONDS  # seconds until a send's Sent Items copy is visible

    def __post_init__(self) -> None:
        if self.cloud not in CLOUDS:
            raise ValueError(f"unknown cloud {self.cloud!r}; one of {sorted(CLOUDS)}")


class ConnectionRegistry:
    """Open client connections by peer address, so a `reset` fault can abort the right one."""

    def __init__(self) -> None:
        self._transports: dict[tuple[str, int], asyncio.Transport] = {}

    def add(self, peer: tuple[str, int] | None, transport: asyncio.Transport) -> None:
        if peer is not None:
            self._transports[peer] = transport

    def remove(self, peer: tuple[str, int] | None) -> None:
        if peer is not None:
            self._transports.pop(peer, None)

    def abort(self, peer: tuple[str, int] | None) -> bool:
        """Drop the TCP connection with an RST, the way a crashed front end would."""
        transport = self._transports.pop(peer, None) if peer is not None else None
        if transport is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        transport.abort()
        return True


class Sandbox:
    """Directory, captured mail, drafts, faults, limits, stats and the clock of one sandbox."""

    def __init__(self, settings: SandboxSettings, pki: SandboxPki, seed: dict[str, Any]) -> None:
        self.settings = settings
        self.pki = pki
        self.base_url = ""  # set once the port is known
        self.seed = copy.deepcopy(seed)
        self.tokens = TokenIssuer(pki)
        self.connections = ConnectionRegistry()
        self.clock = Clock()
        self.directory = Directory.from_dict(self.seed)
        self.mail = MailStore()
        self.inbox = Inbox.from_seed(self.seed)
        self.drafts = DraftStore()
        self.sent_items = SentItemsStore(settings.sent_items_delay)
        self.faults = FaultPlan()
        self.limits = LimitTracker(self.clock)
        self.stats = Stats()
        self.latency_ms = settings.latency_ms
        self.demo_info: dict[str, Any] | None = None

    @property
    def cloud(self) -> str:
        return self.settings.cloud

    def reset(self) -> None:
        """Back to the seed: directory, captured mail, drafts, Sent Items, faults, stats, clock and latency."""
        self.directory = Directory.from_dict(self.seed)
        self.mail.clear()
        self.inbox = Inbox.from_seed(self.seed)
        self.drafts.clear()
        self.sent_items.clear()
        self.sent_items.delay = self.settings.sent_items_delay
        self.faults.clear()
        self.clock.offset_seconds = 0.0
        self.limits = LimitTracker(self.clock)
        self.stats = Stats()
        self.latency_ms = self.settings.latency_ms

    def replace_directory(self, data: dict[str, Any]) -> None:
        """`PUT /_sandbox/state`: a new directory (validated first; the old one stays on error)."""
        self.directory = Directory.from_dict(data)

    def graph_resources(self) -> dict[str, str]:
        """Resource identifiers the token endpoint knows, lower-cased → the `aud` it issues.

        Only the real Graph resource of the sandbox's cloud (by URL or appId) — not the URL the sandbox
        listens on: Entra issues tokens for resource principals, whatever address the calls then go to,
        and a scope built from a proxy's URL gets AADSTS500011 (PROTOCOL.md §14). Exchange Online is known
        but its tokens are useless for Graph (PROTOCOL.md §9 uses it for SMTP).
        """
        graph = f"https://{CLOUDS[self.cloud].msgraph_host}"
        out = {
            graph: graph,
            "00000003-0000-0000-c000-000000000000": graph,
            "https://outlook.office365.com": "https://outlook.office365.com",
            "https://outlook.office.com": "https://outlook.office.com",
        }
        return out

    def graph_audiences(self) -> set[str]:
        return {f"https://{CLOUDS[self.cloud].msgraph_host}"}
