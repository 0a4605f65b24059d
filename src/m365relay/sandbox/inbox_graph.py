"""Graph's Inbox endpoints: the delta query over `mailFolders/inbox/messages` and `messages/{id}/$value`.

Both need Mail.Read (or Mail.ReadWrite) and go through the same pipeline as sends, so they take an
in-flight slot and count against the per-mailbox request budget like any other call (PROTOCOL.md §12).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .graph_errors import GraphError
from .inbox import message_json
from .pipeline import ROLE_READ, Call, graph_call, json_response
from .state import Sandbox

DEFAULT_PAGE_SIZE = 10  # Graph's delta page for messages when the client states no preference [doc]
MAX_PAGE_SIZE = 1000


def _token(data: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _untoken(text: str) -> dict[str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise ValueError(text)
        return data
    except ValueError as exc:
        # What Exchange answers for a sync state it does not know: start over with a full sync [doc].
        raise GraphError(410, "SyncStateNotFound", "The sync state could not be found; restart the sync.") from exc


def _page_size(request: Request) -> int:
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
            return max(1, min(MAX_PAGE_SIZE, int(value.strip())))
    return DEFAULT_PAGE_SIZE


async def _delta(call: Call) -> Response:
    request, sandbox = call.request, call.sandbox
    if request.path_params["folder"].lower() != "inbox":
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    now, query = sandbox.clock.now(), request.query_params
    if "$deltatoken" in query:
        after, upto = _untoken(query["$deltatoken"]).get("after", 0), sandbox.inbox.high_water(now)
    elif "$skiptoken" in query:
        state = _untoken(query["$skiptoken"])
        after, upto = state.get("after", 0), state.get("upto", 0)
    else:
        after, upto = 0, sandbox.inbox.high_water(now)
    size = _page_size(request)
    items = sorted(sandbox.inbox.visible(call.mailbox.address, now, after, upto), key=lambda i: i.seq)
    page, rest = items[:size], items[size:]
    base = f"{sandbox.base_url}/v1.0/users/{quote(request.path_params['user'])}/mailFolders/inbox/messages/delta"
    body: dict[str, Any] = {"value": [message_json(i) for i in page]}
    if rest:
        body["@odata.nextLink"] = f"{base}?$skiptoken={_token({'after': page[-1].seq, 'upto': upto})}"
    else:
        body["@odata.deltaLink"] = f"{base}?$deltatoken={_token({'after': upto})}"
    headers = {"Preference-Applied": f"odata.maxpagesize={size}"} if "prefer" in request.headers else None
    return json_response(body, headers=headers)


async def _value(call: Call) -> Response:
    sandbox = call.sandbox
    item = sandbox.inbox.get(call.mailbox.address, call.request.path_params["message_id"], sandbox.clock.now())
    if item is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return Response(item.raw, media_type="text/plain")


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    async def delta(request: Request) -> Response:
        return await graph_call(sandbox, request, "inboxDelta", ROLE_READ, _delta)

    async def value(request: Request) -> Response:
        return await graph_call(sandbox, request, "messageValue", ROLE_READ, _value)

    return [
        Route("/v1.0/users/{user}/mailFolders/{folder}/messages/delta", delta, methods=["GET"]),
        Route("/v1.0/users/{user}/messages/{message_id}/$value", value, methods=["GET"]),
    ]
