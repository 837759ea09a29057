"""`virtctl`: a thin entry point; each command lives in its own module with `register(sub, parents)`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kubevisor.virtctl.client import VirtctlError
from kubevisor.virtctl.common import connection_flags
from kubevisor.virtctl.target import TargetError

COMMAND_MODULES = (
    "start",
    "stop",
    "restart",
    "pause",
    "unpause",
    "softreboot",
    "reset",
    "console",
    "vnc",
    "portforward",
    "ssh",
    "scp",
    "create",
    "guestosinfo",
    "expand",
    "version",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtctl",
        description="virtctl controls virtual machine related operations on your kubernetes cluster.",
        parents=[connection_flags(defaults=True)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [connection_flags(defaults=False)]
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"kubevisor.virtctl.{name}")
        module.register(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.func(args)
        return code
    except (VirtctlError, TargetError) as err:
        print(f"Error: {err}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
