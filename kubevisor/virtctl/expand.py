"""`virtctl expand --vm VM [-o yaml|json]`: GET .../virtualmachines/VM/expand-spec."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from kubevisor.virtctl.client import VM, Client, VirtctlError
from kubevisor.virtctl.common import name_arg, run


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "expand",
        parents=parents,
        help="Return the VirtualMachine with its instancetype and preference expanded.",
    )
    p.add_argument("--vm", type=name_arg, required=True, help="the VirtualMachine to expand")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.set_defaults(func=lambda args: run(args, expand))


async def expand(args: argparse.Namespace, client: Client) -> int:
    try:
        vm = await client.subresource("GET", VM, args.vm, "expand-spec")
    except VirtctlError as err:
        raise VirtctlError(f"error expanding VirtualMachine - {args.vm}: {err}", err.status) from err
    if args.output == "json":
        print(json.dumps(vm, indent=2))
    else:
        print(yaml.safe_dump(vm, sort_keys=False), end="")
    return 0
