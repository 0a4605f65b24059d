"""Load and chaos: 10,000 messages through SMTP and the HTTP API while worker processes are killed with
SIGKILL at random moments and the sandbox injects 429s, 503s, token-endpoint outages and lost answers (a
send carried out whose response is dropped). At the end the sandbox mailbox must hold every accepted message
(by Message-ID): the run prints lost (must be 0) and duplicates. The app holds Mail.ReadBasic.All, so every
in-doubt send (answer lost, or on the wire when its worker died) is looked up in Sent Items before a resend:
duplicates must be 0. ``--no-read`` runs without the permission: then those sends repeat (Graph has no
idempotency key) and each is counted as a "possible duplicate".

Ingress is ``m365relay serve --no-worker`` in its own process; two ``m365relay worker`` processes share
PostgreSQL (M365RELAY_TEST_DATABASE_URL) — on SQLite one worker at a time is killed and restarted.

    python -m bench.chaos [--quick | --short] [--no-read]
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from bench.common import SandboxProcess, connector_update, free_port, pg_schema, row

SMTP_CONNECTIONS = 8
API_CONCURRENCY = 16


class Relay:
    """Ingress (serve --no-worker) plus a crew of workers that a chaos thread keeps killing."""

    def __init__(self, home: Path, database_url: str | None, workers: int) -> None:
        self.home, self.database_url, self.size = home, database_url, workers
        self.http_port, self.smtp_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "M365RELAY_HOME": str(home),
            "M365RELAY_POLL_INTERVAL": "0.05",
            "M365RELAY_LEASE_SECONDS": "5",
            "M365RELAY_SMTP_ALLOWED_NETWORKS": "127.0.0.1/32",
            "M365RELAY_SMTP_MAX_CONNECTIONS_PER_CLIENT": "10000",  # the load comes from one address
            "M365RELAY_API_RATE_LIMIT": "1000000",
            "M365RELAY_RETRY_BASE_SECONDS": "0.5",
            "M365RELAY_RETRY_MAX_SECONDS": "5",
            # 10,000 messages in a few minutes through one mailbox is more than Exchange allows a mailbox
            # (10,000 recipients a day): the relay would rightly defer the rest for 24 h. The sandbox's limits
            # are lifted for this run, so the relay's own budgets are too.
            "M365RELAY_REQUEST_BUDGET": "100000000",
            "M365RELAY_RECIPIENT_BUDGET": "100000000",
            # An in-doubt message not found in Sent Items is resent after this; more than the sandbox's 2 s.
            "M365RELAY_RECONCILE_SETTLE_SECONDS": "10",
        }
        if database_url:
            self.env["M365RELAY_DATABASE_URL"] = database_url
        self.workers: list[subprocess.Popen[bytes]] = []
        self.kills = 0
        self.spawned = 0
        self.stop_chaos = threading.Event()

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        self.spawned += 1
        with (self.home / f"{args[0]}-{self.spawned:03d}.log").open("wb") as log:  # kept for a post-mortem
            return subprocess.Popen([sys.executable, "-m", "m365relay", *args], env=self.env, stdout=log, stderr=log)

    def start(self) -> None:
        self.ingress = self._spawn(
            "serve", "--no-worker", "--http-port", str(self.http_port), "--smtp-port", str(self.smtp_port)
        )
        self.workers = [self._spawn("worker", "--quiet") for _ in range(self.size)]
        deadline = time.monotonic() + 120  # the machine may be busy: migrations and startup take a while
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).status_code == 200:
                    with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=5):
                        break
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not start")
            time.sleep(0.1)

    def chaos(self, rng: random.Random) -> None:
        """Kill a random worker every 0.5–3 s and start a new one in its place."""
        while not self.stop_chaos.wait(rng.uniform(0.5, 3.0)):
            victim = rng.randrange(len(self.workers))
            self.workers[victim].send_signal(signal.SIGKILL)
            self.workers[victim].wait(10)
            self.kills += 1
            self.workers[victim] = self._spawn("worker", "--quiet")

    def stop(self) -> None:
        for p in [*self.workers, self.ingress]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*self.workers, self.ingress]:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def _faults(sandbox: SandboxProcess, stop: threading.Event, rng: random.Random) -> None:
    """Throttling, 503s and lost answers throughout; a token-endpoint outage of 2 s every 6–10 s."""
    with sandbox.admin() as admin:
        steady = {
            "sendMail": [
                {"kind": "drop", "probability": 0.01},  # delivered and filed, but the relay never hears so
                {"status": 503, "probability": 0.05, "retry_after": "0.5"},
            ],
            "graph": {"status": 429, "code": "ApplicationThrottled", "probability": 0.05, "retry_after": "0.3"},
        }
        admin.put("/_sandbox/faults", json=steady)
        while not stop.wait(rng.uniform(6, 10)):
            admin.put("/_sandbox/faults", json={**steady, "token": {"status": 503, "probability": 1.0}})
            stop.wait(2)
            admin.put("/_sandbox/faults", json=steady)
        admin.delete("/_sandbox/faults")


def _smtp_load(port: int, mailbox: str, count: int, accepted: list[str], first: int, errors: list[str]) -> None:
    try:
        _smtp_send(port, mailbox, count, accepted, first)
    except Exception as exc:  # reported by the caller: a thread's exception would vanish otherwise
        errors.append(f"{type(exc).__name__}: {exc}")


def _smtp_send(port: int, mailbox: str, count: int, accepted: list[str], first: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for i in range(first, first + count):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = mailbox, f"smtp{i}@example.com", f"chaos smtp {i}"
            msg["Message-ID"] = f"<chaos-smtp-{i}@bench.m365relay>"
            msg.set_content("chaos")
            for _ in range(20):  # a 4xx means: try again later (backpressure); never a lost message
                try:
                    smtp.send_message(msg)
                    accepted.append(msg["Message-ID"])
                    break
                except smtplib.SMTPResponseException as exc:
                    if exc.smtp_code >= 500:
                        raise
                    time.sleep(0.5)


async def _api_load(port: int, key: str, count: int) -> list[int]:
    ids: list[int] = []
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}/api/v1", timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        queue = list(range(count))

        async def one() -> None:
            while queue:
                i = queue.pop()
                body = {"to": [f"api{i}@example.com"], "subject": f"chaos api {i}", "text": "chaos"}
                response = await client.post("/messages", json=body)
                if response.status_code == 202:
                    ids.append(int(response.json()["id"]))
                elif response.status_code in (429, 503):
                    queue.append(i)
                    await asyncio.sleep(0.5)
                else:
                    raise RuntimeError(f"API answered {response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(one() for _ in range(API_CONCURRENCY)))
    return ids


def _count_events(runtime: Any, kinds: tuple[str, ...]) -> dict[str, int]:
    from sqlalchemy import func, select

    from m365relay.db.models import MessageEventRow

    with runtime.db.read() as session:
        rows = session.execute(
            select(MessageEventRow.kind, func.count())
            .where(MessageEventRow.kind.in_(kinds))
            .group_by(MessageEventRow.kind)
        ).all()
    return {kind: 0 for kind in kinds} | {kind: int(n) for kind, n in rows}


def chaos_run(total: int, database_url: str | None, seed: int = 1, read_permission: bool = True) -> dict[str, Any]:
    from m365relay.access.api_keys import ApiKeyStore
    from m365relay.runtime import Runtime
    from m365relay.settings import load_settings

    rng = random.Random(seed)
    with SandboxProcess(latency_ms=20) as sandbox, tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        sandbox.raise_limits()
        if read_permission:
            with sandbox.admin() as admin:
                roles = {"granted_roles": ["Mail.Send", "Mail.ReadBasic.All"]}
                admin.patch(f"/_sandbox/apps/{sandbox.demo['client_id']}", json=roles).raise_for_status()
        runtime = Runtime(load_settings(environ={}, home=Path(tmp), database_url=database_url))
        connector = runtime.connectors.save("default", connector_update(sandbox))
        key = ApiKeyStore(runtime.db).create("chaos", ["send"]).token
        relay = Relay(Path(tmp), database_url, 2 if database_url else 1)
        relay.start()
        stop_faults = threading.Event()
        threads = [
            threading.Thread(target=relay.chaos, args=(rng,), daemon=True),
            threading.Thread(target=_faults, args=(sandbox, stop_faults, rng), daemon=True),
        ]
        for t in threads:
            t.start()
        started = time.perf_counter()
        smtp_accepted: list[str] = []
        smtp_errors: list[str] = []
        per = total // 2 // SMTP_CONNECTIONS
        senders = [
            threading.Thread(
                target=_smtp_load, args=(relay.smtp_port, connector.user_name, per, smtp_accepted, n * per, smtp_errors)
            )
            for n in range(SMTP_CONNECTIONS)
        ]
        for t in senders:
            t.start()
        api_ids = asyncio.run(_api_load(relay.http_port, key, total // 2))
        for t in senders:
            t.join()
        if smtp_errors:
            relay.stop_chaos.set()
            stop_faults.set()
            relay.stop()
            raise RuntimeError(f"SMTP load failed: {smtp_errors[0]}")
        ingest_seconds = time.perf_counter() - started
        relay.stop_chaos.set()  # kills end with the ingest (a worker must get to run); faults go on while
        threads[0].join()  # the backlog is sent, so answers are dropped while sends are on the wire
        try:
            deadline = time.monotonic() + (300 if total <= 2000 else 900)
            while runtime.outbox.pending_count():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not drained: {_diagnose(runtime, relay)}")
                time.sleep(0.5)
        finally:
            relay.stop_chaos.set()
            stop_faults.set()
            for t in threads:
                t.join()
            relay.stop()
        accepted = set(smtp_accepted) | {runtime.outbox.get(i, events=False).message_id or "" for i in api_ids}
        with sandbox.admin() as admin:
            delivered = collections.Counter(
                m["message_id"] for m in admin.get("/_sandbox/messages", params={"limit": 1_000_000}).json()
            )
            stats = admin.get("/_sandbox/stats").json()
        statuses = runtime.outbox.stats().by_status
        doubts = _count_events(runtime, ("in_doubt", "confirmed", "resend_checked", "possible_duplicate"))
        runtime.close()
    return {
        "accepted": len(accepted),
        "smtp": len(smtp_accepted),
        "api": len(api_ids),
        "lost": sum(1 for m in accepted if delivered[m] == 0),
        "duplicates": sum(delivered[m] - 1 for m in accepted if delivered[m] > 1),
        "kills": relay.kills,
        "faults": sum(stats["faults_injected"].values()),
        "dropped": sum(stats.get("responses_dropped", {}).values()),
        "doubts": doubts,
        "statuses": statuses,
        "seconds": time.perf_counter() - started,
        "ingest_seconds": ingest_seconds,
    }


def _diagnose(runtime: Any, relay: Relay) -> str:
    """Why the outbox did not drain: its figures, the connectors' state, a waiting message's story."""
    waiting = runtime.outbox.list(status="deferred", limit=1) or runtime.outbox.list(status="queued", limit=1)
    story = [f"{e.kind}: {e.detail}" for e in runtime.outbox.get(waiting[0].id).events][-6:] if waiting else []
    connectors = [(c.name, c.state, c.state_reason) for c in runtime.connectors.all()]
    alive = [w.poll() is None for w in relay.workers]
    sessions = ""
    if runtime.db.is_postgres:
        from sqlalchemy import text

        with runtime.db.read() as session:
            rows = session.execute(
                text("SELECT state, count(*) FROM pg_stat_activity WHERE datname = current_database() GROUP BY state")
            ).all()
            locks = session.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
        sessions = f"; sessions {[tuple(r) for r in rows]}; advisory locks held {locks}"
    from m365relay.dispatch import BudgetLimits, Budgets

    usage = Budgets(runtime.db, runtime.clock, BudgetLimits()).usage(runtime.connectors.get().id)
    figures = f"budget used {usage}; {runtime.outbox.stats().by_status}; connectors {connectors}"
    return f"{figures}; workers alive {alive}; {story}{sessions}"


def run(quick: bool = False, *, short: bool = False, read_permission: bool = True) -> list[dict[str, Any]]:
    total = 400 if short else 2000 if quick else 10_000
    with pg_schema() as url:
        result = chaos_run(total, url, read_permission=read_permission)
    backend = "PostgreSQL, 2 workers" if url else "SQLite, 1 worker"
    where = f"{result['accepted']} accepted ({result['smtp']} SMTP, {result['api']} API), {backend}"
    notes = (
        f"{result['kills']} SIGKILLs, {result['faults']} injected faults ({result['dropped']} answers dropped), "
        f"{result['seconds']:.0f} s"
    )
    d = result["doubts"]
    permission = "with Mail.ReadBasic.All" if read_permission else "without a read permission"
    return [
        row("chaos: lost messages", where, result["lost"], "messages", baseline="must be 0", notes=notes),
        row(
            "chaos: duplicate deliveries",
            where,
            result["duplicates"],
            "messages",
            baseline="must be 0" if read_permission else "≤ possible duplicates",
            notes=f"{permission}: {d['in_doubt']} in doubt, {d['confirmed']} confirmed in Sent Items, "
            f"{d['resend_checked']} resent after a check, {d['possible_duplicate']} possible duplicates",
        ),
        row(
            "chaos: ingest under chaos",
            "messages/s",
            round(result["accepted"] / result["ingest_seconds"]),
            "msg/s",
            notes=f"final outbox: {result['statuses']}",
        ),
    ]


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(
        run(quick="--quick" in sys.argv, short="--short" in sys.argv, read_permission="--no-read" not in sys.argv)
    )
