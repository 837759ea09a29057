"""VMI → virt-launcher Pod: the pod that carries one VMI's QEMU (pure, fixture-tested).

Shape follows KubeVirt's `pkg/virt-controller/services/template.go`: name
`virt-launcher-<vmi>-<5 random>`, labels `kubevirt.io=virt-launcher`,
`kubevirt.io/created-by=<vmi uid>`, `vm.kubevirt.io/name=<vmi>`, a controller
ownerReference to the VMI, one `compute` container whose requests are the guest memory
plus the launcher overhead (KubeVirt's model), the VMI's cpu, and
`devices.kubevirt.io/kvm: 1` only when KVM is required. Its volumes are the VMI's claims and the
Secrets/ConfigMaps the launcher reads (configMap/secret disks, cloud-init secret references).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from kubevisor.controller.quantity import format_bytes, format_millis, to_bytes, to_millis

Obj = dict[str, Any]

MIB = 2**20

APP_LABEL = "kubevirt.io"
APP_LAUNCHER = "virt-launcher"
CREATED_BY_LABEL = "kubevirt.io/created-by"
VM_NAME_LABEL = "vm.kubevirt.io/name"
NODE_NAME_LABEL = "kubevirt.io/nodeName"
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
DOMAIN_ANNOTATION = "kubevirt.io/domain"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
KVM_RESOURCE = "devices.kubevirt.io/kvm"
COMPUTE_CONTAINER = "compute"
PRIVATE_DIR = "/var/run/kubevirt-private"

DEFAULT_CPU_REQUEST = "100m"  # KubeVirt's cluster default CPURequest
DEFAULT_GRACE_PERIOD = 30  # VMI terminationGracePeriodSeconds default
LAUNCHER_EXTRA_GRACE = 15  # launcher gets extra time to shut the guest down cleanly

# KubeVirt's launcher memory overhead (pkg/hypervisor/kvm/hypervisorbackend.go):
# virt-launcher-monitor 25Mi + virt-launcher 100Mi + virtlogd 25Mi + virtqemud 40Mi + QEMU 50Mi.
OVERHEAD_FIXED = 240 * MIB
OVERHEAD_PER_VCPU = 8 * MIB
OVERHEAD_IOTHREAD = 8 * MIB
OVERHEAD_VIDEO = 32 * MIB
OVERHEAD_TPM = 53 * MIB
OVERHEAD_DEDICATED_CPU = 100 * MIB
PAGETABLE_DIVISOR = 512

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's generateName alphabet
MAX_GENERATE_PREFIX = 58  # 63-char DNS label minus the 5-char random suffix


class LauncherPodError(ValueError):
    """The VMI cannot be turned into a pod; the message names the field."""


@dataclass(frozen=True)
class LauncherConfig:
    image: str = "kubevisor/virt-launcher:latest"
    command: tuple[str, ...] = ("kubevisor", "launcher")
    require_kvm: bool = False
    scheduler_name: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(n))


def launcher_pod_name(vmi_name: str, suffix: str) -> str:
    prefix = f"virt-launcher-{vmi_name}-"[:MAX_GENERATE_PREFIX]
    return prefix + suffix


def _get(obj: Obj, *path: str) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def vcpu_count(vmi: Obj) -> int:
    cpu = _get(vmi, "spec", "domain", "cpu") or {}
    count = 1
    for dim in ("sockets", "cores", "threads"):
        value = cpu.get(dim)
        if value is not None:
            if not isinstance(value, int) or value < 1:
                raise LauncherPodError(f"spec.domain.cpu.{dim}: must be a positive integer, got {value!r}")
            count *= value
    return count


def _memory_field(vmi: Obj, path: tuple[str, ...], name: str) -> int | None:
    value = _get(vmi, *path)
    if value is None:
        return None
    try:
        n = to_bytes(value)
    except ValueError as exc:
        raise LauncherPodError(f"{name}: {exc}") from None
    if n <= 0:
        raise LauncherPodError(f"{name}: must be positive, got {value!r}")
    return n


def guest_memory(vmi: Obj) -> int:
    """Guest RAM in bytes: spec.domain.memory.guest, else resources.requests.memory."""
    guest = _memory_field(vmi, ("spec", "domain", "memory", "guest"), "spec.domain.memory.guest")
    if guest is not None:
        return guest
    req = _memory_field(
        vmi, ("spec", "domain", "resources", "requests", "memory"), "spec.domain.resources.requests.memory"
    )
    if req is None:
        raise LauncherPodError(
            "spec.domain.memory.guest: no guest memory (nor resources.requests.memory) set"
        )
    return req


def memory_overhead(vmi: Obj) -> int:
    """KubeVirt's launcher overhead for this VMI, in bytes."""
    devices = _get(vmi, "spec", "domain", "devices") or {}
    cpu = _get(vmi, "spec", "domain", "cpu") or {}
    overhead = OVERHEAD_FIXED
    overhead += guest_memory(vmi) // PAGETABLE_DIVISOR
    overhead += OVERHEAD_PER_VCPU * vcpu_count(vmi)
    overhead += OVERHEAD_IOTHREAD
    if devices.get("autoattachGraphicsDevice", True) is not False:
        overhead += OVERHEAD_VIDEO
    tpm = devices.get("tpm")
    if isinstance(tpm, dict) and tpm.get("enabled", True) is not False:
        overhead += OVERHEAD_TPM
    if cpu.get("dedicatedCpuPlacement"):
        overhead += OVERHEAD_DEDICATED_CPU
    return overhead


def pod_resources(vmi: Obj, require_kvm: bool) -> Obj:
    requests_in = _get(vmi, "spec", "domain", "resources", "requests") or {}
    limits_in = _get(vmi, "spec", "domain", "resources", "limits") or {}
    overhead = memory_overhead(vmi)
    base = _memory_field(
        vmi, ("spec", "domain", "resources", "requests", "memory"), "spec.domain.resources.requests.memory"
    ) or guest_memory(vmi)
    requests: Obj = {"memory": format_bytes(base + overhead)}
    limits: Obj = {}
    cpu_req = requests_in.get("cpu", DEFAULT_CPU_REQUEST)
    try:
        requests["cpu"] = format_millis(to_millis(cpu_req))
        if "cpu" in limits_in:
            limits["cpu"] = format_millis(to_millis(limits_in["cpu"]))
    except ValueError as exc:
        raise LauncherPodError(f"spec.domain.resources.requests.cpu: {exc}") from None
    mem_limit = _memory_field(
        vmi, ("spec", "domain", "resources", "limits", "memory"), "spec.domain.resources.limits.memory"
    )
    if mem_limit is not None:
        limits["memory"] = format_bytes(mem_limit + overhead)
    if require_kvm:
        # Extended resources must have limit == request.
        requests[KVM_RESOURCE] = "1"
        limits[KVM_RESOURCE] = "1"
    out: Obj = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def owner_reference(vmi: Obj) -> Obj:
    meta = vmi["metadata"]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _claim_volumes(vmi: Obj) -> list[Obj]:
    volumes: list[Obj] = []
    for vol in _get(vmi, "spec", "volumes") or []:
        claim = None
        if isinstance(vol.get("persistentVolumeClaim"), dict):
            claim = vol["persistentVolumeClaim"].get("claimName")
        elif isinstance(vol.get("dataVolume"), dict):
            claim = vol["dataVolume"].get("name")
        if claim:
            volumes.append({"name": vol["name"], "persistentVolumeClaim": {"claimName": claim}})
    return volumes


def claim_names(vmi: Obj) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in _claim_volumes(vmi)]


def _optional(source: Obj, out: Obj) -> Obj:
    if source.get("optional") is not None:
        out["optional"] = bool(source["optional"])
    return out


def _object_volumes(vmi: Obj) -> list[tuple[Obj, str]]:
    """The Secrets and ConfigMaps the launcher reads, as pod volumes with their mount paths (KubeVirt's
    names: the disk's volume name; `<volume>-udata` / `-ndata` for cloud-init's secret references)."""
    out: list[tuple[Obj, str]] = []
    for vol in _get(vmi, "spec", "volumes") or []:
        name = vol.get("name")
        if not name:
            continue
        if isinstance(vol.get("configMap"), dict) and vol["configMap"].get("name"):
            cm = vol["configMap"]
            source = _optional(cm, {"name": cm["name"]})
            out.append(({"name": name, "configMap": source}, f"{PRIVATE_DIR}/config-map/{name}"))
        elif isinstance(vol.get("secret"), dict) and vol["secret"].get("secretName"):
            sec = vol["secret"]
            source = _optional(sec, {"secretName": sec["secretName"]})
            out.append(({"name": name, "secret": source}, f"{PRIVATE_DIR}/secret/{name}"))
        for kind in ("cloudInitNoCloud", "cloudInitConfigDrive"):
            cloud_init = vol.get(kind)
            if not isinstance(cloud_init, dict):
                continue
            for ref_field, suffix, sub in (
                ("secretRef", "udata", "userdata"),
                ("networkDataSecretRef", "ndata", "networkdata"),
            ):
                ref = cloud_init.get(ref_field)
                if isinstance(ref, dict) and ref.get("name"):
                    out.append(
                        (
                            {"name": f"{name}-{suffix}", "secret": {"secretName": ref["name"]}},
                            f"{PRIVATE_DIR}/secret/{name}/{sub}",
                        )
                    )
    return out


def render_launcher_pod(vmi: Obj, config: LauncherConfig, suffix: str) -> Obj:
    """The launcher pod for `vmi` (which must carry metadata.uid)."""
    meta = vmi.get("metadata") or {}
    name = meta.get("name")
    namespace = meta.get("namespace") or "default"
    if not name or not meta.get("uid"):
        raise LauncherPodError("metadata.uid: the VMI must be stored (have a uid) before its pod is rendered")
    spec = vmi.get("spec") or {}

    labels = {k: v for k, v in (meta.get("labels") or {}).items()}
    labels.update(config.extra_labels)
    labels[APP_LABEL] = APP_LAUNCHER
    labels[CREATED_BY_LABEL] = str(meta["uid"])
    labels[VM_NAME_LABEL] = str(name)

    node_selector = dict(spec.get("nodeSelector") or {})
    node_selector[SCHEDULABLE_LABEL] = "true"

    grace = spec.get("terminationGracePeriodSeconds")
    if grace is None:
        grace = DEFAULT_GRACE_PERIOD
    if not isinstance(grace, int) or grace < 0:
        raise LauncherPodError(
            f"spec.terminationGracePeriodSeconds: must be a non-negative integer, got {grace!r}"
        )

    container: Obj = {
        "name": COMPUTE_CONTAINER,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [*config.command, "--namespace", namespace, "--name", str(name)],
        "resources": pod_resources(vmi, config.require_kvm),
    }
    claim_volumes = _claim_volumes(vmi)
    object_volumes = _object_volumes(vmi)
    mounts = [{"name": v["name"], "mountPath": f"{PRIVATE_DIR}/vmi-disks/{v['name']}"} for v in claim_volumes]
    mounts += [{"name": v["name"], "mountPath": path, "readOnly": True} for v, path in object_volumes]
    if mounts:
        container["volumeMounts"] = mounts

    pod_spec: Obj = {
        "hostname": spec.get("hostname") or str(name),
        "nodeSelector": node_selector,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": grace + LAUNCHER_EXTRA_GRACE,
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    for key in ("subdomain", "affinity", "tolerations", "priorityClassName", "dnsPolicy", "dnsConfig"):
        if spec.get(key):
            pod_spec[key] = spec[key]
    scheduler = spec.get("schedulerName") or config.scheduler_name
    if scheduler:
        pod_spec["schedulerName"] = scheduler
    if claim_volumes or object_volumes:
        pod_spec["volumes"] = claim_volumes + [v for v, _ in object_volumes]

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": launcher_pod_name(str(name), suffix),
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                DOMAIN_ANNOTATION: str(name),
                DEFAULT_CONTAINER_ANNOTATION: COMPUTE_CONTAINER,
            },
            "ownerReferences": [owner_reference(vmi)],
        },
        "spec": pod_spec,
    }
