"""`GET /v1.0/users`: the tenant's users, for clients that look one up (the doctor's scoping probe).

Needs User.Read.All (or User.ReadBasic.All, Directory.Read.All); without one of them 403
Authorization_RequestDenied "Insufficient privileges to complete the operation." [doc/obs]. Supports
`$top` (1–999, default 100) and `$select`; every mailbox of the token's tenant is a user here.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .graph_errors import GraphError
from .pipeline import authenticate, fault_error, ids, json_response, run_fault, stamp
from .roles import LIST_USERS
from .state import Sandbox

MAX_TOP = 999


def _user_json(mailbox: Any) -> dict[str, Any]:
    return {
        "id": mailbox.id,
        "displayName": mailbox.display_name or mailbox.address.split("@")[0],
        "userPrincipalName": mailbox.address,
        "mail": mailbox.address,
    }


def _list(sandbox: Sandbox, request: Request, claims: dict[str, Any]) -> Response:
    roles = frozenset(r for r in claims.get("roles") or [] if isinstance(r, str))
    if not roles & LIST_USERS:
        raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    raw_top = request.query_params.get("$top", "100")
    if not raw_top.isdigit() or not 1 <= int(raw_top) <= MAX_TOP:
        raise GraphError(400, "Request_UnsupportedQuery", f"Invalid page size specified: '{raw_top}'.")
    select = request.query_params.get("$select")
    users = [_user_json(m) for m in sandbox.directory.mailboxes.values() if m.tenant == claims.get("tid")]
    page = users[: int(raw_top)]
    if select:
        wanted = {s.strip().lower() for s in select.split(",")} | {"id"}
        page = [{k: v for k, v in u.items() if k.lower() in wanted} for u in page]
    return json_response({"@odata.context": f"{sandbox.base_url}/v1.0/$metadata#users", "value": page})


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    async def list_users(request: Request) -> Response:
        request_id, client_request_id = ids(request)
        sandbox.stats.count("listUsers")
        try:
            rule = await run_fault(sandbox, request, "listUsers")
            if rule is not None and rule.kind == "status":
                raise fault_error(rule)
            response = _list(sandbox, request, authenticate(sandbox, request))
        except GraphError as error:
            sandbox.stats.graph_errors[f"{error.status} {error.code}"] += 1
            response = error.response(sandbox.clock.now(), request_id, client_request_id)
        return stamp(response, request_id, client_request_id)

    return [Route("/v1.0/users", list_users, methods=["GET"])]
