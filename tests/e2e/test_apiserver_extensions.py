"""Extension points: in-process admission hooks and API groups with websocket subresources."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from kubevisor.apiserver.errors import APIError
from kubevisor.apiserver.extensions import AdmissionRequest, APIPath, Extensions, accept_websocket
from kubevisor.apiserver.registry import Registry, WriteOptions
from kubevisor.apiserver.server import APIServer
from kubevisor.apiserver.storage import SQLiteStorage

AUTH = {"Authorization": "Bearer t"}
CM = "/api/v1/namespaces/default/configmaps"
GROUP_RESOURCES = [
    {
        "name": "virtualmachineinstances/console",
        "singularName": "",
        "namespaced": True,
        "kind": "VirtualMachineInstance",
        "verbs": ["get"],
    },
    {
        "name": "virtualmachines/start",
        "singularName": "",
        "namespaced": True,
        "kind": "VirtualMachine",
        "verbs": ["update"],
    },
]


@contextlib.asynccontextmanager
async def served(extensions: Extensions) -> AsyncIterator[TestClient[Any, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(Path(tmp) / "state.db")
        await storage.start()
        registry = Registry(storage, extensions)
        ns = registry.lookup("", "v1", "namespaces")
        assert ns is not None
        await registry.create(ns, "", {"metadata": {"name": "default"}}, WriteOptions())
        api = APIServer(storage, registry, {"t": "admin"}, "127.0.0.1:0")
        client = TestClient(TestServer(api.app))
        await client.start_server()
        try:
            yield client
        finally:
            await client.close()
            await storage.close()


def test_admission_hooks_mutate_and_validate() -> None:
    seen: list[tuple[str, bool]] = []

    async def add_label(req: AdmissionRequest) -> dict[str, Any] | None:
        if req.operation == "DELETE":
            return None
        obj = dict(req.obj)
        obj["metadata"] = {
            **obj["metadata"],
            "labels": {**(obj["metadata"].get("labels") or {}), "mutated": "yes"},
        }
        return obj

    async def reject_forbidden(req: AdmissionRequest) -> None:
        seen.append((req.operation, req.dry_run))
        if req.name.startswith("forbidden"):
            raise APIError(
                422, f'ConfigMap "{req.name}" is invalid: metadata.name: Forbidden: not allowed here'
            )

    extensions = Extensions()
    extensions.add_mutating("", "ConfigMap", add_label)
    extensions.add_validating("", "ConfigMap", reject_forbidden)

    async def scenario() -> None:
        async with served(extensions) as client:
            resp = await client.post(CM, json={"metadata": {"name": "ok"}}, headers=AUTH)
            assert resp.status == 201
            assert (await resp.json())["metadata"]["labels"] == {"mutated": "yes"}
            resp = await client.post(CM, json={"metadata": {"name": "forbidden-1"}}, headers=AUTH)
            assert resp.status == 422 and "not allowed here" in (await resp.json())["message"]
            resp = await client.post(CM + "?dryRun=All", json={"metadata": {"name": "dry"}}, headers=AUTH)
            assert resp.status == 201
            resp = await client.patch(
                CM + "/ok",
                json={"data": {"a": "1"}},
                headers={**AUTH, "Content-Type": "application/merge-patch+json"},
            )
            assert resp.status == 200
            resp = await client.get(CM + "/dry", headers=AUTH)
            assert resp.status == 404
            # other kinds are untouched
            resp = await client.post(
                "/api/v1/namespaces/default/secrets", json={"metadata": {"name": "forbidden"}}, headers=AUTH
            )
            assert resp.status == 201

    asyncio.run(scenario())
    assert ("CREATE", True) in seen and ("UPDATE", False) in seen


def test_api_group_with_websocket_subresources() -> None:
    calls: list[APIPath] = []

    async def handler(request: web.Request, path: APIPath) -> web.StreamResponse:
        calls.append(path)
        if path.resource == "virtualmachineinstances" and path.subpath == ("console",):
            ws = await accept_websocket(request)
            await ws.send_bytes(f"console of {path.namespace}/{path.name} via {ws.ws_protocol}".encode())
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(b"echo:" + msg.data)
            return ws
        if path.resource == "virtualmachines" and path.subpath == ("start",) and request.method == "PUT":
            return web.Response(status=202)
        raise APIError(404, "the server could not find the requested resource")

    extensions = Extensions()
    extensions.add_api_group("subresources.kubevirt.io", "v1", GROUP_RESOURCES, handler)

    async def scenario() -> None:
        async with served(extensions) as client:
            resp = await client.get("/apis", headers=AUTH)
            groups = {g["name"] for g in (await resp.json())["groups"]}
            assert "subresources.kubevirt.io" in groups
            resp = await client.get("/apis/subresources.kubevirt.io/v1", headers=AUTH)
            names = [r["name"] for r in (await resp.json())["resources"]]
            assert names == ["virtualmachineinstances/console", "virtualmachines/start"]
            accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            resp = await client.get("/apis", headers={**AUTH, "Accept": accept})
            assert resp.headers["Content-Type"] == accept
            agg = {i["metadata"]["name"]: i for i in (await resp.json())["items"]}
            subs = agg["subresources.kubevirt.io"]["versions"][0]["resources"]
            assert {r["resource"] for r in subs} == {"virtualmachineinstances", "virtualmachines"}
            resp = await client.put(
                "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start", headers=AUTH
            )
            assert resp.status == 202
            for protocol in ("plain.kubevirt.io", "v5.channel.k8s.io"):
                ws = await client.ws_connect(
                    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vmi1/console",
                    protocols=(protocol,),
                    headers=AUTH,
                )
                assert ws.protocol == protocol
                hello = await ws.receive_bytes(timeout=10)
                assert hello == f"console of default/vmi1 via {protocol}".encode()
                await ws.send_bytes(b"\x00ls")
                assert await ws.receive_bytes(timeout=10) == b"echo:\x00ls"
                await ws.close()
            resp = await client.get(
                "/apis/subresources.kubevirt.io/v1/namespaces/default/nothing/x/y", headers=AUTH
            )
            assert resp.status == 404 and (await resp.json())["kind"] == "Status"
            # unauthenticated upgrades are refused before the handler runs
            resp = await client.get(
                "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vmi1/console"
            )
            assert resp.status == 401

    asyncio.run(scenario())
    assert calls[0] == APIPath(
        "subresources.kubevirt.io", "v1", "default", "virtualmachines", "vm1", ("start",)
    )


def test_kubectl_exec_through_a_pod_subresource_handler(tmp_path: Path) -> None:
    """The node agent's way in: an in-process `pods/exec` handler speaking v5.channel.k8s.io,
    driven by the real kubectl (websocket exec is the default from 1.30)."""
    import subprocess
    import threading

    from kubevisor.apiserver.app import EmbeddedAPIServer

    async def exec_handler(request: web.Request, path: APIPath) -> web.StreamResponse:
        ws = await accept_websocket(request, ("v5.channel.k8s.io", "v4.channel.k8s.io"))
        command = request.query.getall("command", [])
        container = request.query.get("container", "")
        await ws.send_bytes(b"\x01" + f"{container}:{' '.join(command)}\n".encode())
        await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())
        await ws.close()
        return ws

    users: list[str] = []

    async def record_user(req: AdmissionRequest) -> None:
        users.append(req.user)

    loop = asyncio.new_event_loop()
    server = EmbeddedAPIServer(tmp_path / "data")
    server.extensions.add_subresource("", "pods", "exec", exec_handler, ["get", "create"], "PodExecOptions")
    server.extensions.add_validating("", "ConfigMap", record_user)
    loop.run_until_complete(server.start("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        kubectl = [
            "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
            "--kubeconfig",
            str(server.kubeconfig_path),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
        subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            input=json.dumps(pod),
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
        out = subprocess.run(
            [*kubectl, "exec", "p", "--", "echo", "hi there"], text=True, capture_output=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == "main:echo hi there\n"
        resources = subprocess.run(
            [*kubectl, "get", "--raw", "/api/v1"], text=True, capture_output=True, check=True, timeout=60
        ).stdout
        assert "pods/exec" in resources
        node_config = str(server.kubeconfig_for("system:node:a"))
        subprocess.run(
            [
                *kubectl[:1],
                "--kubeconfig",
                node_config,
                "--cache-dir",
                str(tmp_path / "cache"),
                "create",
                "configmap",
                "from-node",
            ],
            text=True,
            capture_output=True,
            check=True,
            timeout=60,
        )
        subprocess.run(
            [*kubectl, "create", "configmap", "from-admin"],
            text=True,
            capture_output=True,
            check=True,
            timeout=60,
        )
        assert users == ["system:node:a", "admin"]
        missing = subprocess.run(
            [*kubectl, "exec", "nope", "--", "true"], text=True, capture_output=True, timeout=60
        )
        assert missing.returncode != 0 and 'pods "nope" not found' in missing.stderr
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
