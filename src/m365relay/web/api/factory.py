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
            api.openapi_schema = _without_unused(
                _problem_media_types(
                    get_openapi(
                        title=api.title,
                        version=api.version,
                        description=api.description,
                        routes=api.routes,
                        servers=api.servers,
                    )
                )
            )
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]

    @api.get("/docs", include_in_schema=False)
    async def reference(request: Request) -> HTMLResponse:
        spec_url = request.scope.get("root_path", "") + "/openapi.json"
        return HTMLResponse(docs.render(openapi(), spec_url), headers={"Content-Security-Policy": docs.CSP})

    return api


def _without_unused(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's validation-error schemas are referenced by nothing once every 422 is a problem."""
    schemas = schema.get("components", {}).get("schemas", {})
    text = str(schema.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and f"/schemas/{name}'" not in text:
            del schemas[name]
    return schema


def _problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are ``application/problem+json`` (RFC 9457 §3), which FastAPI cannot declare by model.
    FastAPI's own 422 (a ``detail`` array) is not what the server sends: every 422 is a problem with
    ``errors``; and an operation with a body also answers 400 for a body that cannot be parsed at all."""
    problem = {"$ref": "#/components/schemas/Problem"}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": responses["422"].get("description", "A field is invalid; `errors` names each."),
                    "content": {problems.MEDIA_TYPE: {"schema": problem}},
                }
            if "requestBody" in operation and "400" not in responses:
                responses["400"] = {
                    "description": "The body could not be parsed (e.g. malformed JSON).",
                    "content": {problems.MEDIA_TYPE: {"schema": problem}},
                }
            for status, response in responses.items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" in content:
                    response["content"] = {problems.MEDIA_TYPE: content["application/json"]}
    return schema
