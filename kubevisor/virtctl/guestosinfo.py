"""`virtctl guestosinfo VMI`: GET .../virtualmachineinstances/VMI/guestosinfo, printed as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kubevisor.virtctl.client import VMI, Client, VirtctlError
from kubevisor.virtctl.common import name_arg, run


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "guestosinfo", parents=parents, help="Return guest agent info about the operating system."
    )
    p.add_argument("vmi", type=name_arg, metavar="VMI")
    p.set_defaults(func=lambda args: run(args, guestosinfo))


async def guestosinfo(args: argparse.Namespace, client: Client) -> int:
    try:
        info = await client.subresource("GET", VMI, args.vmi, "guestosinfo")
    except VirtctlError as err:
        raise VirtctlError(f"Error getting guestosinfo of VirtualMachineInstance {err}", err.status) from err
    print(json.dumps(info, indent=2))
    return 0
