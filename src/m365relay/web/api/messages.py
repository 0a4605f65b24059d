"""``/messages``: submit a message as JSON, follow it, list, retry and cancel."""

from __future__ import annotations

import email.errors
import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ...access.api_keys import ApiKey
from ...compose import AttachmentSpec, MessageSpec, compose
from ...connectors import ConnectorConfig
from ...errors import ConflictError, NotFoundError, ValidationError
from ...graph.mime import OutgoingMessage
from ...outbox import MessageRecord
from ...outbox.recipients import RecipientState, states_of
from ..problems import ProblemError
from .context import ApiContext, Context, require
from .ingest import IDEMPOTENCY_PATTERN, Submission, accept, canonical_hash
from .listing import CURSOR_PATTERN, Filters, IsoTime, decode_cursor, encode_cursor, list_messages
from .models import MessageAccepted, MessageIn, MessagePage, MessageView, problem_responses

router = APIRouter(tags=["messages"])

MessageId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The message's id.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        pattern=IDEMPOTENCY_PATTERN,
        description="Any unique string (a UUID): the same key with the same body returns the first message "
        "(`Idempotent-Replayed: true`); with another body, a 409.",
    ),
]
Status = Literal["queued", "sending", "deferred", "sent", "failed", "cancelled", "bounced"]


@router.post(
    "/messages",
    status_code=202,
    response_model=MessageAccepted,
    summary="Send a message",
    responses=problem_responses(404, 413, 422, 409, 503),
)
async def post_message(
    request: Request,
    response: Response,
    message: MessageIn,
    context: Context,
    key: Annotated[ApiKey, Depends(require("send"))],
    idempotency_key: IdempotencyKey = None,
) -> MessageAccepted:
    """Queue a message. The answer (202, with `Location`) comes after the message is committed: from then on
    the relay owns it and it ends sent, failed (with the reason and remedy) or cancelled."""
    custom = _check_custom_headers(message.headers)
    document = json.loads(await request.body())  # already read and validated by FastAPI: hash what was sent
    submission = Submission(
        connector=message.connector,
        build=lambda config: _compose(message, custom, config),
        envelope=None,
        save_to_sent_items=message.save_to_sent_items,
        idempotency_key=idempotency_key,
        content_hash=canonical_hash(document),
    )
    return await accept(request, response, context, key, submission)


def _check_custom_headers(headers: dict[str, str]) -> dict[str, str]:
    errors = [
        ValidationError(
            f"headers.{name}",
            "only custom headers whose names start with X- are accepted (Microsoft Graph refuses others)",
            key=f"headers.{name}",
        )
        for name in headers
        if not name.lower().startswith("x-") or len(name) < 3
    ]
    if errors:
        raise ValidationError.combine(errors)
    return headers


def _compose(message: MessageIn, headers: dict[str, str], connector: ConnectorConfig) -> OutgoingMessage:
    spec = MessageSpec(
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        subject=message.subject,
        text=message.text,
        html=message.html,
        sender=message.sender,
        reply_to=message.reply_to,
        attachments=[AttachmentSpec(a.filename, a.content, a.content_type, a.content_id) for a in message.attachments],
        headers=headers,
        importance=message.importance,
    )
    try:
        return OutgoingMessage.from_message(compose(spec, default_from=connector.user_name))
    except (ValueError, TypeError, email.errors.MessageError) as exc:
        # The stdlib refuses what compose's own checks let through (an address it cannot render, say).
        raise ValidationError("message", f"cannot be written as RFC 5322: {exc}", key="body") from exc


@router.get(
    "/messages/{message_id:int}",
    response_model=MessageView,
    summary="Follow a message",
    responses=problem_responses(404, 422, 503),
)
async def get_message(
    message_id: MessageId, context: Context, key: Annotated[ApiKey, Depends(require("read"))]
) -> MessageView:
    """Status, attempts, every event, and the last error with what to do about it."""
    return await run_in_threadpool(lambda: view(context, _visible(key, context.runtime.outbox.get(message_id))))


@router.get(
    "/messages",
    response_model=MessagePage,
    summary="List messages",
    responses=problem_responses(422, 503),
)
async def get_messages(
    request: Request,
    context: Context,
    key: Annotated[ApiKey, Depends(require("read"))],
    status: Annotated[
        Status | None, Query(description="Only messages in this status; `bounced`: with a bounced recipient.")
    ] = None,
    connector: Annotated[str | None, Query(max_length=64, description="Only this connector's messages.")] = None,
    recipient: Annotated[
        str | None, Query(max_length=320, description="Only messages to an address containing this.")
    ] = None,
    created_after: Annotated[IsoTime | None, Query(description="ISO 8601; naive times are UTC.")] = None,
    created_before: Annotated[IsoTime | None, Query(description="ISO 8601; naive times are UTC.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="`next` of the previous page.")] = None,
) -> MessagePage:
    """Newest first, `limit` at a time; follow `next` (or `next_url`) for the following page."""
    before_id = decode_cursor(cursor) if cursor is not None else None

    def run() -> tuple[list[MessageView], int | None]:
        connector_id = None
        if connector is not None:
            found = context.connectors.all().get(connector)
            if found is None:  # a filter on a connector that does not exist matches nothing
                return [], None
            connector_id = found.id
        if key.connector_id is not None:  # a key bound to one connector lists only that connector's mail
            if connector_id not in (None, key.connector_id):
                return [], None
            connector_id = key.connector_id
        filters = Filters(status, connector_id, recipient, _utc(created_after), _utc(created_before))
        page = list_messages(context.runtime.db, filters, before_id=before_id, limit=limit)
        with context.runtime.db.read() as session:
            all_states = states_of(session, list(page.items))
        return [view(context, r, all_states[r.id]) for r in page.items], page.next_before_id

    items, next_before = await run_in_threadpool(run)
    next_cursor = encode_cursor(next_before) if next_before is not None else None
    next_url = str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None
    return MessagePage(items=items, next=next_cursor, next_url=next_url)


@router.post(
    "/messages/{message_id:int}/retry",
    response_model=MessageView,
    summary="Retry a message now",
    responses=problem_responses(404, 409, 422, 503),
)
async def retry_message(
    message_id: MessageId, context: Context, key: Annotated[ApiKey, Depends(require("send"))]
) -> MessageView:
    """Queue a failed, cancelled or deferred message for an attempt now. A `send` key may retry what it
    submitted; an `admin` key any message."""
    outbox = context.runtime.outbox

    def run() -> MessageView:
        _check_owner(key, _visible(key, outbox.get(message_id, events=False)))
        try:
            outbox.retry(message_id, actor=f"api:{key.name}")
        except ConflictError as exc:
            raise ProblemError("message-state-conflict", exc.message) from exc
        return view(context, outbox.get(message_id))

    return await run_in_threadpool(run)


@router.delete(
    "/messages/{message_id:int}",
    response_model=MessageView,
    summary="Cancel a message",
    responses=problem_responses(404, 409, 422, 503),
)
async def cancel_message(
    message_id: MessageId, context: Context, key: Annotated[ApiKey, Depends(require("send"))]
) -> MessageView:
    """Cancel a queued or deferred message (409 once it is being sent or sent). A `send` key may cancel what
    it submitted; an `admin` key any message."""
    outbox = context.runtime.outbox

    def run() -> MessageView:
        _check_owner(key, _visible(key, outbox.get(message_id, events=False)))
        try:
            outbox.cancel(message_id, actor=f"api:{key.name}")
        except ConflictError as exc:
            raise ProblemError("message-state-conflict", exc.message) from exc
        return view(context, outbox.get(message_id))

    return await run_in_threadpool(run)


def _visible(key: ApiKey, record: MessageRecord) -> MessageRecord:
    """Another connector's message does not exist for a key bound to one connector (404, not 403: no probing)."""
    if not key.may_see(record.connector_id):
        raise NotFoundError(f"no message {record.id}")
    return record


def _check_owner(key: ApiKey, record: MessageRecord) -> None:
    # By the key's label (name and never-reused prefix): a new key given a revoked key's name is not its owner.
    if "admin" in key.scopes or (record.source == "api" and record.source_detail == key.label):
        return
    raise ProblemError(
        "forbidden",
        f"The API key {key.name!r} may change only messages it submitted; this needs an admin key.",
    )


def view(context: ApiContext, record: MessageRecord, states: list[RecipientState] | None = None) -> MessageView:
    data = record.public_view()
    data["connector"] = context.connectors.names().get(record.connector_id)
    if states is None:
        with context.runtime.db.read() as session:
            states = states_of(session, [record])[record.id]
    data["recipients"] = [s.view() for s in states]
    return MessageView.model_validate(data)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
