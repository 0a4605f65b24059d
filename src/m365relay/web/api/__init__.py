"""The JSON API under ``/api/v1/``: one FastAPI sub-application with its own OpenAPI document, problem+json
errors, API-key auth, rate and body limits (see ``factory.create_api``).

Endpoints come from the modules named in ``ROUTER_MODULES``, each exposing ``router``; adding a module
(``checks`` for ``GET /connectors/{id}/checks``, say) is one more name in that tuple.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

ROUTER_MODULES: tuple[str, ...] = ("messages", "raw", "connectors", "checks", "suppressions", "webhooks", "stats")


def routers() -> list[APIRouter]:
    found = []
    for name in ROUTER_MODULES:
        router = importlib.import_module(f"{__name__}.{name}").router
        assert isinstance(router, APIRouter), f"{__name__}.{name}.router is not an APIRouter"
        found.append(router)
    return found
