"""`virtctl console VMI [--timeout MINUTES]`: the serial console over the `console` websocket.

The terminal is put in raw mode; `^]` ends the session. When the server closes the session
because another console connected (close code 1001), the user is told so, as virtctl does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

from kubevisor.virtctl.client import VM, VMI, Client, VirtctlError
from kubevisor.virtctl.common import err, name_arg, run
from kubevisor.virtctl.stream import ABNORMAL, GOING_AWAY, StdinReader, write_all, ws_to

ESCAPE = 0x1D  # ^]
TAKEN_OVER = (
    "\r\nYou were disconnected from the console. This has one of the following reasons:"
    "\r\n - another user connected to the console of the target vm\r\n"
)
CONNECTION_LOST = (
    "\r\nYou were disconnected from the console. This has one of the following reasons:"
    "\r\n - network issues\r\n - machine restart\r\n"
)


def split_escape(data: bytes) -> tuple[bytes, bool]:
    """Console input: the bytes to send, and whether the escape (^]) was typed (the rest is dropped)."""
    index = data.find(bytes([ESCAPE]))
    if index < 0:
        return data, False
    return data[:index], True


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("console", parents=parents, help="Connect to a console of a virtual machine instance.")
    p.add_argument("vmi", type=name_arg, metavar="VMI")
    p.add_argument(
        "--timeout",
        type=int,
        default=5,
        help="the number of minutes to wait for the virtual machine instance to be ready",
    )
    p.set_defaults(func=lambda args: run(args, console))


async def wait_running(client: Client, name: str, timeout: float, poll: float = 1.0) -> None:
    """Wait for the VMI to run; fail at once if neither it nor a VM exists, or the VM is halted."""
    deadline = time.monotonic() + timeout
    while True:
        vmi = await client.get_or_none(VMI, name)
        if vmi is not None:
            phase = (vmi.get("status") or {}).get("phase")
            if phase == "Running":
                return
            if phase in ("Succeeded", "Failed"):
                raise VirtctlError(f'VirtualMachineInstance "{name}" is {phase} and has no console', 409)
        else:
            vm = await client.get_or_none(VM, name)
            if vm is None:
                raise VirtctlError(
                    f'virtualmachineinstance "{name}" not found in namespace "{client.namespace}"', 404
                )
            spec = vm.get("spec") or {}
            halted = spec.get("runStrategy") == "Halted" or (
                "runStrategy" not in spec and spec.get("running") is not True
            )
            if halted:
                raise VirtctlError(f'VirtualMachine "{name}" is not running (run: virtctl start {name})', 409)
        if time.monotonic() >= deadline:
            raise VirtctlError(f'timeout waiting for VirtualMachineInstance "{name}" to be running', 408)
        await asyncio.sleep(poll)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def console(args: argparse.Namespace, client: Client) -> int:
    await wait_running(client, args.vmi, args.timeout * 60)
    ws = await client.websocket(VMI, args.vmi, "console")
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    loop = asyncio.get_running_loop()

    async def to_terminal(data: bytes) -> None:
        write_all(stdout, data)

    async def from_terminal() -> None:
        reader = StdinReader(stdin, loop)
        while True:
            data = await reader.read()
            if not data:
                return
            data, escaped = split_escape(data)
            if data:
                await ws.send_bytes(data)
            if escaped:
                return

    with raw_terminal(stdin):
        err(f"Successfully connected to {args.vmi} console. The escape sequence is ^]")
        down = asyncio.ensure_future(ws_to(ws, to_terminal))
        up = asyncio.ensure_future(from_terminal())
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        for task in (down, up):
            task.cancel()
        await ws.close()
        closed = down.result() if down in done and down.exception() is None else None
        if closed is not None:
            if closed.code == GOING_AWAY:
                sys.stderr.write(TAKEN_OVER)
                sys.stderr.flush()
                return 0
            if closed.code in (ABNORMAL, None) or closed.code >= 4000 or closed.code == 1011:
                sys.stderr.write(CONNECTION_LOST)
                sys.stderr.flush()
                return 1
    sys.stderr.write("\r\n")
    return 0
