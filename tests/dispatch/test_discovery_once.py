"""One OpenID discovery request per connector per process (MSAL fetches the authority's metadata when an
application is built; rebuilding it for every fresh token, probe or expiry check fetched it again)."""

from __future__ import annotations

from test_dispatcher import enqueue, run_until

from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime
from support import SandboxAdmin


def test_a_worker_start_and_its_sends_make_one_discovery_request(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.client.delete("/_sandbox/stats")
    ids = enqueue(runtime, 5)
    run_until(runtime, lambda: runtime.outbox.stats().by_status.get("sent", 0) == len(ids))
    runtime.tokens.invalidate(connector.id)  # a token Graph refused, a probe: a fresh token is fetched ...
    runtime.tokens.acquire(connector)
    stats = admin.stats()
    assert stats["token"] == 2
    assert stats["discovery"] == 1  # ... with the metadata fetched once
