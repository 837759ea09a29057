"""`subresources.kubevirt.io/v1`, served in-process by the embedded apiserver (virt-api's REST part).

    virtualmachines/{name}/start|stop|restart             PUT: VM changes (kubevisor.virtapi.lifecycle)
    virtualmachines/{name}/expand-spec                    GET: instancetype/preference expanded
    virtualmachines/{name}/portforward/{port}[/{proto}]   GET websocket: to the VMI of the same name
    virtualmachineinstances/{name}/pause|unpause|softreboot|reset      PUT  -> the VMI's node
    virtualmachineinstances/{name}/console|vnc|portforward/...        websocket -> the VMI's node
    virtualmachineinstances/{name}/vnc/screenshot|guestosinfo          GET  -> the VMI's node
    version, healthz

The apiserver has authenticated the caller already. Everything about a running VMI goes to
the node agent of `status.nodeName` (kubevisor.virtapi.dialer), which relays it to the
launcher's sockets. A VMI that is not running is a 4xx at once, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, Gauge

from kubevisor.api.instancetype import expand_vm, matcher_kind
from kubevisor.api.kinds import BY_KIND
from kubevisor.apiserver.errors import APIError, bad_request, not_found
from kubevisor.apiserver.extensions import APIPath, accept_websocket
from kubevisor.apiserver.patches import TEST_FAILED
from kubevisor.apiserver.registry import Registry, WriteOptions
from kubevisor.apiserver.resources import ResourceType
from kubevisor.apiserver.server import USER_KEY
from kubevisor.buildinfo import version_info
from kubevisor.controller.launcher_pod import APP_LABEL, APP_LAUNCHER, CREATED_BY_LABEL
from kubevisor.virtapi import lifecycle
from kubevisor.virtapi.dialer import NodeDialer, endpoint_of, node_error
from kubevisor.virtapi.lifecycle import refused

Obj = dict[str, Any]
GROUP, VERSION = "subresources.kubevirt.io", "v1"
KUBEVIRT = ("kubevirt.io", "v1")
INSTANCETYPES = ("instancetype.kubevirt.io", "v1beta1")
FIELD_MANAGER = "virt-api"
PLAIN = ("plain.kubevirt.io",)

VMI_PUT = ("pause", "unpause", "softreboot", "reset")
VM_PUT = ("start", "stop", "restart")


def _resource(name: str, kind: str, verbs: list[str]) -> Obj:
    return {"name": name, "singularName": "", "namespaced": True, "kind": kind, "verbs": verbs}


RESOURCES: list[Obj] = [
    *(_resource(f"virtualmachineinstances/{s}", "VirtualMachineInstance", ["get"])
      for s in ("console", "vnc", "vnc/screenshot", "portforward", "guestosinfo")),
    *(_resource(f"virtualmachineinstances/{s}", "VirtualMachineInstance", ["update"]) for s in VMI_PUT),
    *(_resource(f"virtualmachines/{s}", "VirtualMachine", ["update"]) for s in VM_PUT),
    *(_resource(f"virtualmachines/{s}", "VirtualMachine", ["get"]) for s in ("expand-spec", "portforward")),
]

class SessionMetrics:
    """kubevirt_{console,vnc}_active_connections and kubevirt_portforward_active_tunnels, per VMI."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = ("namespace", "vmi")
        self.gauges = {
            "console": Gauge("kubevirt_console_active_connections", "Active console connections.",
                             labels, registry=registry),
            "vnc": Gauge("kubevirt_vnc_active_connections", "Active VNC connections.", labels,
                         registry=registry),
            "portforward": Gauge("kubevirt_portforward_active_tunnels", "Active port-forward tunnels.",
                                 labels, registry=registry),
        }

    @contextlib.contextmanager
    def session(self, kind: str, namespace: str, name: str) -> Any:
        gauge = self.gauges[kind].labels(namespace, name)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()


def _user(request: web.Request) -> str:
    return request.get(USER_KEY, "admin")


async def _options(request: web.Request) -> Obj:
    """The request's JSON body (StartOptions, StopOptions ...), {} when there is none."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bad_request("the request body must be a JSON object")
    return doc


def _dry_run(options: Obj, request: web.Request) -> bool:
    dry = options.get("dryRun") or request.query.getall("dryRun", [])
    return "All" in (dry if isinstance(dry, list) else [dry])


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class SubresourceAPI:
    def __init__(self, registry: Registry, dialer: NodeDialer | None,
                 metrics: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.dialer = dialer
        self.metrics = SessionMetrics(metrics)

    # -- lookups ------------------------------------------------------------------------------
    def _type(self, group_version: tuple[str, str], plural: str) -> ResourceType:
        rt = self.registry.lookup(*group_version, plural)
        if rt is None:
            raise APIError(503, f"the {group_version[0]} API is not installed on this server",
                           "ServiceUnavailable")
        return rt

    def _get(self, plural: str, namespace: str, name: str) -> Obj:
        return self.registry.get(self._type(KUBEVIRT, plural), namespace, name)

    def _get_or_none(self, plural: str, namespace: str, name: str) -> Obj | None:
        try:
            return self._get(plural, namespace, name)
        except APIError as exc:
            if exc.code == 404:
                return None
            raise

    # -- dispatch -----------------------------------------------------------------------------
    async def handle(self, request: web.Request, path: APIPath) -> web.StreamResponse:
        if path.resource in ("version", "healthz") and not path.namespace:
            if request.method != "GET":
                raise APIError(405, f"{request.method} is not allowed on {path.resource}", "MethodNotAllowed")
            if path.resource == "version":
                return web.json_response(version_info())
            return web.Response(text="ok")
        if not path.namespace or not path.name or not path.subpath:
            raise not_found(path.resource or "subresource", GROUP, path.name or request.path)
        sub = path.subpath[0]
        route = self._route(path.resource, sub)
        if route is None:
            raise not_found(f"{path.resource}/{'/'.join(path.subpath)}", GROUP, path.name)
        method, handler = route
        if request.method != method:
            raise APIError(405, f"{request.method} is not allowed on {path.resource}/{sub}",
                           "MethodNotAllowed")
        return await handler(request, path)

    def _route(
        self, resource: str, sub: str
    ) -> tuple[str, Callable[[web.Request, APIPath], Awaitable[web.StreamResponse]]] | None:
        if resource == "virtualmachines":
            if sub in VM_PUT:
                return "PUT", self.vm_lifecycle
            if sub == "expand-spec":
                return "GET", self.expand_spec
            if sub == "portforward":
                return "GET", self.vmi_stream
        if resource == "virtualmachineinstances":
            if sub in VMI_PUT:
                return "PUT", self.vmi_control
            if sub in ("console", "vnc", "portforward", "guestosinfo"):
                return "GET", self.vmi_stream if sub != "guestosinfo" else self.vmi_get
        return None

    # -- VirtualMachine -----------------------------------------------------------------------
    async def vm_lifecycle(self, request: web.Request, path: APIPath) -> web.StreamResponse:
        options = await _options(request)
        vm = self._get("virtualmachines", path.namespace, path.name)
        vmi = self._get_or_none("virtualmachineinstances", path.namespace, path.name)
        decide = {"start": lifecycle.start, "stop": lifecycle.stop, "restart": lifecycle.restart}
        change = decide[path.subpath[0]](vm, vmi, options)
        opts = WriteOptions(dry_run=_dry_run(options, request), field_manager=FIELD_MANAGER,
                            user=_user(request))
        vm_rt = self._type(KUBEVIRT, "virtualmachines")
        if change.vmi:
            await self._patch(self._type(KUBEVIRT, "virtualmachineinstances"), path, change.vmi, opts, "",
                              "virtualmachineinstance")
        if change.vm_spec:
            await self._patch(vm_rt, path, change.vm_spec, opts, "", "virtualmachine")
        if change.vm_status:
            await self._patch(vm_rt, path, change.vm_status, opts, "status", "virtualmachine")
        if change.delete_pod_grace is not None and vmi is not None and not opts.dry_run:
            await self._delete_launcher_pods(path.namespace, vmi, change.delete_pod_grace, opts)
        return web.Response(status=202)

    async def _patch(self, rt: ResourceType, path: APIPath, ops: list[Obj], opts: WriteOptions, sub: str,
                     kind: str) -> None:
        try:
            await self.registry.patch(rt, path.namespace, path.name, json.dumps(ops).encode(),
                                      "application/json-patch+json", opts, sub)
        except APIError as exc:
            if TEST_FAILED in exc.message:  # someone changed it since we looked: theirs wins
                raise refused(path.name, exc.message, kind) from None
            raise

    async def _delete_launcher_pods(self, namespace: str, vmi: Obj, grace: int, opts: WriteOptions) -> None:
        pods = self.registry.lookup("", "v1", "pods")
        assert pods is not None
        uid = vmi["metadata"].get("uid")
        for _key, pod in self.registry.storage.scan(f"/core/pods/{namespace}/")[0]:
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(APP_LABEL) == APP_LAUNCHER and labels.get(CREATED_BY_LABEL) == uid:
                with contextlib.suppress(APIError):
                    await self.registry.delete(pods, namespace, pod["metadata"]["name"],
                                               {"gracePeriodSeconds": grace}, opts)

    async def expand_spec(self, request: web.Request, path: APIPath) -> web.StreamResponse:
        vm = self._get("virtualmachines", path.namespace, path.name)
        spec = vm.get("spec") or {}
        found: dict[str, Obj | None] = {"instancetype": None, "preference": None}
        for field in found:
            matcher = spec.get(field)
            if not isinstance(matcher, dict) or not matcher.get("name"):
                continue
            try:
                kind = matcher_kind(matcher, preference=field == "preference")
            except ValueError as exc:
                raise bad_request(f"spec.{field}.kind: {exc}") from None
            rt = self._type(INSTANCETYPES, BY_KIND[kind].plural)
            scope = path.namespace if rt.namespaced else ""
            found[field] = self.registry.get(rt, scope, str(matcher["name"]))
        expanded = expand_vm(vm, instancetype=found["instancetype"], preference=found["preference"])
        return web.json_response(expanded)

    # -- VirtualMachineInstance -----------------------------------------------------------------
    def _running_vmi(self, path: APIPath, from_vm: bool) -> Obj:
        vmi = self._get_or_none("virtualmachineinstances", path.namespace, path.name)
        if vmi is None:
            if from_vm:
                self._get("virtualmachines", path.namespace, path.name)  # 404 for the VM if it is missing
                raise refused(path.name, "VM is not running", "virtualmachine")
            raise not_found("virtualmachineinstances", "kubevirt.io", path.name)
        status = vmi.get("status") or {}
        if status.get("phase") != "Running" or not status.get("nodeName"):
            raise refused(path.name, "VMI is not running", "virtualmachineinstance")
        return vmi

    def _node_url(self, vmi: Obj, sub: str) -> tuple[str, str]:
        if self.dialer is None:
            raise APIError(503, "this apiserver has no node-access certificates (start it with "
                                "--node-access-dir)", "ServiceUnavailable")
        node_name = str(vmi["status"]["nodeName"])
        node = self.registry.get(self._type(("", "v1"), "nodes"), "", node_name)
        endpoint = endpoint_of(node)
        meta = vmi["metadata"]
        return endpoint, self.dialer.url(endpoint, meta["namespace"], meta["name"], sub, str(meta.get("uid")))

    async def _forward(self, request: web.Request, vmi: Obj, sub: str) -> web.Response:
        endpoint, url = self._node_url(vmi, sub)
        assert self.dialer is not None
        resp = await self.dialer.request(request.method, endpoint, url)
        if resp.status >= 400:
            raise node_error(resp)
        return web.Response(status=resp.status, body=resp.body, content_type=resp.content_type or None)

    async def vmi_control(self, request: web.Request, path: APIPath) -> web.StreamResponse:
        options = await _options(request)
        vmi = self._running_vmi(path, from_vm=False)
        sub = path.subpath[0]
        conditions = {c.get("type"): c.get("status")
                      for c in (vmi.get("status") or {}).get("conditions") or []}
        if sub == "pause" and conditions.get("Paused") == "True":
            raise refused(path.name, "VMI is already paused", "virtualmachineinstance")
        if sub == "unpause" and conditions.get("Paused") != "True":
            raise refused(path.name, "VMI is not paused", "virtualmachineinstance")
        if sub == "softreboot" and conditions.get("Paused") == "True":
            raise refused(path.name, "VMI is paused", "virtualmachineinstance")
        if _dry_run(options, request):
            return web.Response(status=200)
        await self._forward(request, vmi, sub)
        return web.Response(status=200)

    async def vmi_get(self, request: web.Request, path: APIPath) -> web.StreamResponse:
        vmi = self._running_vmi(path, from_vm=False)
        return await self._forward(request, vmi, "/".join(path.subpath))

    async def vmi_stream(self, request: web.Request, path: APIPath) -> web.StreamResponse:
        sub = path.subpath
        if sub == ("vnc", "screenshot"):
            return await self.vmi_get(request, path)
        kind = sub[0]
        if kind == "portforward":
            if len(sub) not in (2, 3):
                raise bad_request("portforward needs a port: portforward/{port}[/{tcp|udp}]")
        elif len(sub) != 1:
            raise not_found(f"{path.resource}/{'/'.join(sub)}", GROUP, path.name)
        if not _is_websocket(request):
            raise bad_request(f"{kind} is a websocket: send an Upgrade: websocket request")
        vmi = self._running_vmi(path, from_vm=path.resource == "virtualmachines")
        endpoint, url = self._node_url(vmi, "/".join(sub))
        assert self.dialer is not None
        upstream = await self.dialer.websocket(endpoint, url)  # a refusal is still a plain HTTP error
        try:
            ws = await accept_websocket(request, PLAIN)
            with self.metrics.session(kind, path.namespace, path.name):
                await _bridge(ws, upstream)
        finally:
            await upstream.close()
        return ws


async def _bridge(client: web.WebSocketResponse, node: aiohttp.ClientWebSocketResponse) -> None:
    """Messages both ways; whichever side closes first, the other is closed with its close code."""

    async def to_client() -> int | None:
        while True:
            msg = await node.receive()
            if msg.type == WSMsgType.BINARY:
                await client.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await client.send_str(msg.data)
            elif msg.type == WSMsgType.CLOSE:
                return int(msg.data)  # the node's code (node.close_code may read 1006 by now)
            elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return node.close_code

    async def to_node() -> None:
        async for msg in client:
            if msg.type == WSMsgType.BINARY:
                await node.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await node.send_str(msg.data)

    down = asyncio.ensure_future(to_client())
    up = asyncio.ensure_future(to_node())
    await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    # Close before cancelling: a cancelled receive() would drop the connection without a close
    # frame (1006), and the client must see the node's code (1001: another session took over).
    code: int | None = None
    if down.done() and down.exception() is None:
        code = down.result()
    if not client.closed:
        await client.close(code=code or aiohttp.WSCloseCode.OK)
    if not node.closed:
        await node.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait({down, up}, timeout=5.0)
    for task in (down, up):
        task.cancel()
    await asyncio.gather(down, up, return_exceptions=True)
