"""Prometheus metrics, in a registry owned by the process's app object (no global registry).

Event counters live here; figures that are facts about the database (queue depth, oldest message,
credential expiry, paused connectors) are read at scrape time by the web app's collector.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.token_requests = Counter(
            "m365relay_token_requests",
            "Token requests sent to the Microsoft identity platform (cache hits excluded).",
            ["connector", "outcome"],
            registry=self.registry,
        )
        self.graph_requests = Counter(
            "m365relay_graph_requests",
            "Requests made to Microsoft Graph.",
            ["connector", "kind"],
            registry=self.registry,
        )
        self.graph_errors = Counter(
            "m365relay_graph_errors",
            "Errors from Microsoft Graph and the token endpoint, by code.",
            ["connector", "code"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "m365relay_send_seconds",
            "Time to hand one message to Microsoft Graph.",
            ["connector"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.messages_accepted = Counter(
            "m365relay_messages_accepted", "Messages committed to the outbox.", ["source"], registry=self.registry
        )
        self.messages_finished = Counter(
            "m365relay_messages_finished",
            "Messages that reached a final state.",
            ["status"],
            registry=self.registry,
        )
        self.bounces = Counter(
            "m365relay_bounces",
            "Recipients reported bounced or delayed by a delivery report in the sending mailbox's Inbox.",
            ["connector", "state"],
            registry=self.registry,
        )
        self.suppressions = Counter(
            "m365relay_suppressions",
            "Suppression changes (added after a bounce) and recipients dropped or refused as suppressed.",
            ["connector", "event"],
            registry=self.registry,
        )
        self.deferrals = Counter(
            "m365relay_deferrals",
            "Attempts deferred for a later retry, by reason.",
            ["reason"],
            registry=self.registry,
        )
        # In-doubt sends (issue 15): how often the outcome was unknown, and how each doubt ended.
        self.in_doubt = Counter(
            "m365relay_sends_in_doubt",
            "Send attempts whose outcome was unknown (answer lost, read timeout, worker stopped mid-request).",
            registry=self.registry,
        )
        self.reconciliations = Counter(
            "m365relay_reconciliations",
            "Sent Items checks of in-doubt messages, by result: confirmed (found, not resent), not_in_sent_yet "
            "(looked again later), resend_checked (not sent, sent again), possible_duplicate (sent again "
            "without a check: add Mail.ReadBasic.All to avoid).",
            ["connector", "result"],
            registry=self.registry,
        )
