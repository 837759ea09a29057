"""Property tests (hypothesis) against the apiserver's HTTP surface, served in-process.

Each example gets a fresh server on a fresh SQLite file, driven over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevisor.apiserver.registry import Registry, WriteOptions
from kubevisor.apiserver.server import APIServer
from kubevisor.apiserver.storage import SQLiteStorage

AUTH = {"Authorization": "Bearer t"}
CM = "/api/v1/namespaces/default/configmaps"
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.asynccontextmanager
async def served(ring_size: int = 20000) -> AsyncIterator[tuple[TestClient[Any, Any], SQLiteStorage]]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(Path(tmp) / "state.db", ring_size=ring_size)
        await storage.start()
        registry = Registry(storage)
        ns = registry.lookup("", "v1", "namespaces")
        assert ns is not None
        await registry.create(ns, "", {"metadata": {"name": "default"}}, WriteOptions())
        api = APIServer(storage, registry, {"t": "admin"}, "127.0.0.1:0")
        api.ready = True
        client = TestClient(TestServer(api.app))
        await client.start_server()
        try:
            yield client, storage
        finally:
            await client.close()
            await storage.close()


async def call(
    client: TestClient[Any, Any], method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    data = json.dumps(body) if body is not None else None
    resp = await client.request(method, path, data=data, headers={**AUTH, "Content-Type": ctype})
    return resp.status, await resp.json()


NAMES = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.tuples(
        st.sampled_from(["create", "update", "patch", "delete", "label", "unlabel"]), NAMES, st.integers(0, 9)
    ),
    min_size=1,
    max_size=25,
)


async def apply_ops(client: TestClient[Any, Any], ops: list[tuple[str, str, int]]) -> list[int]:
    """Run the operations; return the resourceVersions of the successful writes, in order.

    A no-op update returns the object unchanged, with its old resourceVersion: not a write."""
    rvs = []
    known: dict[str, int] = {}
    for op, name, value in ops:
        if op == "create":
            status, body = await call(
                client,
                "POST",
                CM,
                {"metadata": {"name": name, "labels": {"sel": "yes"}}, "data": {"v": str(value)}},
            )
        elif op == "update":
            status, body = await call(client, "GET", f"{CM}/{name}")
            if status == 200:
                body["data"] = {"v": str(value)}
                status, body = await call(client, "PUT", f"{CM}/{name}", body)
        elif op == "patch":
            status, body = await call(
                client, "PATCH", f"{CM}/{name}", {"data": {"p": str(value)}}, "application/merge-patch+json"
            )
        elif op in ("label", "unlabel"):
            patch = {"metadata": {"labels": {"sel": "yes" if op == "label" else None}}}
            status, body = await call(client, "PATCH", f"{CM}/{name}", patch, "application/merge-patch+json")
        else:
            status, body = await call(client, "DELETE", f"{CM}/{name}")
        if status in (200, 201) and body.get("kind") == "ConfigMap":
            rv = int(body["metadata"]["resourceVersion"])
            if known.get(name) != rv:
                rvs.append(rv)
            known[name] = rv
        elif status == 200 and body.get("status") == "Success":
            rvs.append(-1)  # a delete: its revision is not in the Status
        else:
            assert status in (404, 409), (op, status, body)
    return rvs


async def watch_until(client: TestClient[Any, Any], query: str, until_rv: int) -> list[dict[str, Any]]:
    events = []
    if until_rv == 0:
        return events
    resp = await client.get(f"{CM}?watch=true&{query}&timeoutSeconds=10", headers=AUTH)
    async for line in resp.content:
        event = json.loads(line)
        events.append(event)
        if int(event["object"]["metadata"]["resourceVersion"]) >= until_rv:
            break
    resp.close()
    return events


def state_of(items: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    return {
        o["metadata"]["name"]: (o["metadata"]["resourceVersion"], o.get("data"), o["metadata"].get("labels"))
        for o in items
    }


@SETTINGS
@given(initial=OPS, ops=OPS, selector=st.booleans())
def test_list_then_watch_rebuilds_the_final_state(
    initial: list[tuple[str, str, int]], ops: list[tuple[str, str, int]], selector: bool
) -> None:
    async def scenario() -> None:
        async with served() as (client, storage):
            await apply_ops(client, initial)
            query = "labelSelector=sel%3Dyes" if selector else ""
            _, listed = await call(client, "GET", f"{CM}?{query}")
            state = {o["metadata"]["name"]: o for o in listed["items"]}
            start = int(listed["metadata"]["resourceVersion"])
            await apply_ops(client, ops)
            final_rev = storage.revision
            if final_rev > start:
                # the last write may not match the selector: read up to the last event this watch sees
                events = await asyncio.wait_for(
                    watch_until(
                        client, f"resourceVersion={start}&{query}", last_matching(storage, start, selector)
                    ),
                    30,
                )
                for event in events:
                    obj = event["object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        state[obj["metadata"]["name"]] = obj
                    elif event["type"] == "DELETED":
                        assert state.pop(obj["metadata"]["name"], None) is not None, (
                            "DELETED for unknown object"
                        )
            _, final = await call(client, "GET", f"{CM}?{query}")
            assert state_of(list(state.values())) == state_of(final["items"])

    asyncio.run(scenario())


def last_matching(storage: SQLiteStorage, start: int, selector: bool) -> int:
    """The revision of the last event after start that a watcher with this filter sees."""
    from kubevisor.apiserver.storage.base import transition

    def pred(obj: dict[str, Any]) -> bool:
        return not selector or (obj["metadata"].get("labels") or {}).get("sel") == "yes"

    last = 0
    for event in storage._ring:
        if event.rev > start and event.key.startswith("/core/configmaps/") and transition(event, pred):
            last = event.rev
    return last


@SETTINGS
@given(ops=OPS)
def test_resource_versions_only_grow(ops: list[tuple[str, str, int]]) -> None:
    async def scenario() -> None:
        async with served() as (client, _):
            rvs = [rv for rv in await apply_ops(client, ops) if rv >= 0]
            assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)
            _, listed = await call(client, "GET", CM)
            assert all(
                int(o["metadata"]["resourceVersion"]) <= int(listed["metadata"]["resourceVersion"])
                for o in listed["items"]
            )

    asyncio.run(scenario())


@SETTINGS
@given(count=st.integers(0, 30), limit=st.integers(1, 7), ops=OPS)
def test_paging_is_a_consistent_snapshot(count: int, limit: int, ops: list[tuple[str, str, int]]) -> None:
    async def scenario() -> None:
        async with served() as (client, _):
            for i in range(count):
                await call(client, "POST", CM, {"metadata": {"name": f"obj-{i:02d}"}})
            _, whole = await call(client, "GET", CM)
            pages: list[dict[str, Any]] = []
            token = ""
            first = True
            while first or token:
                first = False
                _, page = await call(
                    client, "GET", f"{CM}?limit={limit}" + (f"&continue={token}" if token else "")
                )
                pages.extend(page["items"])
                assert len(page["items"]) <= limit
                token = page["metadata"].get("continue", "")
                # writes between pages must not show up in later pages
                await apply_ops(client, ops[:3])
                ops[:3] = []
            assert state_of(pages) == state_of(whole["items"])

    asyncio.run(scenario())


@SETTINGS
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["spec", "status"]), st.integers(0, 99)), min_size=1, max_size=15
    )
)
def test_status_and_main_resource_never_overwrite_each_other(steps: list[tuple[str, int]]) -> None:
    async def scenario() -> None:
        async with served() as (client, _):
            status, _ = await call(client, "POST", "/api/v1/namespaces", {"metadata": {"name": "x"}})
            pods = "/api/v1/namespaces/default/pods"
            pod = {
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running"},
            }
            status, created = await call(client, "POST", pods, pod)
            assert status == 201
            want_spec_image, want_phase = "i", created["status"]["phase"]
            for what, value in steps:
                _, current = await call(client, "GET", f"{pods}/p")
                stale = json.loads(json.dumps(current))
                if what == "spec":
                    stale["spec"]["containers"][0]["image"] = f"img{value}"
                    stale["status"]["phase"] = f"Bogus{value}"  # must be ignored by the main resource
                    status, _ = await call(client, "PUT", f"{pods}/p", stale)
                    want_spec_image = f"img{value}"
                else:
                    stale["status"]["phase"] = f"Phase{value}"
                    stale["spec"]["containers"][0]["image"] = f"bogus{value}"  # ignored by /status
                    status, _ = await call(client, "PUT", f"{pods}/p/status", stale)
                    want_phase = f"Phase{value}"
                assert status == 200
            _, final = await call(client, "GET", f"{pods}/p")
            assert final["spec"]["containers"][0]["image"] == want_spec_image
            assert final["status"]["phase"] == want_phase

    asyncio.run(scenario())


def test_watch_from_a_compacted_revision_gets_410_in_stream() -> None:
    async def scenario() -> None:
        async with served(ring_size=5) as (client, storage):
            for i in range(10):
                await call(client, "POST", CM, {"metadata": {"name": f"c{i}"}})
            resp = await client.get(f"{CM}?watch=true&resourceVersion=2", headers=AUTH)
            assert resp.status == 200
            events = [json.loads(line) async for line in resp.content]
            assert len(events) == 1 and events[0]["type"] == "ERROR"
            assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
            status, body = await call(client, "GET", f"{CM}?limit=2")
            token = body["metadata"]["continue"]
            for i in range(10):
                await call(client, "POST", CM, {"metadata": {"name": f"d{i}"}})
            status, body = await call(client, "GET", f"{CM}?limit=2&continue={token}")
            assert status == 410 and body["reason"] == "Expired"
            # compaction drops old rows in SQLite too; the current state survives a reload
            await storage.compact(3)
            assert storage.oldest_revision >= storage.revision - 3

    asyncio.run(scenario())


def test_slow_watcher_is_cut_off_without_blocking_writers() -> None:
    async def scenario() -> None:
        async with served() as (client, storage):
            storage.watch_queue = 10
            resp = await client.get(f"{CM}?watch=true&resourceVersion={storage.revision}", headers=AUTH)
            # never read from resp: once the socket buffers are full its queue overflows; writers go on
            blob = "x" * 200_000
            for i in range(150):
                status, _ = await asyncio.wait_for(
                    call(client, "POST", CM, {"metadata": {"name": f"s{i}"}, "data": {"blob": blob}}), 10
                )
                assert status == 201
            await asyncio.sleep(0.1)
            assert storage.watcher_count() == 0
            resp.close()

    asyncio.run(scenario())


def test_watch_ending_sends_every_queued_event_before_its_final_bookmark() -> None:
    """The client reads nothing until the watch's timeout has passed, so events are still queued
    when it ends: all of them come before the final bookmark, which a client resumes from."""

    async def scenario() -> None:
        async with served() as (client, storage):
            start = storage.revision
            resp = await client.get(
                f"{CM}?watch=true&resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=1",
                headers=AUTH,
            )
            blob = "x" * 200_000  # more than the socket buffers hold: the server's writes block
            created = []
            for i in range(60):
                body = {"metadata": {"name": f"q{i}"}, "data": {"b": blob}}
                status, body = await call(client, "POST", CM, body)
                assert status == 201
                created.append(body["metadata"]["name"])
            await asyncio.sleep(1.5)  # past the watch's deadline
            events = [json.loads(line) async for line in resp.content]
            assert events[-1]["type"] == "BOOKMARK"
            seen = [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"]
            assert seen == created
            assert int(events[-1]["object"]["metadata"]["resourceVersion"]) == storage.revision

    asyncio.run(scenario())
