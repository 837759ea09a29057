"""Where Kubevisor keeps things on the host. Environment variables override each root."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Downloads and built guest assets; survives across clones and reruns."""
    return Path(os.environ.get("KUBEVISOR_CACHE", "/var/cache/kubevisor"))


def data_dir() -> Path:
    """Persistent state: image store, PVC data, apiserver database."""
    return Path(os.environ.get("KUBEVISOR_DATA", "/var/lib/kubevisor"))


def run_dir() -> Path:
    """Runtime state that does not survive a reboot: sockets, pid records, overlays."""
    return Path(os.environ.get("KUBEVISOR_RUN", "/run/kubevisor"))
