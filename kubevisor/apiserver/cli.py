"""`kubevisor apiserver --data-dir DIR [--listen 127.0.0.1:6443]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from kubevisor.apiserver.app import EmbeddedAPIServer
from kubevisor.apiserver.podlogs import PodLogDirectory


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen: expected HOST:PORT, got {text!r}")
    try:
        number = int(port)
    except ValueError as exc:
        raise ValueError(f"--listen: port must be a number, got {port!r}") from exc
    if not 0 <= number <= 65535:
        raise ValueError(f"--listen: port out of range: {number}")
    return host.strip("[]"), number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubevisor apiserver", description="Run the embedded Kubernetes-compatible API server."
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="database, PKI, tokens and kubeconfig")
    parser.add_argument("--listen", default="127.0.0.1:6443", help="HOST:PORT to serve HTTPS on")
    parser.add_argument(
        "--pod-log-dir",
        type=Path,
        default=None,
        help="serve pods/log from container log files in kubelet's layout under this directory",
    )
    parser.add_argument(
        "--kubeconfig-for",
        action="append",
        default=[],
        metavar="USER",
        help="also write DIR/USER.kubeconfig with its own token (repeatable)",
    )
    parser.add_argument(
        "--kubevirt",
        action="store_true",
        help="serve the kubevirt.io API: install its CRDs and run its admission (defaults, validation)",
    )
    parser.add_argument(
        "--node-access-dir",
        type=Path,
        default=None,
        help="with --kubevirt: the node-access CA and the apiserver's client certificate (ca.crt, "
        "apiserver-client.crt/.key) to reach node agents for console, VNC, port-forward, pause",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


async def serve(
    data_dir: Path,
    host: str,
    port: int,
    pod_log_dir: Path | None = None,
    users: list[str] | None = None,
    kubevirt: bool = False,
    node_access_dir: Path | None = None,
) -> None:
    server = EmbeddedAPIServer(data_dir)
    dialer = None
    if pod_log_dir is not None:
        server.extensions.set_log_source(PodLogDirectory(pod_log_dir, alive=server.pod_alive))
    if kubevirt:
        from kubevisor.api import admission
        from kubevisor.apiserver.certs import NodeAccessPKI
        from kubevisor.virtapi.dialer import NodeDialer
        from kubevisor.virtapi.subresources import GROUP, RESOURCES, VERSION, SubresourceAPI

        admission.register(server.registry)
        dialer = NodeDialer(NodeAccessPKI(node_access_dir)) if node_access_dir is not None else None
        virt_api = SubresourceAPI(server.registry, dialer, server.metrics.registry)
        server.extensions.add_api_group(GROUP, VERSION, RESOURCES, virt_api.handle)
    await server.start(host, port)
    if kubevirt:
        from kubevisor.api import admission

        written = await admission.install_crds(server.registry)
        if written:
            logging.getLogger(__name__).info("installed CRDs: %s", ", ".join(written))
    for user in users or []:
        server.kubeconfig_for(user)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"kubevisor apiserver: serving on https://{host}:{server.port}; kubeconfig: {server.kubeconfig_path}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
        if dialer is not None:
            await dialer.close()


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"kubevisor apiserver: {exc}", file=sys.stderr)
        return 2
    data_dir: Path = args.data_dir
    access: Path | None = args.node_access_dir
    if access is not None:
        from kubevisor.apiserver.certs import NodeAccessPKI

        pki = NodeAccessPKI(access)
        missing = [str(p) for p in (pki.ca, pki.client_cert, pki.client_key) if not p.is_file()]
        if missing or not args.kubevirt:
            why = f"missing {', '.join(missing)}" if missing else "needs --kubevirt"
            print(f"kubevisor apiserver: --node-access-dir: {why}", file=sys.stderr)
            return 2
    if data_dir.exists() and not data_dir.is_dir():
        print(f"kubevisor apiserver: --data-dir: {data_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(data_dir, host, port, args.pod_log_dir, args.kubeconfig_for, args.kubevirt, access))
    except OSError as exc:
        print(f"kubevisor apiserver: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
