"""`virtctl start VM [--paused] [--dry-run]`: PUT .../virtualmachines/VM/start."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.client import VM, Client, VirtctlError
from kubevisor.virtctl.common import name_arg, run


def dry_run(args: argparse.Namespace) -> dict[str, Any]:
    return {"dryRun": ["All"]} if args.dry_run else {}


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("start", parents=parents, help="Start a virtual machine.")
    p.add_argument("vm", type=name_arg, metavar="VM")
    p.add_argument("--paused", action="store_true", help="start the VM paused")
    p.add_argument("--dry-run", action="store_true", help="only check that the request would be accepted")
    p.set_defaults(func=lambda args: run(args, start))


async def start(args: argparse.Namespace, client: Client) -> int:
    body = dry_run(args)
    if args.paused:
        body["paused"] = True
    try:
        await client.subresource("PUT", VM, args.vm, "start", body)
    except VirtctlError as err:
        raise VirtctlError(f"Error starting VirtualMachine {err}", err.status) from err
    print(f"VM {args.vm} was scheduled to start")
    return 0
