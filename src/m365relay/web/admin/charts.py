"""The dashboard's pictures as server-rendered SVG: no script, no build step, and readable without colour —
each series has its own fill pattern (solid, hatched, cross-hatched) named in a legend, every bar carries its
number in a ``<title>``, pauses are a dotted band with the word "paused", and every chart is followed by the
same numbers as a table. Only numbers and escaped text go into the markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from ...activity import Counts, Period

WIDTH, HEIGHT = 720, 230
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 30, 34
BARS = (
    ("accepted", "Accepted", "url(#p-accepted)"),
    ("sent", "Sent", "url(#p-sent)"),
    ("failed", "Failed", "url(#p-failed)"),
)

# The fill patterns, defined once per page (in ``legend()``) and referred to by every chart.
DEFS = "".join(
    (
        "<defs>",
        '<pattern id="p-accepted" width="6" height="6" patternUnits="userSpaceOnUse">',
        '<rect width="6" height="6" fill="#5b7fa6"/></pattern>',
        '<pattern id="p-sent" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">',
        '<rect width="6" height="6" fill="#e3f1e6"/><rect width="3" height="6" fill="#1e7b34"/></pattern>',
        '<pattern id="p-failed" width="6" height="6" patternUnits="userSpaceOnUse">',
        '<rect width="6" height="6" fill="#fbe3e1"/>',
        '<path d="M0 0L6 6M6 0L0 6" stroke="#b3261e" stroke-width="1.6"/></pattern>',
        '<pattern id="p-paused" width="8" height="8" patternUnits="userSpaceOnUse">',
        '<rect width="8" height="8" fill="#fff4d6"/><circle cx="4" cy="4" r="1.4" fill="#8a6100"/></pattern>',
        "</defs>",
    )
)


@dataclass(frozen=True)
class Bucket:
    label: str  # axis label ("" for none)
    title: str  # full name, for the tooltips
    counts: Counts


def _nice_max(value: int) -> int:
    if value <= 4:
        return 4
    step = 10 ** (len(str(value)) - 1)
    for mult in (1, 2, 2.5, 5, 10):
        top = int(mult * step)
        if top >= value:
            return top
    return value


def activity_chart(
    title: str, buckets: Sequence[Bucket], pauses: Sequence[Period], span: tuple[datetime, datetime]
) -> Markup:
    """Grouped bars (accepted, sent, failed) per bucket; deferrals as numbers on the top strip; pauses as bands."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((max(b.counts.accepted, b.counts.sent, b.counts.failed) for b in buckets), default=0))
    n = max(len(buckets), 1)
    slot = plot_w / n
    bar = slot * 0.27
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    parts += _pause_bands(pauses, span, plot_w, plot_h)
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h - fraction * plot_h
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c9d0d8" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{int(top * fraction)}</text>'
        )
    parts.append(f'<text x="{LEFT}" y="{TOP - 18}" class="tick">deferred:</text>')
    for i, b in enumerate(buckets):
        x0 = LEFT + i * slot + slot * 0.1
        for j, (name, label, fill) in enumerate(BARS):
            value = getattr(b.counts, name)
            h = plot_h * value / top if top else 0
            x, y = x0 + j * bar, TOP + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(h, 0.0):.1f}" fill="{fill}" '
                f'stroke="#1b1b1b" stroke-width="{0.6 if value else 0}"><title>{escape(b.title)}: {label} {value}'
                "</title></rect>"
            )
        if b.counts.deferred:
            cx = LEFT + (i + 0.5) * slot
            parts.append(
                f'<text x="{cx:.1f}" y="{TOP - 4}" text-anchor="middle" class="tick deferred">{b.counts.deferred}'
                f"<title>{escape(b.title)}: deferred {b.counts.deferred}</title></text>"
            )
        if b.label:
            cx = LEFT + (i + 0.5) * slot
            y = HEIGHT - BOTTOM + 16
            parts.append(f'<text x="{cx:.1f}" y="{y}" text-anchor="middle" class="tick">{escape(b.label)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#1b1b1b"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 -- numbers and escape()d text only


def _pause_bands(pauses: Sequence[Period], span: tuple[datetime, datetime], plot_w: float, plot_h: float) -> list[str]:
    start, end = span
    total = (end - start).total_seconds() or 1.0
    out = []
    for p in pauses:
        a = max(p.start, start)
        b = min(p.end or end, end)
        if b <= a:
            continue
        x = LEFT + plot_w * (a - start).total_seconds() / total
        w = max(plot_w * (b - a).total_seconds() / total, 3.0)
        label = f"paused {a:%Y-%m-%d %H:%M} – {(p.end.strftime('%Y-%m-%d %H:%M') if p.end else 'now')}"
        out.append(
            f'<rect x="{x:.1f}" y="{TOP}" width="{w:.1f}" height="{plot_h:.1f}" fill="url(#p-paused)" '
            f'stroke="#8a6100" stroke-dasharray="3 2"><title>{escape(label)}</title></rect>'
        )
        out.append(f'<text x="{x + 2:.1f}" y="{TOP + 12}" class="tick paused">paused</text>')
    return out


def legend() -> Markup:
    """The patterns named in words: the key to every chart on the page."""
    items = [
        f'<li><svg width="18" height="14" aria-hidden="true"><rect width="18" height="14" fill="{fill}" '
        f'stroke="#1b1b1b" stroke-width="0.6"/></svg> {label}</li>'
        for _, label, fill in BARS
    ]
    items.append(
        '<li><svg width="18" height="14" aria-hidden="true"><rect width="18" height="14" fill="url(#p-paused)" '
        'stroke="#8a6100" stroke-dasharray="3 2"/></svg> Connector paused</li>'
    )
    items.append("<li><strong>N</strong> above a bar: messages deferred (throttled or temporary trouble)</li>")
    swatches = f'<svg width="0" height="0" aria-hidden="true" focusable="false" style="position:absolute">{DEFS}</svg>'
    return Markup(f'{swatches}<ul class="legend">{"".join(items)}</ul>')  # noqa: S704 -- fixed text only


def countdown(days_left: int | None, lifetime_days: int | None, expires: str) -> Markup:
    """The credential's life as a bar: the filled part is what is left; the words say it too."""
    if days_left is None or not lifetime_days:
        return Markup('<p class="muted">No expiry date recorded for this credential.</p>')
    left = max(days_left, 0)
    fraction = min(left / lifetime_days, 1.0)
    level = "expired" if days_left < 0 else "critical" if days_left <= 7 else "warning" if days_left <= 30 else "ok"
    fill = {"ok": "url(#p-sent)", "warning": "#d99a00", "critical": "url(#p-failed)", "expired": "url(#p-failed)"}[
        level
    ]
    words = "expired" if days_left < 0 else f"{left} of {lifetime_days} days left"
    text = f"Credential: {words} (expires {expires})"
    width = 600
    return Markup(  # noqa: S704 -- numbers and escape()d text only
        f'<svg class="countdown" viewBox="0 0 {width} 34" width="100%" role="img" aria-label="{escape(text)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(text)}</title>'
        f'<rect x="1" y="1" width="{width - 2}" height="20" fill="#fff" stroke="#1b1b1b"/>'
        f'<rect x="1" y="1" width="{(width - 2) * fraction:.1f}" height="20" fill="{fill}" stroke="#1b1b1b"/>'
        f'<text x="4" y="32" class="tick">{escape(words)} · expires {escape(expires)} · {level}</text></svg>'
    )
