"""Database access: the engine wrapper, the schema, and its migrations."""

from __future__ import annotations

from .engine import Database
from .migrate import upgrade

__all__ = ["Database", "upgrade"]
