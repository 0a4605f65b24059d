"""Sent Items per mailbox, and reading messages back through Graph (PROTOCOL.md §12).

Exchange files a copy of every MIME send, of every draft sent, and of every JSON send whose
`saveToSentItems` is not false. The copy keeps the message's own Message-ID as `internetMessageId`
[obs] and is filed asynchronously: it becomes visible `delay` seconds (default 2) after the 202, on the
sandbox clock — so "not found" right after a send proves nothing, exactly as with the real service.

Endpoints (a read role is needed: Mail.ReadBasic.All, Mail.Read or Mail.ReadWrite; else 403):

* `GET /v1.0/users/{id}/mailFolders/sentitems/messages` with `$filter=<property> eq '<value>'` (a `'`
  inside the value doubled [doc: OData]), `$select`, `$top` (default 10, at most 1000) and `$skip`;
* `GET /v1.0/users/{id}/messages/{id}` — a sent item or a draft; `ErrorItemNotFound` otherwise.

Reads go through the same pipeline as sends, so they take the same in-flight slots and request budget.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .clock import iso_z
from .drafts import _draft_json as draft_json
from .graph_errors import GraphError
from .pipeline import Call, graph_call, json_response
from .roles import BODY_PROPERTIES, READ_ANY, READ_FULL
from .sentitems_store import SentItem
from .state import Sandbox

DEFAULT_TOP = 10
MAX_TOP = 1000
_FILTER_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s+eq\s+'((?:[^']|'')*)'\s*$")
NOT_FOUND = GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _iso(moment: float) -> str:
    return iso_z(datetime.fromtimestamp(moment, tz=UTC))


def _recipients(addresses: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"name": a, "address": a}} for a in addresses]


def _body(sandbox: Sandbox, item: SentItem) -> dict[str, str]:
    from .mailstore import detail

    captured = sandbox.mail.get(item.captured_id)
    if captured is None:  # the captured copy was evicted; the item keeps its headers
        return {"contentType": "text", "content": ""}
    found = detail(captured)
    if found.get("html"):
        return {"contentType": "html", "content": str(found["html"])}
    return {"contentType": "text", "content": str(found.get("text") or "")}


def item_json(sandbox: Sandbox, item: SentItem, *, with_body: bool) -> dict[str, Any]:
    """The Graph `message` resource of a sent item (PROTOCOL.md §12)."""
    sender = {"emailAddress": {"name": item.from_address, "address": item.from_address}}
    out: dict[str, Any] = {
        "@odata.etag": f'W/"CQAAABYAAA{item.id[-16:]}"',
        "id": item.id,
        "createdDateTime": _iso(item.sent_at),
        "lastModifiedDateTime": _iso(item.sent_at),
        "receivedDateTime": _iso(item.sent_at),
        "sentDateTime": _iso(item.sent_at),
        "hasAttachments": False,
        "internetMessageId": item.internet_message_id,
        "subject": item.subject,
        "importance": "normal",
        "parentFolderId": "sentitems",
        "isRead": True,
        "isDraft": False,
        "sender": sender,
        "from": sender,
        "toRecipients": _recipients(item.to),
        "ccRecipients": _recipients(item.cc),
        "bccRecipients": _recipients(item.bcc),
        "replyTo": [],
    }
    if with_body:
        body = _body(sandbox, item)
        out["body"] = body
        out["bodyPreview"] = body["content"][:255]
    return out


def _selected(data: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """`$select`: the named properties; `id` and `@odata.etag` always come along [doc]."""
    if select is None:
        return data
    wanted = {s.lower() for s in select} | {"id", "@odata.etag"}
    return {k: v for k, v in data.items() if k.lower() in wanted}


def _select_of(call: Call) -> list[str] | None:
    raw = call.request.query_params.get("$select")
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise GraphError(400, "BadRequest", "Invalid $select: no property named.")
    return names


def parse_filter(text: str) -> tuple[str, str]:
    """`property eq 'value'` → (property, value); a `''` inside the quotes stands for one `'` [doc: OData]."""
    match = _FILTER_RE.match(text)
    if match is None:
        raise GraphError(400, "BadRequest", f"Invalid filter clause: {text[:200]}")
    return match.group(1), match.group(2).replace("''", "'")


def _int_param(call: Call, name: str, default: int, maximum: int) -> int:
    raw = call.request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > maximum:
        raise GraphError(400, "BadRequest", f"Invalid value '{raw}' for query option {name}.")
    return int(raw)


def _matches(data: dict[str, Any], prop: str, value: str) -> bool:
    for key, actual in data.items():
        if key.lower() == prop.lower():
            return isinstance(actual, str) and actual == value
    raise GraphError(400, "BadRequest", f"Could not find a property named '{prop}' on type 'microsoft.graph.message'.")


async def _list_sent_items(call: Call) -> Response:
    sandbox, query = call.sandbox, call.request.query_params
    select = _select_of(call)
    with_body = bool(call.roles & READ_FULL)
    top = _int_param(call, "$top", DEFAULT_TOP, MAX_TOP)
    skip = _int_param(call, "$skip", 0, 10**9)
    filed = sandbox.sent_items.visible(call.mailbox.address, sandbox.clock.now())
    items = [item_json(sandbox, i, with_body=with_body) for i in filed]
    if (text := query.get("$filter")) is not None:
        prop, value = parse_filter(text)
        items = [i for i in items if _matches(i, prop, value)]
    page = items[skip : skip + top]
    body: dict[str, Any] = {
        "@odata.context": f"{sandbox.base_url}/v1.0/$metadata#users('{call.mailbox.address}')/mailFolders"
        "('sentitems')/messages",
        "value": [_selected(i, select) for i in page],
    }
    if skip + top < len(items):
        params = {k: v for k, v in query.items() if k != "$skip"} | {"$skip": str(skip + top)}
        body["@odata.nextLink"] = f"{sandbox.base_url}{call.request.url.path}?{urlencode(params)}"
    return json_response(body)


async def _get_message(call: Call) -> Response:
    sandbox = call.sandbox
    wanted = call.request.path_params["message_id"]
    select = _select_of(call)
    item = sandbox.sent_items.get(call.mailbox.address, wanted, sandbox.clock.now())
    if item is not None:
        data = item_json(sandbox, item, with_body=bool(call.roles & READ_FULL))
    else:
        draft = sandbox.drafts.drafts.get(wanted)
        if draft is None or draft.mailbox.lower() != call.mailbox.address.lower():
            raise NOT_FOUND
        data = draft_json(sandbox, draft)
        if not call.roles & READ_FULL:
            data = {k: v for k, v in data.items() if k.lower() not in BODY_PROPERTIES}
    return json_response(_selected(data, select))


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    async def list_sent_items(request: Request) -> Response:
        return await graph_call(sandbox, request, "listMessages", READ_ANY, _list_sent_items)

    async def get_message(request: Request) -> Response:
        return await graph_call(sandbox, request, "getMessage", READ_ANY, _get_message)

    return [
        Route("/v1.0/users/{user}/mailFolders/sentitems/messages", list_sent_items, methods=["GET"]),
        Route("/v1.0/users/{user}/messages/{message_id}", get_message, methods=["GET"]),
    ]


def admin_routes(sandbox: Sandbox) -> list[BaseRoute]:
    """`/_sandbox/sent-items`: GET the filing delay and counts; PUT `{"delay_seconds": N}` to change it."""

    async def sent_items(request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = await request.json()
                delay = float(data["delay_seconds"])
            except (ValueError, KeyError, TypeError):
                return json_response({"error": 'body must be {"delay_seconds": <number >= 0>}'}, 400)
            if delay < 0:
                return json_response({"error": "delay_seconds must be >= 0"}, 400)
            sandbox.sent_items.delay = delay
        store, now = sandbox.sent_items, sandbox.clock.now()
        return json_response({"delay_seconds": store.delay, "filed": len(store), "not_yet_visible": store.pending(now)})

    return [Route("/_sandbox/sent-items", sent_items, methods=["GET", "PUT"])]
