"""Settings › Relay users (SMTP AUTH accounts) and API keys, the admin UI's side of ``m365relay relay-user``
and ``m365relay api-key``. Every change goes through the same stores as the CLI (``access.relay_users``,
``access.api_keys``), so their validation and audit entries are the CLI's; the pages only map the stores'
errors to the field they belong next to.

A password the relay generates and a new API key are shown once, on the page that answers the POST, and
are never kept anywhere (not in the session, not in a notice): the store keeps only their hashes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ...access.api_keys import SCOPES, ApiKeyStore
from ...access.passwords import generate_password
from ...access.relay_users import RelayUserStore
from ...errors import ConflictError, M365RelayError, NotFoundError, ValidationError
from .context import AdminContext, Ctx
from .forms import plain
from .ui import notice

USERS = "/admin/relay-users"
KEYS = "/admin/api-keys"
router = APIRouter(include_in_schema=False)
# The stores name their fields as the CLI does; the pages' fields are named like this.
FIELD_OF = {
    "username": "username",
    "password": "password",
    "allowed From": "allowed_from",
    "connector": "connector",
    "--name": "name",
    "name": "name",
    "--scope": "scopes",
    "scopes": "scopes",
}


def _errors(exc: M365RelayError, fallback: str) -> dict[str, str]:
    if isinstance(exc, ValidationError):
        found: dict[str, str] = {}
        for error in exc.all_errors:
            found.setdefault(FIELD_OF.get(error.key, FIELD_OF.get(error.field, fallback)), plain(error))
        return found
    return {fallback: exc.message + (f" {exc.remedy}" if exc.remedy else "")}


def split_entries(text: str) -> list[str]:
    """Addresses typed one per line or separated by commas or spaces."""
    return [part for part in text.replace(",", " ").split() if part]


def _users(ctx: AdminContext) -> RelayUserStore:
    runtime = ctx.runtime
    return RelayUserStore(runtime.db, clock=runtime.clock)


def _keys(ctx: AdminContext) -> ApiKeyStore:
    return ApiKeyStore(ctx.runtime.db, ctx.runtime.clock)


# -- relay users ----------------------------------------------------------------------------------


def render_users(ctx: AdminContext, *, status_code: int = 200, **values: Any) -> Response:
    page: dict[str, Any] = {
        "users": _users(ctx).list(),
        "connectors": [c.name for c in ctx.runtime.connectors.all()],
        "errors": {},
        "typed": {},
        "shown_password": None,
        "nav": "users",
        "smtp_port": ctx.runtime.settings.smtp_port,
    }
    page.update(values)
    return ctx.ui.render("relay_users.html", ctx, status_code=status_code, **page)


@router.get(USERS, name="admin_relay_users")
def users_page(ctx: Ctx) -> Response:
    return render_users(ctx)


@router.post(USERS, name="admin_relay_user_add")
async def add_user(ctx: Ctx) -> Response:
    return await run_in_threadpool(_add_user, ctx)


def _add_user(ctx: AdminContext) -> Response:
    typed = {name: ctx.field(name) for name in ("username", "allowed_from", "connector")}
    password = ctx.field("password")
    generated = not password
    password = password or generate_password()
    try:
        user = _users(ctx).add(
            typed["username"],
            password,
            allowed_from=split_entries(typed["allowed_from"]),
            connector=typed["connector"] or None,
            actor=ctx.actor,
        )
    except (ValidationError, ConflictError) as exc:
        return render_users(ctx, errors=_errors(exc, "username"), typed=typed, status_code=422)
    shown = {"username": user.username, "password": password} if generated else None
    return render_users(ctx, added=user.username, shown_password=shown)


@router.post(USERS + "/{username}/password", name="admin_relay_user_password")
async def set_password(username: str, ctx: Ctx) -> Response:
    return await run_in_threadpool(_set_password, ctx, username)


def _set_password(ctx: AdminContext, username: str) -> Response:
    password = ctx.field("password")
    generated = not password
    password = password or generate_password()
    try:
        user = _users(ctx).set_password(username, password, actor=ctx.actor)
    except (ValidationError, NotFoundError) as exc:
        return render_users(ctx, row_errors={username: _errors(exc, "password")}, status_code=422)
    shown = {"username": user.username, "password": password} if generated else None
    if shown is None:
        ctx.ui.add_notice(ctx, notice("success", f"New password set for {user.username}."))
        return RedirectResponse(USERS, status_code=303)
    return render_users(ctx, shown_password=shown)


@router.post(USERS + "/{username}/update", name="admin_relay_user_update")
async def update_user(username: str, ctx: Ctx) -> Response:
    return await run_in_threadpool(_update_user, ctx, username)


def _update_user(ctx: AdminContext, username: str) -> Response:
    try:
        user = _users(ctx).update(
            username,
            allowed_from=split_entries(ctx.field("allowed_from")),
            connector=ctx.field("connector"),
            disabled=ctx.field("disabled") == "on",
            actor=ctx.actor,
        )
    except (ValidationError, NotFoundError) as exc:
        return render_users(ctx, row_errors={username: _errors(exc, "allowed_from")}, status_code=422)
    ctx.ui.add_notice(ctx, notice("success", f"Relay user {user.username} saved."))
    return RedirectResponse(USERS, status_code=303)


@router.post(USERS + "/{username}/delete", name="admin_relay_user_delete")
async def delete_user(username: str, ctx: Ctx) -> Response:
    return await run_in_threadpool(_delete_user, ctx, username)


def _delete_user(ctx: AdminContext, username: str) -> Response:
    try:
        _users(ctx).remove(username, actor=ctx.actor)
    except NotFoundError as exc:
        ctx.ui.add_notice(ctx, notice("error", "Not deleted", exc.message))
    else:
        ctx.ui.add_notice(ctx, notice("success", f"Relay user {username} deleted: it can no longer sign in."))
    return RedirectResponse(USERS, status_code=303)


# -- API keys -------------------------------------------------------------------------------------


def render_keys(ctx: AdminContext, *, status_code: int = 200, **values: Any) -> Response:
    connectors = ctx.runtime.connectors.all()
    page: dict[str, Any] = {
        "keys": _keys(ctx).list(),
        "connectors": [c.name for c in connectors],
        "connector_names": {c.id: c.name for c in connectors},
        "scopes": SCOPES,
        "errors": {},
        "typed": {"scopes": ["send"]},
        "issued": None,
        "nav": "keys",
    }
    page.update(values)
    return ctx.ui.render("api_keys.html", ctx, status_code=status_code, **page)


@router.get(KEYS, name="admin_api_keys")
def keys_page(ctx: Ctx) -> Response:
    return render_keys(ctx)


@router.post(KEYS, name="admin_api_key_create")
async def create_key(ctx: Ctx) -> Response:
    scopes = ctx.form.getlist("scopes") if ctx.form is not None else []
    return await run_in_threadpool(_create_key, ctx, [s for s in scopes if isinstance(s, str)])


def _create_key(ctx: AdminContext, scopes: list[str]) -> Response:
    typed: dict[str, Any] = {"name": ctx.field("name"), "connector": ctx.field("connector"), "scopes": scopes}
    try:
        connector_id = ctx.runtime.connectors.get(typed["connector"]).id if typed["connector"] else None
    except NotFoundError as exc:
        return render_keys(ctx, errors={"connector": exc.message}, typed=typed, status_code=422)
    try:
        issued = _keys(ctx).create(typed["name"], scopes, connector_id=connector_id, actor=ctx.actor)
    except (ValidationError, ConflictError) as exc:
        return render_keys(ctx, errors=_errors(exc, "name"), typed=typed, status_code=422)
    return render_keys(ctx, issued={"name": issued.key.name, "token": issued.token, "scopes": issued.key.scopes})


@router.post(KEYS + "/{key_id}/revoke", name="admin_api_key_revoke")
async def revoke_key(key_id: int, ctx: Ctx) -> Response:
    return await run_in_threadpool(_revoke_key, ctx, key_id)


def _revoke_key(ctx: AdminContext, key_id: int) -> Response:
    try:
        key = _keys(ctx).revoke(key_id, actor=ctx.actor)
    except NotFoundError as exc:
        ctx.ui.add_notice(ctx, notice("error", "Not revoked", exc.message))
    else:
        ctx.ui.add_notice(ctx, notice("success", f"API key {key.name} revoked: requests with it now get 401."))
    return RedirectResponse(KEYS, status_code=303)
