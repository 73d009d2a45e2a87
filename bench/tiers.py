"""Tiers: one bundle to 12 edges directly, then to 12 edges through 3 parents (4 each), in one run.

Prints, for each way, the bytes that left the Distribution service, counted twice for real:
by a counting TCP proxy in front of every edge the service pushes to (the 12 edges, then the 3
parents), and by the service's own ``distribution_sent_bytes_total`` counter (which would also
count a direct push to a child, if a relay fell back to one); each with its ratio to the bundle
size (the aim: 12x direct, 3x through parents), and the wall time from the distribution
request to the last edge verified. The two bundles are different random bytes of the same
size, so neither finds blobs the other left.

    python bench/tiers.py [--mib 64] [--files 4] [--timeout 900]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from common import BenchError, run_bench  # bench/ is no package: its folder is the script's, on sys.path
from download import start_node

from devstack import rest, wiring
from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess

V1 = "/distribution/api/v1"
EDGES = 12
PARENTS = 3
SENT = re.compile(r'^distribution_sent_bytes_total\{edge="([^"]+)"\} ([0-9.e+]+)$', re.M)


class CountingProxy:
    """A TCP forwarder on 127.0.0.1 that counts the bytes clients send through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.received = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # stopped with the proxy: ends quietly rather than as a cancelled task of a closed loop
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await self._forward(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counted: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await src.read(256 * 1024):
                    if counted:
                        self.received += len(chunk)
                    dst.write(chunk)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


class Run:
    def __init__(self, stack: contextlib.ExitStack, tmp: Path, mib: int, files: int, timeout: float) -> None:
        self.stack, self.tmp, self.timeout = stack, tmp, timeout
        self.size, self.files = mib * 1024 * 1024, files
        self.service = start_node(stack, DistributionProcess(tmp / "dist"))
        self.key = wiring.public_key(self.service.url)

    def call(self, method: str, path: str, body: object = None) -> object:
        return rest.expect((200, 201, 202, 204), method, self.service.url + path, self.service.admin_token, body)

    def edge(self, name: str) -> tuple[EdgeProcess, str]:
        """An edge trusting the service, and a distributor token it issued."""
        edge = start_node(self.stack, EdgeProcess(self.tmp / name))
        target = wiring.EdgeTarget(name, edge.url, edge.admin_token, "s", "c", "US")
        wiring.trust_key(target, self.key)
        return edge, wiring.distributor_token(target, wiring.State(None))

    def counted(self, edge: EdgeProcess) -> CountingProxy:
        proxy = CountingProxy(int(edge.url.rsplit(":", 1)[1])).start()
        self.stack.callback(proxy.stop)
        return proxy

    def register(self, name: str, url: str, token: str, site: str, parent: str | None = None) -> None:
        body = {"name": name, "url": url, "site_name": site, "city_name": "c", "country_code": "US", "token": token}
        self.call("POST", f"{V1}/edges", body | ({"parent": parent} if parent else {}))

    def bundle(self, version: str) -> None:
        part = self.size // self.files
        for i in range(self.files):
            data = os.urandom(part if i < self.files - 1 else self.size - part * (self.files - 1))
            url = f"{self.service.url}/artifactory/{SOURCE_REPO}/app/{version}/part-{i}.bin"
            rest.expect((201,), "PUT", url, self.service.admin_token, data=data, timeout=300)
        spec = {"queries": [{"pattern": f"{SOURCE_REPO}/app/{version}/*"}]}
        body = {"name": "app", "version": version, "spec": spec, "sign_immediately": True}
        self.call("POST", f"{V1}/release_bundle", body)

    def sent_by_service(self) -> int:
        _, text = rest.request("GET", self.service.url + "/metrics", self.service.admin_token)
        text = text.decode() if isinstance(text, bytes) else str(text)
        return int(sum(float(v) for _, v in SENT.findall(text)))

    def distribute(self, version: str, site: str) -> float:
        rules = [{"site_name": site, "city_name": "*", "country_codes": ["*"]}]
        started = time.monotonic()
        answer = self.call("POST", f"{V1}/distribution/app/{version}", {"distribution_rules": rules})
        dist_id = answer["id"]  # type: ignore[index]
        while True:
            status = self.call("GET", f"{V1}/release_bundle/app/{version}/distribution/{dist_id}")
            if status["status"] in ("Completed", "Failed"):  # type: ignore[index]
                break
            if time.monotonic() - started > self.timeout:
                raise BenchError(f"distribution of {version} did not finish in {self.timeout:.0f} s")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        failed = [s for s in status["sites"] if s["status"] != "Completed"]  # type: ignore[index]
        if failed:
            raise BenchError(f"{version}: {len(failed)} edges failed, e.g. {failed[0]['general_error']}")
        return elapsed

    def report(self, label: str, proxies: list[CountingProxy], service_before: int, seconds: float) -> None:
        through_proxies = sum(p.received for p in proxies)
        by_service = self.sent_by_service() - service_before
        print(
            f"{label:<28} proxies {through_proxies / 2**20:8.1f} MiB ({through_proxies / self.size:5.2f}x)"
            f"  service counter {by_service / 2**20:8.1f} MiB ({by_service / self.size:5.2f}x)  {seconds:6.1f} s"
        )


def bench(mib: int, files: int, timeout: float) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tiers-")))
        run = Run(stack, tmp, mib, files, timeout)
        leaves = [run.edge(f"leaf-{i + 1}") for i in range(EDGES)]
        direct = [run.counted(edge) for edge, _ in leaves]
        for i, ((_, token), proxy) in enumerate(zip(leaves, direct, strict=True)):
            run.register(f"leaf-{i + 1}", proxy.url, token, "direct")
        print(f"bundle: {mib} MiB in {files} files; {EDGES} edges, then the same {EDGES} through {PARENTS} parents")
        run.bundle("1.0")
        before = run.sent_by_service()
        run.report(f"direct to {EDGES} edges", direct, before, run.distribute("1.0", "direct"))

        # the same 12 edges, registered again under 3 parents (4 each), by their own URLs
        parents = [run.edge(f"parent-{p + 1}") for p in range(PARENTS)]
        via = [run.counted(edge) for edge, _ in parents]
        for p, ((_, token), proxy) in enumerate(zip(parents, via, strict=True)):
            run.register(f"parent-{p + 1}", proxy.url, token, "region")
        for i, (edge, token) in enumerate(leaves):
            run.call("DELETE", f"{V1}/edges/leaf-{i + 1}")
            run.register(f"leaf-{i + 1}", edge.url, token, "leaf", parent=f"parent-{i % PARENTS + 1}")
        run.bundle("2.0")
        before = run.sent_by_service()
        label = f"via {PARENTS} parents to {EDGES}"
        run.report(label, via, before, run.distribute("2.0", "leaf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="bundle size in MiB")
    parser.add_argument("--files", type=int, default=4, help="files in the bundle")
    parser.add_argument("--timeout", type=float, default=900, help="seconds each distribution may take")
    args = parser.parse_args()
    run_bench(lambda: bench(args.mib, args.files, args.timeout), (rest.CallFailed,), overall_timeout=1800)


if __name__ == "__main__":
    main()
