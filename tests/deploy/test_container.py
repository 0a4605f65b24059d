"""The container image, built and run with podman as an operator would (issue 19): a base image made
locally with debootstrap (never pulled: no registry is reachable), wheels from this host, `podman build`
with no network at all (proof that the build downloads nothing), then `IMAGE demo` on free ports with
host networking (loopback only). A message sent with smtplib reaches the sandbox inside the container, the
HEALTHCHECK passes, and SIGTERM ends the container with status 0 well within `podman stop`'s grace.

Where podman cannot run (no podman, not root for debootstrap, no mirror), the test skips with the reason;
`.ci/run` prints it. The base image's root filesystem and the dependency wheels are cached in
M365RELAY_CI_CACHE (default /var/cache/m365relay-ci), outside the clone, so only the first run on a
machine pays for debootstrap and for resolving the dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

ROOT = Path(__file__).parents[2]
BASE_IMAGE = "localhost/m365relay-base:bookworm"
IMAGE = "localhost/m365relay:ci"
GRACE = 90  # seconds `podman stop` would wait before SIGKILL; the drain takes a few
WAIT = 120.0
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


STATUS = ROOT / "test-artifacts" / "container-smoke.txt"  # .ci/run prints it after the suite


def cache_dir() -> Path:
    return Path(os.environ.get("M365RELAY_CI_CACHE", "/var/cache/m365relay-ci"))


def wheel_cache() -> str:
    """Dependency wheels kept between runs next to the base image (an empty value: no cache)."""
    folder = cache_dir() / "wheels"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ""
    return str(folder) if os.access(folder, os.W_OK) else ""


def report(line: str) -> None:
    STATUS.parent.mkdir(exist_ok=True)
    STATUS.write_text(line + "\n")


def skip(reason: str) -> NoReturn:
    report(f"skipped: {reason}")
    pytest.skip(reason)


class Podman:
    """podman as it works on these machines: runc, cgroupfs, file events, explicit ulimits."""

    def __init__(self, executable: str, conf: Path) -> None:
        self.executable = executable
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        self.ulimits = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=32768:32768"]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.executable, *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and done.returncode != 0:
            pytest.fail(f"podman {' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done


def write_containers_conf(path: Path) -> Path:
    path.write_text(
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    report("failed or interrupted (see the pytest report)")
    executable = shutil.which("podman")
    if executable is None:
        skip("podman is not installed (apt-get install podman runc debootstrap)")
    tool = Podman(executable, write_containers_conf(tmp_path_factory.mktemp("podman") / "containers.conf"))
    info = tool.run("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=120, check=False)
    if info.returncode != 0:
        skip(f"podman cannot run here: {(info.stderr or info.stdout).strip()[-300:]}")
    return tool


@pytest.fixture(scope="module")
def timings() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def base_image(podman: Podman, timings: dict[str, str]) -> str:
    if podman.run("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        timings["base"] = "base image present"
        return BASE_IMAGE
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        skip("the base image is made with debootstrap, which needs root and the debootstrap package")
    script = ROOT / "contrib" / "container" / "make-base-image"
    started = time.monotonic()
    done = subprocess.run(
        [str(script), BASE_IMAGE, str(cache_dir())], capture_output=True, text=True, timeout=900, env=podman.env
    )
    if done.returncode != 0:
        skip(f"could not make the base image with debootstrap: {done.stderr.strip()[-300:]}")
    timings["base"] = f"base image made in {time.monotonic() - started:.0f} s (cache {cache_dir()})"
    return BASE_IMAGE


@pytest.fixture(scope="module")
def image(podman: Podman, base_image: str, timings: dict[str, str]) -> str:
    previous = podman.run("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    # --network none: the build itself cannot download anything; the wheels come from this host.
    script = ROOT / "contrib" / "container" / "build-image"
    args = [IMAGE, "--build-arg", f"BASE_IMAGE={base_image}", "--network", "none", "--pull=never", *podman.ulimits]
    started = time.monotonic()
    done = subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=900,
        env={**podman.env, "PYTHON": sys.executable, "PODMAN": podman.executable, "WHEEL_CACHE": wheel_cache()},
    )  # fmt: skip
    assert done.returncode == 0, f"image build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    timings["image"] = f"image built in {time.monotonic() - started:.0f} s"
    if previous:  # the last run's image, now untagged: free its space (its cached layers stay)
        podman.run("rmi", previous, check=False)
    return IMAGE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def container(podman: Podman, image: str, tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    data = tmp_path / "data"
    data.mkdir()
    name = f"m365relay-ci-{uuid.uuid4().hex[:8]}"
    http, smtp, sandbox = free_port(), free_port(), free_port()
    podman.run(
        "run", "--detach", "--name", name, "--network", "host", *podman.ulimits,
        "--volume", f"{data}:/data:U", "--env", f"M365RELAY_HTTP_PORT={http}",  # the health check reads it
        image, "demo", "--http-port", str(http), "--smtp-port", str(smtp), "--sandbox-port", str(sandbox),
    )  # fmt: skip
    try:
        yield name, data, http
    finally:
        podman.run("rm", "--force", "--time", "0", name, check=False, timeout=120)


def wait_for_info(podman: Podman, name: str, data: Path) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            loaded: dict[str, Any] = json.loads((data / "demo.json").read_text())
            return loaded
        except (OSError, ValueError):
            pass
        state = podman.run("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        if state not in ("created", "running", "configured", "initialized"):
            pytest.fail(f"the container is {state}:\n{podman.run('logs', name, check=False).stderr}")
        time.sleep(0.5)
    pytest.fail(f"no demo.json within {WAIT} s:\n{podman.run('logs', name, check=False).stderr}")


def wait_for_subject(info: dict[str, Any], ca_file: Path, subject: str) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + WAIT
    with httpx.Client(base_url=info["sandbox_url"], verify=context, timeout=10) as sandbox:
        while time.monotonic() < deadline:
            for message in sandbox.get("/_sandbox/messages").raise_for_status().json():
                if message["subject"] == subject:
                    found: dict[str, Any] = message
                    return found
            time.sleep(0.3)
    pytest.fail(f"{subject!r} did not reach the sandbox in the container within {WAIT} s")


def test_image_runs_the_demo_delivers_and_stops_cleanly(
    podman: Podman, container: tuple[str, Path, int], timings: dict[str, str]
) -> None:
    name, data, _ = container
    config = json.loads(podman.run("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] == "10001:10001" and "/data" in config["Volumes"]
    assert config["Entrypoint"][-1] == "m365relay" and config["Cmd"] == ["serve"]
    assert set(config["ExposedPorts"]) == {"587/tcp", "8025/tcp"}
    assert "M365RELAY_SECRET_KEY" not in " ".join(config["Env"])

    info = wait_for_info(podman, name, data)
    with smtplib.SMTP(info["smtp_host"], info["smtp_port"], timeout=30) as client:
        client.login(info["smtp_user"], info["smtp_password"])
        body = "From: app@example.com\r\nTo: someone@example.com\r\nSubject: from the container\r\n\r\nHi.\r\n"
        assert client.sendmail("app@example.com", ["someone@example.com"], body) == {}
    captured = wait_for_subject(info, data / "sandbox" / "ca.pem", "from the container")
    assert captured["to"] == ["someone@example.com"]

    # The image's HEALTHCHECK (/readyz), run the way podman's timer would run it.
    deadline = time.monotonic() + WAIT
    while (health := podman.run("healthcheck", "run", name, check=False)).returncode != 0:
        assert time.monotonic() < deadline, f"unhealthy: {health.stdout} {health.stderr}"
        time.sleep(1)

    # SIGTERM reaches m365relay through tini; it drains and exits 0 before podman's grace would run out.
    podman.run("kill", "--signal", "TERM", name)
    stopping = time.monotonic()
    waited = podman.run("wait", name, timeout=GRACE)
    stopped = time.monotonic() - stopping
    assert waited.stdout.strip() == "0", podman.run("logs", name, check=False).stderr
    logs = podman.run("logs", name)
    assert "demo stopped" in logs.stdout and "Traceback" not in logs.stdout + logs.stderr
    owner = (data / "m365relay.db").stat()
    assert owner.st_uid != 0  # written by the image's unprivileged user (the :U volume maps it here)
    steps = f"{timings.get('base')}; {timings.get('image')}"
    report(f"passed ({steps}; the demo delivered; SIGTERM → exit 0 after {stopped:.1f} s)")


def test_serve_as_the_unprivileged_user_explains_port_587(podman: Podman, image: str) -> None:
    """The image runs as uid 10001; podman (unlike Docker) keeps ports below 1024 privileged, so the
    default SMTP port 587 needs the sysctl — and the error says so instead of a bare 'permission denied'."""
    done = podman.run("run", "--rm", "--network", "none", *podman.ulimits, image, "serve", check=False, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode not in (0, 137), output
    assert "cannot listen on 0.0.0.0:587" in output and "ip_unprivileged_port_start=587" in output, output
