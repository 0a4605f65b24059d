"""The sandbox's own capacity: sendMail calls per second at latency 0 (issue 3 asks for ≥ 500/s).
It runs ``m365relay.sandbox.loadcheck`` (clients in separate processes so the client is not the limit).

    python -m bench.sandbox
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from bench.common import median_of, row


def calls_per_second(seconds: float) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "m365relay.sandbox.loadcheck", "--clients", "4", "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found = re.findall(r"([\d.,]+)\s*(?:sendMail )?calls/s", done.stdout)
    if not found:
        raise RuntimeError(f"unexpected loadcheck output: {done.stdout[-500:]}")
    return float(found[-1].replace(",", ""))


def run(quick: bool = False) -> list[dict[str, Any]]:
    value, _ = median_of(3, lambda: calls_per_second(3 if quick else 6))
    return [
        row(
            "sandbox sendMail, latency 0, 4 clients",
            "calls/s",
            round(value),
            "calls/s",
            ratio=round(value / 500, 2),
            baseline="target 500 calls/s",
        )
    ]


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run(quick="--quick" in sys.argv))
