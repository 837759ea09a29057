"""`virtctl pause vm|vmi NAME`: PUT .../virtualmachineinstances/NAME/pause (a VM's VMI has its name)."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.client import VMI, Client, NotFound, VirtctlError
from kubevisor.virtctl.common import name_arg, require_vm, run


def register_action(sub: Any, parents: list[argparse.ArgumentParser], action: str, help_: str) -> None:
    p = sub.add_parser(action, parents=parents, help=help_)
    kinds = p.add_subparsers(dest="kind", metavar="vm|vmi", required=True)
    for kind in ("vm", "vmi"):
        k = kinds.add_parser(kind, parents=parents, help=f"{action} a {'VM' if kind == 'vm' else 'VMI'}")
        k.add_argument("name", type=name_arg, metavar="NAME")
        k.add_argument("--dry-run", action="store_true", help="only check that the request would be accepted")
        k.set_defaults(func=lambda args, action=action: run(args, lambda a, c: act(a, c, action)))


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    register_action(sub, parents, "pause", "Pause a virtual machine (vm) or instance (vmi).")


GERUND = {"pause": "pausing", "unpause": "unpausing"}


async def act(args: argparse.Namespace, client: Client, action: str) -> int:
    doing = GERUND.get(action, f"{action}ing")
    if args.kind == "vm":
        await require_vm(client, args.name)
    body = {"dryRun": ["All"]} if args.dry_run else {}
    try:
        await client.subresource("PUT", VMI, args.name, action, body)
    except NotFound as err:
        if args.kind == "vm":
            raise VirtctlError(
                f'Error {doing} VirtualMachine "{args.name}": it is not running', 409
            ) from err
        raise VirtctlError(f"Error {doing} VirtualMachineInstance {err}", 404) from err
    except VirtctlError as err:
        kind = "VirtualMachine" if args.kind == "vm" else "VirtualMachineInstance"
        raise VirtctlError(f"Error {doing} {kind} {err}", err.status) from err
    print(f"VMI {args.name} was scheduled to {action}")
    return 0
