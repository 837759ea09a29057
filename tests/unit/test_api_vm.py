"""kubevisor.api.vm: VirtualMachine defaults, validation and run strategy."""

import re
from pathlib import Path

import pytest
import yaml

from kubevisor.api.errors import ValidationError
from kubevisor.api.vm import default_vm, run_strategy, validate_vm, vmi_from_vm
from kubevisor.api.vmi import firmware_uuid, validate_vmi

FIXTURES = Path(__file__).parent / "fixtures" / "api"
VALID = sorted((FIXTURES / "valid").glob("vm-*.yaml"))
INVALID = sorted((FIXTURES / "vm-invalid").glob("*.yaml"))


def load(path):
    return yaml.safe_load(Path(path).read_text())


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_vms(path):
    validate_vm(load(path))
    validate_vm(default_vm(load(path)))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_vms_name_the_field(path):
    text = path.read_text()
    field = re.search(r"^# field: (.*)$", text, re.M).group(1).strip()
    message = re.search(r"^# message: (.*)$", text, re.M)
    with pytest.raises(ValidationError) as info:
        validate_vm(load(path))
    assert field in info.value.fields, info.value.fields
    if message:
        assert any(message.group(1).strip() in c.message for c in info.value.causes if c.field == field)
    assert info.value.to_status()["details"]["kind"] == "VirtualMachine"


def test_wait_as_receiver_with_gate():
    vm = load(FIXTURES / "valid" / "vm-legacy.yaml")
    vm["spec"]["runStrategy"] = "WaitAsReceiver"
    validate_vm(vm, feature_gates=frozenset({"DecentralizedLiveMigration"}))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"runStrategy": "Manual"}, "Manual"),
        ({"running": True}, "Always"),
        ({"running": False}, "Halted"),
        ({}, "Halted"),
    ],
)
def test_run_strategy(spec, expected):
    assert run_strategy({"spec": spec}) == expected


def test_vm_defaults_are_kubevirts_vm_mutator():
    vm = default_vm(load(FIXTURES / "valid" / "vm-legacy.yaml"))
    tspec = vm["spec"]["template"]["spec"]
    assert tspec["domain"]["machine"]["type"] == "q35"
    assert tspec["domain"]["firmware"]["uuid"] == firmware_uuid("vm-legacy")
    # VMI defaults wait for the VMI: the template keeps what the user wrote.
    assert "cpu" not in tspec["domain"]
    assert [d["name"] for d in tspec["domain"]["devices"]["disks"]] == ["root"]


def test_instancetype_vm_defaults_expansion_and_vmi():
    """The whole path a controller takes: VM admission, expansion, VMI defaults and validation."""
    from kubevisor.api.vmi import default_vmi

    vm = default_vm(load(FIXTURES / "valid" / "vm-instancetype.yaml"))
    validate_vm(vm)
    instancetype = {"spec": {"cpu": {"guest": 2}, "memory": {"guest": "256Mi"}}}
    preference = {"spec": {"cpu": {"preferredCPUTopology": "cores"}, "devices": {"preferredDiskBus": "sata"}}}
    vmi = default_vmi(vmi_from_vm(vm, instancetype=instancetype, preference=preference))
    validate_vmi(vmi)
    domain = vmi["spec"]["domain"]
    assert domain["cpu"] == {"sockets": 1, "cores": 2, "threads": 1}
    assert domain["memory"]["guest"] == "256Mi"
    assert domain["devices"]["disks"][0]["disk"]["bus"] == "virtio"  # the template chose virtio


def test_vmi_from_vm_is_a_valid_vmi():
    vm = default_vm(load(FIXTURES / "valid" / "vm-legacy.yaml"))
    vm["metadata"].update(namespace="ns1", uid="1234")
    vmi = vmi_from_vm(vm)
    validate_vmi(vmi)
    assert vmi["metadata"]["name"] == "vm-legacy" and vmi["metadata"]["namespace"] == "ns1"
    assert vmi["metadata"]["labels"] == {"kubevirt.io/vm": "vm-legacy"}
    owner = vmi["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "VirtualMachine" and owner["uid"] == "1234" and owner["controller"] is True
