"""Targets and ports as virtctl spells them (pure).

- `type/name[/namespace]`; type is vm|vms|virtualmachine(s) or vmi|vmis|virtualmachineinstance(s);
  the legacy `type/name.namespace` still works (a dot and no third part), with a warning.
- ssh/scp: `[user@]type/name[/namespace]`, scp adds `:path`.
- ports: `[protocol/]local[:remote]`, protocol tcp (default) or udp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VM_KIND, VMI_KIND = "vm", "vmi"
_KINDS = {
    "vm": VM_KIND,
    "vms": VM_KIND,
    "virtualmachine": VM_KIND,
    "virtualmachines": VM_KIND,
    "vmi": VMI_KIND,
    "vmis": VMI_KIND,
    "virtualmachineinstance": VMI_KIND,
    "virtualmachineinstances": VMI_KIND,
}
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PROTOCOLS = ("tcp", "udp")


class TargetError(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    kind: str  # "vm" | "vmi"
    name: str
    namespace: str | None = None
    legacy: bool = False  # parsed from type/name.namespace

    def with_namespace(self, fallback: str) -> Target:
        return Target(self.kind, self.name, self.namespace or fallback, self.legacy)


@dataclass(frozen=True)
class ForwardedPort:
    local: int
    remote: int
    protocol: str = "tcp"


def validate_name(name: str, what: str = "name") -> str:
    if not name:
        raise TargetError(f"{what} cannot be empty")
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise TargetError(f"invalid {what} {name!r}: must be a lowercase RFC 1123 subdomain")
    return name


def validate_namespace(namespace: str) -> str:
    if not namespace:
        raise TargetError("namespace cannot be empty")
    if len(namespace) > 63 or not _LABEL.match(namespace):
        raise TargetError(f"invalid namespace {namespace!r}: must be a lowercase RFC 1123 label")
    return namespace


def normalize_kind(kind: str) -> str:
    try:
        return _KINDS[kind.lower()]
    except KeyError:
        raise TargetError(f"unsupported resource type '{kind}'") from None


def parse_target(target: str) -> Target:
    if not target:
        raise TargetError("target cannot be empty")
    parts = target.split("/")
    if len(parts) == 1:
        raise TargetError("target must contain type and name separated by '/'")
    if len(parts) > 3:
        raise TargetError("target is not valid with more than two '/'")
    kind = normalize_kind(parts[0])
    name = parts[1]
    namespace: str | None = None
    legacy = False
    if len(parts) == 3:
        namespace = validate_namespace(parts[2])
    elif "." in name:
        name, namespace = name.split(".", 1)
        validate_namespace(namespace)
        legacy = True
    if not name:
        raise TargetError("name cannot be empty")
    return Target(kind, validate_name(name), namespace, legacy)


def parse_ssh_target(arg: str) -> tuple[str | None, Target]:
    """`[user@]type/name[/namespace]` -> (user or None, target)."""
    user: str | None = None
    if "@" in arg:
        user, arg = arg.split("@", 1)
        if not user:
            raise TargetError("expected username before '@'")
        if not arg:
            raise TargetError("expected target after '@'")
    return user, parse_target(arg)


def parse_scp_location(arg: str) -> tuple[str | None, Target | None, str]:
    """A local path, or `[user@]type/name[/namespace]:path` on the VM."""
    head, sep, path = arg.partition(":")
    if not sep or "/" not in head:
        return None, None, arg
    try:
        kind = head.split("@", 1)[-1].split("/", 1)[0]
        normalize_kind(kind)
    except TargetError:
        return None, None, arg  # a local path that happens to contain ':'
    user, target = parse_ssh_target(head)
    return user, target, path


def _port_number(text: str, allow_zero: bool) -> int:
    if not text.isdigit():
        raise TargetError(f"invalid port {text!r}")
    value = int(text)
    if value > 65535 or (value == 0 and not allow_zero):
        raise TargetError(f"port {value} out of range")
    return value


def parse_port(arg: str) -> ForwardedPort:
    protocol = "tcp"
    if "/" in arg:
        protocol, arg = arg.split("/", 1)
        protocol = protocol.lower()
        if protocol not in PROTOCOLS:
            raise TargetError(f"unsupported protocol {protocol!r} (tcp or udp)")
    parts = [p for p in arg.split(":") if p]
    if not parts:
        raise TargetError("invalid port, missing local and/or remote port")
    if len(parts) > 2:
        raise TargetError(f"invalid port {arg!r}: expected LOCAL[:REMOTE]")
    local = _port_number(parts[0], allow_zero=len(parts) == 2)
    remote = _port_number(parts[1], allow_zero=False) if len(parts) == 2 else local
    return ForwardedPort(local, remote, protocol)


def parse_ports(args: list[str]) -> list[ForwardedPort]:
    return [parse_port(a) for a in args]
