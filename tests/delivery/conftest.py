"""Bounce intake, recipient states and suppression tests: the sandbox and API helpers of the sibling folders."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for folder in (_TESTS, _TESTS / "sandbox", _TESTS / "api", _TESTS / "smtp", _TESTS / "admin"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
if "fixtures_sandbox" not in sys.modules:
    from fixtures_sandbox import *  # noqa: F403
