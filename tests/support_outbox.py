"""The outbox test environment: a database (one per backend), two connectors, a manual clock."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from m365relay.clock import ManualClock
from m365relay.connectors import ConnectorStore, ConnectorUpdate, SecretBox
from m365relay.db import Database, upgrade
from m365relay.db.groupcommit import GroupCommitter
from m365relay.graph import OutgoingMessage
from m365relay.outbox import Outbox


class Env:
    def __init__(self, url: str, tmp: str) -> None:
        self.home = Path(tmp)
        self.clock = ManualClock()
        self.db = Database(url)
        upgrade(self.db)
        self.committer = GroupCommitter(self.db)  # as in production: concurrent writes share commits
        self.outbox = Outbox(self.db, clock=self.clock, max_queue_lifetime=3600, committer=self.committer)
        store = ConnectorStore(self.db, SecretBox.from_settings(None, Path(tmp)), self.clock)
        self.connectors = [
            store.save(
                name,
                ConnectorUpdate(client_id="4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71", tenant_id="contoso.onmicrosoft.com",
                                user_name=f"{name}@contoso.onmicrosoft.com"),
            ).id
            for name in ("alpha", "beta")
        ]  # fmt: skip

    def message(self, n: int = 0, *, to: str = "r@example.com", size: int = 10) -> OutgoingMessage:
        msg = EmailMessage()
        msg["From"] = "alpha@contoso.onmicrosoft.com"
        msg["To"] = to
        msg["Subject"] = f"message {n}"
        msg.set_content("x" * size)
        return OutgoingMessage.from_message(msg)

    def enqueue(self, n: int = 0, connector: int | None = None, **kw: object) -> int:
        return self.outbox.enqueue(connector or self.connectors[0], self.message(n), **kw).id  # type: ignore[arg-type]

    def close(self) -> None:
        self.committer.close()
        self.db.dispose()
