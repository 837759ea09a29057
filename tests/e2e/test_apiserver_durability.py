"""kill -9 during a stream of creates: every acknowledged create survives, nothing else appears,
and a watcher resuming from its last resourceVersion sees each event exactly once, in order."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest
from apiserver_fixture import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

CM = "/api/v1/namespaces/default/configmaps"
CLIENTS = 4
PER_CLIENT = 250


def connection(server: RunningServer) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=30)


def creator(server: RunningServer, index: int, acked: list[str], attempted: list[str]) -> None:
    conn = connection(server)
    headers = {"Authorization": f"Bearer {server.token()}", "Content-Type": "application/json"}
    for i in range(PER_CLIENT):
        name = f"c{index}-{i:04d}"
        attempted.append(name)
        try:
            conn.request("POST", CM, json.dumps({"metadata": {"name": name}, "data": {"i": str(i)}}), headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            return  # the server was killed
        if resp.status == 201:
            acked.append(name)


def watcher(
    server: RunningServer, from_rv: str, events: list[tuple[str, str, int]], stop: threading.Event
) -> None:
    conn = connection(server)
    conn.request(
        "GET",
        f"{CM}?watch=true&resourceVersion={from_rv}&timeoutSeconds=60",
        headers={"Authorization": f"Bearer {server.token()}"},
    )
    resp = conn.getresponse()
    try:
        while not stop.is_set():
            line = resp.readline()
            if not line:
                return
            event = json.loads(line)
            meta = event["object"]["metadata"]
            events.append((event["type"], meta["name"], int(meta["resourceVersion"])))
    except (OSError, http.client.HTTPException, ValueError):
        return


def list_names(server: RunningServer) -> tuple[set[str], str]:
    status, body, _ = server.request("GET", CM)
    assert status == 200
    return {o["metadata"]["name"] for o in body["items"]}, str(body["metadata"]["resourceVersion"])


def test_kill_9_loses_no_acknowledged_create(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        _, start_rv = list_names(server)
        events: list[tuple[str, str, int]] = []
        stop = threading.Event()
        watch_thread = threading.Thread(target=watcher, args=(server, start_rv, events, stop))
        watch_thread.start()
        acked: list[str] = []
        attempted: list[str] = []
        threads = [
            threading.Thread(target=creator, args=(server, i, acked, attempted)) for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acked) < 400 and time.monotonic() < deadline:
            time.sleep(0.005)
        stop_server(server, kill=True)
        for thread in threads:
            thread.join(timeout=60)
        stop.set()
        watch_thread.join(timeout=60)
        assert 400 <= len(acked) < CLIENTS * PER_CLIENT
    finally:
        stop_server(server, kill=True)

    server = start_server(data, port=None)
    try:
        names, _ = list_names(server)
        assert set(acked) <= names, f"lost acknowledged creates: {sorted(set(acked) - names)[:10]}"
        assert names <= set(attempted)  # nothing that was never sent
        assert len(names - set(acked)) <= CLIENTS  # at most the one in flight per client
        # resume the watch from the last revision the first watcher saw
        assert events and [rv for _, _, rv in events] == sorted({rv for _, _, rv in events})
        last = events[-1][2]
        resumed: list[tuple[str, str, int]] = []
        stop = threading.Event()
        thread = threading.Thread(target=watcher, args=(server, str(last), resumed, stop))
        thread.start()
        want = len(names)
        deadline = time.monotonic() + 30
        while len(events) + len(resumed) < want and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        server.request("POST", CM, {"metadata": {"name": "wake-up"}})  # unblock the reader
        thread.join(timeout=30)
        resumed = [e for e in resumed if e[1] != "wake-up"]
        combined = events + resumed
        assert all(t == "ADDED" for t, _, _ in combined)
        seen = [name for _, name, _ in combined]
        assert len(seen) == len(set(seen)), "an event was delivered twice"
        assert set(seen) == names
        revs = [rv for _, _, rv in combined]
        assert revs == sorted(revs)
        assert all(rv > last for _, _, rv in resumed)
    finally:
        stop_server(server)
