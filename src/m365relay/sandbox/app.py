"""Assemble the one ASGI app that serves login, Graph, the admin API and the viewer on one port."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from . import admin, consent, drafts, graph, identity, viewer
from .state import Sandbox


def build_app(sandbox: Sandbox) -> Starlette:
    templates = viewer.make_templates()
    # Order matters: specific Graph routes before Graph's catch-all, fixed prefixes before `/{tenant}/...`.
    route_list: list[BaseRoute] = [
        *graph.routes(sandbox)[:1],  # sendMail first: it is the hot path
        *drafts.routes(sandbox),
        *graph.routes(sandbox)[1:],
        *admin.routes(sandbox),
        *viewer.routes(sandbox, templates),
        *consent.routes(sandbox, templates),
        *identity.routes(sandbox),
    ]
    return Starlette(routes=route_list)
