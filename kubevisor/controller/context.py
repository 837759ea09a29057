"""What every controller is built from: the API client, shared informers, the event recorder, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    local_path_dir: Path | None = None  # the local-path provisioner's base (default: data dir/local-path)


@dataclass
class ControllerContext:
    kube: Kube
    informers: InformerFactory
    recorder: EventRecorder
    settings: Settings = field(default_factory=Settings)
