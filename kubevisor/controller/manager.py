"""Runs a chosen set of controllers over shared informers, behind leader election."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kubevisor.controller.base import Controller
from kubevisor.controller.context import ControllerContext, Settings
from kubevisor.controller.events import EventRecorder
from kubevisor.controller.informer import InformerFactory
from kubevisor.controller.kube import Kube
from kubevisor.controller.leader import LeaderElector
from kubevisor.controller.node_lifecycle import NodeLifecycleController
from kubevisor.controller.provisioner import LocalPathProvisioner
from kubevisor.controller.replicaset import ReplicaSetController
from kubevisor.controller.scheduler import SchedulerController
from kubevisor.controller.vm import VMController
from kubevisor.controller.vmi import VMIController

log = logging.getLogger(__name__)

CONTROLLERS: dict[str, Callable[[ControllerContext], Controller]] = {
    "vm": VMController,
    "vmi": VMIController,
    "vmirs": ReplicaSetController,
    "scheduler": SchedulerController,
    "node-lifecycle": NodeLifecycleController,
    "local-path": LocalPathProvisioner,
}


@dataclass
class LeaderElection:
    namespace: str = "kube-system"
    name: str = "kubevisor-controller"
    identity: str = "kubevisor-controller"
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class Manager:
    def __init__(
        self,
        kube: Kube,
        names: list[str],
        settings: Settings,
        election: LeaderElection | None,
        *,
        watch_timeout: int = 60,
        component: str = "kubevisor-controller",
    ) -> None:
        unknown = [n for n in names if n not in CONTROLLERS]
        if unknown:
            raise ValueError(
                f"--controllers: unknown controller {unknown[0]!r} (known: {', '.join(CONTROLLERS)})"
            )
        self.kube = kube
        self.names = names
        self.settings = settings
        self.election = election
        self.watch_timeout = watch_timeout
        self.component = component
        self.stop_event = threading.Event()
        self.lost = threading.Event()
        self.controllers: list[Controller] = []
        self.informers: InformerFactory | None = None
        self.elector: LeaderElector | None = None
        self.started = threading.Event()

    def _start_controllers(self) -> None:
        informers = InformerFactory(self.kube, watch_timeout=self.watch_timeout)
        host = self.election.identity if self.election else None
        ctx = ControllerContext(
            self.kube, informers, EventRecorder(self.kube, self.component, host), self.settings
        )
        self.controllers = [CONTROLLERS[name](ctx) for name in self.names]
        self.informers = informers
        informers.start()
        while not informers.wait_synced(timeout=1.0):
            if self.stop_event.is_set():
                return
        for controller in self.controllers:
            controller.start()
        log.info("controllers running: %s", ", ".join(self.names))
        self.started.set()

    def run(self) -> int:
        """Block until stop() (0) or the lease is lost (1)."""
        if self.election is None:
            self._start_controllers()
            self.stop_event.wait()
            self.shutdown()
            return 0
        e = self.election
        self.elector = LeaderElector(
            self.kube,
            namespace=e.namespace,
            name=e.name,
            identity=e.identity,
            lease_duration=e.lease_duration,
            renew_deadline=e.renew_deadline,
            retry_period=e.retry_period,
        )
        # Start in the background: the elector must keep renewing while caches sync.
        self.elector.run(
            self.stop_event,
            lambda: threading.Thread(
                target=self._start_controllers, name="start-controllers", daemon=True
            ).start(),
        )
        lost = self.elector.lost.is_set()
        self.shutdown()
        if not lost and self.elector.leading.is_set():
            self.elector.release()
        return 1 if lost else 0

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self) -> None:
        for controller in self.controllers:
            controller.stop()
        if self.informers is not None:
            self.informers.stop()
