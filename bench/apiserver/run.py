"""Benchmark of the embedded apiserver; prints ONE JSON document.

Measures, against a real `kubevisor apiserver` subprocess over HTTPS:
creates/s with 1 and 8 concurrent clients, watch events delivered/s to 100 watchers, list
latency at 10,000 objects (JSON and Table), server memory per 10,000 objects; and as a floor,
raw SQLite inserts/s with the same durability settings (WAL, synchronous=FULL, one
transaction per insert) in this process. `creates_per_s / sqlite_floor` is the ratio reported.

    .venv/bin/python bench/apiserver/run.py [--objects 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import machine  # noqa: E402

CM = "/api/v1/namespaces/default/configmaps"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sqlite_floor(directory: Path, count: int) -> dict[str, float]:
    conn = sqlite3.connect(str(directory / "floor.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE kine(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, created INTEGER, deleted "
        "INTEGER, create_revision INTEGER, prev_revision INTEGER, value BLOB)"
    )
    value = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "x" * 12,
                "namespace": "default",
                "uid": "0" * 36,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "data": {"i": "1"},
        }
    ).encode()
    start = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO kine(name, created, deleted, create_revision, prev_revision, value) "
            "VALUES (?, 1, 0, 0, 0, ?)",
            (f"/core/configmaps/default/f{i}", value),
        )
        conn.execute("COMMIT")
    single = count / (time.perf_counter() - start)
    conn.close()
    return {"inserts_per_s_one_per_txn": round(single, 1)}


class Bench:
    def __init__(self, data: Path, port: int) -> None:
        config = yaml.safe_load((data / "admin.kubeconfig").read_text())
        self.base = f"https://127.0.0.1:{port}"
        self.headers = {
            "Authorization": f"Bearer {config['users'][0]['user']['token']}",
            "Content-Type": "application/json",
        }
        self.ssl = ssl.create_default_context(cafile=str(data / "pki" / "ca.crt"))

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.base, headers=self.headers, connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0)
        )

    async def creates(self, prefix: str, total: int, clients: int) -> float:
        async with self.session() as session:

            async def worker(index: int) -> None:
                for i in range(index, total, clients):
                    async with session.post(
                        CM, json={"metadata": {"name": f"{prefix}-{i:05d}"}, "data": {"i": str(i)}}
                    ) as resp:
                        if resp.status != 201:
                            raise RuntimeError(f"create failed: {resp.status} {await resp.text()}")

            start = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(clients)))
            return total / (time.perf_counter() - start)

    async def watch_fanout(self, watchers: int, events: int) -> dict[str, float]:
        async with self.session() as session:
            async with session.get(CM, params={"limit": "1"}) as resp:
                rv = (await resp.json())["metadata"]["resourceVersion"]
            done = asyncio.Event()
            counts = [0] * watchers
            finished = 0

            async def watch(index: int) -> None:
                nonlocal finished
                async with session.get(
                    CM, params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "300"}
                ) as resp:
                    async for _line in resp.content:
                        counts[index] += 1
                        if counts[index] == events:
                            finished += 1
                            if finished == watchers:
                                done.set()
                            return

            tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
            await asyncio.sleep(1.0)
            start = time.perf_counter()
            await self.creates("w", events, 8)
            created = time.perf_counter()
            await asyncio.wait_for(done.wait(), 300)
            elapsed = time.perf_counter() - start
            for task in tasks:
                task.cancel()
            return {
                "watchers": watchers,
                "events_each": events,
                "delivered_events_per_s": round(watchers * events / elapsed, 1),
                "last_delivery_after_last_create_s": round(time.perf_counter() - created, 3),
            }

    async def list_latency(self, runs: int = 5) -> dict[str, float]:
        out: dict[str, float] = {}
        async with self.session() as session:
            for label, accept in (("json", "application/json"), ("table", TABLE)):
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    async with session.get(CM, headers={"Accept": accept}) as resp:
                        body = await resp.read()
                    times.append(time.perf_counter() - start)
                out[f"{label}_median_ms"] = round(statistics.median(times) * 1000, 1)
                out[f"{label}_bytes"] = len(body)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                async with session.get(CM, params={"limit": "500"}) as resp:
                    await resp.read()
                times.append(time.perf_counter() - start)
            out["page_500_median_ms"] = round(statistics.median(times) * 1000, 1)
        return out


async def run(objects: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kubevisor-bench-") as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevisor.cli",
                "apiserver",
                "--data-dir",
                str(data),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not (data / "admin.kubeconfig").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            bench = Bench(data, port)
            floor = sqlite_floor(Path(tmp), 2000)
            one = await bench.creates("one", 1000, 1)
            eight = await bench.creates("eight", 2000, 8)
            rss_before = rss_kib(proc.pid)
            fill = objects - 3000
            await bench.creates("fill", fill, 8)
            rss_after = rss_kib(proc.pid)
            lists = await bench.list_latency()
            fanout = await bench.watch_fanout(100, 200)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        floor_rate = floor["inserts_per_s_one_per_txn"]
        return {
            "benchmark": "apiserver",
            "machine": machine(),
            "creates_per_s": {"clients_1": round(one, 1), "clients_8": round(eight, 1)},
            "sqlite_floor": floor,
            "ratio_to_sqlite_floor": {
                "clients_1": round(one / floor_rate, 3),
                "clients_8": round(eight / floor_rate, 3),
            },
            "list_at_objects": objects,
            "list_latency": lists,
            "memory": {
                "rss_kib_delta": rss_after - rss_before,
                "objects": fill,
                "kib_per_10000_objects": round((rss_after - rss_before) * 10000 / fill),
                "rss_kib_total": rss_after,
            },
            "watch": fanout,
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.objects)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
