"""What every command shares: kubectl's connection flags, the async runner, error reporting."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from kubevisor.virtctl.client import VM, VMI, Client, ClientConfig, NotFound, VirtctlError, load_config
from kubevisor.virtctl.target import TargetError, validate_name

Handler = Callable[[argparse.Namespace, Client], Awaitable[int]]


def connection_flags(defaults: bool) -> argparse.ArgumentParser:
    """kubectl's flags; accepted before and after the command (sub-parsers do not reset them)."""
    parser = argparse.ArgumentParser(add_help=False)
    default: Any = None if defaults else argparse.SUPPRESS
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (default: the context's)")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=30.0 if defaults else argparse.SUPPRESS,
        help="seconds to wait for the server to answer a request",
    )
    return parser


def config_from(args: argparse.Namespace) -> ClientConfig:
    return load_config(args.kubeconfig, args.context, args.namespace)


def run(args: argparse.Namespace, handler: Handler) -> int:
    """Load the configuration, open a client and run `handler` in a fresh event loop."""
    config = config_from(args)

    async def main() -> int:
        async with Client(config, timeout=args.request_timeout) as client:
            return await handler(args, client)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130


def name_arg(value: str) -> str:
    try:
        return validate_name(value)
    except TargetError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


async def require_vm(client: Client, name: str) -> dict[str, Any]:
    try:
        return await client.get(VM, name)
    except NotFound:
        raise VirtctlError(
            f'virtualmachine "{name}" not found in namespace "{client.namespace}"', 404
        ) from None


async def running_vmi(client: Client, name: str, from_vm: bool = False) -> dict[str, Any]:
    """The VMI, which must be Running; a clear error for a missing or stopped VM/VMI."""
    vmi = await client.get_or_none(VMI, name)
    if vmi is None:
        vm = await client.get_or_none(VM, name)
        if vm is not None:
            raise VirtctlError(f'VirtualMachine "{name}" is not running', 409)
        kind = "virtualmachine" if from_vm else "virtualmachineinstance"
        raise VirtctlError(f'{kind} "{name}" not found in namespace "{client.namespace}"', 404)
    phase = (vmi.get("status") or {}).get("phase") or "Pending"
    if phase != "Running":
        raise VirtctlError(f'VirtualMachineInstance "{name}" is not running (phase {phase})', 409)
    return vmi


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
