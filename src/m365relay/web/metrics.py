"""``/metrics``: Prometheus text. Two parts:

* the event counters and the send-latency histogram the core records as things happen
  (``runtime.metrics.registry``: token requests, Graph requests and errors by code, messages accepted and
  finished, deferrals, ``m365relay_send_seconds``);
* facts about the database, read at scrape time by ``DatabaseCollector`` so that every process of a
  scale-out reports the same truth: whether the database answered, messages by status, queue depth, age
  of the oldest waiting message, seconds until each connector's credential expires, whether each
  connector is paused, and how many addresses each connector suppresses.

The collector lives in its own registry per app, so building several apps over one runtime (tests) never
registers a metric twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..connectors import ConnectorConfig
from ..connectors.expiry import expiry_state
from ..errors import StoreError
from ..outbox import PENDING, SENDING, STATUSES

if TYPE_CHECKING:
    from ..runtime import Runtime

router = APIRouter(include_in_schema=False)


class DatabaseCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self.runtime.outbox.stats()
            connectors = self.runtime.connectors.all()
        except StoreError:
            # The counters are still worth scraping; the database's own figures are simply absent.
            yield GaugeMetricFamily("m365relay_database_up", "1 when the database answered this scrape.", 0.0)
            return
        yield GaugeMetricFamily("m365relay_database_up", "1 when the database answered this scrape.", 1.0)
        now = self.runtime.clock.now()

        by_status = GaugeMetricFamily("m365relay_messages", "Messages in the outbox, by status.", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], stats.by_status.get(status, 0))
        yield by_status
        depth = sum(stats.by_status.get(s, 0) for s in (*PENDING, SENDING))
        yield GaugeMetricFamily(
            "m365relay_queue_depth", "Messages not yet sent, failed or cancelled (queued, deferred, sending).", depth
        )
        oldest = (now - stats.oldest_pending_at).total_seconds() if stats.oldest_pending_at else 0.0
        yield GaugeMetricFamily(
            "m365relay_queue_oldest_age_seconds", "Age of the oldest queued or deferred message (0: none).", oldest
        )

        expiry = GaugeMetricFamily(
            "m365relay_credential_expiry_seconds",
            "Seconds until the connector's credential expires (negative: expired; absent: unknown).",
            labels=["connector"],
        )
        paused = GaugeMetricFamily(
            "m365relay_connector_paused", "1 when the connector is paused by a setup error.", labels=["connector"]
        )
        for connector in connectors:
            state = expiry_state(connector, now)
            if state.seconds_left is not None:
                expiry.add_metric([connector.name], state.seconds_left)
            paused.add_metric([connector.name], 1.0 if connector.paused else 0.0)
        yield expiry
        yield paused
        yield self._suppressed(connectors)

    def _suppressed(self, connectors: list[ConnectorConfig]) -> GaugeMetricFamily:
        """Active suppression entries per connector (docs/delivery.md), from the shared database."""
        family = GaugeMetricFamily(
            "m365relay_suppressed_addresses", "Addresses suppressed after a hard bounce.", labels=["connector"]
        )
        counts: dict[int, int] = {}
        for entry in self.runtime.suppressions.list():
            counts[entry.connector_id] = counts.get(entry.connector_id, 0) + 1
        for connector in connectors:
            family.add_metric([connector.name], counts.get(connector.id, 0))
        return family


def database_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(runtime))
    return registry


def render(runtime: Runtime, database: CollectorRegistry) -> bytes:
    return bytes(generate_latest(runtime.metrics.registry)) + bytes(generate_latest(database))


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = await asyncio.to_thread(render, runtime, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
