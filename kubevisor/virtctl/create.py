"""`virtctl create vm [flags]`: print a VirtualMachine manifest built from flags, as virtctl does.

Volume flags take `key:value` params separated by commas (a lone value is `src`):
`--volume-containerdisk=src:IMAGE[,name:N][,bootorder:K]`, `--volume-pvc=src:CLAIM[,name:N][,bootorder:K]`.
Without a boot order volumes boot in the order containerdisk > pvc.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import random
import string
from typing import Any

import yaml

from kubevisor.virtctl.client import VirtctlError
from kubevisor.virtctl.target import TargetError, validate_name

RUN_STRATEGIES = ("Always", "Manual", "Halted", "Once", "RerunOnFailure")
INSTANCETYPE_KINDS = ("virtualmachineinstancetype", "virtualmachineclusterinstancetype")
PREFERENCE_KINDS = ("virtualmachinepreference", "virtualmachineclusterpreference")
CLOUD_INIT_DISK = "cloudinitdisk"

Obj = dict[str, Any]


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("create", parents=parents, help="Create a manifest for the specified kind.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    vm = kinds.add_parser("vm", parents=parents, help="Create a VirtualMachine manifest.")
    vm.add_argument("--name", default=None, help="the name of the VM (default: vm-<random>)")
    vm.add_argument("--run-strategy", default="Always", help="the RunStrategy of the VM")
    vm.add_argument("--termination-grace-period", type=int, default=180, help="seconds")
    vm.add_argument("--instancetype", default=None, help="[kind/]name of the instancetype")
    vm.add_argument("--preference", default=None, help="[kind/]name of the preference")
    vm.add_argument(
        "--volume-containerdisk", action="append", default=[], help="src:IMAGE[,name:N][,bootorder:K]"
    )
    vm.add_argument("--volume-pvc", action="append", default=[], help="src:CLAIM[,name:N][,bootorder:K]")
    vm.add_argument("--cloud-init-user-data", default=None, help="base64 encoded cloud-init user data")
    vm.add_argument("--cloud-init-network-data", default=None, help="base64 encoded cloud-init network data")
    vm.set_defaults(func=create_vm_cmd)


def flag_error(flag: str, message: str) -> VirtctlError:
    return VirtctlError(f'failed to parse "--{flag}" flag: {message}')


def parse_params(flag: str, value: str, supported: tuple[str, ...]) -> dict[str, str]:
    """`key:value,key:value`; a single value without a known key is the `src`."""
    params: dict[str, str] = {}
    parts = value.split(",")
    for part in parts:
        key, sep, val = part.partition(":")
        if sep and key in supported:
            if key in params:
                raise flag_error(flag, f"param {key!r} given twice")
            params[key] = val
        elif len(parts) == 1 and "src" in supported:
            params["src"] = part
        else:
            raise flag_error(flag, f"unknown param in {part!r}, supported params: {', '.join(supported)}")
    return params


def split_prefixed(flag: str, value: str) -> tuple[str, str]:
    if value.count("/") > 1:
        raise flag_error(flag, f"invalid value {value!r}: at most one '/'")
    kind, _, name = value.rpartition("/")
    return kind, name


def _check_b64(flag: str, value: str) -> None:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise flag_error(flag, "not valid base64") from e


def _name(flag: str, value: str, what: str) -> str:
    try:
        return validate_name(value, what)
    except TargetError as e:
        raise flag_error(flag, str(e)) from e


def build_vm(args: argparse.Namespace, rng: random.Random | None = None) -> Obj:
    name = args.name
    if not name:
        rnd = rng or random.SystemRandom()
        name = "vm-" + "".join(rnd.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    name = _name("name", name, "name")
    if args.run_strategy not in RUN_STRATEGIES:
        raise flag_error(
            "run-strategy",
            f'invalid RunStrategy "{args.run_strategy}", supported values are: {", ".join(RUN_STRATEGIES)}',
        )
    template_spec: Obj = {
        "domain": {"devices": {}},
        "terminationGracePeriodSeconds": args.termination_grace_period,
    }
    spec: Obj = {"runStrategy": args.run_strategy}
    if args.instancetype:
        kind, it_name = split_prefixed("instancetype", args.instancetype)
        if kind and kind.lower() not in INSTANCETYPE_KINDS:
            raise flag_error(
                "instancetype",
                f'invalid instancetype kind "{kind}", supported values are: ' + ", ".join(INSTANCETYPE_KINDS),
            )
        spec["instancetype"] = {"name": _name("instancetype", it_name, "instancetype name")}
        if kind:
            spec["instancetype"]["kind"] = kind.lower()
    if args.preference:
        kind, pref_name = split_prefixed("preference", args.preference)
        if kind and kind.lower() not in PREFERENCE_KINDS:
            raise flag_error(
                "preference",
                f'invalid preference kind "{kind}", supported values are: ' + ", ".join(PREFERENCE_KINDS),
            )
        spec["preference"] = {"name": _name("preference", pref_name, "preference name")}
        if kind:
            spec["preference"]["kind"] = kind.lower()
    volumes: list[Obj] = []
    disks: list[Obj] = []
    boot_orders: dict[int, str] = {}

    def add(flag: str, vol_name: str, source: Obj, bootorder: str | None) -> None:
        vol_name = _name(flag, vol_name, "volume name")
        if any(v["name"] == vol_name for v in volumes):
            raise flag_error(flag, f"there is already a Volume with name '{vol_name}'")
        volumes.append({"name": vol_name, **source})
        if bootorder is not None:
            if not bootorder.isdigit() or int(bootorder) == 0:
                raise flag_error(flag, "bootorder must be greater than 0")
            order = int(bootorder)
            if order in boot_orders:
                raise flag_error(flag, f"bootorder {order} was specified multiple times")
            boot_orders[order] = vol_name
            disks.append({"name": vol_name, "bootOrder": order})

    for i, value in enumerate(args.volume_containerdisk):
        p = parse_params("volume-containerdisk", value, ("name", "src", "bootorder"))
        if not p.get("src"):
            raise flag_error("volume-containerdisk", "src must be specified")
        add(
            "volume-containerdisk",
            p.get("name") or f"{name}-containerdisk-{i}",
            {"containerDisk": {"image": p["src"]}},
            p.get("bootorder"),
        )
    for value in args.volume_pvc:
        p = parse_params("volume-pvc", value, ("name", "src", "bootorder"))
        if not p.get("src"):
            raise flag_error("volume-pvc", "src must be specified")
        ns, claim = split_prefixed("volume-pvc", p["src"])
        if ns:
            raise flag_error("volume-pvc", f"not allowed to specify namespace of pvc '{claim}'")
        add(
            "volume-pvc",
            p.get("name") or claim,
            {"persistentVolumeClaim": {"claimName": _name("volume-pvc", claim, "claim name")}},
            p.get("bootorder"),
        )
    if args.cloud_init_user_data or args.cloud_init_network_data:
        nocloud: Obj = {}
        if args.cloud_init_user_data:
            _check_b64("cloud-init-user-data", args.cloud_init_user_data)
            nocloud["userDataBase64"] = args.cloud_init_user_data
        if args.cloud_init_network_data:
            _check_b64("cloud-init-network-data", args.cloud_init_network_data)
            nocloud["networkDataBase64"] = args.cloud_init_network_data
        add("cloud-init-user-data", CLOUD_INIT_DISK, {"cloudInitNoCloud": nocloud}, None)
    if disks:
        template_spec["domain"]["devices"]["disks"] = disks
    if volumes:
        template_spec["volumes"] = volumes
    spec["template"] = {"spec": template_spec}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_vm_cmd(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(build_vm(args), sort_keys=False), end="")
    return 0
