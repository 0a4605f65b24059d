"""Taking a message in, shared by ``POST /messages`` and ``POST /messages/raw``: choose the connector the key
may use, push back when the queue is full, commit to the outbox (the 202 is sent only after the commit),
and answer with the id and where to follow it. Idempotency: the outbox keeps (connector, key) unique and
compares content hashes, so a replay returns the first message and a reuse with other content is a 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from ...access.api_keys import ApiKey
from ...connectors import DEFAULT_NAME, ConnectorConfig
from ...errors import ConflictError, NotFoundError
from ...graph.mime import OutgoingMessage
from ...suppression import AllSuppressedError, Suppression, refusal_detail
from ..problems import ProblemError
from .context import ApiContext
from .models import MessageAccepted

IDEMPOTENCY_PATTERN = r"^[\x21-\x7e][\x20-\x7e]{0,254}$"  # visible ASCII, as the IETF draft's sf-string allows


@dataclass(frozen=True)
class Submission:
    connector: str | None  # the name the request gave, if any
    build: Callable[[ConnectorConfig], OutgoingMessage]  # runs in a worker thread: may parse and compose
    envelope: list[str] | None
    save_to_sent_items: bool
    idempotency_key: str | None
    content_hash: str


def canonical_hash(document: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces): equal requests, equal hashes."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def choose_connector(context: ApiContext, key: ApiKey, name: str | None) -> ConnectorConfig:
    if name is None and key.connector_id is not None:
        bound = next((c for c in context.connectors.all().values() if c.id == key.connector_id), None)
        if bound is not None:
            return bound
    wanted = name or DEFAULT_NAME
    try:
        connector = context.connectors.get(wanted)
    except NotFoundError:
        # 404, not 422: the request is well-formed, the connector it names does not exist (as a missing
        # message id is a 404). Any schema-valid name can be sent; only existing ones find something.
        raise NotFoundError(f"there is no connector named {wanted!r}") from None
    if key.connector_id is not None and connector.id != key.connector_id:
        raise ProblemError("forbidden", f"The API key {key.name!r} may not send through connector {wanted!r}.")
    return connector


def _screen(
    runtime: Any, connector: ConnectorConfig, outgoing: OutgoingMessage, envelope: list[str] | None
) -> tuple[list[str] | None, dict[str, Suppression]]:
    """Drop suppressed recipients (docs/delivery.md); refuse the message when nobody is left."""
    try:
        kept, dropped = runtime.suppressions.at_acceptance(connector.id, envelope, outgoing.header_recipients())
    except AllSuppressedError as exc:
        outgoing.body.close()
        runtime.metrics.suppressions.labels(connector.name, "refused").inc(len(exc.dropped))
        raise ProblemError("recipient-suppressed", refusal_detail(exc.dropped), addresses=sorted(exc.dropped)) from exc
    if dropped:
        runtime.metrics.suppressions.labels(connector.name, "dropped").inc(len(dropped))
    return kept, dropped


async def accept(
    request: Request, response: Response, context: ApiContext, key: ApiKey, submission: Submission
) -> MessageAccepted:
    runtime = context.runtime

    def commit() -> tuple[int, bool, str]:
        connector = choose_connector(context, key, submission.connector)
        if (pressure := runtime.backpressure.check()) is not None:  # shared with SMTP (outbox/backpressure.py)
            raise ProblemError(
                "queue-full", f"{pressure.reason}; retry later", headers={"Retry-After": str(pressure.retry_after)}
            )
        outgoing = submission.build(connector)
        envelope, dropped = _screen(runtime, connector, outgoing, submission.envelope)
        try:
            result = runtime.outbox.enqueue(
                connector.id,
                outgoing,
                envelope=envelope,
                source="api",
                source_detail=key.label,
                idempotency_key=submission.idempotency_key,
                idempotency_scope=f"api-key:{key.id}",  # another application's key never meets this one
                content_hash=submission.content_hash,
                save_to_sent_items=submission.save_to_sent_items,
            )
        except ConflictError as exc:
            raise ProblemError("idempotency-conflict", exc.message, remedy=exc.remedy) from exc
        finally:
            outgoing.body.close()
        if result.created and dropped:
            runtime.suppressions.record_dropped(result.id, dropped)
        if result.created:
            runtime.metrics.messages_accepted.labels("api").inc()
            return result.id, True, "queued"
        return result.id, False, runtime.outbox.get(result.id, events=False).status

    message_id, created, status = await run_in_threadpool(commit)
    status_url = str(request.url_for("get_message", message_id=message_id))
    response.status_code = 202
    response.headers["Location"] = status_url
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return MessageAccepted(id=message_id, status=status, status_url=status_url)
