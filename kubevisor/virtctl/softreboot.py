"""`virtctl soft-reboot VMI`: PUT .../virtualmachineinstances/VMI/softreboot (guest agent or ACPI)."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.client import VMI, Client, VirtctlError
from kubevisor.virtctl.common import name_arg, run


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("soft-reboot", parents=parents, help="Soft reboot a virtual machine instance.")
    p.add_argument("vmi", type=name_arg, metavar="VMI")
    p.set_defaults(func=lambda args: run(args, lambda a, c: vmi_action(a, c, "softreboot", "soft reboot")))


async def vmi_action(args: argparse.Namespace, client: Client, sub: str, words: str) -> int:
    try:
        await client.subresource("PUT", VMI, args.vmi, sub, {})
    except VirtctlError as err:
        raise VirtctlError(f"Error {words}ing VirtualMachineInstance {err}", err.status) from err
    print(f"VMI {args.vmi} was scheduled to {words}")
    return 0
