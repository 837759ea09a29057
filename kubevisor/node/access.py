"""The node agent's access server: what the apiserver reaches a running VMI through.

The counterpart of KubeVirt's virt-handler console server on :8186. HTTPS with mutual TLS:
the server presents the node's certificate and accepts only clients whose certificate the
node-access CA issued to the apiserver (anything else: 403). Paths, per VMI:

    /v1/namespaces/{ns}/virtualmachineinstances/{name}/console        websocket <-> serial socket
    .../vnc                                                           websocket <-> VNC socket
    .../vnc/screenshot                                                GET, PNG
    .../portforward/{port}[/{tcp|udp}]                                websocket <-> guest port
    .../pause | unpause | reset | softreboot                          PUT
    .../guestosinfo                                                   GET, KubeVirt's GuestAgentInfo

`?uid=` pins the VMI: a run of another VMI of the same name answers 409. One console and one
VNC session per VMI: a new one closes the previous with close code 1001 (going away), which
virtctl reports as "another user connected". After pause/unpause the VMI's status is synced
at once (`on_domain_change`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from kubevisor.apiserver.certs import APISERVER_CLIENT_CN
from kubevisor.apiserver.errors import APIError
from kubevisor.hypervisor.guest_agent import GuestAgentError
from kubevisor.launcher.runner import RunError
from kubevisor.node.domain import PAUSED_STATES, Domain, DomainError, Domains
from kubevisor.node.guest_info import guest_os_info
from kubevisor.node.vmi_reporter import VMIStatusReporter

PREFIX = "/v1/namespaces/{namespace}/virtualmachineinstances/{name}"
CHUNK = 64 * 1024
UDP_IDLE = 120.0  # seconds a UDP tunnel lives without traffic

DomainChanged = Callable[[str, str], None]


@dataclass(frozen=True)
class AccessTLS:
    cert: Path
    key: Path
    client_ca: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.client_ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def error(code: int, message: str) -> web.Response:
    return web.json_response(APIError(code, message).status(), status=code)


def _client_cn(request: web.Request) -> str:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class Sessions:
    """One live websocket per (kind, namespace, name); a newcomer closes the one before."""

    def __init__(self) -> None:
        self._live: dict[tuple[str, str, str], web.WebSocketResponse] = {}

    async def take(self, key: tuple[str, str, str], ws: web.WebSocketResponse) -> None:
        old = self._live.get(key)
        self._live[key] = ws
        if old is not None and not old.closed:
            await old.close(code=WSCloseCode.GOING_AWAY, message=b"another session connected")

    def release(self, key: tuple[str, str, str], ws: web.WebSocketResponse) -> None:
        if self._live.get(key) is ws:
            del self._live[key]


class AccessServer:
    def __init__(self, domains: Domains, on_domain_change: DomainChanged | None = None) -> None:
        self.domains = domains
        self.sessions = Sessions()
        self.on_domain_change = on_domain_change
        self.app = web.Application(middlewares=[self._authorize])
        r = self.app.router
        r.add_get(PREFIX + "/console", self.console)
        r.add_get(PREFIX + "/vnc", self.vnc)
        r.add_get(PREFIX + "/vnc/screenshot", self.screenshot)
        r.add_get(PREFIX + "/portforward/{port}", self.portforward)
        r.add_get(PREFIX + "/portforward/{port}/{protocol}", self.portforward)
        r.add_get(PREFIX + "/guestosinfo", self.guestosinfo)
        for op in ("pause", "unpause", "reset", "softreboot"):
            r.add_put(PREFIX + "/" + op, self._control(op))
        r.add_get("/healthz", self.healthz)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- serving --------------------------------------------------------------------------
    async def start(self, host: str, port: int, tls: AccessTLS) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls.context())
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.domains.close()

    @web.middleware
    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        cn = _client_cn(request)
        if cn != APISERVER_CLIENT_CN:
            return error(403, f"client {cn or '(no certificate)'!r} may not use the node access API")
        try:
            return await handler(request)
        except DomainError as exc:
            return error(exc.code, str(exc))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _domain(self, request: web.Request) -> Domain:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            return await self.domains.get(ns, name, request.query.get("uid", ""))
        except RunError as exc:  # not a valid namespace/name
            raise DomainError(str(exc), 400) from None

    def _changed(self, domain: Domain) -> None:
        if self.on_domain_change is not None:
            self.on_domain_change(domain.namespace, domain.name)

    # -- control --------------------------------------------------------------------------
    def _control(self, op: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            domain = await self._domain(request)
            state = await domain.run_status()
            if op == "pause":
                if state in PAUSED_STATES:
                    raise DomainError("VMI is already paused")
                await domain.pause()
            elif op == "unpause":
                if state not in PAUSED_STATES:
                    raise DomainError("VMI is not paused")
                await domain.resume()
            elif op == "reset":
                await domain.reset()
            else:
                if state in PAUSED_STATES:
                    raise DomainError("VMI is paused")
                try:
                    await domain.agent.execute("guest-shutdown", {"mode": "reboot"}, no_reply=True)
                except GuestAgentError as exc:
                    raise DomainError(f"soft reboot needs the guest agent: {exc}") from None
            self._changed(domain)
            return web.Response(status=200)

        return handle

    async def guestosinfo(self, request: web.Request) -> web.StreamResponse:
        domain = await self._domain(request)
        try:
            info = await guest_os_info(domain.agent)
        except GuestAgentError as exc:
            raise DomainError(f"the VMI does not have the guest agent connected: {exc}") from None
        return web.json_response(info)

    async def screenshot(self, request: web.Request) -> web.StreamResponse:
        domain = await self._domain(request)
        png = await domain.screenshot()
        return web.Response(body=png, content_type="image/png")

    # -- streams --------------------------------------------------------------------------
    async def console(self, request: web.Request) -> web.StreamResponse:
        domain = await self._domain(request)
        return await self._relay_unix(request, domain, "console", domain.serial_socket)

    async def vnc(self, request: web.Request) -> web.StreamResponse:
        domain = await self._domain(request)
        return await self._relay_unix(request, domain, "vnc", domain.vnc_socket)

    async def _relay_unix(
        self, request: web.Request, domain: Domain, kind: str, path: Path
    ) -> web.StreamResponse:
        key = (kind, domain.namespace, domain.name)
        ws = web.WebSocketResponse(protocols=("plain.kubevirt.io",), max_msg_size=0, heartbeat=30.0)
        await ws.prepare(request)
        await self.sessions.take(key, ws)  # the old session lets go of the socket first
        try:
            reader, writer = await _open_unix(path)
        except OSError as exc:
            self.sessions.release(key, ws)
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=f"cannot connect: {exc}".encode()[:120])
            return ws
        try:
            await _pump(ws, reader, writer)
        finally:
            self.sessions.release(key, ws)
        return ws

    async def portforward(self, request: web.Request) -> web.StreamResponse:
        protocol = request.match_info.get("protocol", "tcp")
        if protocol not in ("tcp", "udp"):
            raise DomainError(f"unsupported protocol {protocol!r} (tcp, udp)", 400)
        try:
            port = int(request.match_info["port"])
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise DomainError(f"invalid port {request.match_info['port']!r}", 400)
        domain = await self._domain(request)
        fwd = await domain.forward(protocol, port)
        ws = web.WebSocketResponse(protocols=("plain.kubevirt.io",), max_msg_size=0, heartbeat=30.0)
        if protocol == "tcp":
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", fwd.host_port)
            except OSError as exc:
                raise DomainError(f"cannot connect to guest port {port}: {exc}", 503) from None
            await ws.prepare(request)
            await _pump(ws, reader, writer)
            return ws
        await ws.prepare(request)
        await _pump_udp(ws, fwd.host_port)
        return ws


async def _open_unix(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # QEMU serves one client per socket chardev: a session that just closed may still hold it.
    for _attempt in range(50):
        try:
            return await asyncio.open_unix_connection(str(path))
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    return await asyncio.open_unix_connection(str(path))


async def _pump(
    ws: web.WebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Bytes both ways (one binary message per chunk) until either side ends; closes both."""

    async def down() -> None:
        while chunk := await reader.read(CHUNK):
            await ws.send_bytes(chunk)

    async def up() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                writer.write(msg.data)
            elif msg.type == WSMsgType.TEXT:
                writer.write(msg.data.encode())
            else:
                continue
            await writer.drain()

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    await _finish(ws, tasks)


async def _finish(ws: web.WebSocketResponse, tasks: Sequence[asyncio.Future[None]]) -> None:
    """Close the websocket, then let the relay tasks end. Closing first matters: a receive()
    cancelled under it would drop the connection without a close frame (1006)."""
    if not ws.closed:
        with contextlib.suppress(ConnectionError, OSError):
            await ws.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait(tasks, timeout=5.0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1024)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(data)


async def _pump_udp(ws: web.WebSocketResponse, host_port: int) -> None:
    """One websocket message per datagram, both ways, until the websocket ends or idles out."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Datagrams, remote_addr=("127.0.0.1", host_port), family=socket.AF_INET
    )

    async def down() -> None:
        while True:
            data = await asyncio.wait_for(proto.queue.get(), UDP_IDLE)
            await ws.send_bytes(data)

    async def up() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                transport.sendto(msg.data)

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        transport.close()
        await _finish(ws, tasks)


class AccessService:
    """The access server and the VMI status reporter on an event loop of their own (the rest of
    the node agent is threads around a synchronous client)."""

    def __init__(self, server: AccessServer, reporter: VMIStatusReporter | None) -> None:
        self.server = server
        self.reporter = reporter
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def start(self, host: str, port: int, tls: AccessTLS, timeout: float = 30.0) -> int:
        """Listen (blocking until then); the port. Raises what listening raised."""
        self._thread = threading.Thread(target=self._run, args=(host, port, tls), name="node-access",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("the node access server did not start")
        if self._error is not None:
            raise self._error
        return self.server.port

    def _run(self, host: str, port: int, tls: AccessTLS) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main(host, port, tls))
        self._loop.close()

    async def _main(self, host: str, port: int, tls: AccessTLS) -> None:
        self._stop = asyncio.Event()
        try:
            await self.server.start(host, port, tls)
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        reporting = asyncio.ensure_future(self.reporter.run()) if self.reporter is not None else None
        try:
            await self._stop.wait()
        finally:
            if reporting is not None:
                reporting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporting
            await self.server.stop()

    def stop(self) -> None:
        if self._thread is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
