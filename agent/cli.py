"""``node-agent``: enroll a device, then run the agent."""

from __future__ import annotations

import sys


def main() -> int:
    print("node-agent: not built yet", file=sys.stderr)
    return 2
