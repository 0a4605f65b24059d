"""The data directory (``M365RELAY_HOME``) and the files in it are private to the user the relay runs as.

The SQLite database holds message bodies (password-reset links, invoices) and argon2 hashes; the key file
decrypts every stored client secret. So the directory is created 0700 and every file the relay creates in it
0600 — set explicitly with chmod, because the process umask (often 022) would otherwise decide. SQLite
creates ``-wal`` and ``-shm`` with the mode of the database file, so a 0600 database gives 0600 companions.

A home that already exists is not changed behind the administrator's back (a group may share it on
purpose); ``loose_permissions`` lists what others can read, for a warning at start and a doctor finding.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def prepare_home(home: Path) -> list[str]:
    """Create ``home`` (0700) if missing; the permission problems of an existing one (see below)."""
    if not home.exists():
        home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.chmod(home, PRIVATE_DIR)
        return []
    return loose_permissions(home)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists and only its owner may read or write it (creating it empty if needed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def private_sqlite(database: Path) -> None:
    """The database file (created 0600 before SQLite opens it) and any companions a run left behind."""
    if not database.parent.exists():
        database.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.chmod(database.parent, PRIVATE_DIR)
    private_file(database)
    for suffix in SQLITE_COMPANIONS:
        companion = database.with_name(database.name + suffix)
        try:
            if companion.stat().st_uid == os.geteuid():
                os.chmod(companion, PRIVATE_FILE)
        except FileNotFoundError:
            pass


def loose_permissions(home: Path) -> list[str]:
    """What in ``home`` (the directory, its files and the files of its subdirectories) other users may read,
    write or enter; one sentence each, most important first."""
    problems: list[str] = []
    try:
        mode = stat.S_IMODE(home.stat().st_mode)
    except OSError:
        return problems
    if mode & 0o077:
        problems.append(f"the data directory {home} has mode {mode:04o}; other users may enter it (want 0700)")
    loose = []
    for path in _entries(home):
        try:
            entry_mode = stat.S_IMODE(path.lstat().st_mode)
        except OSError:
            continue
        if path.is_symlink():
            continue
        if entry_mode & 0o077:
            loose.append(f"{path.relative_to(home)} ({entry_mode:04o})")
    if loose:
        problems.append(f"files other users may read in {home}: {', '.join(sorted(loose)[:10])} (want 0600/0700)")
    return problems


def _entries(home: Path) -> list[Path]:
    found: list[Path] = []
    for child in home.iterdir():
        found.append(child)
        if child.is_dir() and not child.is_symlink():
            found.extend(child.iterdir())
    return found


def remedy(home: Path) -> str:
    return f"chmod 700 {home} && chmod -R go-rwx {home} (and run the relay as its own user)"
