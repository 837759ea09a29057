"""`virtctl scp [-r] SRC DST`: the system's scp through the port-forward tunnel; one of SRC and DST
is `[user@]TYPE/NAME[/NAMESPACE]:PATH`."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.client import VirtctlError
from kubevisor.virtctl.common import config_from
from kubevisor.virtctl.ssh import add_ssh_flags, common_ssh_args, default_username, host, run_client
from kubevisor.virtctl.target import TargetError, parse_scp_location


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scp", parents=parents, help="SCP files from/to a virtual machine instance.")
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST")
    add_ssh_flags(p)
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
    p.add_argument("--preserve", action="store_true", help="preserve times and modes")
    p.set_defaults(func=scp_cmd, local_ssh="scp")


def build_scp_argv(args: argparse.Namespace) -> list[str]:
    try:
        src_user, src_target, src_path = parse_scp_location(args.source)
        dst_user, dst_target, dst_path = parse_scp_location(args.destination)
    except TargetError as e:
        raise VirtctlError(str(e)) from e
    if (src_target is None) == (dst_target is None):
        raise VirtctlError("exactly one of SRC and DST must be remote: [user@]TYPE/NAME[/NAMESPACE]:PATH")
    target = src_target or dst_target
    assert target is not None
    user = (src_user if src_target else dst_user) or args.username or default_username()
    namespace = target.namespace or config_from(args).namespace
    remote = f"{host(user, target, namespace)}:"
    argv = [args.local_ssh if args.local_ssh != "ssh" else "scp"]
    argv += common_ssh_args(args, target, namespace)
    if args.recursive:
        argv.append("-r")
    if args.preserve:
        argv.append("-p")
    if src_target:
        argv += [remote + src_path, dst_path]
    else:
        argv += [src_path, remote + dst_path]
    return argv


def scp_cmd(args: argparse.Namespace) -> int:
    return run_client(build_scp_argv(args))
