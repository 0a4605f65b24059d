"""``python -m m365relay`` is the ``m365relay`` command."""

from __future__ import annotations

from .cli import main

main()
