"""Shared helpers for the benchmarks: medians, a sandbox in a child process, environments, free ports."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("M365RELAY_TEST_DATABASE_URL") or os.environ.get("M365RELAY_BENCH_DATABASE_URL")


def row(scenario: str, metric: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "metric": metric, "value": value, "unit": unit, **extra}


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    values = [measure() for _ in range(runs)]
    return statistics.median(values), values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment() -> dict[str, Any]:
    import m365relay

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "m365relay": m365relay.__version__,
        "commit": git.stdout.strip() or None,
        "sqlite": __import__("sqlite3").sqlite_version,
        "postgresql": PG_URL is not None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class SandboxProcess:
    """``m365relay sandbox --demo`` in a child process (so its CPU is not the relay's)."""

    def __init__(self, latency_ms: float = 0.0, data: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-sandbox-") if data is None else None
        self.data = data or Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self.latency_ms = latency_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self.demo: dict[str, Any] = {}

    def __enter__(self) -> SandboxProcess:
        demo_file = self.data / "demo.json"
        demo_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "m365relay.sandbox",
                "--demo",
                "--port",
                str(self.port),
                "--data",
                str(self.data),
                "--latency-ms",
                str(self.latency_ms),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not demo_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.05)
        time.sleep(0.05)
        self.demo = json.loads(demo_file.read_text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # a client kept a connection open; don't wait for it
                self.proc.kill()
                self.proc.wait(10)
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def url(self) -> str:
        return str(self.demo["url"])

    def admin(self) -> Any:
        import httpx

        return httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=self.demo["ca_file"]), timeout=60
        )

    def raise_limits(self) -> None:
        with self.admin() as client:
            client.put(
                "/_sandbox/limits", json={"requests_per_10min": 10**9, "recipients_per_24h": 10**9}
            ).raise_for_status()


def connector_update(sandbox: SandboxProcess) -> Any:
    from datetime import date, timedelta

    from m365relay.connectors import ConnectorUpdate

    d = sandbox.demo
    return ConnectorUpdate(
        client_id=d["client_id"],
        tenant_id=d["tenant_id"],
        user_name=d["mailbox"],
        cloud="custom",
        login_url=d["url"],
        graph_url=d["url"],
        ca_file=d["ca_file"],
        secret=d["secret_value"],
        secret_expires=(date.today() + timedelta(days=300)).isoformat(),
    )


@contextlib.contextmanager
def pg_schema() -> Iterator[str | None]:
    """A private schema on the benchmark PostgreSQL (or None when none is configured)."""
    if not PG_URL:
        yield None
        return
    import uuid

    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
