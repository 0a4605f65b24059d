"""The test/admin API under `/_sandbox/`: change the directory, faults, clock and limits; read mail and stats.

Unauthenticated on purpose: the sandbox listens on 127.0.0.1 and exists to be driven by tests.
Bodies and answers are JSON; a bad body is a 400 `{"error": "..."}` and nothing changes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .clock import parse_iso
from .directory import (
    Certificate,
    Limits,
    Secret,
    parse_app,
    parse_mailbox,
    parse_policy,
    parse_tenant,
)
from .inbox import summaries
from .mailstore import detail, summary
from .seed import new_secret_value
from .state import Sandbox

Endpoint = Callable[[Request], Awaitable[Response]]


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, indent=1), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AdminError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AdminError(400, "body must be a JSON object")
    return data


def _guarded(handler: Endpoint) -> Endpoint:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except AdminError as error:
            return _json({"error": error.message}, error.status)
        except (ValueError, TypeError) as error:
            return _json({"error": str(error)}, 400)

    return run


def _app_or_404(sandbox: Sandbox, client_id: str) -> Any:
    app = sandbox.directory.apps.get(client_id.lower())
    if app is None:
        raise AdminError(404, f"no app with client_id {client_id}")
    return app


def _directory_routes(sandbox: Sandbox) -> list[tuple[str, list[str], Endpoint]]:
    async def state(request: Request) -> Response:
        if request.method == "PUT":
            sandbox.replace_directory(await _body(request))
        return _json(sandbox.directory.to_dict())

    async def reset(request: Request) -> Response:
        sandbox.reset()
        return _json({"reset": True})

    async def tenants(request: Request) -> Response:
        tenant = parse_tenant(await _body(request))
        sandbox.directory.put_tenant(tenant)
        return _json(tenant.to_dict(), 201)

    async def apps(request: Request) -> Response:
        data = await _body(request)
        data.setdefault("client_id", str(uuid.uuid4()))
        if "tenant" not in data and sandbox.directory.tenants:
            data["tenant"] = next(iter(sandbox.directory.tenants))
        app = parse_app(data)
        sandbox.directory.put_app(app)
        return _json(app.to_dict(), 201)

    async def app_item(request: Request) -> Response:
        app = _app_or_404(sandbox, request.path_params["client_id"])
        if request.method == "DELETE":
            sandbox.directory.apps.pop(app.client_id, None)
            return Response(status_code=204)
        if request.method == "PATCH":
            data = await _body(request)
            changes: dict[str, Any] = {}
            for key in ("granted_roles", "requested_permissions", "redirect_uris"):
                if key in data:
                    changes[key] = tuple(str(v) for v in data[key])
            if "enabled" in data:
                changes["enabled"] = bool(data["enabled"])
            if "display_name" in data:
                changes["display_name"] = str(data["display_name"])
            app = sandbox.directory.update_app(app.client_id, **changes)
        return _json(app.to_dict())

    return [
        ("/state", ["GET", "PUT"], state),
        ("/reset", ["POST"], reset),
        ("/tenants", ["POST"], tenants),
        ("/apps", ["POST"], apps),
        ("/apps/{client_id}", ["GET", "PATCH", "DELETE"], app_item),
    ]


def _mailbox_routes(sandbox: Sandbox) -> list[tuple[str, list[str], Endpoint]]:
    async def mailbox(request: Request) -> Response:
        address = request.path_params["address"]
        if request.method == "DELETE":
            found = sandbox.directory.delete_mailbox(address)
            return Response(status_code=204 if found else 404)
        data = await _body(request)
        existing = sandbox.directory.find_mailbox(address)
        base = existing.to_dict() if existing else {}
        merged = base | data | {"address": address}
        if "tenant" not in merged:
            domain = address.rpartition("@")[2]
            tenant = sandbox.directory.find_tenant(domain) or next(iter(sandbox.directory.tenants.values()), None)
            if tenant is None:
                raise AdminError(400, "no tenant to put the mailbox in")
            merged["tenant"] = tenant.id
        box = parse_mailbox(merged)
        sandbox.directory.put_mailbox(box)
        return _json(box.to_dict())

    async def policy(request: Request) -> Response:
        client_id = request.path_params["client_id"]
        if request.method == "DELETE":
            found = sandbox.directory.delete_policy(client_id)
            return Response(status_code=204 if found else 404)
        data = await _body(request)
        item = parse_policy({"client_id": client_id, "allowed_mailboxes": data.get("allowed_mailboxes", [])})
        sandbox.directory.put_policy(item)
        return _json(item.to_dict())

    return [
        ("/mailboxes/{address}", ["PUT", "DELETE"], mailbox),
        ("/access-policies/{client_id}", ["PUT", "DELETE"], policy),
    ]


def _credential_routes(sandbox: Sandbox) -> list[tuple[str, list[str], Endpoint]]:
    async def add_secret(request: Request) -> Response:
        app = _app_or_404(sandbox, request.path_params["client_id"])
        data = await _body(request)
        expires = data.get("expires_at")
        secret = Secret(
            secret_id=str(data.get("secret_id") or uuid.uuid4()),
            value=str(data.get("value") or new_secret_value()),
            expires_at=parse_iso(expires)
            if expires
            else sandbox.clock.now_dt().replace(year=sandbox.clock.now_dt().year + 2),
        )
        sandbox.directory.update_app(app.client_id, secrets=(*app.secrets, secret))
        return _json(secret.to_dict(), 201)

    async def secret_item(request: Request) -> Response:
        app = _app_or_404(sandbox, request.path_params["client_id"])
        secret_id = request.path_params["secret_id"].lower()
        found = [s for s in app.secrets if s.secret_id.lower() == secret_id]
        if not found:
            raise AdminError(404, f"no secret {secret_id} on app {app.client_id}")
        others = tuple(s for s in app.secrets if s.secret_id.lower() != secret_id)
        if request.method == "DELETE":
            sandbox.directory.update_app(app.client_id, secrets=others)
            return Response(status_code=204)
        data = await _body(request)
        changed = found[0]
        if "expires_at" in data:
            changed = replace(changed, expires_at=parse_iso(str(data["expires_at"])))
        if "value" in data:
            changed = replace(changed, value=str(data["value"]))
        sandbox.directory.update_app(app.client_id, secrets=(*others, changed))
        return _json(changed.to_dict())

    async def add_certificate(request: Request) -> Response:
        app = _app_or_404(sandbox, request.path_params["client_id"])
        data = await _body(request)
        cert = Certificate.from_pem(str(data.get("pem", "")), data.get("expires_at"))
        kept = tuple(c for c in app.certificates if c.thumbprint_sha1 != cert.thumbprint_sha1)
        sandbox.directory.update_app(app.client_id, certificates=(*kept, cert))
        out = cert.to_dict()
        out.pop("pem")
        return _json(out, 201)

    async def delete_certificate(request: Request) -> Response:
        app = _app_or_404(sandbox, request.path_params["client_id"])
        thumbprint = request.path_params["thumbprint"].upper()
        kept = tuple(c for c in app.certificates if c.thumbprint_sha1 != thumbprint)
        if len(kept) == len(app.certificates):
            raise AdminError(404, f"no certificate {thumbprint} on app {app.client_id}")
        sandbox.directory.update_app(app.client_id, certificates=kept)
        return Response(status_code=204)

    return [
        ("/apps/{client_id}/secrets", ["POST"], add_secret),
        ("/apps/{client_id}/secrets/{secret_id}", ["PATCH", "DELETE"], secret_item),
        ("/apps/{client_id}/certificates", ["POST"], add_certificate),
        ("/apps/{client_id}/certificates/{thumbprint}", ["DELETE"], delete_certificate),
    ]


def _runtime_routes(sandbox: Sandbox) -> list[tuple[str, list[str], Endpoint]]:
    async def faults(request: Request) -> Response:
        if request.method == "PUT":
            sandbox.faults.configure(await _body(request))
        elif request.method == "DELETE":
            sandbox.faults.clear()
        return _json(sandbox.faults.to_dict())

    async def stats(request: Request) -> Response:
        if request.method == "DELETE":
            sandbox.stats = type(sandbox.stats)()
        return _json(sandbox.stats.to_dict())

    async def clock(request: Request) -> Response:
        if request.method == "PUT":
            data = await _body(request)
            if "advance_seconds" in data:
                sandbox.clock.offset_seconds += float(data["advance_seconds"])
            else:
                sandbox.clock.offset_seconds = float(data.get("offset_seconds", 0.0))
        return _json({"offset_seconds": sandbox.clock.offset_seconds, "now": sandbox.clock.now()})

    async def latency(request: Request) -> Response:
        if request.method == "PUT":
            value = float((await _body(request)).get("ms", 0.0))
            if value < 0:
                raise AdminError(400, "latency must be >= 0")
            sandbox.latency_ms = value
        return _json({"ms": sandbox.latency_ms})

    async def limits(request: Request) -> Response:
        if request.method == "PUT":
            merged = sandbox.directory.limits.to_dict() | await _body(request)
            sandbox.directory.limits = Limits.from_dict(merged)
        return _json(sandbox.directory.limits.to_dict())

    async def ca(request: Request) -> Response:
        return Response(sandbox.pki.ca_file.read_bytes(), media_type="application/x-pem-file")

    async def demo(request: Request) -> Response:
        if sandbox.demo_info is None:
            raise AdminError(404, "the sandbox was not started with --demo")
        return _json(sandbox.demo_info)

    return [
        ("/faults", ["GET", "PUT", "DELETE"], faults),
        ("/stats", ["GET", "DELETE"], stats),
        ("/clock", ["GET", "PUT"], clock),
        ("/latency", ["GET", "PUT"], latency),
        ("/limits", ["GET", "PUT"], limits),
        ("/ca.pem", ["GET"], ca),
        ("/demo", ["GET"], demo),
    ]


def _mail_routes(sandbox: Sandbox) -> list[tuple[str, list[str], Endpoint]]:
    async def messages(request: Request) -> Response:
        if request.method == "DELETE":
            sandbox.mail.clear()
            return Response(status_code=204)
        query = request.query_params
        limit = query.get("limit")
        found = sandbox.mail.query(
            mailbox=query.get("mailbox") or None,
            message_id=query.get("message_id") or None,
            limit=int(limit) if limit else None,
        )
        return _json([summary(m) for m in found])

    async def message(request: Request) -> Response:
        found = sandbox.mail.get(request.path_params["message_id"])
        if found is None:
            raise AdminError(404, "no such captured message")
        return _json(detail(found))

    async def raw(request: Request) -> Response:
        found = sandbox.mail.get(request.path_params["message_id"])
        if found is None:
            return PlainTextResponse("no such captured message", status_code=404)
        return Response(found.raw, media_type="message/rfc822")

    async def inbox_items(request: Request) -> Response:
        if request.method == "DELETE":
            sandbox.inbox.clear()
            return Response(status_code=204)
        return _json(summaries(sandbox, request.query_params.get("mailbox") or None))

    async def inbox_settings(request: Request) -> Response:
        if request.method == "PUT":
            try:
                sandbox.inbox.configure(await _body(request))
            except (ValueError, TypeError) as exc:
                raise AdminError(400, str(exc)) from exc
        return _json(sandbox.inbox.to_dict())

    return [
        ("/inbox", ["GET", "DELETE"], inbox_items),
        ("/inbox/settings", ["GET", "PUT"], inbox_settings),
        ("/messages", ["GET", "DELETE"], messages),
        ("/messages/{message_id}", ["GET"], message),
        ("/messages/{message_id}/raw", ["GET"], raw),
    ]


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    table = [
        *_directory_routes(sandbox),
        *_mailbox_routes(sandbox),
        *_credential_routes(sandbox),
        *_runtime_routes(sandbox),
        *_mail_routes(sandbox),
    ]
    return [Route("/_sandbox" + path, _guarded(handler), methods=methods) for path, methods, handler in table]
