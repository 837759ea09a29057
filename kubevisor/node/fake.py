"""A fake node for control-plane scale tests, as kwok fakes kubelets: pods run without processes.

    python -m kubevisor.node.fake --kubeconfig PATH [--node-name fake-0] [--pods 110000]
                                  [--cpu 100000] [--memory 1000Ti]

It registers its Node and heart-beats through its Lease exactly as `kubevisor node` does (the same
NodeAgent), but its pod runner starts nothing: a launcher pod bound to it is reported Running at
once, a VMI that the controller hands over (Scheduled, labelled kubevirt.io/nodeName=<node>) is
moved to Running, and a pod being deleted is finished (grace 0). It makes the same API writes per
VMI as the real pod runner, so the controller and apiserver see the load of real nodes
(bench/density --fake).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from kubevisor.controller.base import timestamp
from kubevisor.controller.informer import Informer
from kubevisor.controller.kube import PODS, VMIS, ApiError, Kube, Obj, key_of
from kubevisor.controller.launcher_pod import NODE_NAME_LABEL
from kubevisor.controller.quantity import to_bytes
from kubevisor.controller.vmi_status import being_deleted, pod_phase
from kubevisor.node.agent import AgentConfig, NodeAgent
from kubevisor.node.node_object import Capacity, NodeError, check_node_name
from kubevisor.node.pod_runner import PodRunner
from kubevisor.node.pod_status import running_status

log = logging.getLogger(__name__)

VMI_KEY = "vmi/"


class FakePodRunner(PodRunner):
    name = "fake-pod-runner"
    workers = 4

    def __init__(self, kube: Kube, pods: Informer, config: AgentConfig) -> None:
        super().__init__(kube, pods, config.node_name, config.address, config.state_dir, config.log_dir)
        self.vmis = Informer(
            kube, VMIS, label_selector=f"{NODE_NAME_LABEL}={config.node_name}", watch_timeout=60
        )
        self.vmis.add_handler(self._on_vmi)

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self.enqueue(key_of(new))

    def _on_vmi(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None and (new.get("status") or {}).get("phase") == "Scheduled":
            self.enqueue(VMI_KEY + key_of(new))

    # Nothing runs, so there is nothing to adopt, clean or stop.
    def adopt_all(self) -> None:
        pass

    def clean_orphans(self) -> None:
        pass

    def stop_all(self, grace: float | None = None) -> None:
        pass

    def start(self) -> None:
        self.vmis.start()
        self.vmis.wait_synced(60)
        super().start()

    def stop(self) -> None:
        super().stop()
        self.vmis.stop()

    def reconcile(self, key: str) -> float | None:
        if key.startswith(VMI_KEY):
            return self._vmi_running(key[len(VMI_KEY) :])
        pod = self.pods.store.get(key)
        if pod is None or (pod.get("spec") or {}).get("nodeName") != self.node_name:
            return None
        meta = pod["metadata"]
        if being_deleted(pod):
            try:
                self.kube.delete(
                    PODS, meta["namespace"], meta["name"], uid=meta.get("uid"), grace_period_seconds=0
                )
            except ApiError as exc:
                if not exc.not_found:
                    raise
            return None
        if pod_phase(pod) in ("Running", "Succeeded", "Failed"):
            return None
        now = timestamp()
        self._patch_status(pod, running_status(pod, self.host_ip, now, now))
        return None

    def _vmi_running(self, key: str) -> float | None:
        if self.vmis.store.get(key) is None:
            return None
        namespace, name = key.split("/", 1)
        try:
            vmi = self.kube.get(VMIS, namespace, name)  # fresh, as the real pod runner reads it
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        if being_deleted(vmi):
            return None
        status = vmi.setdefault("status", {})
        if status.get("phase") != "Scheduled":
            return None
        status["phase"] = "Running"
        stamps = list(status.get("phaseTransitionTimestamps") or [])
        stamps.append({"phase": "Running", "phaseTransitionTimestamp": timestamp()})
        status["phaseTransitionTimestamps"] = stamps
        try:
            self.kube.replace(VMIS, vmi)  # a conflict retries
        except ApiError as exc:
            if not exc.not_found:
                raise
        return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kubevisor.node.fake", description="Run a fake node (no VMs).")
    p.add_argument("--kubeconfig")
    p.add_argument("--node-name", default="fake-0")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--pods", type=int, default=110000)
    p.add_argument("--cpu", type=int, default=100000)
    p.add_argument("--memory", default="1000Ti")
    p.add_argument("--state-dir", type=Path, default=Path("/nonexistent/kubevisor-fake-node"))
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        name = check_node_name(args.node_name)
        memory = to_bytes(args.memory)
    except (NodeError, ValueError) as exc:
        print(f"fake node: {exc}", file=sys.stderr)
        return 2
    kube = Kube.from_kubeconfig(args.kubeconfig)
    capacity = Capacity(cpu=args.cpu, memory_bytes=memory, pods=args.pods, kvm=0)
    config = AgentConfig(
        name, args.address, args.state_dir, args.state_dir / "logs", capacity, "10.244.0.0/16"
    )
    agent = NodeAgent(kube, config, runner_factory=FakePodRunner)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.start()
        stop.wait()
    finally:
        agent.stop()
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
