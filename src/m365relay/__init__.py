"""m365relay: send an application's system mail from a Microsoft 365 mailbox through Microsoft Graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .relay import Relay

__version__ = "0.1.0"

__all__ = ["Relay", "__version__"]


def __getattr__(name: str) -> object:
    # Imported lazily so that `import m365relay` (e.g. by the sandbox or the CLI's --help) stays cheap.
    if name == "Relay":
        from .relay import Relay

        return Relay
    raise AttributeError(name)
