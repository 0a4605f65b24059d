"""Drafts, attachments and upload sessions: the large-attachment path (PROTOCOL.md §5).

The upload URL is pre-authenticated by an unguessable `authtoken` and must be called WITHOUT an
Authorization header: Exchange answers a Graph token there with 401 InvalidAudienceForResource [obs].
Progress answers use Outlook's own shape (PascalCase, `NextExpectedRanges: ["{start}"]`) [doc].
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import graph_errors as ge
from .drafts_store import Draft, UploadSession
from .graph import deliver, prepare_mime
from .graph_errors import GraphError
from .messages import check_header_names, ci_get, new_message_id, parse_attachment, prepare
from .pipeline import (
    ROLE_READWRITE,
    ROLE_SEND,
    Call,
    abort_connection,
    check_declared_size,
    fault_error,
    graph_call,
    ids,
    json_response,
    read_body,
    run_fault,
    stamp,
)
from .rfc5322 import AttachmentData, decode_base64, read_envelope, with_attachments
from .state import Sandbox

MAX_ATTACHMENT = 150 * 1024 * 1024  # 150 MB per file [doc]
SESSION_LIFETIME = 900.0  # each chunk extends it [doc]
_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$")


def _iso(moment: float) -> str:
    stamp_ = datetime.fromtimestamp(moment, tz=UTC)
    return stamp_.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp_.microsecond:06d}0Z"


def _new_id() -> str:
    # Exchange ids are long base64 strings that start with AAMkA [obs]; URL-safe here.
    return "AAMkAD" + secrets.token_urlsafe(48)


async def _json_body(call: Call) -> dict[str, Any]:
    body = await read_body(call.request)
    try:
        payload = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ge.bad_json() from exc
    if not isinstance(payload, dict):
        raise ge.bad_json()
    return payload


def _draft_of(call: Call) -> Draft:
    draft = call.sandbox.drafts.drafts.get(call.request.path_params["message_id"])
    if draft is None or draft.mailbox.lower() != call.mailbox.address.lower():
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return draft


def _draft_json(sandbox: Sandbox, draft: Draft) -> dict[str, Any]:
    msg = draft.message
    return {
        "@odata.context": f"{sandbox.base_url}/v1.0/$metadata#users('{draft.mailbox}')/messages/$entity",
        "id": draft.id,
        "createdDateTime": _iso(draft.created),
        "lastModifiedDateTime": _iso(draft.created),
        "internetMessageId": draft.internet_message_id,
        "subject": ci_get(msg, "subject") or "",
        "isDraft": True,
        "hasAttachments": bool(draft.attachments),
        "importance": ci_get(msg, "importance") or "normal",
        "body": ci_get(msg, "body") or {"contentType": "text", "content": ""},
        "toRecipients": ci_get(msg, "toRecipients") or [],
        "ccRecipients": ci_get(msg, "ccRecipients") or [],
        "bccRecipients": ci_get(msg, "bccRecipients") or [],
        "replyTo": ci_get(msg, "replyTo") or [],
    }


async def _create_draft(call: Call) -> Response:
    """JSON, or base64 MIME with ``Content-Type: text/plain`` [doc: user-post-messages, "Create a draft of a
    new message in either JSON or MIME format"]; a MIME draft keeps the message's own header fields."""
    if call.request.headers.get("content-type", "").split(";")[0].strip().lower() == "text/plain":
        return _create_mime_draft(call, await read_body(call.request))
    message = await _json_body(call)
    check_header_names(message)
    draft = Draft(
        _new_id(),
        call.mailbox.address,
        call.client_id,
        call.sandbox.clock.now(),
        message,
        internet_message_id=new_message_id(call.mailbox),
    )
    call.sandbox.drafts.add_draft(draft)
    return json_response(_draft_json(call.sandbox, draft), 201)


def _create_mime_draft(call: Call, body: bytes) -> Response:
    try:
        raw = decode_base64(body)
    except ValueError as exc:
        raise GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.") from exc
    envelope = read_envelope(raw)
    summary: dict[str, Any] = {
        "subject": envelope.subject,
        "toRecipients": [{"emailAddress": {"address": a}} for a in envelope.to],
        "ccRecipients": [{"emailAddress": {"address": a}} for a in envelope.cc],
        "bccRecipients": [{"emailAddress": {"address": a}} for a in envelope.bcc],
    }
    draft = Draft(
        _new_id(),
        call.mailbox.address,
        call.client_id,
        call.sandbox.clock.now(),
        summary,
        mime=raw,
        # The MIME's own Message-ID is the draft's internetMessageId (and the sent message's) [obs].
        internet_message_id=envelope.message_id.strip() or new_message_id(call.mailbox),
    )
    call.sandbox.drafts.add_draft(draft)
    return json_response(_draft_json(call.sandbox, draft), 201)


async def _add_attachment(call: Call) -> Response:
    draft = _draft_of(call)
    attachment = parse_attachment(await _json_body(call))
    _store_attachment(call.sandbox, draft, attachment)
    body = {
        "@odata.context": f"{call.sandbox.base_url}/v1.0/$metadata#users('{draft.mailbox}')/messages"
        f"('{draft.id}')/attachments/$entity",
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": _new_id(),
        "lastModifiedDateTime": _iso(call.sandbox.clock.now()),
        **{k: v for k, v in attachment.summary().items() if k != "content_type"},
        "contentType": attachment.content_type,
    }
    return json_response(body, 201)


def _store_attachment(sandbox: Sandbox, draft: Draft, attachment: AttachmentData) -> None:
    current = sandbox.drafts.drafts.get(draft.id, draft)
    sandbox.drafts.drafts[draft.id] = replace(current, attachments=(*current.attachments, attachment))


async def _create_upload_session(call: Call) -> Response:
    draft = _draft_of(call)
    item = ci_get(await _json_body(call), "AttachmentItem")
    if not isinstance(item, dict):
        raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'AttachmentItem' is empty.")
    if str(ci_get(item, "attachmentType") or "file").lower() != "file":
        raise GraphError(400, "ErrorInvalidRequest", "Only attachmentType 'file' can be uploaded.")
    size = ci_get(item, "size")
    name = ci_get(item, "name")
    if not isinstance(size, int) or size < 0 or not name:
        raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem needs a name and a size.")
    if size > MAX_ATTACHMENT:
        raise GraphError(400, "ErrorAttachmentSizeLimitExceeded", "The attachment exceeds the 150 MB limit.")
    if size < call.sandbox.directory.limits.upload_min_size:
        raise GraphError(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be greater than the minimum size.",
        )
    sandbox = call.sandbox
    session = UploadSession(
        id=str(uuid.uuid4()),
        token=secrets.token_urlsafe(32),
        draft_id=draft.id,
        mailbox=draft.mailbox,
        name=str(name),
        content_type=str(ci_get(item, "contentType") or "application/octet-stream"),
        size=size,
        is_inline=bool(ci_get(item, "isInline")),
        content_id=str(ci_get(item, "contentId")) if ci_get(item, "contentId") else None,
        expires=sandbox.clock.now() + SESSION_LIFETIME,
    )
    sandbox.drafts.add_session(session, sandbox.clock.now())
    body = {
        "@odata.context": f"{sandbox.base_url}/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": _upload_url(sandbox, call, session),
        "expirationDateTime": _iso(session.expires),
        "nextExpectedRanges": ["0-"],
    }
    return json_response(body, 201)


def _upload_url(sandbox: Sandbox, call: Call, session: UploadSession) -> str:
    mailbox = call.mailbox
    return (
        f"{sandbox.base_url}/api/v2.0/Users('{mailbox.id}@{mailbox.tenant}')/Messages('{session.draft_id}')"
        f"/AttachmentSessions('{session.id}')?authtoken={session.token}"
    )


async def _send_draft(call: Call) -> Response:
    draft = _draft_of(call)
    sandbox = call.sandbox
    if draft.mime is not None:  # a MIME draft keeps its own Message-ID (the draft's internetMessageId)
        prepared = prepare_mime(call, with_attachments(draft.mime, draft.attachments), draft.attachments)
    else:
        prepared = prepare(
            draft.message, call.mailbox, sandbox.clock.now(), draft.attachments, message_id=draft.internet_message_id
        )
    deliver(call, prepared=prepared, save_to_sent_items=True, source="draft")
    sandbox.drafts.drafts.pop(draft.id, None)
    for token in [t for t, s in sandbox.drafts.sessions.items() if s.draft_id == draft.id]:
        del sandbox.drafts.sessions[token]
    return Response(status_code=202)


async def _delete_draft(call: Call) -> Response:
    draft = _draft_of(call)
    call.sandbox.drafts.drafts.pop(draft.id, None)
    return Response(status_code=204)


def _session_of(sandbox: Sandbox, request: Request) -> UploadSession:
    session = sandbox.drafts.sessions.get(request.query_params.get("authtoken", ""))
    if session is None or session.id not in request.url.path or session.expires < sandbox.clock.now():
        raise GraphError(404, "ErrorItemNotFound", "The upload session was not found or has expired.")
    return session


def _check_no_token(sandbox: Sandbox, request: Request) -> None:
    if "authorization" in request.headers:
        raise GraphError(
            401,
            "InvalidAudienceForResource",
            f"The audience claim value is invalid for current resource. Request url is "
            f"'{sandbox.base_url}{request.url.path}'. Do not send an Authorization header to an upload URL.",
        )


async def _upload_chunk(sandbox: Sandbox, request: Request) -> Response:
    session = _session_of(sandbox, request)
    _check_no_token(sandbox, request)
    check_declared_size(request)
    match = _RANGE_RE.match(request.headers.get("content-range", ""))
    if match is None:
        raise GraphError(400, "invalidRange", "A Content-Range header of the form 'bytes a-b/total' is required.")
    start, end, total = (int(g) for g in match.groups())
    data = await read_body(request)
    if total != session.size or end < start or end >= total or len(data) != end - start + 1:
        raise GraphError(400, "invalidRange", "The Content-Range does not match the session or the body length.")
    if start != len(session.received):
        # Outlook takes bytes strictly in order; a gap or an overlap is refused [doc: OneDrive 416].
        raise GraphError(
            416,
            "invalidRange",
            f"The uploaded fragment does not start at the next expected byte {len(session.received)}.",
        )
    session.received.extend(data)
    session.expires = sandbox.clock.now() + SESSION_LIFETIME
    if len(session.received) < session.size:
        return json_response(
            {
                "@odata.context": f"{sandbox.base_url}/api/v2.0/$metadata#Users/Messages/AttachmentSessions/$entity",
                "ExpirationDateTime": _iso(session.expires),
                "NextExpectedRanges": [str(len(session.received))],
            }
        )
    return _finish_upload(sandbox, session)


def _finish_upload(sandbox: Sandbox, session: UploadSession) -> Response:
    sandbox.drafts.sessions.pop(session.token, None)
    draft = sandbox.drafts.drafts.get(session.draft_id)
    if draft is None:
        raise GraphError(404, "ErrorItemNotFound", "The draft of this upload session no longer exists.")
    attachment = AttachmentData(
        session.name, session.content_type, bytes(session.received), session.is_inline, session.content_id
    )
    _store_attachment(sandbox, draft, attachment)
    location = (
        f"{sandbox.base_url}/api/v2.0/Users('{session.mailbox}')/Messages('{draft.id}')/Attachments('{_new_id()}')"
    )
    return Response(status_code=201, headers={"Location": location})


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    def endpoint(name: str, role: str, handler: Any) -> Any:
        async def run(request: Request) -> Response:
            return await graph_call(sandbox, request, name, role, handler)

        return run

    async def upload(request: Request) -> Response:
        name = "uploadChunk" if request.method == "PUT" else "cancelUpload"
        request_id, client_request_id = ids(request)
        sandbox.stats.count(name)
        try:
            rule = await run_fault(sandbox, request, name)
            if rule is not None:
                if rule.kind == "reset":
                    return await abort_connection(sandbox, request)
                raise fault_error(rule)
            if request.method == "PUT":
                response = await _upload_chunk(sandbox, request)
            else:
                session = _session_of(sandbox, request)
                sandbox.drafts.sessions.pop(session.token, None)
                response = Response(status_code=204)
        except GraphError as error:
            response = error.response(sandbox.clock.now(), request_id, client_request_id)
        return stamp(response, request_id, client_request_id)

    base = "/v1.0/users/{user}/messages"
    return [
        Route(base, endpoint("createDraft", ROLE_READWRITE, _create_draft), methods=["POST"]),
        Route(base + "/{message_id}", endpoint("graph_other", ROLE_READWRITE, _delete_draft), methods=["DELETE"]),
        Route(
            base + "/{message_id}/attachments",
            endpoint("addAttachment", ROLE_READWRITE, _add_attachment),
            methods=["POST"],
        ),
        Route(
            base + "/{message_id}/attachments/createUploadSession",
            endpoint("createUploadSession", ROLE_READWRITE, _create_upload_session),
            methods=["POST"],
        ),
        Route(base + "/{message_id}/send", endpoint("sendDraft", ROLE_SEND, _send_draft), methods=["POST"]),
        Route("/api/v2.0/{rest:path}", upload, methods=["PUT", "DELETE"]),
    ]
