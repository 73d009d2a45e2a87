"""A webhook receiver as a real process, for tests that need one: it checks each delivery the
way the README tells receivers to (HMAC-SHA256 over ``timestamp + "." + body`` with the
subscription's secret, a timestamp within five minutes), answers, and records what it got.

Run by ``WebhookReceiver`` as ``python -m tests.webhook_receiver``. Modes: ``--fail-first N``
answers 500 to the first N deliveries (then 200), ``--hang`` never answers a delivery.
It verifies with plain ``hmac``, not the service's own module, so the recipe is what is tested.

    with WebhookReceiver(tmp_path / "receiver", SECRET) as receiver:
        ...subscribe receiver.url...
        receiver.wait_for(lambda got: len(got) >= 3)
        assert [d.type for d in receiver.delivered()] == [...]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[1]
WINDOW = 300
KEPT_HEADERS = ("x-webhook", "content-type")


def verified(secret: str, headers: Any, body: bytes, now: float) -> str:
    """The README's recipe: '' when the delivery is genuine and fresh, else what is wrong."""
    timestamp = headers.get("X-Webhook-Timestamp", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > WINDOW:
        return "stale or missing timestamp"
    signed = timestamp.encode() + b"." + body
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    given = headers.get("X-Webhook-Signature", "").split()
    if not any(hmac.compare_digest(expected, g) for g in given):
        return "bad signature"
    return ""


def receiver_app(secret: str, record: Path, fail_first: int, hang: bool) -> web.Application:
    failures = {"left": fail_first}

    def write(entry: dict[str, Any]) -> None:
        with record.open("a") as out:
            out.write(json.dumps(entry) + "\n")

    async def ping(_request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        problem = verified(secret, request.headers, body, time.time())
        entry = {
            "path": request.path,
            "headers": {k: v for k, v in request.headers.items() if k.lower().startswith(KEPT_HEADERS)},
            "body": body.decode("utf-8", "replace"),
            "problem": problem,
        }
        if hang:
            write(entry | {"answered": None})
            await asyncio.sleep(3600)
        status = 401 if problem else 200
        if not problem and failures["left"] > 0:
            failures["left"] -= 1
            status = 500
        write(entry | {"answered": status})
        return web.json_response({"ok": status == 200}, status=status)

    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_post("/{tail:.*}", deliver)
    return app


@dataclass(frozen=True)
class Received:
    """One delivery as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: str
    problem: str
    answered: int | None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    @property
    def data(self) -> dict[str, Any]:
        return self.payload["data"]  # type: ignore[no-any-return]


class WebhookReceiver:
    """The receiver process on a port of its own, kept across ``stop()``/``start()``."""

    def __init__(
        self, base_dir: Path, secret: str, *, fail_first: int = 0, hang: bool = False, port: int | None = None
    ) -> None:
        from devstack.processes import ServiceProcess, service_environment
        from devstack.services import HOST, free_port

        self.base_dir, self.secret = base_dir, secret
        self.record = base_dir / "received.jsonl"
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}/hooks"
        argv = [sys.executable, "-m", "tests.webhook_receiver", "--port", str(self.port), "--secret", secret]
        argv += ["--record", str(self.record), "--fail-first", str(fail_first)] + (["--hang"] if hang else [])
        env = service_environment({"PYTHONPATH": str(REPO_ROOT)})
        self.process = ServiceProcess(
            "webhook-receiver", argv, env, base_dir / "receiver.log", REPO_ROOT, probe="/ping", expect=b"OK"
        )
        self.process.url = f"http://{HOST}:{self.port}"

    def start(self) -> WebhookReceiver:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        self.process.wait_ready()
        return self

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait_stopped(time.monotonic() + 10)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def received(self) -> list[Received]:
        """Every request it got, in order of arrival."""
        if not self.record.exists():
            return []
        lines = self.record.read_text().splitlines()
        return [Received(**json.loads(line)) for line in lines if line.strip()]

    def delivered(self) -> list[Received]:
        """The deliveries it accepted (verified and answered 200), in order."""
        return [r for r in self.received() if r.answered == 200]

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 90) -> list[Received]:
        """Poll what it received until ``done`` holds; a hang guard, not a speed check."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if done(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver gave up waiting; it got {[(r.answered, r.body) for r in got]}")
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    app = receiver_app(args.secret, args.record, args.fail_first, args.hang)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
