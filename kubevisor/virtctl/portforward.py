"""`virtctl port-forward TYPE/NAME[/NAMESPACE] [PROTO/]LOCAL[:REMOTE]...`: local ports tunnelled
to the VMI through `portforward/{port}/{protocol}` websockets (one per TCP connection, one per
UDP client address with one message per datagram). `--stdio` tunnels stdin/stdout (ssh's
ProxyCommand). A VM target reaches the VMI of the same name, as virt-api does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
from typing import Any, cast

import aiohttp

from kubevisor.virtctl.client import VMI, Client, VirtctlError
from kubevisor.virtctl.common import err, require_vm, run, running_vmi
from kubevisor.virtctl.stream import StdinReader, bridge_tcp, write_all, ws_to
from kubevisor.virtctl.target import ForwardedPort, Target, TargetError, parse_ports, parse_target


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "port-forward",
        parents=parents,
        help="Forward local ports to a virtualmachine or virtualmachineinstance.",
        usage="virtctl port-forward TYPE/NAME[/NAMESPACE] [PROTOCOL/]LOCAL[:REMOTE]...",
    )
    p.add_argument("target", metavar="TYPE/NAME[/NAMESPACE]")
    p.add_argument("ports", nargs="+", metavar="[PROTOCOL/]LOCAL[:REMOTE]")
    p.add_argument(
        "--stdio",
        nargs="?",
        const="true",
        default="false",
        choices=("true", "false"),
        help="forward the (single) port to stdin/stdout",
    )
    p.add_argument("--address", default="127.0.0.1", help="the address the local ports are opened on")
    p.set_defaults(func=portforward_cmd)


def portforward_cmd(args: argparse.Namespace) -> int:
    try:
        target = parse_target(args.target)
        ports = parse_ports(args.ports)
    except TargetError as e:
        raise VirtctlError(str(e)) from e
    if target.legacy:
        err("Warning: the type/name.namespace form is deprecated, use type/name/namespace")
    if args.namespace is None and target.namespace:
        args.namespace = target.namespace
    args.parsed_target, args.parsed_ports = target, ports
    stdio = args.stdio == "true"
    if stdio and len(ports) != 1:
        raise VirtctlError("only one port supported when forwarding to stdout")
    return run(args, forward_stdio if stdio else forward)


async def resolve(client: Client, target: Target) -> str:
    """The VMI name to tunnel to; a missing or stopped VM/VMI is an error now, not per connection."""
    if target.kind == "vm":
        await require_vm(client, target.name)
    await running_vmi(client, target.name, from_vm=target.kind == "vm")
    return target.name


def subresource(port: ForwardedPort) -> str:
    return f"portforward/{port.remote}/{port.protocol}"


async def forward_stdio(args: argparse.Namespace, client: Client) -> int:
    name = await resolve(client, args.parsed_target)
    port: ForwardedPort = args.parsed_ports[0]
    ws = await client.websocket(VMI, name, subresource(port))
    stdout = sys.stdout.fileno()
    reader = StdinReader(sys.stdin.fileno(), asyncio.get_running_loop())

    async def to_stdout(data: bytes) -> None:
        write_all(stdout, data)

    async def from_stdin() -> None:
        while True:
            data = await reader.read()
            if not data:
                return
            await ws.send_bytes(data)

    down = asyncio.ensure_future(ws_to(ws, to_stdout))
    up = asyncio.ensure_future(from_stdin())
    await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    if up.done() and not down.done():
        # stdin ended: let the far side finish sending, then close
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(down), timeout=5)
    for task in (down, up):
        task.cancel()
    await ws.close()
    return 0


class UDPForwarder(asyncio.DatagramProtocol):
    """One websocket per client address; one binary message per datagram, both ways."""

    def __init__(self, client: Client, name: str, port: ForwardedPort) -> None:
        self.client, self.name, self.port = client, name, port
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[Any, asyncio.Queue[bytes]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        queue = self.sessions.get(addr)
        if queue is None:
            queue = asyncio.Queue()
            self.sessions[addr] = queue
            task = asyncio.ensure_future(self._session(addr, queue))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        queue.put_nowait(data)

    async def _session(self, addr: Any, queue: asyncio.Queue[bytes]) -> None:
        try:
            ws = await self.client.websocket(VMI, self.name, subresource(self.port))
        except VirtctlError as e:
            err(f"can't open a udp tunnel to {self.name}:{self.port.remote}: {e}")
            self.sessions.pop(addr, None)
            return

        async def to_client(data: bytes) -> None:
            if self.transport is not None:
                self.transport.sendto(data, addr)

        async def to_remote() -> None:
            while True:
                await ws.send_bytes(await queue.get())

        down = asyncio.ensure_future(ws_to(ws, to_client))
        up = asyncio.ensure_future(to_remote())
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        for task in (down, up):
            task.cancel()
        await ws.close()
        self.sessions.pop(addr, None)


def _same(protocol: UDPForwarder) -> UDPForwarder:
    return protocol


async def forward(args: argparse.Namespace, client: Client) -> int:
    name = await resolve(client, args.parsed_target)
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    transports: list[asyncio.DatagramTransport] = []
    for port in args.parsed_ports:

        async def on_connect(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: ForwardedPort = port
        ) -> None:
            try:
                ws = await client.websocket(VMI, name, subresource(port))
            except (VirtctlError, aiohttp.ClientError) as e:
                err(f"can't access {args.parsed_target.kind}/{name}.{client.namespace}: {e}")
                writer.close()
                return
            await bridge_tcp(ws, reader, writer)

        try:
            if port.protocol == "udp":
                udp = UDPForwarder(client, name, port)
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_same, udp), local_addr=(args.address, port.local)
                )
                transports.append(transport)
                bound = transport.get_extra_info("sockname")[1]
            else:
                server = await asyncio.start_server(on_connect, args.address, port.local)
                servers.append(server)
                bound = server.sockets[0].getsockname()[1]
        except OSError as e:
            raise VirtctlError(f"can't listen on {args.address}:{port.local}: {e.strerror}") from e
        print(f"Forwarding from {args.address}:{bound} -> {port.remote} ({port.protocol})", flush=True)
    try:
        await asyncio.Event().wait()  # until interrupted
    finally:
        for server in servers:
            server.close()
        for transport in transports:
            transport.close()
    return 0
