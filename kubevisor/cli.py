"""`kubevisor` entry point: a thin dispatcher to each component's own command module.

Each subcommand lives in its component package and exposes `main(argv) -> int`; it is
imported only when used so that `kubevisor --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "assets": ("kubevisor.images.cli", "build and inspect guest kernels, initramfs and disk images"),
    "images": ("kubevisor.images.store_cli", "the local OCI image store (containerDisks)"),
    "vm": ("kubevisor.launcher.run_cli", "run one VMI manifest without an apiserver"),
    "apiserver": ("kubevisor.apiserver.cli", "run the embedded Kubernetes-compatible API server"),
    "controller": ("kubevisor.controller.cli", "run the controllers"),
    "node": ("kubevisor.node.cli", "run the node agent"),
    "up": ("kubevisor.up", "start the whole embedded system on this machine"),
    "down": ("kubevisor.down", "stop what `kubevisor up` started"),
}


def _usage() -> str:
    lines = ["usage: kubevisor <command> [args...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        from kubevisor import __version__

        print(f"kubevisor {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"kubevisor: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    entry: Callable[[list[str]], int] = module.main
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
