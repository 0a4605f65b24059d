"""The one ASGI app ``serve`` runs: JSON API under /api/v1/, admin UI under /admin/, /healthz, /readyz,
/metrics. Built per process from the Runtime; nothing global."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from .. import __version__
from . import admin, health, metrics
from .api.factory import PREFIX, create_api
from .publichost import PublicHostMiddleware

if TYPE_CHECKING:
    from ..dispatch import Dispatcher
    from ..runtime import Runtime


def create_app(runtime: Runtime, *, dispatcher: Dispatcher | None = None) -> FastAPI:
    app = FastAPI(title="m365relay", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.state.dispatcher = dispatcher
    app.state.metrics_registry = metrics.database_registry(runtime)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.state.api = create_api(runtime)
    app.mount(PREFIX, app.state.api)
    admin.install(app, runtime)
    if runtime.settings.public_base_url:  # URLs from the configured address, never from the Host header
        app.add_middleware(PublicHostMiddleware, public_base_url=runtime.settings.public_base_url)
    return app
