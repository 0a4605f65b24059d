"""systemd's readiness protocol (sd_notify(3)), the few lines ``serve`` needs for ``Type=notify``.

systemd passes the address of a datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` for the Linux
abstract namespace); ``READY=1`` tells it that start-up finished, ``STOPPING=1`` that shutdown began,
``STATUS=…`` is shown by ``systemctl status``. Without the variable (not started by systemd) nothing is sent.
A notification that cannot be delivered is logged, never fatal: the relay works the same without it.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("m365relay.serve")


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address or None

    def notify(self, *fields: str) -> bool:
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            log.warning("could not notify systemd at NOTIFY_SOCKET: %s", exc.strerror or exc)
            return False
        return True
