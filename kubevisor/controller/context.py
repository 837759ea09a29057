"""What every controller is built from: the API client, shared informers, the event recorder, settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubevisor.controller.events import EventRecorder
from kubevisor.controller.informer import InformerFactory
from kubevisor.controller.kube import Kube
from kubevisor.controller.launcher_pod import LauncherConfig
from kubevisor.controller.node_health import DEFAULT_HEARTBEAT_TIMEOUT


@dataclass
class Settings:
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    node_heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    scheduler_names: tuple[str, ...] = ("default-scheduler",)
    check_pvcs: bool = True


@dataclass
class ControllerContext:
    kube: Kube
    informers: InformerFactory
    recorder: EventRecorder
    settings: Settings = field(default_factory=Settings)
