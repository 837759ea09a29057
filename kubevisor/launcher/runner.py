"""Run one VMI on this host: claim its run dir, prepare volumes, start QEMU, tear everything down.

The run dir `run_dir()/vms/<namespace>_<name>/` holds everything a run creates: the launcher's
and QEMU's process records, QMP/serial/VNC/agent sockets, logs, volume overlays and seeds. A
run that ends normally removes the whole directory. A run that dies (kill -9) leaves the
records, and the next run of the same VMI finds them: if the recorded launcher still runs
the VMI is busy; otherwise its QEMU (if alive) is killed and the directory is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kubevisor import paths, procs
from kubevisor.api.vmi import dns1123_label_error
from kubevisor.hypervisor import firmware
from kubevisor.hypervisor.argv import LaunchError, build_argv, pod_interface
from kubevisor.hypervisor.model import Accel, LaunchEnv, PortForward
from kubevisor.hypervisor.vm import VirtualMachine, clean_stale_qemu
from kubevisor.storage.pvc import DISK_IMAGE

log = logging.getLogger(__name__)

LAUNCHER_RECORD = "launcher.json"
VOLUMES_DIR = "volumes"
DOMAIN_FILE = "domain.json"  # what others on the node need to know of this run (see DomainInfo)
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class RunError(RuntimeError):
    """The VMI cannot be run; a one-line message for the user."""


@dataclass(frozen=True)
class StaleRun:
    qemu: procs.ProcessRecord | None  # the orphan QEMU that was killed, if any was alive
    qemu_was_alive: bool


@dataclass(frozen=True)
class DomainInfo:
    """Facts of a run that the node agent reads: the VMI uid, the accelerator, where the pod
    interface is (user-mode netdev, guest address) and the ports forwarded to the guest."""

    uid: str
    accel: str
    pod_netdev: str
    guest_address: str
    ports: tuple[PortForward, ...] = ()


def write_domain_info(run_dir: Path, info: DomainInfo) -> None:
    doc = {
        "uid": info.uid,
        "accel": info.accel,
        "podInterface": {"netdev": info.pod_netdev, "guestAddress": info.guest_address},
        "ports": [{"protocol": p.protocol, "host": f"{p.host_addr}:{p.host_port}", "guestPort": p.guest_port}
                  for p in info.ports],
    }
    tmp = run_dir / (DOMAIN_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(run_dir / DOMAIN_FILE)


def read_domain_info(run_dir: Path) -> DomainInfo | None:
    """None when the run has not written it (yet) or it is unreadable."""
    try:
        doc = json.loads((run_dir / DOMAIN_FILE).read_text())
        iface = doc.get("podInterface") or {}
        ports = []
        for p in doc.get("ports") or []:
            host, _, port = str(p["host"]).rpartition(":")
            proto: Literal["tcp", "udp"] = "udp" if p.get("protocol") == "udp" else "tcp"
            ports.append(PortForward(proto, host, int(port), int(p["guestPort"])))
        return DomainInfo(str(doc.get("uid") or ""), str(doc.get("accel") or ""),
                          str(iface.get("netdev") or ""), str(iface.get("guestAddress") or ""), tuple(ports))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def vms_dir() -> Path:
    return paths.run_dir() / "vms"


def vmi_key(vmi: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name), both validated as DNS-1123 labels before they become a path."""
    meta = vmi.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "")
    for field, value in (("metadata.namespace", namespace), ("metadata.name", name)):
        err = dns1123_label_error(value) if value else "is required"
        if err:
            raise RunError(f"{field}: {value!r} {err}")
    return namespace, name


def run_dir_for(namespace: str, name: str) -> Path:
    return vms_dir() / f"{namespace}_{name}"


@contextlib.contextmanager
def _vms_lock() -> Iterator[None]:
    """Serializes claiming run dirs (check, clean, create) among concurrent launchers."""
    base = vms_dir()
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def clean_stale(run_dir: Path) -> StaleRun | None:
    """Clean what a dead run left in run_dir. Raises RunError if a live launcher owns it."""
    if not run_dir.exists():
        return None
    owner = procs.read_record(run_dir / LAUNCHER_RECORD)
    if owner is not None and procs.is_alive(owner) and owner.pid != os.getpid():
        raise RunError(f"{run_dir.name.replace('_', '/', 1)} is already running "
                       f"(kubevisor vm run, pid {owner.pid})")
    qemu = procs.read_record(run_dir / "qemu.json")
    was_alive = qemu is not None and procs.is_alive(qemu)
    clean_stale_qemu(run_dir)
    remove_run_dir(run_dir)
    return StaleRun(qemu, was_alive)


def clean_after_launcher(run_dir: Path) -> StaleRun | None:
    """For the launcher's owner (the node agent) after it had to kill a launcher: kill its orphan
    QEMU and remove its run dir, unless a live launcher (a newer run of the VMI) owns it."""
    with _vms_lock():
        try:
            return clean_stale(run_dir)
        except RunError:
            return None


def remove_run_dir(run_dir: Path) -> None:
    """Everything of a run lives in its dir (hostDisk files never do): one removal."""
    shutil.rmtree(run_dir, ignore_errors=True)


def claim_run_dir(run_dir: Path) -> StaleRun | None:
    """Clean up after a dead run if needed, create run_dir and record this launcher in it."""
    with _vms_lock():
        stale = clean_stale(run_dir)
        run_dir.mkdir(mode=0o700)
        procs.write_record(run_dir / LAUNCHER_RECORD,
                           procs.ProcessRecord.of(os.getpid(), _own_argv(), "launcher"))
    return stale


def _own_argv() -> list[str]:
    try:
        return Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
    except OSError:
        return []


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    """A port the system has free on host now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_forwards(vmi: dict[str, Any], publish: list[PortForward]) -> tuple[PortForward, ...]:
    """Explicit --publish forwards, plus a free loopback port for each port the interfaces declare."""
    forwards = list(publish)
    published: set[tuple[str, int]] = {(p.protocol, p.guest_port) for p in forwards}
    for iface in vmi["spec"]["domain"].get("devices", {}).get("interfaces", []):
        binding = iface.get("masquerade") if "masquerade" in iface else None
        if binding is None:
            continue
        for port in iface.get("ports", []):
            proto: Literal["tcp", "udp"] = "udp" if str(port.get("protocol", "")).upper() == "UDP" else "tcp"
            if (proto, int(port["port"])) in published:
                continue
            forwards.append(PortForward(proto, "127.0.0.1", free_port("127.0.0.1"), int(port["port"])))
            published.add((proto, int(port["port"])))
    return tuple(forwards)


def _resolve_image(ref: str) -> Path:
    """containerDisk image -> its disk in the local image store (LookupError if absent)."""
    from kubevisor.images.store import ImageStore, StoreError

    try:
        return ImageStore().resolve_disk(ref)
    except StoreError:
        raise LookupError("import it with `kubevisor images import FILE`") from None


def claims_resolver(claims_dir: Path) -> Callable[[str], Path]:
    """claimName -> `<claims_dir>/<claimName>/disk.img` (where the node agent mounts claims)."""

    def resolve(claim: str) -> Path:
        if not _CLAIM_NAME.match(claim) or len(claim) > 253:
            raise LookupError(f"{claim!r} is not a valid claim name")
        directory = claims_dir / claim
        if not directory.is_dir():
            raise LookupError(f"not mounted at {directory}")
        return directory / DISK_IMAGE

    return resolve


def objects_resolver(directory: Path) -> Callable[[str], dict[str, bytes]]:
    """Secret/ConfigMap name -> {key: bytes} from `<directory>/<name>/<key>` (where the node agent
    projects them); KeyError when the object was not projected."""

    def resolve(name: str) -> dict[str, bytes]:
        path = directory / name
        if not _CLAIM_NAME.match(name) or len(name) > 253 or not path.is_dir():
            raise KeyError(name)
        return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}

    return resolve


def prepare(
    vmi: dict[str, Any],
    run_dir: Path,
    accel: Accel,
    publish: list[PortForward],
    claims_dir: Path | None = None,
    secrets_dir: Path | None = None,
    configmaps_dir: Path | None = None,
) -> VirtualMachine:
    """Volumes, firmware copies and the argv for a claimed run dir; a VirtualMachine ready to start.

    Raises ValidationError (from storage) or LaunchError; the caller removes the run dir.
    """
    from kubevisor.storage.volumes import prepare_volumes

    volumes = prepare_volumes(
        vmi,
        run_dir / VOLUMES_DIR,
        image_resolver=_resolve_image,
        claim_resolver=claims_resolver(claims_dir) if claims_dir is not None else None,
        secret_resolver=objects_resolver(secrets_dir) if secrets_dir is not None else None,
        configmap_resolver=objects_resolver(configmaps_dir) if configmaps_dir is not None else None,
    )
    ovmf = firmware.prepare_ovmf_vars(vmi, run_dir)
    if vmi["spec"]["domain"].get("firmware", {}).get("kernelBoot") is not None:
        raise LaunchError("spec.domain.firmware.kernelBoot",
                          "kernelBoot from a container image is not supported by `vm run` yet")
    forwards = port_forwards(vmi, publish)
    env = LaunchEnv(
        accel=accel,
        run_dir=run_dir,
        volumes=volumes,
        port_forwards=forwards,
        ovmf_code=ovmf[0] if ovmf else LaunchEnv.ovmf_code,
        ovmf_vars=ovmf[1] if ovmf else None,
    )
    iface = pod_interface(vmi)
    info = DomainInfo(
        uid=str(vmi["metadata"].get("uid") or ""),
        accel=accel,
        pod_netdev=iface.netdev if iface else "",
        guest_address=iface.guest_address if iface else "",
        ports=forwards,
    )
    write_domain_info(run_dir, info)
    return VirtualMachine(vmi["metadata"]["name"], build_argv(vmi, env), env)
