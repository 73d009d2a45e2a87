"""``node-agent``: enroll a device, run the agent, show what it runs.

Plain ``argparse``: the agent installs on a device with the standard library, the
wire contract and psutil only.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from wire.errors import WireError

from .apps import AppRegistry
from .enroll import AlreadyEnrolled, enroll
from .http import Http, Refused, ServerUnavailable
from .identity import NotEnrolled, load_identity
from .loop import Agent, last_check_in
from .settings import AgentSettings, SettingError, load_settings

log = logging.getLogger("agent")


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"a tag is key=value, not {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="node-agent", description="enroll a device, run the agent, show what it runs")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, required=True, help="where the agent keeps its identity and state")
    common.add_argument("--ca-file", help="PEM file of CAs for TLS (default: the system store)")
    common.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    e = sub.add_parser("enroll", parents=[common], help="enroll this device with an enrollment token")
    e.add_argument("--server", required=True, help="the control plane's base URL")
    e.add_argument("--token", required=True, help="the enrollment token")
    e.add_argument("--name", required=True, help="this device's name")
    e.add_argument("--tag", type=_tag, action="append", default=[], help="key=value (repeatable)")
    r = sub.add_parser("run", parents=[common], help="check in, update, report; runs until stopped")
    r.add_argument("--bandwidth-limit", type=int, help="download cap in bytes per second (0: none)")
    r.add_argument("--jitter", type=float, help="fraction of the poll interval to vary each wait by")
    r.add_argument("--max-backoff", type=int, help="longest wait in seconds between retries")
    r.add_argument("--install-root", help="install every app under this directory (several agents on one host)")
    sub.add_parser("status", parents=[common], help="print this device's identity and installed apps")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = {"ca_file": args.ca_file}
    if args.command == "run":
        flags |= {"bandwidth_limit": args.bandwidth_limit, "jitter": args.jitter, "max_backoff": args.max_backoff}
        flags |= {"install_root": args.install_root}
    try:
        settings = load_settings(args.data_dir, flags)
        return COMMANDS[args.command](args, settings)
    except (SettingError, NotEnrolled, AlreadyEnrolled, WireError) as exc:
        print(f"node-agent: {exc}", file=sys.stderr)
        return 2


def _enroll(args: argparse.Namespace, settings: AgentSettings) -> int:
    http = Http(settings.http_timeout, settings.ca_file)
    try:
        identity = enroll(http, args.server, args.token, args.name, dict(args.tag), settings.data_dir)
    except Refused as exc:
        print(f"node-agent: enrollment refused ({exc.status}): {exc.message}", file=sys.stderr)
        return 1
    except ServerUnavailable as exc:
        print(f"node-agent: the control plane cannot be reached: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled {identity.name} as device {identity.device_id} in group {identity.group} at {identity.server}")
    print(
        f"identity: {args.data_dir / 'identity.json'} (mode 0600); signing keys trusted: {settings.data_dir / 'gnupg'}"
    )
    return 0


def _run(args: argparse.Namespace, settings: AgentSettings) -> int:
    stop = threading.Event()
    agent = Agent(settings, stop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("node-agent %s running as %s (%s)", agent.identity.name, agent.identity.device_id, agent.identity.server)
    return agent.run()


def _status(args: argparse.Namespace, settings: AgentSettings) -> int:
    identity = load_identity(settings.identity_path)
    print(f"device: {identity.name} ({identity.device_id}), group {identity.group}")
    print(f"server: {identity.server}, last check-in: {last_check_in(settings.data_dir)}")
    apps = AppRegistry(settings.data_dir).apps()
    if not apps:
        print("apps: none installed")
    for app in apps:
        print(f"app {app.name}: {app.version or '-'} (previous {app.previous or '-'}) in {app.install_dir}")
    return 0


COMMANDS = {"enroll": _enroll, "run": _run, "status": _status}
