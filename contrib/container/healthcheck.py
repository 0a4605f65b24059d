"""The container's HEALTHCHECK: exit 0 when /readyz answers 200, 1 otherwise.

The HTTP address comes from the same settings the relay reads (M365RELAY_* variables, M365RELAY_CONFIG), so
it follows a changed port. A wildcard listen address is checked over loopback. Only the standard library and
m365relay's own settings are used; the reply's reasons are printed for `podman healthcheck run` / inspect.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from m365relay.errors import ValidationError
from m365relay.settings import load_settings

WILDCARDS = {"0.0.0.0", "::", ""}  # noqa: S104 - listen addresses compared, nothing is bound


def main() -> int:
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"settings: {exc}")
        return 1
    host = "127.0.0.1" if settings.http_host in WILDCARDS else settings.http_host
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.http_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=8) as reply:
            print(reply.read(500).decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read(500).decode(errors='replace')}")
    except OSError as exc:
        print(f"{url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
