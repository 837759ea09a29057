"""`virtctl restart VM [--grace-period N --force]`: PUT .../virtualmachines/VM/restart."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.client import VM, Client, VirtctlError
from kubevisor.virtctl.common import name_arg, run
from kubevisor.virtctl.start import dry_run
from kubevisor.virtctl.stop import add_force_flags, check_force


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restart", parents=parents, help="Restart a virtual machine.")
    p.add_argument("vm", type=name_arg, metavar="VM")
    add_force_flags(p)
    p.set_defaults(func=lambda args: run(args, restart))


async def restart(args: argparse.Namespace, client: Client) -> int:
    check_force(args)
    body = dry_run(args)
    if args.force:
        body["gracePeriodSeconds"] = args.grace_period
    try:
        await client.subresource("PUT", VM, args.vm, "restart", body)
    except VirtctlError as err:
        raise VirtctlError(f"Error restarting VirtualMachine {err}", err.status) from err
    print(f"VM {args.vm} was scheduled to restart")
    return 0
