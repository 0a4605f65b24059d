"""Settings › Connectors: every connector (``/admin/connectors``), a new one (``/admin/connectors/new``) and
deleting one. A connector is one app registration + one system mailbox; several let one relay send for
several tenants or mailboxes. Creating one goes through the same form and the same ``ConnectorStore.save``
as the ``default`` connector's page and ``m365relay connector set``, so the rules are the CLI's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ...connectors import DEFAULT_NAME
from ...connectors.expiry import expiry_state
from ...errors import ConflictError, NotFoundError, ValidationError
from . import connector_view as view
from .connector_page import not_found, render_page
from .context import AdminContext, Ctx
from .forms import ConnectorForm, field_errors, read_connector_form
from .ui import notice

router = APIRouter(include_in_schema=False)
NAME_HELP = (
    "A short name for this connector: lower-case letters, digits, '.', '_' or '-', e.g. billing. The CLI "
    "names it with --name, relay users and API keys are bound to it by this name."
)


@router.get(view.LIST, name="admin_connectors")
def list_page(ctx: Ctx) -> Response:
    runtime = ctx.runtime
    now = runtime.clock.now()
    counts = runtime.outbox.stats().by_connector
    items = [
        {
            "connector": c,
            "page": view.page_url(c.name),
            "credential": view.credential_line(c.credential, now),
            "expiry": expiry_state(c, now),
            "checklist": view.checklist(runtime, c, now),
            "counts": counts.get(c.id, {}),
        }
        for c in runtime.connectors.all()
    ]
    return ctx.ui.render("connectors.html", ctx, connectors=items, nav="connectors")


@router.get(view.NEW, name="admin_connector_new")
def new_page(request: Request, ctx: Ctx) -> Response:
    return _render_new(ctx, request, None)


@router.post(view.NEW, name="admin_connector_create")
async def create(request: Request, ctx: Ctx) -> Response:
    form = await read_connector_form(ctx)
    name = ctx.field("name").strip()
    form.values["name"] = name
    return await run_in_threadpool(_create, ctx, request, form, name)


def _create(ctx: AdminContext, request: Request, form: ConnectorForm, name: str) -> Response:
    store = ctx.runtime.connectors
    if not form.errors:
        if name and store.find(name) is not None:
            form.errors["name"] = f"Name: a connector named {name!r} exists already; pick another name"
        else:
            try:
                saved = store.save(name, form.update(), actor=ctx.actor, remote_addr=ctx.remote_addr)
            except ValidationError as exc:
                form.errors.update(field_errors(exc))
            except ConflictError as exc:
                form.errors["form"] = f"{exc.message}. {exc.remedy}".strip()
            else:
                text = "Next, follow the checklist: register its Redirect URL, store the secret, grant consent."
                ctx.ui.add_notice(ctx, notice("success", f"Connector {saved.name} created.", text, section="settings"))
                return RedirectResponse(f"{view.page_url(saved.name)}#settings", status_code=303)
    return _render_new(ctx, request, form, status_code=422)


def _render_new(ctx: AdminContext, request: Request, form: ConnectorForm | None, status_code: int = 200) -> Response:
    page: dict[str, Any] = {
        "form_values": form.values if form is not None else {"cloud": "global"},
        "errors": form.errors if form is not None else {},
        "secret_dropped": form is not None and form.secret_given and bool(form.errors),
        "name_spec": view.FieldSpec("name", "Name", NAME_HELP, placeholder="billing"),
        "app_fields": view.APP_FIELDS,
        "secret_fields": view.SECRET_FIELDS,
        "cloud_fields": view.CLOUD_FIELDS,
        "clouds": view.clouds(),
        "redirect": view.redirect_info(ctx.runtime, str(request.base_url)),
        "nav": "connectors",
    }
    return ctx.ui.render("connector_new.html", ctx, status_code=status_code, **page)


@router.post(view.PAGE + "/delete", name="admin_connector_delete_default")
async def delete_default(request: Request, ctx: Ctx) -> Response:
    return await run_in_threadpool(_delete, ctx, request, DEFAULT_NAME)


@router.post(view.NAMED + "/{name}/delete", name="admin_connector_delete")
async def delete_named(name: str, request: Request, ctx: Ctx) -> Response:
    return await run_in_threadpool(_delete, ctx, request, name)


def _delete(ctx: AdminContext, request: Request, name: str) -> Response:
    store = ctx.runtime.connectors
    if store.find(name) is None:
        return not_found(ctx, name)
    typed = ctx.field("confirm").strip()
    if typed != name:
        message = f"Type the connector's name, {name}, to confirm" if not typed else f"{typed!r} is not {name!r}"
        return render_page(
            ctx, request, name=name, extra_errors={"confirm": message}, typed={"confirm": typed}, status_code=422
        )
    try:
        store.delete(name, actor=ctx.actor, remote_addr=ctx.remote_addr)
    except (ConflictError, NotFoundError) as exc:
        ctx.ui.add_notice(ctx, notice("error", "Not deleted", exc.message, remedy=exc.remedy or "", section="delete"))
        return RedirectResponse(f"{view.page_url(name)}#delete", status_code=303)
    ctx.ui.add_notice(ctx, notice("success", f"Connector {name} deleted.", section="top"))
    return RedirectResponse(view.LIST, status_code=303)
