"""Issue 13, item 4: the data directory is 0700 and every file the relay creates in it 0600, whatever the
umask; a home others can read is reported at start and by the doctor."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from m365relay.doctor.config import check_config
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update, make_settings


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a careless shell: files 0644, directories 0755 unless the relay sets them."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_and_everything_the_relay_writes_there_is_private(
    tmp_path: Path, sandbox: SandboxServer, open_umask: None
) -> None:
    home = tmp_path / "fresh" / "home"
    runtime = Runtime(make_settings(home))
    try:
        runtime.connectors.save("default", connector_update(sandbox))  # writes the key file and the database
        files = {p.name: mode(p) for p in home.iterdir() if p.is_file()}
        assert mode(home) == 0o700
        assert {"m365relay.db", "m365relay.db-wal", "m365relay.db-shm", "secret.key"} <= set(files), files
        assert {name: m for name, m in files.items() if m != 0o600} == {}
    finally:
        runtime.close()


def test_an_existing_database_left_readable_is_made_private(tmp_path: Path, open_umask: None) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    for name in ("m365relay.db", "m365relay.db-wal"):
        (home / name).touch(mode=0o644)
    os.chmod(home / "m365relay.db", 0o644)
    Runtime(make_settings(home)).close()
    assert mode(home / "m365relay.db") == 0o600


def test_a_readable_home_gets_a_warning_at_start_and_from_the_doctor(
    tmp_path: Path, sandbox: SandboxServer, open_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "shared-home"
    home.mkdir()
    os.chmod(home, 0o755)
    (home / "notes.txt").write_text("left by someone")
    os.chmod(home / "notes.txt", 0o644)
    with caplog.at_level(logging.WARNING, logger="m365relay.runtime"):
        runtime = Runtime(make_settings(home))
    try:
        warned = [r.getMessage() for r in caplog.records if r.name == "m365relay.runtime"]
        assert any("mode 0755" in m and "chmod 700" in m for m in warned), warned
        assert mode(home) == 0o755  # an existing home is reported, not changed behind the admin's back
        connector = runtime.connectors.save("default", connector_update(sandbox))
        outcome = check_config(connector, home).result
        assert outcome.status == "warn"
        assert "mode 0755" in outcome.detail and "notes.txt (0644)" in outcome.detail
        assert "chmod 700" in outcome.remedy
        os.chmod(home, 0o700)
        os.chmod(home / "notes.txt", 0o600)
        assert check_config(connector, home).result.status == "pass"
    finally:
        runtime.close()
