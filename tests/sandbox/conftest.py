"""Make the sandbox fixtures available here even before (or without) the root conftest importing them."""

from __future__ import annotations

import sys
from pathlib import Path

if "fixtures_sandbox" not in sys.modules:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fixtures_sandbox import *  # noqa: F403
