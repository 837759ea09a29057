"""`virtctl ssh [user@]TYPE/NAME[/NAMESPACE]`: the system's ssh client, tunnelled through
`virtctl port-forward --stdio` as its ProxyCommand (virtctl's "wrapped" mode).

The ProxyCommand runs this same Python with `-m kubevisor.virtctl` so the tunnel is the code
that is running now; kubeconfig and context are passed on. The host name given to ssh is
`TYPE.NAME.NAMESPACE`, so known_hosts keeps one entry per VM.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from typing import Any

from kubevisor.virtctl.client import VirtctlError
from kubevisor.virtctl.common import config_from
from kubevisor.virtctl.target import Target, TargetError, parse_ssh_target


def default_username() -> str | None:
    for var in ("USER", "USERNAME", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def add_ssh_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--username", default=None, help="the user to log in as (default: $USER)")
    p.add_argument("-i", "--identity-file", default=None, help="the private key to authenticate with")
    p.add_argument("-p", "--port", type=int, default=22, help="the SSH port in the VM")
    p.add_argument("--known-hosts", default=None, help="the known_hosts file to use")
    p.add_argument(
        "-t",
        "--local-ssh-opts",
        action="append",
        default=[],
        help='an option for the local ssh client, e.g. "-o StrictHostKeyChecking=no" (repeatable)',
    )
    p.add_argument("--local-ssh", default="ssh", help=argparse.SUPPRESS)


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ssh", parents=parents, help="Open a SSH connection to a virtual machine instance.")
    p.add_argument("target", metavar="[USER@]TYPE/NAME[/NAMESPACE]")
    add_ssh_flags(p)
    p.add_argument("-c", "--command", default=None, help="a command to execute in the VM")
    p.set_defaults(func=ssh_cmd)


def proxy_command(args: argparse.Namespace, target: Target, namespace: str, port: int) -> str:
    """The ProxyCommand, quoted for the shell ssh runs it with and with `%` escaped for ssh."""
    config = config_from(args)
    argv = [
        sys.executable,
        "-m",
        "kubevisor.virtctl",
        *config.kubectl_args(),
        "port-forward",
        "--stdio=true",
        f"{target.kind}/{target.name}/{namespace}",
        str(port),
    ]
    return "ProxyCommand=" + shlex.join(argv).replace("%", "%%")


def resolve(args: argparse.Namespace) -> tuple[str | None, Target, str]:
    try:
        user, target = parse_ssh_target(args.target)
    except TargetError as e:
        raise VirtctlError(str(e)) from e
    namespace = target.namespace or config_from(args).namespace
    return user or args.username or default_username(), target, namespace


def common_ssh_args(args: argparse.Namespace, target: Target, namespace: str) -> list[str]:
    """The tunnel (to args.port in the VM), known_hosts, the user's own options and the key."""
    argv = ["-o", proxy_command(args, target, namespace, args.port)]
    if args.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={args.known_hosts}"]
    argv += list(args.local_ssh_opts)
    if args.identity_file:
        argv += ["-i", args.identity_file]
    return argv


def host(user: str | None, target: Target, namespace: str) -> str:
    name = f"{target.kind}.{target.name}.{namespace}"
    return f"{user}@{name}" if user else name


def build_ssh_argv(args: argparse.Namespace) -> list[str]:
    user, target, namespace = resolve(args)
    argv = [args.local_ssh, *common_ssh_args(args, target, namespace), host(user, target, namespace)]
    if args.command:
        argv.append(args.command)
    return argv


def run_client(argv: list[str]) -> int:
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError as e:
        raise VirtctlError(f"the local ssh client {argv[0]!r} was not found") from e


def ssh_cmd(args: argparse.Namespace) -> int:
    return run_client(build_ssh_argv(args))
