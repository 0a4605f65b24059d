"""contrib/systemd/m365relay.service: systemd accepts it without a single warning (``systemd-analyze
verify``, with and without the low-port drop-in), and it says what docs/operations.md promises — the
hardening directives, Type=notify (which serve implements: tests/deploy/test_serve_process.py), no
capabilities unless the drop-in adds CAP_NET_BIND_SERVICE, and only settings that exist."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from m365relay.settings import Settings

SYSTEMD = Path(__file__).parents[2] / "contrib" / "systemd"
UNIT = SYSTEMD / "m365relay.service"
DROP_IN = SYSTEMD / "low-port.conf"


def parse(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd's unit syntax (systemd.syntax(7)): [Section], Key=Value lines, # and ; comments. Keys may
    repeat, so each section is a list of pairs. A line that is neither is an error here."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and key.strip().isidentifier(), f"{path.name}:{number}: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def test_unit_declares_the_promised_service() -> None:
    unit = parse(UNIT)
    service = dict(unit["Service"])
    expected = {
        "Type": "notify",
        "User": "m365relay",
        "StateDirectory": "m365relay",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert service["ExecStart"].split()[1:] == ["serve"]
    # No capability at all in the unit itself; the drop-in adds exactly one.
    assert values(unit["Service"], "CapabilityBoundingSet") == [""]
    assert values(unit["Service"], "AmbientCapabilities") == [""]
    drop_in = dict(parse(DROP_IN)["Service"])
    assert drop_in == {"CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "AmbientCapabilities": "CAP_NET_BIND_SERVICE"}
    assert unit["Install"] == [("WantedBy", "multi-user.target")]


def test_unit_names_only_real_settings() -> None:
    for assignment in values(parse(UNIT)["Service"], "Environment"):
        name = assignment.partition("=")[0]
        assert name.startswith("M365RELAY_")
        assert name[len("M365RELAY_") :].lower() in Settings.model_fields, name


def test_the_state_directory_is_the_home() -> None:
    environment = dict(v.partition("=")[::2] for v in values(parse(UNIT)["Service"], "Environment"))
    assert environment["M365RELAY_HOME"] == "/var/lib/" + dict(parse(UNIT)["Service"])["StateDirectory"]


@pytest.mark.parametrize("with_drop_in", [False, True], ids=["unit", "unit+low-port"])
def test_systemd_analyze_verify_accepts_it(tmp_path: Path, with_drop_in: bool) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the parser test above still checks the unit")
    # verify checks that ExecStart is executable: point it at this environment's m365relay.
    executable = Path(sys.executable).with_name("m365relay")
    assert executable.exists()
    text = UNIT.read_text().replace("/opt/m365relay/bin/m365relay", str(executable))
    (tmp_path / "m365relay.service").write_text(text)
    if with_drop_in:
        (tmp_path / "m365relay.service.d").mkdir()
        shutil.copy(DROP_IN, tmp_path / "m365relay.service.d" / "low-port.conf")
    # By name, found through SYSTEMD_UNIT_PATH: only then does systemd read the unit's drop-in directory.
    done = subprocess.run(
        [analyze, "verify", "m365relay.service"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_LOG_LEVEL": "notice"},
    )  # fmt: skip
    # Unknown keys and unparsable values are warnings with status 0: any output at all is a failure.
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "m365relay" in line or "low-port" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
