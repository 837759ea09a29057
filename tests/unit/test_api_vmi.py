"""kubevisor.api.vmi: KubeVirt's VMI defaults and validation (fixtures in fixtures/api/)."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from kubevisor.api.errors import ValidationError
from kubevisor.api.vmi import default_vmi, firmware_serial, firmware_uuid, validate_vmi

FIXTURES = Path(__file__).parent / "fixtures" / "api"
VALID = sorted((FIXTURES / "valid").glob("vmi-*.yaml"))
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def expectations(path: Path) -> tuple[str, str]:
    text = path.read_text()
    field = re.search(r"^# field: (.*)$", text, re.M)
    message = re.search(r"^# message: (.*)$", text, re.M)
    assert field, f"{path.name} must say which field is wrong"
    return field.group(1).strip(), (message.group(1).strip() if message else "")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_manifests_pass_before_and_after_defaulting(path):
    obj = load(path)
    validate_vmi(obj)
    validate_vmi(default_vmi(obj))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_each_bad_spec_is_rejected_naming_its_field(path):
    field, message = expectations(path)
    with pytest.raises(ValidationError) as info:
        validate_vmi(load(path))
    err = info.value
    assert field in err.fields, f"{field} not in {err.fields}"
    cause = next(c for c in err.causes if c.field == field)
    assert message in cause.message
    line = str(err)
    assert "\n" not in line and field in line


# Defaulting fills in kind, apiVersion and spec.domain by design; every other bad field survives it.
FILLED_BY_DEFAULTS = ("kind", "apiVersion", "spec.domain")
INVALID_AFTER_DEFAULTS = [p for p in INVALID if expectations(p)[0] not in FILLED_BY_DEFAULTS]


@pytest.mark.parametrize("path", INVALID_AFTER_DEFAULTS, ids=lambda p: p.stem)
def test_defaulting_does_not_hide_bad_specs(path):
    with pytest.raises(ValidationError):
        validate_vmi(default_vmi(load(path)))


def test_all_causes_are_reported_at_once():
    obj = load(FIXTURES / "valid" / "vmi-minimal.yaml")
    obj["spec"]["domain"]["memory"]["guest"] = "12XB"
    obj["spec"]["domain"]["devices"]["disks"] = [
        {"name": "containerdisk", "disk": {"bus": "floppy"}},
        {"name": "containerdisk"},
        {"name": "ghost"},
    ]
    with pytest.raises(ValidationError) as info:
        validate_vmi(obj)
    assert set(info.value.fields) >= {
        "spec.domain.memory.guest",
        "spec.domain.devices.disks[0].disk.bus",
        "spec.domain.devices.disks[1].name",
        "spec.domain.devices.disks[2].name",
    }


def test_cause_shape_and_status():
    obj = load(FIXTURES / "invalid" / "unknown-bus.yaml")
    with pytest.raises(ValidationError) as info:
        validate_vmi(obj)
    err = info.value
    field, _message = err.causes[0]  # a cause unpacks as (field, message)
    assert field == "spec.domain.devices.disks[0].disk.bus"
    assert err.causes[0].to_dict() == {
        "type": "FieldValueInvalid",
        "field": field,
        "message": "spec.domain.devices.disks[0] is set with an unrecognized bus ide2, "
        "must be one of: [virtio scsi sata usb]",
    }
    status = err.to_status()
    assert status["kind"] == "Status" and status["code"] == 422 and status["reason"] == "Invalid"
    assert status["status"] == "Failure"
    assert status["details"]["name"] == "minimal"
    assert status["details"]["group"] == "kubevirt.io"
    assert status["details"]["kind"] == "VirtualMachineInstance"
    assert status["details"]["causes"][0]["field"] == field
    assert status["message"].startswith('VirtualMachineInstance.kubevirt.io "minimal" is invalid: ')


def test_defaults():
    obj = load(FIXTURES / "valid" / "vmi-legacy.yaml")
    before = copy.deepcopy(obj)
    vmi = default_vmi(obj)
    assert obj == before, "default_vmi must not mutate its input"
    spec, domain = vmi["spec"], vmi["spec"]["domain"]
    assert domain["machine"] == {"type": "q35"}
    disks = {d["name"]: d for d in domain["devices"]["disks"]}
    assert disks["root"]["disk"]["bus"] == "virtio"
    assert disks["scratch"]["disk"] == {"bus": "virtio"}
    assert disks["cloudinit"]["cdrom"] == {"bus": "sata", "readonly": True, "tray": "closed"}
    assert domain["cpu"] == {"cores": 1, "sockets": 1, "threads": 1}
    assert domain["memory"]["guest"] == "256Mi"
    assert domain["devices"]["autoattachSerialConsole"] is True
    assert spec["terminationGracePeriodSeconds"] == 10  # kept when given
    assert domain["firmware"]["uuid"] == firmware_uuid("legacy")
    assert domain["firmware"]["serial"] == firmware_serial("legacy") != domain["firmware"]["uuid"]
    assert spec["volumes"][0]["containerDisk"]["imagePullPolicy"] == "Always"


def test_defaults_minimal():
    vmi = default_vmi(load(FIXTURES / "valid" / "vmi-minimal.yaml"))
    spec, domain = vmi["spec"], vmi["spec"]["domain"]
    assert spec["terminationGracePeriodSeconds"] == 30
    assert domain["devices"]["interfaces"] == [{"name": "default", "masquerade": {}}]
    assert spec["networks"] == [{"name": "default", "pod": {}}]
    # KubeVirt gives every volume without a disk a default disk.
    assert domain["devices"]["disks"] == [{"name": "containerdisk", "disk": {"bus": "virtio"}}]
    assert domain["cpu"] == {"sockets": 1, "cores": 1, "threads": 1}


def test_cpu_limit_becomes_sockets():
    obj = load(FIXTURES / "valid" / "vmi-minimal.yaml")
    obj["spec"]["domain"]["resources"] = {"limits": {"cpu": "1500m"}}
    vmi = default_vmi(obj)
    assert vmi["spec"]["domain"]["cpu"] == {"sockets": 2, "cores": 1, "threads": 1}
    assert vmi["spec"]["domain"]["resources"]["requests"]["cpu"] == "1500m"


def test_memory_guest_from_limits():
    obj = load(FIXTURES / "valid" / "vmi-minimal.yaml")
    del obj["spec"]["domain"]["memory"]
    obj["spec"]["domain"]["resources"] = {"limits": {"memory": "1G"}}
    assert default_vmi(obj)["spec"]["domain"]["memory"] == {"guest": "1G"}


def test_firmware_uuid_is_kubevirts():
    # Same uuid5 namespace as KubeVirt's CalculateLegacyUUID, so a VM keeps its identity.
    assert firmware_uuid("testvm") == firmware_uuid("testvm")
    assert firmware_uuid("a") != firmware_uuid("b")
    assert re.fullmatch(r"[0-9a-f-]{36}", firmware_uuid("a"))


def test_no_interfaces_when_pod_interface_disabled():
    obj = load(FIXTURES / "valid" / "vmi-minimal.yaml")
    obj["spec"]["domain"]["devices"]["autoattachPodInterface"] = False
    vmi = default_vmi(obj)
    assert "interfaces" not in vmi["spec"]["domain"]["devices"]
    assert "networks" not in vmi["spec"]
