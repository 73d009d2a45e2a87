"""``python -m devstack.healthcheck [BASE_URL]``: exit 0 when the service answers its ping, else 1.

The container health check of both services (an edge by default, on port 8082).
"""

from __future__ import annotations

import sys

from . import rest
from .processes import PING

DEFAULT_URL = "http://127.0.0.1:8082"


def healthy(base_url: str, timeout: float = 4.0) -> bool:
    try:
        status, body = rest.request("GET", base_url.rstrip("/") + PING, timeout=timeout)
    except rest.CallFailed:
        return False
    return status == 200 and body == b"OK"


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    url = argv[0] if argv else DEFAULT_URL
    if healthy(url):
        return 0
    print(f"{url}{PING} does not answer OK", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
