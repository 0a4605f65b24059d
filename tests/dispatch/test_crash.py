"""A worker killed with SIGKILL in the middle of a run loses nothing: its leases expire and another worker
sends the rest. Duplicates are counted and reported (a kill between Graph's 202 and our commit of "sent"
is the only way to get one: Graph has no idempotency key, so the new worker must send again)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

import pytest

from m365relay.connectors import ConnectorConfig
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from support import SandboxAdmin

TOTAL = 500


def start_worker(runtime: Runtime) -> subprocess.Popen[bytes]:
    env = {**os.environ, "M365RELAY_HOME": str(runtime.settings.home), "M365RELAY_LEASE_SECONDS": "3",
           "M365RELAY_POLL_INTERVAL": "0.05"}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "m365relay", "worker", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def wait_for(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError("condition not reached")


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, record_property: object
) -> None:
    admin.latency(10)
    relay = Relay(runtime=runtime)
    ids = [relay.enqueue(to=[f"crash{i}@example.com"], subject=f"crash {i}", text="x") for i in range(TOTAL)]
    message_ids = {runtime.outbox.get(i, events=False).message_id for i in ids}

    def sent() -> int:
        return runtime.outbox.stats().by_status.get("sent", 0)

    first = start_worker(runtime)
    try:
        wait_for(lambda: sent() >= 150, 120)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    killed_at = sent()
    assert killed_at < TOTAL, "the kill happened mid-run"
    # Only messages the dead worker held can repeat: on the wire, or answered 202 but not yet recorded as sent.
    held_at_kill = runtime.outbox.stats().by_status.get("sending", 0)
    second = start_worker(runtime)
    try:
        wait_for(lambda: runtime.outbox.pending_count() == 0, 180)
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr.decode()[-2000:]
    delivered = collections.Counter(m["message_id"] for m in admin.messages(limit=100000))
    lost = [m for m in message_ids if delivered[m] == 0]
    duplicates = sum(delivered[m] - 1 for m in message_ids if delivered[m] > 1)
    print(f"\ncrash test: killed after {killed_at} sent, {held_at_kill} held; lost = {len(lost)}, dup = {duplicates}")
    record_property("duplicates", duplicates)  # type: ignore[operator]
    assert lost == []
    assert runtime.outbox.stats().by_status == {"sent": TOTAL}
    assert duplicates <= held_at_kill, "only messages the killed worker held can repeat"
