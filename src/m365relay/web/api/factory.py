"""Building the ``/api/v1`` sub-application. A separate FastAPI app (mounted by ``web.app``) so that its
OpenAPI document holds only the API, and its errors are problems while the admin UI keeps HTML pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from ... import __version__
from .. import problems
from . import docs, routers
from .bodylimit import BodyLimitMiddleware
from .context import ApiContext, PreAuthMiddleware

if TYPE_CHECKING:
    from ...runtime import Runtime

PREFIX = "/api/v1"
DESCRIPTION = (
    "Send an application's mail through the relay's Microsoft 365 mailbox. Authenticate with an API key "
    "(`Authorization: Bearer m365r_…`, made with `m365relay api-key create`). A 202 means the message is "
    "committed to the relay's queue; follow it at its status URL. See docs/api.md for every problem type."
)


def create_api(runtime: Runtime) -> FastAPI:
    api = FastAPI(
        title="m365relay API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        servers=[{"url": PREFIX}],  # paths in the document are relative to the mount point
        root_path_in_servers=False,
    )
    api.state.context = ApiContext.build(runtime)
    for router in routers():
        api.include_router(router)
    problems.install(api)
    api.add_middleware(BodyLimitMiddleware, max_bytes=runtime.settings.api_max_body_bytes)
    api.add_middleware(PreAuthMiddleware, context=api.state.context)  # outermost: no body is read before it

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = _problem_media_types(
                get_openapi(
                    title=api.title,
                    version=api.version,
                    description=api.description,
                    routes=api.routes,
                    servers=api.servers,
                )
            )
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]

    @api.get("/docs", include_in_schema=False)
    async def reference(request: Request) -> HTMLResponse:
        spec_url = request.scope.get("root_path", "") + "/openapi.json"
        return HTMLResponse(docs.render(openapi(), spec_url), headers={"Content-Security-Policy": docs.CSP})

    return api


def _problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are ``application/problem+json`` (RFC 9457 §3), which FastAPI cannot declare by model."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" in content:
                    response["content"] = {problems.MEDIA_TYPE: content["application/json"]}
    return schema
