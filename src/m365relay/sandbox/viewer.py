"""The captured-mail viewer at `/`: a list and a detail page, rendered with autoescaping Jinja2."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .inbox import summaries
from .mailstore import detail, summary
from .state import Sandbox

TEMPLATE_DIR = Path(__file__).parent / "templates"


def make_templates() -> Environment:
    # Subjects and bodies come from whoever sends mail: always escape (autoescape on for .html).
    return Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=select_autoescape(["html"], default=True))


def routes(sandbox: Sandbox, templates: Environment) -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        mailbox = request.query_params.get("mailbox") or None
        found = sandbox.mail.query(mailbox=mailbox, limit=200)
        html = templates.get_template("messages.html").render(
            messages=[summary(m) for m in found], total=len(sandbox.mail), mailbox=mailbox
        )
        return HTMLResponse(html)

    async def show(request: Request) -> Response:
        found = sandbox.mail.get(request.path_params["message_id"])
        if found is None:
            return HTMLResponse("<p>No such message.</p>", status_code=404)
        return HTMLResponse(templates.get_template("message.html").render(m=detail(found)))

    async def inbox(request: Request) -> Response:
        mailbox = request.query_params.get("mailbox") or None
        names = [mailbox] if mailbox else sorted(sandbox.directory.mailboxes)
        boxes = [(name, summaries(sandbox, name)) for name in names]
        return HTMLResponse(templates.get_template("inbox.html").render(boxes=boxes, mailbox=mailbox))

    async def inbox_item(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        found = next((m for m in summaries(sandbox) if m["id"] == item_id), None)
        if found is None:
            return HTMLResponse("<p>No such message.</p>", status_code=404)
        item = sandbox.inbox.get(found["mailbox"], item_id, sandbox.clock.now())
        raw = item.raw.decode("utf-8", "replace") if item is not None else ""
        return HTMLResponse(templates.get_template("inbox_item.html").render(m=found, raw=raw))

    return [
        Route("/", index, methods=["GET"]),
        Route("/inbox", inbox, methods=["GET"]),
        Route("/inbox/{item_id}", inbox_item, methods=["GET"]),
        Route("/messages/{message_id}", show, methods=["GET"]),
    ]
