"""``/admin/suppressions``: the addresses each connector no longer mails, with the bounce that caused each;
add and remove (both audited, like the CLI and the API)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from ...errors import NotFoundError, ValidationError
from .context import AdminContext, Ctx
from .ui import notice

router = APIRouter(include_in_schema=False)


@router.get("/admin/suppressions", name="admin_suppressions")
def suppressions_page(ctx: Ctx) -> Response:
    runtime = ctx.runtime
    names = {c.id: c.name for c in runtime.connectors.all()}
    return ctx.ui.render(
        "suppressions.html",
        ctx,
        entries=runtime.suppressions.list(),
        names=names,
        days=runtime.suppressions.days,
    )


@router.post("/admin/suppressions/add", name="admin_suppression_add")
def add(ctx: Ctx) -> Response:
    return _change(ctx, "add")


@router.post("/admin/suppressions/remove", name="admin_suppression_remove")
def remove(ctx: Ctx) -> Response:
    return _change(ctx, "remove")


def _change(ctx: AdminContext, action: str) -> Response:
    runtime, address, raw_connector = ctx.runtime, ctx.field("address").strip(), ctx.field("connector")
    connector_id = int(raw_connector) if raw_connector.isdigit() and len(raw_connector) < 10 else None
    actor = ctx.actor
    try:
        if connector_id is None or connector_id not in {c.id for c in runtime.connectors.all()}:
            raise ValidationError("connector", "choose a connector")
        if action == "add":
            reason = ctx.field("reason").strip()[:500] or None
            runtime.suppressions.add(connector_id, address, actor=actor, reason=reason)
            ctx.ui.add_notice(ctx, notice("success", f"{address} is suppressed."))
        else:
            runtime.suppressions.remove(connector_id, address, actor=actor)
            ctx.ui.add_notice(ctx, notice("success", f"{address} was removed; mail to it is accepted again."))
    except (ValidationError, NotFoundError) as exc:
        ctx.ui.add_notice(ctx, notice("error", "Nothing was changed", exc.message))
    return RedirectResponse("/admin/suppressions", status_code=303)
