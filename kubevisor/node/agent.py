"""The node agent: registers its Node, heart-beats through a Lease, runs its launcher pods."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubevisor.controller.base import timestamp, utcnow
from kubevisor.controller.informer import Informer
from kubevisor.controller.kube import LEASES, NODES, PODS, VMIS, ApiError, Kube, Obj
from kubevisor.controller.launcher_pod import NODE_NAME_LABEL
from kubevisor.controller.leader import format_micro_time
from kubevisor.node.access import AccessServer, AccessService, AccessTLS
from kubevisor.node.domain import Domains
from kubevisor.node.node_object import (
    ACCESS_ENDPOINT_ANNOTATION,
    NODE_LEASE_NAMESPACE,
    Capacity,
    lease_object,
    node_object,
    node_status,
)
from kubevisor.node.pod_runner import PodRunner, default_launcher_argv
from kubevisor.node.vmi_reporter import VMIStatusReporter

log = logging.getLogger(__name__)

LEASE_RENEW_INTERVAL = 10.0  # kubelet renews every 10 s (a quarter of the 40 s lease)
STATUS_INTERVAL = 60.0


@dataclass
class AgentConfig:
    node_name: str
    address: str
    state_dir: Path
    log_dir: Path
    capacity: Capacity
    pod_cidr: str | None = None
    lease_renew_interval: float = LEASE_RENEW_INTERVAL
    status_interval: float = STATUS_INTERVAL
    access_port: int = 0  # the access server's port (0: any free one); used with access_tls
    access_tls: AccessTLS | None = None  # None: no access server (console, VNC ... unavailable)


class NodeAgent:
    def __init__(
        self,
        kube: Kube,
        config: AgentConfig,
        launcher_argv: Callable[[Path], list[str]] = default_launcher_argv,
        runner_factory: Callable[[Kube, Informer, AgentConfig], PodRunner] | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.stop_event = threading.Event()
        self.pods = Informer(kube, PODS, field_selector=f"spec.nodeName={config.node_name}", watch_timeout=60)
        if runner_factory is not None:  # kubevisor.node.fake: pods without processes
            self.runner = runner_factory(kube, self.pods, config)
        else:
            self.runner = PodRunner(
                kube,
                self.pods,
                config.node_name,
                config.address,
                config.state_dir,
                config.log_dir,
                launcher_argv,
            )
        self._threads: list[threading.Thread] = []
        self._ready_since: str | None = None
        self.access: AccessService | None = None
        self.vmis: Informer | None = None  # the VMIs on this node, for their status (with access)
        self.access_endpoint = ""

    # -- registration and heartbeat -----------------------------------------------------
    def register(self) -> None:
        c = self.config
        now = timestamp()
        try:
            node = self.kube.get(NODES, None, c.node_name)
        except ApiError as exc:
            if not exc.not_found:
                raise
            body = node_object(c.node_name, c.capacity, c.address, c.pod_cidr, now)
            node = self.kube.create(NODES, None, body)
            log.info("registered node %s", c.node_name)
        self._ready_since = now
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        if annotations.get(ACCESS_ENDPOINT_ANNOTATION, "") != self.access_endpoint:
            value = self.access_endpoint or None  # no access server now: drop a stale endpoint
            self.kube.patch(NODES, None, c.node_name,
                            {"metadata": {"annotations": {ACCESS_ENDPOINT_ANNOTATION: value}}})
        self.post_status(node)
        self.renew_lease()

    def start_access(self) -> None:
        """The access server (console, VNC, port-forward, pause ...) and the VMI status reporter."""
        c = self.config
        if c.access_tls is None:
            return
        domains = Domains()
        self.vmis = Informer(self.kube, VMIS, label_selector=f"{NODE_NAME_LABEL}={c.node_name}",
                             watch_timeout=60)
        self.vmis.start()
        reporter = VMIStatusReporter(self.kube, self.vmis, domains, c.node_name, c.address)
        server = AccessServer(domains, on_domain_change=reporter.trigger)
        self.access = AccessService(server, reporter)
        port = self.access.start(c.address, c.access_port, c.access_tls)
        host = f"[{c.address}]" if ":" in c.address else c.address
        self.access_endpoint = f"{host}:{port}"
        log.info("node access server on https://%s", self.access_endpoint)

    def post_status(self, node: Obj | None = None) -> None:
        c = self.config
        if node is None:
            node = self.kube.get(NODES, None, c.node_name)
        status = node_status(c.capacity, c.address, timestamp(), self._ready_since)
        other = [x for x in (node.get("status") or {}).get("conditions") or [] if x.get("type") != "Ready"]
        status["conditions"] = other + status["conditions"]
        self.kube.patch(NODES, None, c.node_name, {"status": status}, subresource="status")

    def renew_lease(self) -> None:
        name = self.config.node_name
        now = format_micro_time(utcnow())
        try:
            lease = self.kube.get(LEASES, NODE_LEASE_NAMESPACE, name)
        except ApiError as exc:
            if not exc.not_found:
                raise
            self.kube.create(LEASES, NODE_LEASE_NAMESPACE, lease_object(name, now))
            return
        lease.setdefault("spec", {})["renewTime"] = now
        lease["spec"]["holderIdentity"] = name
        self.kube.replace(LEASES, lease)

    def _heartbeat(self) -> None:
        last_status = 0.0
        elapsed = 0.0
        while not self.stop_event.wait(self.config.lease_renew_interval):
            elapsed += self.config.lease_renew_interval
            try:
                self.renew_lease()
                if elapsed - last_status >= self.config.status_interval:
                    self.post_status()
                    last_status = elapsed
            except Exception as exc:
                log.warning("heartbeat: %s", exc)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.start_access()
        self.register()
        self.runner.adopt_all()
        self.pods.start()
        while not self.pods.wait_synced(1.0):
            if self.stop_event.is_set():
                return
        self.runner.clean_orphans()
        self.runner.start()
        t = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        t.start()
        self._threads.append(t)
        log.info("node agent %s running", self.config.node_name)

    def stop(self) -> None:
        """Stop watching and heart-beating. Launchers keep running: a restarted agent adopts them."""
        self.stop_event.set()
        if self.access is not None:
            self.access.stop()
        if self.vmis is not None:
            self.vmis.stop()
        self.runner.stop()
        self.pods.stop()
        for t in self._threads:
            t.join(timeout=5)
