"""`virtctl version [--client]`: this client's version, and the server's from
GET /apis/subresources.kubevirt.io/v1/version, in KubeVirt's `version.Info{...}` form."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.buildinfo import version_info
from kubevisor.virtctl.client import SUBRESOURCES, Client, VirtctlError
from kubevisor.virtctl.common import run

FIELDS = ("gitVersion", "gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform")


def format_info(info: dict[str, Any]) -> str:
    parts = [f'{key[0].upper()}{key[1:]}:"{info.get(key, "")}"' for key in FIELDS]
    return "version.Info{" + ", ".join(parts) + "}"


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("version", parents=parents, help="Print the client and server version information.")
    p.add_argument("--client", action="store_true", help="client version only (no server needed)")
    p.set_defaults(func=version_cmd)


def version_cmd(args: argparse.Namespace) -> int:
    print(f"Client Version: {format_info(version_info())}", flush=True)
    if args.client:
        return 0
    return run(args, server_version)


async def server_version(args: argparse.Namespace, client: Client) -> int:
    try:
        info = await client.request("GET", f"{SUBRESOURCES}/version")
    except VirtctlError as err:
        raise VirtctlError(f"could not get the server version: {err}", err.status) from err
    print(f"Server Version: {format_info(dict(info or {}))}")
    return 0
