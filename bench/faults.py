"""Faults, one at a time, under a steady API load: how the relay answers while each lasts and how fast it is
back to full speed once it ends (issue 14). Ingress is ``m365relay serve --no-worker``; the workers are
``m365relay worker`` processes (one on SQLite, two on PostgreSQL), with the default lease (120 s) and
backoff (5 s doubling), so a recovery that waited out a lease or a backoff would show.

Scenarios: on SQLite the worker SIGKILLed (for the fault's length, then a new one starts: the fault ends
when it runs); on PostgreSQL one of two workers SIGKILLed (the other takes over its leases); Graph down
(sendMail answers 503); the database down (PostgreSQL only: the link is cut by a proxy,
m365relay.sandbox.dblink — the shared server is never stopped).

Per scenario: accepted, delivered, lost (must be 0), duplicates, seconds from the fault's end until the
relay delivers at ≥ 80 % of its rate before the fault (or has nothing left), and the replies clients saw
during the fault (only 202, 4xx and 503 with Retry-After are right; a 500 is a bug).

    python -m bench.faults --quick     # 10 s faults, about 2 minutes
    python -m bench.faults             # 60 s faults, the figures in docs/delivery.md
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.chaos import Relay
from bench.common import PG_URL, SandboxProcess, connector_update, pg_schema, row

RATE = 40.0  # messages per second offered by the client
FULL_SPEED = 0.8  # of the rate before the fault


class SlowStartRelay(Relay):
    """chaos.Relay, given two minutes to start: on a shared, loaded machine importing Python alone can take
    a good part of chaos's 30 s."""

    def start(self) -> None:
        self.ingress = self._spawn(
            "serve", "--no-worker", "--http-port", str(self.http_port), "--smtp-port", str(self.smtp_port)
        )
        self.workers = [self._spawn("worker", "--quiet") for _ in range(self.size)]
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.ingress.poll() is not None:
                raise RuntimeError("serve did not start")
            time.sleep(0.2)


@dataclass
class Load:
    """A client offering RATE messages/s; it retries a 503/429 after its Retry-After, as a good client does."""

    port: int
    key: str
    accepted: list[int] = field(default_factory=list)
    replies: list[tuple[float, int, bool]] = field(default_factory=list)  # (time, status, had Retry-After)
    stop: threading.Event = field(default_factory=threading.Event)

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}/api/v1", headers=headers,
                                     timeout=30) as client:  # fmt: skip
            n, tasks = 0, set()
            while not self.stop.is_set():
                n += 1
                task = asyncio.ensure_future(self._one(client, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(1 / RATE)
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, n: int) -> None:
        body = {"to": [f"fault{n}@example.com"], "subject": f"fault {n}", "text": "fault"}
        for _ in range(60):
            try:
                response = await client.post("/messages", json=body)
            except httpx.HTTPError:
                self.replies.append((time.monotonic(), 0, False))
                await asyncio.sleep(1)
                continue
            self.replies.append((time.monotonic(), response.status_code, "retry-after" in response.headers))
            if response.status_code == 202:
                self.accepted.append(int(response.json()["id"]))
                return
            if response.status_code not in (429, 503):
                return
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))


def delivered(sandbox: SandboxProcess) -> collections.Counter[str]:
    with sandbox.admin() as admin:
        messages = admin.get("/_sandbox/messages", params={"limit": 1_000_000}).json()
    return collections.Counter(m["message_id"] for m in messages)


def sent_count(sandbox: SandboxProcess) -> int:
    with sandbox.admin() as admin:
        return int(admin.get("/_sandbox/stats").json()["sendMail"])


def scenario(name: str, database_url: str | None, fault: float, start: Callable[..., None],
             end: Callable[..., None], *, via_link: bool = False) -> dict[str, Any]:  # fmt: skip
    from m365relay.access.api_keys import ApiKeyStore
    from m365relay.runtime import Runtime
    from m365relay.sandbox.dblink import DatabaseLink
    from m365relay.settings import load_settings

    with SandboxProcess(latency_ms=20) as sandbox, tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        sandbox.raise_limits()
        runtime = Runtime(load_settings(environ={}, home=Path(tmp), database_url=database_url))
        runtime.connectors.save("default", connector_update(sandbox))
        key = ApiKeyStore(runtime.db).create("faults", ["send"]).token
        link = DatabaseLink.for_url(database_url).start() if via_link and database_url else None
        relay = SlowStartRelay(Path(tmp), link.url(database_url) if link and database_url else database_url,
                      2 if database_url else 1)  # fmt: skip
        relay.env.update({"M365RELAY_LEASE_SECONDS": "120", "M365RELAY_RETRY_BASE_SECONDS": "5",
                          "M365RELAY_RETRY_MAX_SECONDS": "900"})  # fmt: skip
        relay.start()
        load = Load(relay.http_port, key)
        thread = threading.Thread(target=lambda: asyncio.run(load.run()), daemon=True)
        thread.start()
        context = {"relay": relay, "sandbox": sandbox, "link": link}
        try:
            time.sleep(5)
            before = sent_count(sandbox)
            time.sleep(5)
            baseline = (sent_count(sandbox) - before) / 5
            began = time.monotonic()
            start(**context)
            time.sleep(fault)
            end(**context)
            ended = time.monotonic()
            recovery = _time_to_full_speed(sandbox, runtime, baseline, ended)
            time.sleep(3)
            load.stop.set()
            thread.join(60)
            deadline = time.monotonic() + 120
            while runtime.outbox.pending_count() and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            load.stop.set()
            relay.stop()
            if link is not None:
                link.stop()
        counts = delivered(sandbox)
        ids = {runtime.outbox.get(i, events=False).message_id or "" for i in load.accepted}
        during = collections.Counter(
            f"{status}{'' if status in (0, 202) or has_retry else ' without Retry-After'}"
            for at, status, has_retry in load.replies
            if began <= at <= ended
        )
        runtime.close()
    result = {
        "scenario": name,
        "accepted": len(ids),
        "delivered": sum(1 for m in ids if counts[m]),
        "lost": sum(1 for m in ids if counts[m] == 0),
        "duplicates": sum(counts[m] - 1 for m in ids if counts[m] > 1),
        "recovery": recovery,
        "replies": dict(sorted(during.items())),
        "baseline": baseline,
    }
    print(result, flush=True)
    return result


def _time_to_full_speed(sandbox: SandboxProcess, runtime: Any, baseline: float, ended: float) -> float | None:
    """Seconds from the fault's end to the first second delivering ≥ 80 % of the rate before it (or with
    nothing left to send)."""
    last = sent_count(sandbox)
    while time.monotonic() - ended < 120:
        time.sleep(1)
        now = sent_count(sandbox)
        if now - last >= FULL_SPEED * baseline or runtime.outbox.pending_count() == 0:
            return round(time.monotonic() - ended - 1, 1)  # the start of the second that made it
        last = now
    return None


# -- the faults -----------------------------------------------------------------------------------------


def kill_workers(relay: Relay, **_: Any) -> None:
    for worker in relay.workers:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)


def start_workers(relay: Relay, **_: Any) -> None:
    """New workers in place of the killed ones. The fault ends when one is running — its liveness file
    appears (SQLite) — not when its process is forked: starting Python is not the relay's recovery (on a
    loaded machine it alone takes seconds)."""
    workers = relay.home / "m365relay.db.workers"
    before = set(workers.glob("*.lock")) if workers.exists() else set()
    relay.workers = [relay._spawn("worker", "--quiet") for _ in relay.workers]
    if relay.database_url:
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (set(workers.glob("*.lock")) - before):
        time.sleep(0.05)


def kill_one_worker(relay: Relay, **_: Any) -> None:
    relay.workers[0].send_signal(signal.SIGKILL)
    relay.workers[0].wait(10)


def start_one_worker(relay: Relay, **_: Any) -> None:
    relay.workers[0] = relay._spawn("worker", "--quiet")


def graph_down(sandbox: SandboxProcess, **_: Any) -> None:
    with sandbox.admin() as admin:
        admin.put("/_sandbox/faults", json={"sendMail": {"status": 503, "probability": 1.0}}).raise_for_status()


def graph_up(sandbox: SandboxProcess, **_: Any) -> None:
    with sandbox.admin() as admin:
        admin.delete("/_sandbox/faults").raise_for_status()


def cut_link(link: Any, **_: Any) -> None:
    link.cut()


def restore_link(link: Any, **_: Any) -> None:
    link.restore()


def run_all(quick: bool) -> list[dict[str, Any]]:
    fault = 10.0 if quick else 60.0
    results = [
        scenario("SQLite: worker SIGKILLed", None, fault, kill_workers, start_workers),
        scenario("SQLite: Graph down (503)", None, fault, graph_down, graph_up),
    ]
    if PG_URL:
        with pg_schema() as url:
            results.append(scenario("PostgreSQL: database down", url, fault, cut_link, restore_link, via_link=True))
        with pg_schema() as url:
            results.append(scenario("PostgreSQL: 1 of 2 workers SIGKILLed", url, fault, kill_one_worker,
                                    start_one_worker))  # fmt: skip
        if not quick:
            with pg_schema() as url:
                results.append(scenario("PostgreSQL: Graph down (503)", url, fault, graph_down, graph_up))
    return results


def markdown(results: list[dict[str, Any]], fault: float) -> str:
    lines = [
        f"| scenario ({fault:.0f} s fault, {RATE:.0f} msg/s offered) | accepted | delivered | lost | duplicates "
        "| to full speed | replies during the fault |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        replies = ", ".join(f"{k} × {v}" for k, v in r["replies"].items()) or "none"
        speed = "not reached" if r["recovery"] is None else f"{r['recovery']:.1f} s"
        lines.append(f"| {r['scenario']} | {r['accepted']} | {r['delivered']} | {r['lost']} | {r['duplicates']} "
                     f"| {speed} | {replies} |")  # fmt: skip
    return "\n".join(lines)


def run(quick: bool = False) -> list[dict[str, Any]]:
    results = run_all(quick)
    print(markdown(results, 10.0 if quick else 60.0))
    rows = []
    for r in results:
        rows.append(row(f"faults: {r['scenario']}", "lost", r["lost"], "messages", baseline="must be 0",
                        notes=f"{r['accepted']} accepted, {r['duplicates']} duplicates"))  # fmt: skip
        rows.append(row(f"faults: {r['scenario']}", "to full speed", r["recovery"] if r["recovery"] is not None
                        else -1, "s", baseline="≤ 10 s", notes=str(r["replies"])))  # fmt: skip
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run(quick="--quick" in sys.argv))
