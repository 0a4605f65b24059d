"""A faithful local emulator of the Microsoft identity platform and Graph mail endpoints.

It never imports the rest of m365relay, and the rest of m365relay never imports it: the core sees
the sandbox only as a `custom` cloud (a login URL, a Graph URL and a CA file). See docs/sandbox.md.
"""

from __future__ import annotations

from .server import SandboxServer

__all__ = ["SandboxServer"]
