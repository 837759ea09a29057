"""`kubevisor controller`: run the controllers against any Kubernetes apiserver.

    kubevisor controller --kubeconfig PATH [--controllers vm,vmi,vmirs,scheduler,node-lifecycle,local-path]

Against a real cluster leave out `scheduler` (kube-scheduler binds pods there) and
usually `node-lifecycle` (kube-controller-manager watches nodes) and `local-path` (its directories
are made on the controller's own machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from kubevisor.controller.context import Settings
from kubevisor.controller.kube import Kube
from kubevisor.controller.launcher_pod import LauncherConfig
from kubevisor.controller.manager import CONTROLLERS, LeaderElection, Manager
from kubevisor.controller.node_health import DEFAULT_HEARTBEAT_TIMEOUT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubevisor controller", description="Run the Kubevisor controllers.")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context to use")
    p.add_argument("--controllers", default=",".join(CONTROLLERS), help="comma-separated controllers to run")
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run only while holding the leader Lease (default: on)",
    )
    p.add_argument("--leader-elect-namespace", default="kube-system")
    p.add_argument("--leader-elect-name", default="kubevisor-controller")
    p.add_argument("--leader-elect-lease-duration", type=int, default=15, metavar="SECONDS")
    p.add_argument("--identity", default=None, help="leader election identity (default: host_pid)")
    p.add_argument(
        "--node-heartbeat-timeout", type=float, default=DEFAULT_HEARTBEAT_TIMEOUT, metavar="SECONDS"
    )
    p.add_argument("--launcher-image", default=LauncherConfig.image)
    p.add_argument(
        "--require-kvm",
        action="store_true",
        help="launcher pods request devices.kubevirt.io/kvm (no software emulation)",
    )
    p.add_argument(
        "--scheduler-name",
        action="append",
        default=None,
        help="pods with this schedulerName are bound by the embedded scheduler (default-scheduler)",
    )
    p.add_argument("--no-pvc-check", action="store_true", help="do not wait for a VMI's PVCs to exist")
    p.add_argument(
        "--local-path-dir",
        type=Path,
        default=None,
        help="where the local-path provisioner keeps volumes (default: $KUBEVISOR_DATA/local-path)",
    )
    p.add_argument("--watch-timeout", type=int, default=60, metavar="SECONDS")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [n.strip() for n in args.controllers.split(",") if n.strip()]
    if args.leader_elect_lease_duration < 2:
        print(
            "kubevisor controller: --leader-elect-lease-duration: must be at least 2 seconds", file=sys.stderr
        )
        return 2
    if args.node_heartbeat_timeout <= 0:
        print("kubevisor controller: --node-heartbeat-timeout: must be positive", file=sys.stderr)
        return 2
    if args.kubeconfig and not os.path.isfile(args.kubeconfig):
        print(f"kubevisor controller: --kubeconfig: no such file {args.kubeconfig}", file=sys.stderr)
        return 2
    try:
        kube = Kube.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as exc:
        print(f"kubevisor controller: --kubeconfig: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    settings = Settings(
        launcher=LauncherConfig(image=args.launcher_image, require_kvm=args.require_kvm),
        node_heartbeat_timeout=args.node_heartbeat_timeout,
        scheduler_names=tuple(args.scheduler_name or ["default-scheduler"]),
        check_pvcs=not args.no_pvc_check,
        local_path_dir=args.local_path_dir.resolve() if args.local_path_dir else None,
    )
    election = None
    if args.leader_elect:
        duration = args.leader_elect_lease_duration
        election = LeaderElection(
            namespace=args.leader_elect_namespace,
            name=args.leader_elect_name,
            identity=args.identity or f"{socket.gethostname()}_{os.getpid()}",
            lease_duration=duration,
            renew_deadline=duration * 2 / 3,
            retry_period=max(0.5, duration / 7.5),
        )
    try:
        manager = Manager(kube, names, settings, election, watch_timeout=args.watch_timeout)
    except ValueError as exc:
        print(f"kubevisor controller: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        manager.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return manager.run()
    finally:
        kube.close()


if __name__ == "__main__":
    sys.exit(main())
