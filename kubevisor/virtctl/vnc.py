"""`virtctl vnc VMI`: a local TCP port proxied to the VMI's `vnc` websocket; a viewer is started
(remote-viewer, else vncviewer) unless `--proxy-only`, which prints `{"port": N}` as virtctl does.
Each viewer connection opens its own VNC session (the server keeps one per VMI).

`virtctl vnc screenshot VMI --file F` writes GET .../vnc/screenshot (PNG); `-` is stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
from typing import Any

from kubevisor.virtctl.client import VMI, Client, VirtctlError
from kubevisor.virtctl.common import err, run, running_vmi
from kubevisor.virtctl.stream import bridge_tcp
from kubevisor.virtctl.target import TargetError, validate_name

VIEWERS = (("remote-viewer", "vnc://{host}:{port}"), ("vncviewer", "{host}:{port}"))
LISTEN_TIMEOUT = 60.0


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "vnc",
        parents=parents,
        help="Open a vnc connection to a virtual machine instance.",
        usage="virtctl vnc [flags] VMI | virtctl vnc screenshot VMI --file FILE",
    )
    p.add_argument("words", nargs="+", metavar="VMI", help="VMI, or: screenshot VMI")
    p.add_argument("--proxy-only", action="store_true", help="only run the proxy and print its port as JSON")
    p.add_argument("--port", type=int, default=0, help="the local port of the proxy (default: a free one)")
    p.add_argument("--address", default="127.0.0.1", help="the local address of the proxy")
    p.add_argument("-f", "--file", help="screenshot: where to write the PNG ('-' for stdout)")
    p.add_argument("-m", "--move-cursor", action="store_true", help="screenshot: move the cursor first")
    p.set_defaults(func=dispatch)


def dispatch(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if len(words) == 2 and words[0] == "screenshot":
        args.vmi = words[1]
        if not args.file:
            raise VirtctlError('required flag(s) "file" not set')
        handler = screenshot
    elif len(words) == 1:
        args.vmi = words[0]
        handler = vnc
    else:
        raise VirtctlError("usage: virtctl vnc VMI | virtctl vnc screenshot VMI --file FILE")
    try:
        validate_name(args.vmi)
    except TargetError as e:
        raise VirtctlError(str(e)) from e
    return run(args, handler)


async def screenshot(args: argparse.Namespace, client: Client) -> int:
    query = {"moveCursor": "true"} if args.move_cursor else None
    try:
        png = await client.subresource("GET", VMI, args.vmi, "vnc/screenshot", query=query, raw=True)
    except VirtctlError as e:
        raise VirtctlError(f"Can't access VMI {args.vmi}: {e}", e.status) from e
    if args.file == "-":
        sys.stdout.buffer.write(png)
        sys.stdout.flush()
    else:
        try:
            with open(args.file, "wb") as out:
                out.write(png)
        except OSError as e:
            raise VirtctlError(f"Can't write image to a file: {e}") from e
    return 0


def find_viewer() -> list[str] | None:
    for binary, target in VIEWERS:
        path = shutil.which(binary)
        if path:
            return [path, target]
    return None


async def vnc(args: argparse.Namespace, client: Client) -> int:
    await running_vmi(client, args.vmi)
    viewer = None if args.proxy_only else find_viewer()
    if not args.proxy_only and viewer is None:
        raise VirtctlError(
            "could not find remote-viewer or vncviewer binary in $PATH (use --proxy-only and any VNC client)"
        )
    ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ws = await client.websocket(VMI, args.vmi, "vnc")
        except VirtctlError as e:
            err(f"Can't access VMI {args.vmi}: {e}")
            writer.close()
            return
        closed = await bridge_tcp(ws, reader, writer)
        if closed is not None and closed.code == 1001:
            err("You were disconnected from VNC: another VNC session to this VMI took over")

    try:
        server = await asyncio.start_server(on_connect, args.address, args.port)
    except OSError as e:
        raise VirtctlError(f"Can't listen on {args.address}:{args.port}: {e.strerror}") from e
    port = server.sockets[0].getsockname()[1]
    async with server:
        if args.proxy_only:
            print(json.dumps({"port": port}), flush=True)
            await ended  # until interrupted
            return 0
        assert viewer is not None
        host = args.address if args.address not in ("0.0.0.0", "::") else "127.0.0.1"
        argv = [viewer[0], viewer[1].format(host=host, port=port)]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                await proc.wait()
        if code != 0:
            raise VirtctlError(f"{os.path.basename(viewer[0])} exited with status {code}")
        return 0
