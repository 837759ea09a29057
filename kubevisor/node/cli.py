"""`kubevisor node`: the node agent for embedded mode.

    kubevisor node --kubeconfig PATH [--node-name NAME] [--state-dir DIR] [--pod-log-dir DIR]
                   [--access-cert CRT --access-key KEY --access-client-ca CA [--access-port N]]

Registers the Node, renews its Lease, runs the virt-launcher pods bound to it, and (with the
--access-* files) serves console, VNC, port-forward and pause/reset to the apiserver over
mutual TLS, advertising HOST:PORT in the Node's kubevisor.io/access-endpoint annotation. SIGTERM
stops the agent and leaves launchers running (a restarted agent adopts them);
`--stop-pods-on-exit` powers them down too (each within its grace period) and reports their
pods terminated, as a node shutdown.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from kubevisor import paths
from kubevisor.controller.kube import Kube
from kubevisor.node.access import AccessTLS
from kubevisor.node.agent import AgentConfig, NodeAgent
from kubevisor.node.node_object import NodeError, check_node_name, host_capacity
from kubevisor.node.pod_runner import default_launcher_argv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubevisor node", description="Run the Kubevisor node agent.")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context")
    p.add_argument("--node-name", default=socket.gethostname().lower())
    p.add_argument("--address", default="127.0.0.1", help="the node's InternalIP")
    p.add_argument("--pod-cidr", default="10.244.0.0/24")
    p.add_argument("--state-dir", type=Path, default=None, help="default: $KUBEVISOR_RUN/node/<node-name>")
    p.add_argument("--pod-log-dir", type=Path, default=None, help="default: <state-dir>/logs")
    p.add_argument("--stop-pods-on-exit", action="store_true")
    p.add_argument(
        "--launcher-command",
        default=None,
        help="JSON argv list run for each launcher pod, the VMI file appended (default: kubevisor vm run -f)",
    )
    p.add_argument("--access-port", type=int, default=8186,
                   help="port of the access server for console, VNC, port-forward (0: any free one)")
    p.add_argument("--access-cert", type=Path, help="the access server's certificate (PEM)")
    p.add_argument("--access-key", type=Path, help="its private key (PEM)")
    p.add_argument("--access-client-ca", type=Path,
                   help="CA of the apiserver's client certificate; without the three, no access server")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def access_tls(args: argparse.Namespace) -> AccessTLS | None:
    """The access server's TLS files, all three or none (ValueError names what is wrong)."""
    given = {"--access-cert": args.access_cert, "--access-key": args.access_key,
             "--access-client-ca": args.access_client_ca}
    if not any(given.values()):
        return None
    for flag, path in given.items():
        if path is None:
            raise ValueError(f"{flag} is required with the other --access-* flags")
        if not path.is_file():
            raise ValueError(f"{flag}: no such file {path}")
    if not 0 <= args.access_port <= 65535:
        raise ValueError(f"--access-port: {args.access_port} is out of range")
    return AccessTLS(args.access_cert, args.access_key, args.access_client_ca)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        name = check_node_name(args.node_name)
        ipaddress.ip_address(args.address)
    except NodeError as exc:
        print(f"kubevisor node: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"kubevisor node: --address: {args.address!r} is not an IP address", file=sys.stderr)
        return 2
    try:
        if args.pod_cidr:
            ipaddress.ip_network(args.pod_cidr)
    except ValueError:
        print(f"kubevisor node: --pod-cidr: {args.pod_cidr!r} is not a CIDR", file=sys.stderr)
        return 2
    try:
        tls = access_tls(args)
    except ValueError as exc:
        print(f"kubevisor node: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig and not os.path.isfile(args.kubeconfig):
        print(f"kubevisor node: --kubeconfig: no such file {args.kubeconfig}", file=sys.stderr)
        return 2
    try:
        kube = Kube.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as exc:
        print(f"kubevisor node: --kubeconfig: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    launcher_argv = default_launcher_argv
    if args.launcher_command:
        try:
            prefix = json.loads(args.launcher_command)
            if not isinstance(prefix, list) or not prefix or not all(isinstance(a, str) for a in prefix):
                raise ValueError
        except ValueError:
            print("kubevisor node: --launcher-command: expected a JSON list of strings", file=sys.stderr)
            return 2

        def launcher_argv(vmi_file: Path) -> list[str]:
            return [*prefix, str(vmi_file)]

    state_dir: Path = args.state_dir or paths.run_dir() / "node" / name
    log_dir: Path = args.pod_log_dir or state_dir / "logs"
    config = AgentConfig(name, args.address, state_dir, log_dir, host_capacity(), args.pod_cidr or None,
                         access_port=args.access_port, access_tls=tls)
    agent = NodeAgent(kube, config, launcher_argv=launcher_argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.start()
        stop.wait()
    except Exception as exc:
        print(f"kubevisor node: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    finally:
        agent.stop()
        if args.stop_pods_on_exit:
            agent.runner.stop_all()
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
