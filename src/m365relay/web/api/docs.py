"""``/api/v1/docs``: the API reference as one self-contained HTML page, rendered from the OpenAPI document.

Swagger UI would load its scripts and styles from a CDN, which an offline relay (or a strict network)
cannot reach; this page needs nothing but itself, and its Content-Security-Policy forbids loading anything
else. The machine-readable spec stays at ``/api/v1/openapi.json`` for code generators and test tools.
"""

from __future__ import annotations

from html import escape
from typing import Any

CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
METHODS = ("get", "post", "put", "patch", "delete")

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 2rem;color:#1b1b1b}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
code,pre{font:13px ui-monospace,monospace;background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}
.op{border:1px solid #ddd;border-radius:6px;padding:.3rem 1rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.2rem;text-align:center;color:#fff;border-radius:3px;font-weight:600;
padding:0 .4rem;margin-right:.5rem}.get{background:#2f6fb5}.post{background:#2e8540}.delete{background:#b52f2f}
table{border-collapse:collapse;width:100%;margin:.4rem 0}td,th{border-bottom:1px solid #eee;text-align:left;
padding:.25rem .5rem;vertical-align:top}th{font-weight:600;background:#fafafa}.muted{color:#666}
"""


def render(spec: dict[str, Any], spec_url: str) -> str:
    info = spec.get("info", {})
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(info.get('title', 'API'))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} <span class=muted>{escape(str(info.get('version', '')))}</span></h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        f'<p>OpenAPI document: <a href="{escape(spec_url)}">{escape(spec_url)}</a>. Every error is an RFC 9457 '
        "problem (<code>application/problem+json</code>).</p>",
    ]
    components = spec.get("components", {}).get("schemas", {})
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                parts.append(_operation(method, path, item[method], components))
    parts.append("</body></html>")
    return "".join(parts)


def _operation(method: str, path: str, op: dict[str, Any], components: dict[str, Any]) -> str:
    out = [
        f'<section class=op id="{escape(op.get("operationId", ""))}">',
        f"<h2><span class='m {method}'>{method.upper()}</span><code>{escape(path)}</code></h2>",
        f"<p><b>{escape(op.get('summary', ''))}</b></p><p>{escape(op.get('description', ''))}</p>",
    ]
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>")
        for p in params:
            required = " (required)" if p.get("required") else ""
            out.append(
                f"<tr><td><code>{escape(p['name'])}</code>{required}</td><td>{escape(p.get('in', ''))}</td>"
                f"<td>{escape(_type(p.get('schema', {}), components))}</td>"
                f"<td>{escape(p.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody", {}).get("content", {})
    for media_type, content in body.items():
        out.append(f"<p>Body: <code>{escape(media_type)}</code></p>")
        out.append(_fields(_resolve(content.get("schema", {}), components), components))
    out.append("<table><tr><th>status</th><th>meaning</th></tr>")
    for status, response in op.get("responses", {}).items():
        media = ", ".join(response.get("content", {}))
        out.append(
            f"<tr><td>{escape(status)}</td><td>{escape(response.get('description', ''))}"
            f"{f' <span class=muted>({escape(media)})</span>' if media else ''}</td></tr>"
        )
    out.append("</table></section>")
    return "".join(out)


def _fields(schema: dict[str, Any], components: dict[str, Any]) -> str:
    properties = schema.get("properties")
    if not properties:
        return f"<p class=muted>{escape(schema.get('description', _type(schema, components)))}</p>"
    required = set(schema.get("required", []))
    rows = ["<table><tr><th>field</th><th>type</th><th>description</th></tr>"]
    for name, prop in properties.items():
        description = prop.get("description") or _resolve(prop, components).get("description", "")
        rows.append(
            f"<tr><td><code>{escape(name)}</code>{' (required)' if name in required else ''}</td>"
            f"<td>{escape(_type(prop, components))}</td><td>{escape(description)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = components.get(ref.rsplit("/", 1)[1], {})
        return resolved
    return schema


def _type(schema: dict[str, Any], components: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[1]
    if "anyOf" in schema:
        return " | ".join(_type(s, components) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(map(str, schema["enum"]))
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), components)}"
    if kind == "object" and "additionalProperties" in schema:
        return f"object of {_type(schema['additionalProperties'], components)}"
    return kind + (f" ({schema['format']})" if "format" in schema else "")
