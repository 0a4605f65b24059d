"""The one ASGI app ``serve`` runs: JSON API under /api/v1/, admin UI under /admin/, /healthz, /readyz,
/metrics. Built per process from the Runtime; nothing global."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .. import __version__

if TYPE_CHECKING:
    from ..dispatch import Dispatcher
    from ..runtime import Runtime


def create_app(runtime: Runtime, *, dispatcher: Dispatcher | None = None) -> FastAPI:
    app = FastAPI(title="m365relay", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.state.dispatcher = dispatcher

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """The process is up (liveness). Readiness — database, connectors — is /readyz."""
        return JSONResponse({"status": "ok", "version": __version__})

    return app
