"""``m365relay relay-user`` and ``m365relay admin``: passwords never echoed, except a generated one, once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from m365relay.access.admins import AdminStore
from m365relay.access.relay_users import RelayUserStore
from m365relay.runtime import Runtime
from m365relay.settings import load_settings


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "M365RELAY_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "m365relay", *args], input=stdin, text=True, capture_output=True, env=env, timeout=60
    )


def generated_password(output: str) -> str:
    found = re.findall(r"password: (\S+)", output)
    assert len(found) == 1, output
    return found[0]


def open_runtime(home: Path) -> Runtime:
    return Runtime(load_settings(environ={}, home=home))


def test_relay_user_add_ls_passwd_rm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    added = cli(
        home, "relay-user", "add", "Scanner", "--allow-from", "scan@example.com", "--allow-from", "@ops.example.com"
    )
    assert added.returncode == 0, added.stderr
    password = generated_password(added.stdout)
    assert "shown once" in added.stdout

    given = "a password from stdin 1"
    piped = cli(home, "relay-user", "add", "printer", "--password-stdin", stdin=given + "\n")
    assert piped.returncode == 0, piped.stderr
    assert given not in piped.stdout + piped.stderr and "password:" not in piped.stdout

    listed = cli(home, "relay-user", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["username"]: row for row in json.loads(listed.stdout)}
    assert rows["scanner"]["allowed_from"] == ["scan@example.com", "@ops.example.com"]
    assert rows["printer"]["connector"] == "default" and rows["printer"]["last_used_at"] is None
    table = cli(home, "relay-user", "ls")
    assert "scanner" in table.stdout and "printer" in table.stdout
    for secret in (password, given):
        assert secret not in listed.stdout + table.stdout

    runtime = open_runtime(home)
    try:
        users = RelayUserStore(runtime.db)
        assert users.authenticate("scanner", password) is not None
        assert users.authenticate("printer", given) is not None
        reset = cli(home, "relay-user", "passwd", "scanner")
        assert reset.returncode == 0, reset.stderr
        assert users.authenticate("scanner", generated_password(reset.stdout)) is not None
    finally:
        runtime.close()

    removed = cli(home, "relay-user", "rm", "scanner")
    assert removed.returncode == 0 and "removed" in removed.stdout
    again = cli(home, "relay-user", "rm", "scanner")
    assert again.returncode != 0 and "no relay user 'scanner'" in again.stderr
    assert "Traceback" not in again.stderr


def test_relay_user_add_refuses_bad_input_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    short = cli(home, "relay-user", "add", "app", "--password-stdin", stdin="short\n")
    assert short.returncode == 65 and "at least 12" in short.stderr and "short\n" not in short.stderr
    bad_from = cli(home, "relay-user", "add", "app", "--allow-from", "nonsense")
    assert bad_from.returncode == 65 and "nonsense" in bad_from.stderr
    no_connector = cli(home, "relay-user", "add", "app", "--connector", "missing")
    assert no_connector.returncode == 65 and "no connector 'missing'" in no_connector.stderr
    assert json.loads(cli(home, "relay-user", "ls", "--json").stdout) == []


def test_admin_create_user(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = cli(home, "admin", "create-user")
    assert created.returncode == 0, created.stderr
    password = generated_password(created.stdout)
    duplicate = cli(home, "admin", "create-user", "admin", "--password-stdin", stdin="another password 1\n")
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    piped = cli(home, "admin", "create-user", "ops", "--password-stdin", stdin="ops password 12345\n")
    assert piped.returncode == 0 and "ops password 12345" not in piped.stdout
    runtime = open_runtime(home)
    try:
        admins = AdminStore(runtime.db)
        assert admins.verify("admin", password) is not None
        assert admins.verify("ops", "ops password 12345") is not None
    finally:
        runtime.close()
    listed = cli(home, "admin", "ls")
    assert "admin" in listed.stdout and "ops" in listed.stdout and password not in listed.stdout
