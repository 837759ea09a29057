"""`virtctl stop VM [--grace-period N --force]`: PUT .../virtualmachines/VM/stop."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.client import VM, Client, VirtctlError
from kubevisor.virtctl.common import name_arg, run
from kubevisor.virtctl.start import dry_run


def add_force_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="seconds given to the VMI to terminate gracefully; only 0 with --force",
    )
    p.add_argument("--force", action="store_true", help="with --grace-period=0: stop immediately")
    p.add_argument("--dry-run", action="store_true", help="only check that the request would be accepted")


def check_force(args: argparse.Namespace) -> None:
    if (args.grace_period is not None) != args.force:
        raise VirtctlError("Must both use --force=true and set --grace-period.")
    if args.grace_period is not None and args.grace_period < 0:
        raise VirtctlError("--grace-period must not be negative")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stop", parents=parents, help="Stop a virtual machine.")
    p.add_argument("vm", type=name_arg, metavar="VM")
    add_force_flags(p)
    p.set_defaults(func=lambda args: run(args, stop))


async def stop(args: argparse.Namespace, client: Client) -> int:
    check_force(args)
    body = dry_run(args)
    what = "Error stopping VirtualMachine"
    if args.force:
        body["gracePeriod"] = args.grace_period
        what = "Error force stopping VirtualMachine"
    try:
        await client.subresource("PUT", VM, args.vm, "stop", body)
    except VirtctlError as err:
        raise VirtctlError(f"{what} {err}", err.status) from err
    print(f"VM {args.vm} was scheduled to stop")
    return 0
