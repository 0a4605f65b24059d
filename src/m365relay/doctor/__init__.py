"""The doctor: the manual's setup steps checked one by one against Microsoft 365, each with the fix.

::

    results = await run_checks(runtime, runtime.connectors.get("default"), send_test_to="me@contoso.com")
    for r in results:
        print(r.number, r.status, r.title, r.detail, r.remedy)
"""

from __future__ import annotations

from .result import EXIT_CONFIG, EXIT_OK, EXIT_TEMPFAIL, ORDER, TITLES, CheckResult, Status, exit_status
from .run import run_checks

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_TEMPFAIL",
    "ORDER",
    "TITLES",
    "CheckResult",
    "Status",
    "exit_status",
    "run_checks",
]
