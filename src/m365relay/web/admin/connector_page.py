"""Settings › Connectors › eMail (SMTP): ``/admin/connectors/smtp`` and its alias ``/admin/connectors/SMTP.aspx``
(the Redirect URL the manual registers, which is also where Microsoft returns after admin consent).

GET shows the page; POST to the page saves the form. Test connection, Send test email and Grant admin consent
post to sub-paths (``testing.py``, ``consent.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ...connectors import DEFAULT_NAME
from ...errors import ConflictError, ValidationError
from . import connector_view as view
from .consent import CALLBACK_PARAMS, consent_callback
from .context import AdminContext, Ctx
from .forms import ConnectorForm, field_errors, read_connector_form
from .ui import notice

PAGE, ALIAS, NAMED = view.PAGE, view.ALIAS, view.NAMED
router = APIRouter(include_in_schema=False)


@router.get(PAGE, name="admin_connector")
def connector_page(request: Request, ctx: Ctx) -> Response:
    return render_page(ctx, request)


@router.get(ALIAS, name="admin_connector_alias")
async def connector_alias(request: Request, ctx: Ctx) -> Response:
    """The manual's address of the screen; with ``admin_consent``/``error``/``state`` it is the consent answer."""
    if any(name in request.query_params for name in CALLBACK_PARAMS):
        return await consent_callback(request, ctx)
    return await run_in_threadpool(render_page, ctx, request)


@router.get(NAMED + "/{name}", name="admin_connector_named")
def named_page(name: str, request: Request, ctx: Ctx) -> Response:
    if ctx.runtime.connectors.find(name) is None:
        return not_found(ctx, name)
    return render_page(ctx, request, name=name)


@router.post(PAGE, name="admin_connector_save")
async def save(request: Request, ctx: Ctx) -> Response:
    form = await read_connector_form(ctx)
    return await run_in_threadpool(_save, ctx, request, form, DEFAULT_NAME)


@router.post(NAMED + "/{name}", name="admin_connector_named_save")
async def save_named(name: str, request: Request, ctx: Ctx) -> Response:
    form = await read_connector_form(ctx)
    if await run_in_threadpool(ctx.runtime.connectors.find, name) is None:
        return await run_in_threadpool(not_found, ctx, name)
    return await run_in_threadpool(_save, ctx, request, form, name)


def not_found(ctx: AdminContext, name: str) -> Response:
    return ctx.ui.render(
        "error.html",
        ctx,
        status_code=404,
        title="No such connector",
        text=f"There is no connector named {name!r}.",
        remedy="Pick one from the list of connectors, or create it there.",
    )


def _save(ctx: AdminContext, request: Request, form: ConnectorForm, name: str) -> Response:
    if not form.errors:
        store = ctx.runtime.connectors
        before = store.find(name)
        try:
            saved = store.save(name, form.update(), actor=ctx.actor, remote_addr=ctx.remote_addr)
        except ValidationError as exc:
            form.errors.update(field_errors(exc))
        except ConflictError as exc:  # a rule of the store about the change as a whole: say it at the top
            form.errors["form"] = f"{exc.message}. {exc.remedy}".strip()
        else:
            changed = before is None or before.config_version != saved.config_version
            ctx.ui.add_notice(
                ctx,
                notice(
                    "success" if changed else "info",
                    "Saved." if changed else "Nothing changed.",
                    next_step(saved.credential is not None, form.secret_given),
                    section="settings",
                ),
            )
            return RedirectResponse(f"{view.page_url(name)}#settings", status_code=303)
    return render_page(ctx, request, form=form, status_code=422, name=name)


def next_step(has_credential: bool, secret_saved: bool) -> str:
    if not has_credential:
        return (
            "Next, Create Client Secret: in the Azure portal open the app › Certificates & secrets › New client "
            "secret, then paste its Value into Public Key (secret) with its expiry date, and Save."
        )
    if secret_saved:
        return (
            "Next, API Permissions: add Microsoft Graph › Application permissions › Mail.Send in the Azure portal, "
            "then Grant admin consent below, and Test connection."
        )
    return "Test connection checks the saved settings against Microsoft 365."


def render_page(
    ctx: AdminContext,
    request: Request,
    *,
    form: ConnectorForm | None = None,
    extra_errors: dict[str, str] | None = None,
    typed: dict[str, str] | None = None,
    status_code: int = 200,
    name: str = DEFAULT_NAME,
) -> Response:
    """The page; after a failed save ``form`` brings back what was typed (never the secret) and the errors."""
    runtime = ctx.runtime
    now = runtime.clock.now()
    connector = runtime.connectors.find(name)
    values = form.values if form is not None else view.form_values(connector)
    errors = {**(form.errors if form is not None else {}), **(extra_errors or {})}
    page: dict[str, Any] = {
        "name": name,
        "page": view.page_url(name),
        "connector": connector,
        "view": connector.public_view(now) if connector else None,
        "credential_line": view.credential_line(connector.credential if connector else None, now),
        "checklist": view.checklist(runtime, connector, now),
        "redirect": view.redirect_info(runtime, str(request.base_url)),
        "app_fields": view.APP_FIELDS,
        "send_as_field": view.SEND_AS_FIELD,
        "secret_fields": view.SECRET_FIELDS,
        "cloud_fields": view.CLOUD_FIELDS,
        "clouds": view.clouds(),
        "portal_url": view.portal_url(connector),
        "values": values,
        "errors": errors,
        "secret_dropped": form is not None and form.secret_given and bool(form.errors),
        "typed": typed or {},
        "queue": runtime.outbox.stats().by_connector.get(connector.id, {}) if connector else {},
    }
    return ctx.ui.render("connector.html", ctx, status_code=status_code, **page)
