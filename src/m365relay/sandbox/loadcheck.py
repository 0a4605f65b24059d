"""Measure sendMail calls/s against a sandbox: `python -m m365relay.sandbox.loadcheck`.

Starts a sandbox in a child process, lifts its limits, then drives small MIME sendMail calls from
N concurrent keep-alive httpx clients — one process each, so the clients do not share one
interpreter lock with each other or with the server — for a fixed time and prints the rate.
`--url`/`--ca-file` measure a sandbox that is already running (it must have been started with --demo).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MESSAGE = (
    b"From: noreply@contoso.onmicrosoft.com\r\nTo: someone@example.com\r\nSubject: load check\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nA small notification.\r\n"
)


def _spawn(data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "m365relay.sandbox", "--port", "0", "--demo", "--data", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_demo(data_dir: Path, child: subprocess.Popen[bytes], timeout: float = 30.0) -> dict[str, Any]:
    path = data_dir / "demo.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError("the sandbox process exited early")
        if path.exists():
            info: dict[str, Any] = json.loads(path.read_text("utf-8"))
            return info
        time.sleep(0.05)
    raise RuntimeError("the sandbox did not come up in time")


@dataclass(frozen=True)
class Plan:
    url: str
    ca_file: str
    path: str
    token: str
    start_at: float
    seconds: float


def _worker(plan: Plan) -> tuple[int, int]:
    """One keep-alive client in its own process: connect, wait for the common start, send until the end."""
    body = base64.b64encode(MESSAGE)
    headers = {"Authorization": f"Bearer {plan.token}", "Content-Type": "text/plain"}
    ok = failed = 0
    ctx = ssl.create_default_context(cafile=plan.ca_file)
    path = plan.path
    with httpx.Client(base_url=plan.url, verify=ctx, timeout=30) as client:
        client.post(path, content=body, headers=headers)  # TLS handshake before the clock starts
        time.sleep(max(0.0, plan.start_at - time.time()))
        stop_at = plan.start_at + plan.seconds
        while time.time() < stop_at:
            response = client.post(path, content=body, headers=headers)
            if response.status_code == 202:
                ok += 1
            else:
                failed += 1
    return ok, failed


def measure(info: dict[str, Any], clients: int, seconds: float) -> tuple[int, int, float]:
    """Lift the sandbox's limits, run `clients` worker processes, return (accepted, failed, seconds)."""
    url = info["url"]
    ctx = ssl.create_default_context(cafile=info["ca_file"])
    with httpx.Client(base_url=url, verify=ctx) as admin:
        admin.post("/_sandbox/reset").raise_for_status()
        big = 10_000_000
        admin.put(
            "/_sandbox/limits",
            json={"concurrency": big, "requests_per_10min": big, "recipients_per_24h": big},
        ).raise_for_status()
        token = admin.post(
            f"/{info['tenant_id']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": info["client_id"],
                "client_secret": info["secret_value"],
                "scope": "https://graph.microsoft.com/.default",
            },
        ).json()["access_token"]
        path = f"/v1.0/users/{info['mailbox']}/sendMail"
        start_at = time.time() + 2.0  # time for the worker processes to start and connect
        with ProcessPoolExecutor(max_workers=clients, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(_worker, Plan(url, info["ca_file"], path, token, start_at, seconds)) for _ in range(clients)
            ]
            results = [f.result() for f in futures]
        admin.delete("/_sandbox/messages")
    return sum(r[0] for r in results), sum(r[1] for r in results), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients (default 4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time (default 5)")
    parser.add_argument("--url", help="an already running sandbox started with --demo")
    parser.add_argument("--ca-file", help="its CA file (with --url)")
    args = parser.parse_args(argv)
    child: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="m365relay-loadcheck-") as tmp:
        try:
            if args.url:
                ctx = ssl.create_default_context(cafile=args.ca_file)
                info = httpx.get(f"{args.url}/_sandbox/demo", verify=ctx).json()
            else:
                child = _spawn(Path(tmp))
                info = _wait_for_demo(Path(tmp), child)
            ok, failed, elapsed = measure(info, args.clients, args.seconds)
        finally:
            if child is not None:
                child.send_signal(signal.SIGINT)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    rate = ok / elapsed if elapsed else 0.0
    print(
        f"sendMail: {ok} accepted, {failed} failed in {elapsed:.2f}s with {args.clients} clients "
        f"-> {rate:.0f} calls/s (latency 0, cpu count {os.cpu_count()})"
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
