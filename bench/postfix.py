"""A throwaway Postfix instance with a real queue: the SMTP ingest baseline.

Postfix's ``smtpd`` hands each message to ``cleanup``, which writes the queue file and fsyncs it before the
client gets ``250`` — the same promise m365relay makes (250 only after a durable commit). The instance below
puts every message on hold (``smtpd_end_of_data_restrictions = check_client_access static:HOLD``), so nothing
is ever delivered and the queue only grows; it listens on one loopback port and logs to a file of its own.
It touches nothing of the machine's own Postfix (``/etc/postfix`` is only read for the daemon programs'
paths): ``postfix -c DIR start`` with the configuration, queue and data directories in a temporary folder.

Needs Debian's ``postfix`` package and root (Postfix's master drops to the ``postfix`` user itself).
Nothing is installed from here: without it the caller reports "skipped: install postfix".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"

# master.cf: the loopback listener plus the internal services a real queue needs (pickup, cleanup, qmgr …).
_SERVICES = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available() -> str | None:
    """Why the baseline cannot run here, or None when it can."""
    if not Path(POSTFIX).exists():
        return "skipped: install postfix (apt-get install postfix)"
    if os.geteuid() != 0:
        return "skipped: a throwaway Postfix instance needs root"
    return None


def _main_cf(top: Path) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {top / "queue"}
data_directory = {top / "data"}
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# Every message is kept on hold: written and fsynced by cleanup, never delivered.
smtpd_end_of_data_restrictions = check_client_access static:HOLD
# Load generators connect as fast as they can; anvil must not slow them down.
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 200
maillog_file_prefixes = {top}
maillog_file = {top / "maillog"}
"""


@contextlib.contextmanager
def postfix_server(port: int) -> Iterator[Path]:
    """Start a held-queue Postfix on 127.0.0.1:port; yields its queue directory; stops and removes it after."""
    top = Path(tempfile.mkdtemp(prefix="bench-postfix-"))
    os.chmod(top, 0o755)  # the postfix user must reach its queue and data directories
    conf = top / "conf"
    for sub in ("conf", "queue", "data"):
        (top / sub).mkdir()
    shutil.chown(top / "data", "postfix", "postfix")
    (conf / "main.cf").write_text(_main_cf(top))
    (conf / "master.cf").write_text(_SERVICES.format(listen=f"127.0.0.1:{port}"))
    try:
        done = subprocess.run([POSTFIX, "-c", str(conf), "start"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = (top / "maillog").read_text(errors="replace")[-1500:] if (top / "maillog").exists() else ""
            raise RuntimeError(f"postfix did not start: {done.stderr.strip()} {log}")
        yield top / "queue"
    finally:
        subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(top, ignore_errors=True)


def held(queue: Path) -> int:
    """How many messages the instance holds (each one a queue file that cleanup fsynced)."""
    return sum(1 for p in (queue / "hold").rglob("*") if p.is_file())
