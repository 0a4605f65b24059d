"""The objects one m365relay process works with, built once from the settings and passed around.

No module keeps a global engine, outbox or registry (STYLE.md §8): the CLI, ``serve`` and the tests each
build a Runtime and hand its parts to whoever needs them.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cached_property

from .auth import TokenProvider
from .clock import Clock, SystemClock
from .connectors import ConnectorConfig, ConnectorStore, SecretBox
from .db import Database, upgrade
from .db.groupcommit import GroupCommitter
from .dispatch import AdvisoryGate, BudgetLimits, Budgets, Dispatcher, LocalGate, RetryPolicy
from .dispatch.liveness import AdvisoryLiveness, FileLiveness
from .events.delivery import WebhookDeliverer
from .events.endpoints import EndpointStore
from .graph import GraphSender
from .homedir import prepare_home
from .homedir import remedy as home_remedy
from .lifecycle import ExpiryWatch
from .mailbox.inbox import InboxReader
from .mailbox.reconcile import Reconciler
from .mailbox.sent_items import SentItems
from .metrics import Metrics
from .outbox import Outbox
from .outbox.backpressure import Backpressure
from .settings import Settings
from .suppression import Suppressions

log = logging.getLogger("m365relay.runtime")


class Runtime:
    def __init__(self, settings: Settings, *, clock: Clock | None = None, migrate: bool = True) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        for problem in prepare_home(settings.home):
            log.warning("%s; %s", problem, home_remedy(settings.home))
        self.db = Database(settings.effective_database_url)
        if migrate:
            upgrade(self.db)
        secret_key = settings.secret_key.get_secret_value() if settings.secret_key else None
        self.box = SecretBox.from_settings(secret_key, settings.home)
        self.metrics = Metrics()
        self.connectors = ConnectorStore(self.db, self.box, self.clock)
        self.tokens = TokenProvider(clock=self.clock, on_request=self._count_token)
        # Writes from concurrent callers (SMTP sessions, API requests, dispatcher acks) share commits.
        self.committer = GroupCommitter(self.db)

    @cached_property
    def sender(self) -> GraphSender:
        s = self.settings
        return GraphSender(
            self.tokens, metrics=self.metrics, timeout=s.graph_timeout, prefer_mime=s.reconcile_prefer_mime
        )

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(
            self.db, clock=self.clock, max_queue_lifetime=self.settings.max_queue_lifetime, committer=self.committer
        )

    @cached_property
    def backpressure(self) -> Backpressure:
        """Shared by SMTP and the API: when to answer 451/503 instead of accepting more mail."""
        s = self.settings
        return Backpressure(self.db, self.clock, max_depth=s.max_queue_depth, max_age_seconds=s.max_queue_age)

    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(
            base=s.retry_base_seconds,
            maximum=s.retry_max_seconds,
            lifetime=s.max_queue_lifetime_delta,
            probe_base=s.probe_base_seconds,
            probe_max=s.probe_max_seconds,
        )

    def dispatcher(self, *, owner: str | None = None) -> Dispatcher:
        """A dispatcher for this process. On PostgreSQL the in-flight limit is shared by all processes."""
        s = self.settings
        capacity = s.max_in_flight_per_mailbox
        dispatcher = Dispatcher(
            outbox=self.outbox,
            connectors=self.connectors,
            sender=self.sender,
            tokens=self.tokens,
            policy=self.retry_policy(),
            budgets=Budgets(
                self.db,
                self.clock,
                BudgetLimits(s.request_budget, s.request_budget_window, s.recipient_budget, s.recipient_budget_window),
            ),
            clock=self.clock,
            metrics=self.metrics,
            lease_seconds=s.lease_seconds,
            poll_interval=s.poll_interval,
            concurrency=s.worker_concurrency,
            shutdown_grace=s.graph_timeout + 5,
            owner=owner,
            expiry_watch=ExpiryWatch(self.connectors, self.outbox, s, clock=self.clock),
            retention=timedelta(days=s.retention_days) if s.retention_days else None,
            gate=AdvisoryGate(self.db, capacity) if self.db.is_postgres else LocalGate(capacity),
            liveness=AdvisoryLiveness(self.db) if self.db.is_postgres else FileLiveness.for_database(self.db),
            reconciler=Reconciler(
                SentItems(self.sender), settle=s.reconcile_settle_seconds, prefer_mime=s.reconcile_prefer_mime
            ),
        )
        dispatcher.companions.append(self.inbox_reader(dispatcher).run)
        return dispatcher

    @cached_property
    def suppressions(self) -> Suppressions:
        s = self.settings
        return Suppressions(self.db, days=s.suppression_days, statuses=s.suppression_statuses)

    def inbox_reader(self, dispatcher: Dispatcher) -> InboxReader:
        """Bounce intake, sharing the dispatcher's in-flight slots and request budget (mailbox/inbox.py)."""
        return InboxReader(
            db=self.db,
            connectors=self.connectors,
            sender=self.sender,
            suppressions=self.suppressions,
            gate=dispatcher.gate,
            budgets=dispatcher.budgets,
            owner=dispatcher.owner,
            metrics=self.metrics,
            poll_seconds=self.settings.inbox_poll_seconds,
        )

    @cached_property
    def webhooks(self) -> EndpointStore:
        """Webhook endpoints (events/endpoints.py); their secrets share the connector secrets' key."""
        return EndpointStore(self.db, self.box, self.connectors, self.clock)

    def webhook_deliverer(self, *, owner: str | None = None) -> WebhookDeliverer:
        return WebhookDeliverer(self.db, self.webhooks, self.outbox, self.settings, clock=self.clock, owner=owner)

    def _count_token(self, connector: ConnectorConfig, outcome: str) -> None:
        self.metrics.token_requests.labels(connector.name, outcome).inc()

    async def aclose(self) -> None:
        if "sender" in self.__dict__:
            await self.sender.aclose()
        self.close()

    def close(self) -> None:
        self.committer.close()
        self.tokens.close()
        self.db.dispose()
