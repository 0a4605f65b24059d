"""The HTTP side of m365relay: one ASGI app with the JSON API, the admin UI, health and metrics."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
