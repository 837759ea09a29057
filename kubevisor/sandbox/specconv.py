"""Host bundle config.json → the config.json crun gets inside the guest (pure).

What refers to the host is rewritten or dropped: the rootfs and bind-mount sources move into the
sandbox's virtio-fs share; namespace paths, hooks, cgroup paths and LSM labels mean nothing in the
guest. Everything else (process, user, env, cwd, capabilities, rlimits, seccomp, tmpfs mounts,
masked paths, hostname) passes through for crun to apply.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from kubevisor.agent.protocol import GUEST_SHARED_DIR

# Resource classes crun can apply to a guest cgroup; the rest describe host devices or networks.
GUEST_RESOURCES = ("memory", "cpu", "pids", "devices")


@dataclass(frozen=True)
class SharedMount:
    """A host path that must be bind-mounted into the share at `share_rel`."""

    source: str
    share_rel: str


class SpecError(ValueError):
    """config.json is unusable; the message names the field."""


def is_bind(mount: dict[str, Any]) -> bool:
    opts = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in opts or "rbind" in opts


def validate(config: Any) -> None:
    if not isinstance(config, dict):
        raise SpecError("config.json: not a JSON object")
    if not isinstance(config.get("ociVersion"), str):
        raise SpecError("config.json: ociVersion is required")
    root = config.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise SpecError("config.json: root.path is required")
    process = config.get("process")
    if process is not None:
        validate_process(process, "process")
    mounts = config.get("mounts", [])
    if not isinstance(mounts, list):
        raise SpecError("config.json: mounts must be a list")
    for i, m in enumerate(mounts):
        if not isinstance(m, dict) or not isinstance(m.get("destination"), str):
            raise SpecError(f"config.json: mounts[{i}].destination is required")
        if not PurePosixPath(m["destination"]).is_absolute():
            raise SpecError(f"config.json: mounts[{i}].destination must be absolute")


def validate_process(process: Any, where: str) -> None:
    if not isinstance(process, dict):
        raise SpecError(f"{where}: must be an object")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise SpecError(f"{where}.args: must be a non-empty list of strings")
    cwd = process.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise SpecError(f"{where}.cwd: must be an absolute path")
    env = process.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise SpecError(f"{where}.env: must be a list of strings")
    user = process.get("user", {})
    if not isinstance(user, dict) or not isinstance(user.get("uid", 0), int):
        raise SpecError(f"{where}.user.uid: must be an integer")


def guest_config(config: dict[str, Any], container_id: str) -> tuple[dict[str, Any], list[SharedMount]]:
    """The guest's config.json and the host paths to bind into the share (relative to it)."""
    cfg = copy.deepcopy(config)
    base = f"{GUEST_SHARED_DIR}/{container_id}"
    cfg["root"] = {"path": f"{base}/rootfs", "readonly": bool(config["root"].get("readonly", False))}
    shared: list[SharedMount] = []
    mounts = []
    for i, m in enumerate(cfg.get("mounts", [])):
        if is_bind(m):
            rel = f"{container_id}/mounts/{i}"
            shared.append(SharedMount(str(m.get("source", "")), rel))
            m = {**m, "source": f"{GUEST_SHARED_DIR}/{rel}"}
            m["options"] = [o for o in m.get("options", []) if not o.startswith(("context=", "idmap"))]
        mounts.append(m)
    cfg["mounts"] = mounts
    cfg.pop("hooks", None)
    cfg.pop("annotations", None)
    process = cfg.get("process")
    if isinstance(process, dict):
        for key in ("apparmorProfile", "selinuxLabel"):
            process.pop(key, None)
    linux = cfg.setdefault("linux", {})
    linux["cgroupsPath"] = f"/kubevisor/{container_id}"
    linux["namespaces"] = [
        {"type": ns["type"]} for ns in linux.get("namespaces", []) if isinstance(ns, dict) and "type" in ns
    ]
    for key in ("mountLabel", "intelRdt"):
        linux.pop(key, None)
    resources = linux.get("resources")
    if isinstance(resources, dict):
        linux["resources"] = {k: v for k, v in resources.items() if k in GUEST_RESOURCES}
    return cfg, shared
