"""Large messages: draft, attachments (small ones inline, large ones through upload sessions), send.
Source: learn.microsoft.com/graph/outlook-large-attachments (PROTOCOL.md §5).

1. ``POST /users/{id}/messages`` with the draft JSON → 201 with the draft's ``id``;
2. per attachment: under 3 MB ``POST …/attachments``; otherwise ``POST …/attachments/createUploadSession``
   and ``PUT`` the bytes to ``uploadUrl`` in order, in chunks under 4 MB, **without** Authorization;
3. ``POST /users/{id}/messages/{draft}/send`` → 202.

If anything fails the draft is deleted (best effort) and the error propagates; a retry starts over.
Attachment bytes are decoded from the stream chunk by chunk, so memory stays flat in message size.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from ..errors import DeliveryError, MalformedMessageError
from .convert import Attachment, attachment_json, convert
from .mime import OutgoingMessage
from .mimewalk import decoded_chunks, decoded_size

if TYPE_CHECKING:
    from .sender import GraphSender, _Call

INLINE_ATTACHMENT_LIMIT = 3 * 1024 * 1024  # Graph: attach files under 3 MB in one request
# Chunks must be under 4 MB; a multiple of 320 KiB keeps to the rule Graph's upload sessions share.
UPLOAD_CHUNK = 12 * 320 * 1024  # 3.75 MiB
JSON = {"Content-Type": "application/json"}


async def send_via_upload(
    sender: GraphSender, call: _Call, outgoing: OutgoingMessage, notes: list[str]
) -> httpx.Response:
    converted = convert(outgoing, call.mailbox or call.connector.user_name)
    if converted.dropped_headers:
        notes.append(f"headers Graph's JSON cannot carry were dropped: {', '.join(converted.dropped_headers)}")
    notes.append("sent through an upload session (large message); it is saved in Sent Items")
    draft = await sender.request(
        call, "POST", "messages", content=json.dumps(converted.message, ensure_ascii=False).encode(), headers=JSON
    )
    draft_id = _json(draft).get("id")
    if not isinstance(draft_id, str) or not draft_id:
        raise MalformedMessageError("Graph created the draft but returned no id")
    base = f"messages/{quote(draft_id, safe='')}"
    try:
        for attachment in converted.attachments:
            await _attach(sender, call, outgoing, base, attachment)
        return await sender.request(call, "POST", f"{base}/send", content=b"", headers=JSON)
    except DeliveryError:
        await _discard(sender, call, base)
        raise


async def _attach(
    sender: GraphSender, call: _Call, outgoing: OutgoingMessage, base: str, attachment: Attachment
) -> None:
    size = decoded_size(outgoing.body, attachment.part)
    if size < INLINE_ATTACHMENT_LIMIT:
        payload = json.dumps(attachment_json(outgoing.body, attachment)).encode()
        await sender.request(call, "POST", f"{base}/attachments", content=payload, headers=JSON)
        return
    item: dict[str, object] = {
        "attachmentType": "file",
        "name": attachment.name,
        "size": size,
        "isInline": attachment.is_inline,
        "contentType": attachment.content_type,
    }
    if attachment.content_id:
        item["contentId"] = attachment.content_id
    session = await sender.request(
        call,
        "POST",
        f"{base}/attachments/createUploadSession",
        content=json.dumps({"AttachmentItem": item}).encode(),
        headers=JSON,
    )
    upload_url = _json(session).get("uploadUrl")
    if not isinstance(upload_url, str) or not upload_url.startswith("https://"):
        raise MalformedMessageError("Graph's upload session has no https uploadUrl")
    offset = 0
    for chunk in decoded_chunks(outgoing.body, attachment.part, UPLOAD_CHUNK):
        end = offset + len(chunk) - 1
        await sender.request(
            call,
            "PUT",
            "upload",
            content=chunk,
            absolute_url=upload_url,
            authorize=False,  # the upload URL carries its own authorisation; a Bearer header is refused
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {offset}-{end}/{size}",
            },
        )
        offset = end + 1


async def _discard(sender: GraphSender, call: _Call, base: str) -> None:
    # If this fails the draft stays in Drafts: harmless, and the original error matters more.
    with contextlib.suppress(DeliveryError):
        await sender.request(call, "DELETE", base)


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
