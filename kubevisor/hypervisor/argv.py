"""A `kubevirt.io/v1` VMI (already defaulted and validated) + a LaunchEnv → a QEMU argv. Pure.

What needs the host (image files, sockets, firmware copies, the accelerator verdict) comes
in through `LaunchEnv`; nothing here touches the filesystem or runs anything, so the whole
mapping is tested against fixtures (tests/unit/fixtures/hypervisor/).

Conventions:
- `-nodefaults -no-user-config`: every device is ours and named; nothing implicit.
- block devices use JSON `-blockdev` so that any path is safe (no comma escaping);
- QEMU runs in the foreground (no -daemonize) under its owner, with a pidfile;
- started paused (`-S`) unless told otherwise, so the owner attaches QMP and the console
  before the guest runs its first instruction.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from kubevisor.api.quantity import QuantityError, to_quantity
from kubevisor.hypervisor.model import LaunchEnv

# KubeVirt's masquerade address plan (pod network): gateway .1, guest .2 of 10.0.2.0/24.
DEFAULT_VM_NETWORK_CIDR = "10.0.2.0/24"
DEFAULT_VM_NETWORK_CIDR_V6 = "fd10:0:2::/120"

NIC_MODELS = {
    "virtio": "virtio-net-pci",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "rtl8139": "rtl8139",
    "ne2k_pci": "ne2k_pci",
    "pcnet": "pcnet",
}
MACHINE_TYPES = re.compile(r"^(q35|pc|pc-q35-\d+\.\d+|pc-i440fx-\d+\.\d+)$")
WATCHDOG_ACTIONS = {"poweroff": "poweroff", "reset": "reset", "shutdown": "shutdown"}
DISK_BUSES = ("virtio", "sata", "scsi", "usb")
AHCI_PORTS = 6  # ports per ich9-ahci controller


class LaunchError(ValueError):
    """The VMI cannot be launched on this host as asked; names the field that causes it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def quantity_bytes(value: object, field: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "1G", 1073741824) in whole bytes."""
    try:
        return to_quantity(value).ceil()
    except QuantityError as e:
        raise LaunchError(field, f"invalid quantity {value!r}: {e}") from None


def guest_memory_mib(vmi: dict[str, Any]) -> int:
    domain = vmi["spec"]["domain"]
    guest = domain.get("memory", {}).get("guest")
    if guest is not None:
        size, fld = guest, "spec.domain.memory.guest"
    else:
        size = domain.get("resources", {}).get("requests", {}).get("memory")
        fld = "spec.domain.resources.requests.memory"
    if size is None:
        raise LaunchError("spec.domain.memory.guest", "no guest memory (nor resources.requests.memory)")
    b = quantity_bytes(size, fld)
    mib = -(-b // 2**20)  # QEMU wants whole MiB; round up
    if mib < 16:
        raise LaunchError(fld, f"{size} is too little memory for a guest (minimum 16Mi)")
    return mib


def _opts(kind: str, **props: object) -> str:
    """QEMU's `kind,key=value,...` syntax; values are ours or validated, so escaping commas suffices.

    Keys are passed as they are (QEMU mixes `-` and `_`); hyphenated ones via `**{"a-b": v}`.
    """
    parts = [kind]
    for key, value in props.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        parts.append(f"{key}={str(value).replace(',', ',,')}")
    return ",".join(parts)


def _qemu_id(kind: str, name: str) -> str:
    # Kubernetes names are DNS labels ([a-z0-9-]); QEMU ids allow letters, digits, '-', '.', '_'.
    return f"{kind}-{name}"


@dataclass
class _Builder:
    vmi: dict[str, Any]
    env: LaunchEnv
    args: list[str] = field(default_factory=list)
    ahci_count: int = 0
    ahci_used: int = 0
    scsi: bool = False
    usb: bool = False

    def add(self, *a: str) -> None:
        self.args.extend(a)

    @property
    def spec(self) -> dict[str, Any]:
        return self.vmi["spec"]

    @property
    def domain(self) -> dict[str, Any]:
        return self.spec["domain"]

    @property
    def devices(self) -> dict[str, Any]:
        return self.domain.get("devices", {})

    # -- controllers, created on first use ---------------------------------------------------
    def sata_bus(self) -> str:
        if self.ahci_used == self.ahci_count * AHCI_PORTS:
            self.add("-device", _opts("ich9-ahci", id=f"sata{self.ahci_count}"))
            self.ahci_count += 1
        port = self.ahci_used % AHCI_PORTS
        ctrl = self.ahci_used // AHCI_PORTS
        self.ahci_used += 1
        return f"sata{ctrl}.{port}"

    def scsi_bus(self) -> str:
        if not self.scsi:
            self.add("-device", _opts("virtio-scsi-pci", id="scsi0"))
            self.scsi = True
        return "scsi0.0"

    def usb_bus(self) -> str:
        if not self.usb:
            self.add("-device", _opts("qemu-xhci", id="usb0"))
            self.usb = True
        return "usb0.0"


def check_launchable(vmi: dict[str, Any], accel: str) -> None:
    """Host-dependent checks that validation (host-independent) cannot make. Raises LaunchError."""
    cpu_model = vmi["spec"]["domain"].get("cpu", {}).get("model")
    if accel != "kvm" and cpu_model == "host-passthrough":
        raise LaunchError(
            "spec.domain.cpu.model",
            "host-passthrough needs KVM, and this host runs guests under TCG (software emulation); "
            "use host-model or a named CPU model",
        )
    machine = vmi["spec"]["domain"].get("machine", {}).get("type", "q35")
    if not MACHINE_TYPES.match(machine):
        raise LaunchError("spec.domain.machine.type", f"unsupported machine type {machine!r} (q35, pc)")
    efi = vmi["spec"]["domain"].get("firmware", {}).get("bootloader", {}).get("efi")
    if efi is not None and efi.get("secureBoot", True) and not machine.startswith(("q35", "pc-q35")):
        raise LaunchError("spec.domain.firmware.bootloader.efi.secureBoot", "secure boot needs machine q35")
    networks = {n["name"]: n for n in vmi["spec"].get("networks", [])}
    for i, iface in enumerate(vmi["spec"]["domain"].get("devices", {}).get("interfaces", [])):
        fld = f"spec.domain.devices.interfaces[{i}]"
        net = networks.get(iface["name"])
        if net is None:
            raise LaunchError(f"{fld}.name", f"no network named {iface['name']!r} in spec.networks")
        if "pod" not in net:
            raise LaunchError(f"{fld}.name", "only the pod network is supported by this launcher")
        binding = _binding(iface)
        if binding not in ("masquerade", "slirp"):
            raise LaunchError(
                f"{fld}.{binding}", f"binding {binding!r} needs the network layer; use masquerade"
            )
        model = iface.get("model", "virtio")
        if model not in NIC_MODELS:
            raise LaunchError(f"{fld}.model", f"unsupported NIC model {model!r} ({', '.join(NIC_MODELS)})")


def _binding(iface: dict[str, Any]) -> str:
    for key in ("masquerade", "bridge", "slirp", "sriov", "passt", "macvtap", "passtBinding", "binding"):
        if key in iface:
            return key
    return "masquerade"


def build_argv(vmi: dict[str, Any], env: LaunchEnv) -> list[str]:
    """The complete QEMU argv (argv[0] is the binary) for a defaulted, validated VMI."""
    check_launchable(vmi, env.accel)
    b = _Builder(vmi, env)
    meta = vmi.get("metadata", {})
    b.add(
        env.qemu_binary,
        "-name",
        _opts(f"guest={meta.get('namespace', 'default')}_{meta['name']}", **{"debug-threads": True}),
    )
    b.add("-no-user-config", "-nodefaults", "-msg", "timestamp=on")
    b.add(
        "-sandbox",
        _opts("on", obsolete="deny", elevateprivileges="deny", spawn="deny", resourcecontrol="deny"),
    )
    _machine(b)
    _cpu(b)
    b.add("-m", f"{guest_memory_mib(vmi)}M")
    _firmware(b)
    b.add("-rtc", "base=utc")
    b.add("-pidfile", str(env.pidfile))
    b.add("-chardev", _opts("socket", id="qmp", path=env.qmp_socket, server=True, wait=False))
    b.add("-mon", "chardev=qmp,mode=control")
    b.add("-chardev", _opts("socket", id="qmp-access", path=env.access_qmp_socket, server=True, wait=False))
    b.add("-mon", "chardev=qmp-access,mode=control")
    b.add("-display", "none")
    _disks(b)
    _interfaces(b)
    _console(b)
    _graphics(b)
    _guest_agent(b)
    _rng(b)
    _watchdog(b)
    if env.start_paused:
        b.add("-S")
    b.add(*env.extra_args)
    return b.args


def _machine(b: _Builder) -> None:
    machine = b.domain.get("machine", {}).get("type", "q35")
    props: dict[str, object] = {}
    features = b.domain.get("features", {})
    if features.get("acpi", {}).get("enabled", True) is False:
        props["acpi"] = False
    efi = b.domain.get("firmware", {}).get("bootloader", {}).get("efi")
    if efi is not None:
        props["pflash0"] = "ovmf-code"
        props["pflash1"] = "ovmf-vars"
        if efi.get("secureBoot", True):
            props["smm"] = True
    b.add("-machine", _opts(machine, **props))
    b.add("-accel", b.env.accel)


def _cpu(b: _Builder) -> None:
    cpu = b.domain.get("cpu", {})
    sockets, cores, threads = (int(cpu.get(k, 1)) for k in ("sockets", "cores", "threads"))
    model = cpu.get("model", "host-model")
    if model in ("host-model", "host-passthrough"):
        # Under KVM the host's CPU; under TCG QEMU's richest emulated model.
        model = "host" if b.env.accel == "kvm" else "max"
    b.add("-cpu", model)
    b.add("-smp", _opts(str(sockets * cores * threads), sockets=sockets, cores=cores, threads=threads))


def _firmware(b: _Builder) -> None:
    fw = b.domain.get("firmware", {})
    if fw.get("uuid"):
        b.add("-uuid", str(fw["uuid"]))
    if fw.get("serial"):
        b.add("-smbios", _opts("type=1", serial=fw["serial"]))
    efi = fw.get("bootloader", {}).get("efi")
    if efi is not None:
        if b.env.ovmf_vars is None:
            raise LaunchError("spec.domain.firmware.bootloader.efi", "EFI needs a per-VMI OVMF vars copy")
        b.add(
            "-blockdev",
            json.dumps(
                {
                    "driver": "file",
                    "filename": str(b.env.ovmf_code),
                    "node-name": "ovmf-code",
                    "read-only": True,
                }
            ),
        )
        b.add(
            "-blockdev",
            json.dumps({"driver": "file", "filename": str(b.env.ovmf_vars), "node-name": "ovmf-vars"}),
        )
        if efi.get("secureBoot", True):
            b.add("-global", "driver=cfi.pflash01,property=secure,value=on")
    kernel_boot = fw.get("kernelBoot")
    if kernel_boot is not None:
        if b.env.kernel is None:
            raise LaunchError("spec.domain.firmware.kernelBoot.container.kernelPath", "kernel not prepared")
        b.add("-kernel", str(b.env.kernel))
        if b.env.initrd is not None:
            b.add("-initrd", str(b.env.initrd))
        if kernel_boot.get("kernelArgs"):
            b.add("-append", str(kernel_boot["kernelArgs"]))


def _disk_kind(disk: dict[str, Any]) -> str:
    for kind in ("disk", "cdrom", "lun"):
        if kind in disk:
            return kind
    return "disk"


def _disks(b: _Builder) -> None:
    for i, disk in enumerate(b.devices.get("disks", [])):
        fld = f"spec.domain.devices.disks[{i}]"
        name = disk["name"]
        source = b.env.volumes.get(name)
        if source is None:
            raise LaunchError(f"{fld}.name", f"no prepared volume for disk {name!r}")
        kind = _disk_kind(disk)
        target = disk.get(kind) or {}
        bus = target.get("bus", "sata" if kind == "cdrom" else ("scsi" if kind == "lun" else "virtio"))
        readonly = bool(source.readonly or target.get("readonly", kind == "cdrom"))
        node = _qemu_id("drive", name)
        file_node: dict[str, Any] = {"driver": "file", "filename": str(source.path)}
        if disk.get("cache") == "none":
            file_node["cache"] = {"direct": True}
        b.add(
            "-blockdev",
            json.dumps(
                {"driver": source.format, "node-name": node, "read-only": readonly, "file": file_node}
            ),
        )
        props: dict[str, object] = {"drive": node, "id": _qemu_id("ua", name)}
        if "bootOrder" in disk:
            props["bootindex"] = int(disk["bootOrder"])
        if disk.get("serial") and kind != "cdrom":
            props["serial"] = disk["serial"]
        if disk.get("cache") == "writethrough":
            props["write-cache"] = False
        b.add("-device", _opts(_disk_device(b, kind, bus, f"{fld}.{kind}.bus"), **props))


def _disk_device(b: _Builder, kind: str, bus: str, fld: str) -> str:
    """The QEMU device (with its bus=) for a disk kind on a KubeVirt bus."""
    if bus not in DISK_BUSES:
        raise LaunchError(fld, f"unsupported bus {bus!r} ({', '.join(DISK_BUSES)})")
    if bus == "virtio":
        if kind != "disk":
            raise LaunchError(fld, f"a {kind} cannot use the virtio bus")
        return "virtio-blk-pci"
    if bus == "sata":
        if kind == "lun":
            raise LaunchError(fld, "a lun needs the scsi bus")
        return _opts("ide-cd" if kind == "cdrom" else "ide-hd", bus=b.sata_bus())
    if bus == "scsi":
        return _opts("scsi-cd" if kind == "cdrom" else "scsi-hd", bus=b.scsi_bus())
    if kind != "disk":
        raise LaunchError(fld, f"a {kind} cannot use the usb bus")
    return _opts("usb-storage", bus=b.usb_bus())


def _vm_network(net: dict[str, Any], fld: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    pod = net.get("pod") or {}
    try:
        v4 = ipaddress.IPv4Network(pod.get("vmNetworkCIDR", DEFAULT_VM_NETWORK_CIDR))
        v6 = ipaddress.IPv6Network(pod.get("vmIPv6NetworkCIDR", DEFAULT_VM_NETWORK_CIDR_V6))
    except ValueError as e:
        raise LaunchError(f"{fld}.pod.vmNetworkCIDR", str(e)) from None
    if v4.num_addresses < 8:
        raise LaunchError(f"{fld}.pod.vmNetworkCIDR", "the VM network needs at least a /29")
    return v4, v6


def _addr(net: ipaddress.IPv4Network | ipaddress.IPv6Network, index: int) -> str:
    return str(net.network_address + index)


@dataclass(frozen=True)
class PodInterface:
    """Where the pod network's interface is on the QEMU side: its user-mode netdev and the guest's
    IPv4 address on it (what port forwards target)."""

    netdev: str
    guest_address: str


def pod_interface(vmi: dict[str, Any]) -> PodInterface | None:
    """The first interface (the one that carries the pod network's forwards), if there is one."""
    networks = {n["name"]: (i, n) for i, n in enumerate(vmi["spec"].get("networks", []))}
    for iface in vmi["spec"]["domain"].get("devices", {}).get("interfaces", []):
        if iface["name"] not in networks:
            continue
        net_index, net = networks[iface["name"]]
        v4, _ = _vm_network(net, f"spec.networks[{net_index}]")
        return PodInterface(_qemu_id("net", iface["name"]), _addr(v4, 2))
    return None


def _interfaces(b: _Builder) -> None:
    networks = {n["name"]: (i, n) for i, n in enumerate(b.spec.get("networks", []))}
    forwards_used = False
    for iface in b.devices.get("interfaces", []):
        name = iface["name"]
        net_index, net = networks[name]
        v4, v6 = _vm_network(net, f"spec.networks[{net_index}]")
        netdev = _qemu_id("net", name)
        hostfwd: list[str] = []
        if not forwards_used:  # one pod network; the forwards belong to its interface
            hostfwd = [
                f"{pf.protocol}:{pf.host_addr}:{pf.host_port}-{_addr(v4, 2)}:{pf.guest_port}"
                for pf in b.env.port_forwards
            ]
            forwards_used = True
        v6_opts = {"ipv6-net": v6, "ipv6-host": _addr(v6, 1), "ipv6-dns": _addr(v6, 3)}
        opts = _opts(
            "user",
            id=netdev,
            net=v4,
            host=_addr(v4, 1),
            dhcpstart=_addr(v4, 2),
            dns=_addr(v4, 3),
            **v6_opts,
            hostname=b.spec.get("hostname") or b.vmi["metadata"]["name"],
        )
        b.add("-netdev", ",".join([opts, *(f"hostfwd={h}" for h in hostfwd)]))
        props: dict[str, object] = {
            "netdev": netdev,
            "id": _qemu_id("ua", name),
            "mac": iface.get("macAddress"),
        }
        if "bootOrder" in iface:
            props["bootindex"] = int(iface["bootOrder"])
        else:
            props["romfile"] = ""  # no PXE ROM unless the interface boots: faster firmware
        b.add("-device", _opts(NIC_MODELS[iface.get("model", "virtio")], **props))


def _console(b: _Builder) -> None:
    if b.devices.get("autoattachSerialConsole", True) is False:
        return
    b.add(
        "-chardev",
        _opts(
            "socket",
            id="serial0",
            path=b.env.serial_socket,
            server=True,
            wait=False,
            logfile=b.env.serial_log,
            logappend=True,
        ),
    )
    b.add("-serial", "chardev:serial0")


def _graphics(b: _Builder) -> None:
    if b.devices.get("autoattachGraphicsDevice", True) is False:
        return
    b.add("-device", _opts("VGA", id="video0", vgamem_mb=16))
    b.add("-vnc", f"unix:{b.env.vnc_socket}")


def _guest_agent(b: _Builder) -> None:
    b.add("-device", _opts("virtio-serial-pci", id="virtio-serial0"))
    b.add("-chardev", _opts("socket", id="qga0", path=b.env.guest_agent_socket, server=True, wait=False))
    b.add(
        "-device",
        _opts("virtserialport", bus="virtio-serial0.0", chardev="qga0", name="org.qemu.guest_agent.0"),
    )


def _rng(b: _Builder) -> None:
    if "rng" not in b.devices:
        return
    b.add("-object", _opts("rng-random", id="rng0", filename="/dev/urandom"))
    b.add("-device", _opts("virtio-rng-pci", rng="rng0", id="rng"))


def _watchdog(b: _Builder) -> None:
    watchdog = b.devices.get("watchdog")
    if not watchdog:
        return
    esb = watchdog.get("i6300esb")
    if esb is None:
        raise LaunchError("spec.domain.devices.watchdog", "only the i6300esb watchdog is supported")
    action = esb.get("action", "reset")
    if action not in WATCHDOG_ACTIONS:
        raise LaunchError(
            "spec.domain.devices.watchdog.i6300esb.action",
            f"unsupported action {action!r} ({', '.join(WATCHDOG_ACTIONS)})",
        )
    b.add("-device", _opts("i6300esb", id=_qemu_id("ua", watchdog.get("name", "watchdog"))))
    b.add("-action", f"watchdog={WATCHDOG_ACTIONS[action]}")
