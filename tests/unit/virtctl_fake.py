"""A small aiohttp server that speaks KubeVirt's REST and plain.kubevirt.io websocket protocol,
for virtctl's unit tests (the e2e tests use the real apiserver). Runs in its own thread."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSCloseCode, web

TOKEN = "s3cret"
SUB = "/apis/subresources.kubevirt.io/v1/namespaces/{ns}"
KV = "/apis/kubevirt.io/v1/namespaces/{ns}"


def status(code: int, message: str, reason: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


@dataclass
class FakeCluster:
    vms: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    vmis: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    consoles: dict[tuple[str, str], web.WebSocketResponse] = field(default_factory=dict)
    forbidden_user_token: str = "nobody"
    echo_ports: dict[int, str] = field(default_factory=dict)

    def add_vm(self, name: str, ns: str = "default", running: bool = True) -> None:
        self.vms[(ns, name)] = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"runStrategy": "Always" if running else "Halted"},
        }
        if running:
            self.vmis[(ns, name)] = {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstance",
                "metadata": {"name": name, "namespace": ns},
                "status": {"phase": "Running"},
            }


def make_app(cluster: FakeCluster) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {cluster.forbidden_user_token}":
            return status(
                403,
                f'virtualmachineinstances.subresources.kubevirt.io is forbidden: User "nobody" '
                f"cannot access {request.path}",
                "Forbidden",
            )
        if header != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    def key(request: web.Request) -> tuple[str, str]:
        return request.match_info["ns"], request.match_info["name"]

    async def get_vm(request: web.Request) -> web.Response:
        vm = cluster.vms.get(key(request))
        if vm is None:
            return status(404, f'virtualmachines.kubevirt.io "{key(request)[1]}" not found', "NotFound")
        return web.json_response(vm)

    async def get_vmi(request: web.Request) -> web.Response:
        vmi = cluster.vmis.get(key(request))
        if vmi is None:
            return status(
                404, f'virtualmachineinstances.kubevirt.io "{key(request)[1]}" not found', "NotFound"
            )
        return web.json_response(vmi)

    async def vm_action(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        cluster.calls.append((request.match_info["action"], key(request)[1], body))
        if key(request) not in cluster.vms:
            return status(404, f'virtualmachines.kubevirt.io "{key(request)[1]}" not found', "NotFound")
        return web.Response(status=202)

    async def vmi_action(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        cluster.calls.append((request.match_info["action"], key(request)[1], body))
        if key(request) not in cluster.vmis:
            return status(
                404, f'virtualmachineinstances.kubevirt.io "{key(request)[1]}" not found', "NotFound"
            )
        return web.Response(status=200)

    async def guestosinfo(request: web.Request) -> web.Response:
        if key(request) not in cluster.vmis:
            return status(404, "not found", "NotFound")
        return web.json_response({"guestAgentVersion": "1", "os": {"name": "Kubevisor Legacy"}})

    async def screenshot(request: web.Request) -> web.Response:
        cluster.calls.append(("screenshot", key(request)[1], dict(request.query)))
        return web.Response(body=b"\x89PNG\r\n\x1a\nfake", content_type="image/png")

    async def expand(request: web.Request) -> web.Response:
        return await get_vm(request)

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"gitVersion": "v1.5.0-kubevisor", "platform": "linux/amd64"})

    async def upgrade(request: web.Request) -> web.WebSocketResponse | web.Response:
        if key(request) not in cluster.vmis:
            return status(
                404, f'virtualmachineinstances.kubevirt.io "{key(request)[1]}" not found', "NotFound"
            )
        ws = web.WebSocketResponse(protocols=("plain.kubevirt.io",))
        await ws.prepare(request)
        return ws

    async def console(request: web.Request) -> web.StreamResponse:
        ws = await upgrade(request)
        if not isinstance(ws, web.WebSocketResponse):
            return ws
        previous = cluster.consoles.get(key(request))
        cluster.consoles[key(request)] = ws
        if previous is not None:
            await previous.close(code=WSCloseCode.GOING_AWAY, message=b"another console connected")
        await ws.send_bytes(b"\r\nlegacy login: ")
        async for msg in ws:
            cluster.calls.append(("console-in", key(request)[1], msg.data))
            await ws.send_bytes(msg.data.upper())  # an "echo" that shows it went through the guest
        return ws

    async def portforward(request: web.Request) -> web.StreamResponse:
        ws = await upgrade(request)
        if not isinstance(ws, web.WebSocketResponse):
            return ws
        cluster.calls.append(
            ("portforward", key(request)[1], (request.match_info["port"], request.match_info.get("proto")))
        )
        async for msg in ws:
            await ws.send_bytes(b"echo:" + msg.data)
        return ws

    async def vnc(request: web.Request) -> web.StreamResponse:
        ws = await upgrade(request)
        if not isinstance(ws, web.WebSocketResponse):
            return ws
        await ws.send_bytes(b"RFB 003.008\n")
        async for _msg in ws:
            pass
        return ws

    app = web.Application(middlewares=[auth])
    kv, sub = KV.format(ns="{ns}"), SUB.format(ns="{ns}")
    app.router.add_get(kv + "/virtualmachines/{name}", get_vm)
    app.router.add_get(kv + "/virtualmachineinstances/{name}", get_vmi)
    app.router.add_put(sub + "/virtualmachines/{name}/{action}", vm_action)
    app.router.add_get(sub + "/virtualmachines/{name}/expand-spec", expand)
    app.router.add_put(sub + "/virtualmachineinstances/{name}/{action}", vmi_action)
    app.router.add_get(sub + "/virtualmachineinstances/{name}/guestosinfo", guestosinfo)
    app.router.add_get(sub + "/virtualmachineinstances/{name}/vnc/screenshot", screenshot)
    app.router.add_get(sub + "/virtualmachineinstances/{name}/console", console)
    app.router.add_get(sub + "/virtualmachineinstances/{name}/vnc", vnc)
    app.router.add_get(sub + "/virtualmachineinstances/{name}/portforward/{port}/{proto}", portforward)
    app.router.add_get("/apis/subresources.kubevirt.io/v1/version", version)
    return app


class FakeServer:
    def __init__(self, tmp: Path) -> None:
        self.cluster = FakeCluster()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.kubeconfig = self.write_kubeconfig(tmp / "kubeconfig", TOKEN)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(make_app(self.cluster))
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()

    def write_kubeconfig(self, path: Path, token: str, namespace: str | None = None) -> Path:
        context: dict[str, Any] = {"cluster": "fake", "user": "u"}
        if namespace:
            context["namespace"] = namespace
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "u", "user": {"token": token}}],
                    "contexts": [{"name": "fake", "context": context}],
                }
            )
        )
        return path

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
