"""The in-flight limit per connector (PROTOCOL.md §7: 4 concurrent requests per app and mailbox).

``LocalGate`` counts in this process. ``SharedGate`` keeps the slots in the database (table
``lane_slots``), leased like messages, so that any number of processes on one PostgreSQL database hold
the limit *together*; a process that dies leaves leases that expire and its slots come back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import Clock
from ..db.engine import Database
from ..db.models import LaneSlotRow


class Gate(Protocol):
    capacity: int

    def take(self, connector_id: int, wanted: int) -> list[int]: ...

    def give(self, connector_id: int, slots: list[int]) -> None: ...

    def renew(self) -> None: ...

    def in_flight(self, connector_id: int) -> int: ...


class LocalGate:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: dict[int, set[int]] = {}

    def take(self, connector_id: int, wanted: int) -> list[int]:
        held = self._held.setdefault(connector_id, set())
        free = [s for s in range(self.capacity) if s not in held][: max(0, wanted)]
        held.update(free)
        return free

    def give(self, connector_id: int, slots: list[int]) -> None:
        self._held.get(connector_id, set()).difference_update(slots)

    def renew(self) -> None:
        pass

    def in_flight(self, connector_id: int) -> int:
        return len(self._held.get(connector_id, ()))


class SharedGate(LocalGate):
    """Slots as rows: ``take`` leases free (or expired) rows in one statement with SKIP LOCKED."""

    def __init__(self, db: Database, clock: Clock, capacity: int, owner: str, lease_seconds: float) -> None:
        super().__init__(capacity)
        self.db = db
        self.clock = clock
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self._prepared: set[int] = set()

    def take(self, connector_id: int, wanted: int) -> list[int]:
        if wanted <= 0:
            return []
        self._prepare(connector_id)
        now = self.clock.now()
        free = (
            select(LaneSlotRow.slot)
            .where(
                LaneSlotRow.connector_id == connector_id,
                LaneSlotRow.slot < self.capacity,
                or_(LaneSlotRow.owner.is_(None), LaneSlotRow.lease_expires_at < now),
            )
            .order_by(LaneSlotRow.slot)
            .limit(wanted)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(LaneSlotRow)
            .where(LaneSlotRow.connector_id == connector_id, LaneSlotRow.slot.in_(free.scalar_subquery()))
            .values(owner=self.owner, lease_expires_at=now + self.lease)
            .returning(LaneSlotRow.slot)
            .execution_options(synchronize_session=False)
        )
        with self.db.write() as session:
            slots = sorted(session.scalars(statement))
        self._held.setdefault(connector_id, set()).update(slots)
        return slots

    def give(self, connector_id: int, slots: list[int]) -> None:
        if not slots:
            return
        with self.db.write() as session:
            session.execute(
                update(LaneSlotRow)
                .where(
                    LaneSlotRow.connector_id == connector_id,
                    LaneSlotRow.slot.in_(slots),
                    LaneSlotRow.owner == self.owner,
                )
                .values(owner=None, lease_expires_at=None)
            )
        super().give(connector_id, slots)

    def renew(self) -> None:
        held = [(c, s) for c, slots in self._held.items() for s in slots]
        if not held:
            return
        with self.db.write() as session:
            session.execute(
                update(LaneSlotRow)
                .where(
                    LaneSlotRow.owner == self.owner,
                    or_(*(and_(LaneSlotRow.connector_id == c, LaneSlotRow.slot == s) for c, s in held)),
                )
                .values(lease_expires_at=self.clock.now() + self.lease)
            )

    def _prepare(self, connector_id: int) -> None:
        if connector_id in self._prepared:
            return
        dialect = postgresql if self.db.is_postgres else sqlite
        with self.db.write() as session:
            for slot in range(self.capacity):
                session.execute(
                    dialect.insert(LaneSlotRow)
                    .values(connector_id=connector_id, slot=slot, owner=None, lease_expires_at=None)
                    .on_conflict_do_nothing()
                )
        self._prepared.add(connector_id)
