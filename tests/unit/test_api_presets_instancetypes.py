"""kubevisor.api.selectors / presets / instancetype: pure admission helpers, KubeVirt semantics."""

import pytest
import yaml

from kubevisor.api.errors import ValidationError
from kubevisor.api.instancetype import (
    apply_to_vmi_spec,
    expand_vm,
    guest_topology,
    matcher_kind,
    validate_instancetype,
    validate_preference,
)
from kubevisor.api.presets import apply_presets, matching_presets
from kubevisor.api.selectors import SelectorError, selector_matches, selector_string
from kubevisor.api.vm import validate_vm
from kubevisor.api.vmi import default_vmi, validate_vmi


# ------------------------------------------------------------------ selectors
@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"a": "1"}, True),
        (None, {"a": "1"}, False),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_selector_matches(selector, labels, expected):
    assert selector_matches(selector, labels) is expected


def test_bad_selectors_and_string_form():
    with pytest.raises(SelectorError):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, {})
    with pytest.raises(SelectorError):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, {})
    sel = {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [{"key": "c", "operator": "Exists"}]}
    assert selector_string(sel) == "a=1,b=2,c"


# ------------------------------------------------------------------ presets
def vmi(labels=None, domain=None, annotations=None):
    meta = {"name": "v", "namespace": "ns", "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": meta,
        "spec": {
            "domain": domain or {"devices": {}},
            "volumes": [{"name": "r", "containerDisk": {"image": "x"}}],
        },
    }


def preset(name, selector, domain, namespace="ns"):
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstancePreset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "domain": domain},
    }


SMALL = preset(
    "vmi-preset-small",
    {"matchLabels": {"kubevirt.io/vmPreset": "vmi-preset-small"}},
    {"resources": {"requests": {"memory": "128Mi"}}},
)


def test_matching_preset_sets_memory_and_annotates():
    before = vmi(labels={"kubevirt.io/vmPreset": "vmi-preset-small"})
    after, warnings = apply_presets(before, [SMALL])
    assert warnings == []
    assert after["spec"]["domain"]["resources"]["requests"]["memory"] == "128Mi"
    assert after["metadata"]["annotations"] == {
        "virtualmachinepreset.kubevirt.io/vmi-preset-small": "kubevirt.io/v1"
    }
    assert "resources" not in before["spec"]["domain"], "input untouched"
    validate_vmi(default_vmi(after))


def test_non_matching_and_other_namespace_presets_are_ignored():
    v = vmi(labels={"kubevirt.io/vmPreset": "other"})
    assert apply_presets(v, [SMALL])[0] == v
    v = vmi(labels={"kubevirt.io/vmPreset": "vmi-preset-small"})
    elsewhere = preset("p", SMALL["spec"]["selector"], SMALL["spec"]["domain"], namespace="other")
    assert matching_presets(v, [elsewhere]) == []


def test_vmi_settings_win_over_a_preset():
    v = vmi(labels={"a": "1"}, domain={"devices": {}, "cpu": {"cores": 4}})
    after, warnings = apply_presets(v, [preset("p", {"matchLabels": {"a": "1"}}, {"cpu": {"cores": 2}})])
    assert after["spec"]["domain"]["cpu"] == {"cores": 4}
    assert warnings and "Unable to apply" in warnings[0]
    assert "annotations" not in after["metadata"]


def test_conflicting_presets_reject_the_vmi():
    p1 = preset("one", {"matchLabels": {"a": "1"}}, {"cpu": {"cores": 2}})
    p2 = preset("two", {}, {"cpu": {"cores": 4}})
    with pytest.raises(ValidationError) as info:
        apply_presets(vmi(labels={"a": "1"}), [p1, p2])
    assert "presets 'two' and 'one' conflict" in str(info.value)


def test_excluded_vmi():
    v = vmi(
        labels={"a": "1"}, annotations={"virtualmachineinstancepresets.admission.kubevirt.io/exclude": "true"}
    )
    assert apply_presets(v, [preset("p", {}, {"cpu": {"cores": 2}})])[0] == v


def test_watchdog_clock_and_firmware_are_merged():
    p = preset(
        "p",
        {},
        {
            "devices": {"watchdog": {"name": "wd", "i6300esb": {"action": "poweroff"}}},
            "clock": {"utc": {}, "timer": {"rtc": {}}},
            "firmware": {"bootloader": {"efi": {}}},
        },
    )
    after, _ = apply_presets(vmi(), [p])
    domain = after["spec"]["domain"]
    assert domain["devices"]["watchdog"]["name"] == "wd"
    assert domain["clock"] == {"utc": {}, "timer": {"rtc": {}}}
    assert domain["firmware"] == {"bootloader": {"efi": {}}}


# ------------------------------------------------------------------ instancetypes and preferences
CSMALL = yaml.safe_load(
    """
apiVersion: instancetype.kubevirt.io/v1beta1
kind: VirtualMachineInstancetype
metadata: {name: csmall}
spec:
  cpu: {guest: 1}
  memory: {guest: 128Mi}
"""
)
CLARGE = {
    "apiVersion": "instancetype.kubevirt.io/v1beta1",
    "kind": "VirtualMachineClusterInstancetype",
    "metadata": {"name": "clarge"},
    "spec": {
        "cpu": {"guest": 4, "model": "host-model"},
        "memory": {"guest": "2Gi", "overcommitPercent": 25},
        "nodeSelector": {"disk": "ssd"},
        "annotations": {"team": "infra"},
    },
}
VIRTIO = {
    "apiVersion": "instancetype.kubevirt.io/v1beta1",
    "kind": "VirtualMachinePreference",
    "metadata": {"name": "virtio"},
    "spec": {
        "devices": {
            "preferredDiskBus": "virtio",
            "preferredInterfaceModel": "virtio",
            "preferredCdromBus": "scsi",
        },
        "cpu": {"preferredCPUTopology": "cores"},
        "machine": {"preferredMachineType": "pc-q35-8.2"},
        "preferredTerminationGracePeriodSeconds": 5,
    },
}


def vm_with(instancetype_name="csmall", template_domain=None):
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm1"},
        "spec": {
            "runStrategy": "Halted",
            "instancetype": {"kind": "VirtualMachineInstancetype", "name": instancetype_name},
            "template": {
                "spec": {
                    "domain": template_domain
                    or {
                        "devices": {
                            "disks": [
                                {"name": "root"},
                                {"name": "cd", "cdrom": {}},
                                {"name": "data", "disk": {"bus": "sata"}},
                            ],
                            "interfaces": [{"name": "default", "masquerade": {}}],
                        }
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [
                        {"name": "root", "containerDisk": {"image": "x"}},
                        {"name": "cd", "containerDisk": {"image": "y"}},
                        {"name": "data", "emptyDisk": {"capacity": "1Gi"}},
                    ],
                }
            },
        },
    }


def test_instancetype_sets_cpu_and_memory():
    vm = vm_with()
    validate_vm(vm)  # no memory in the template is fine with an instancetype
    expanded = expand_vm(vm, instancetype=CSMALL)
    domain = expanded["spec"]["template"]["spec"]["domain"]
    assert domain["cpu"] == {"sockets": 1, "cores": 1, "threads": 1}
    assert domain["memory"] == {"guest": "128Mi"}
    assert "instancetype" not in expanded["spec"]
    validate_vm({**expanded, "spec": {**expanded["spec"]}})


def test_instancetype_with_preference():
    expanded = expand_vm(vm_with("clarge"), instancetype=CLARGE, preference=VIRTIO)
    tmpl = expanded["spec"]["template"]
    spec, domain = tmpl["spec"], tmpl["spec"]["domain"]
    assert domain["cpu"] == {"model": "host-model", "sockets": 1, "cores": 4, "threads": 1}
    assert domain["memory"] == {"guest": "2Gi"}
    assert domain["resources"]["requests"]["memory"] == "1536Mi"  # 25 % overcommit
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert tmpl["metadata"]["annotations"] == {"team": "infra"}
    disks = {d["name"]: d for d in domain["devices"]["disks"]}
    assert disks["root"]["disk"]["bus"] == "virtio"
    assert disks["cd"]["cdrom"]["bus"] == "scsi"
    assert disks["data"]["disk"]["bus"] == "sata", "the template's own choice stays"
    assert domain["devices"]["interfaces"][0]["model"] == "virtio"
    assert domain["machine"]["type"] == "pc-q35-8.2"
    assert spec["terminationGracePeriodSeconds"] == 5


def test_instancetype_conflicts_name_the_fields():
    vm = vm_with(template_domain={"devices": {}, "cpu": {"sockets": 2}, "memory": {"guest": "1Gi"}})
    with pytest.raises(ValidationError) as info:
        expand_vm(vm, instancetype=CSMALL)
    assert info.value.fields == [
        "spec.template.spec.domain.cpu.sockets",
        "spec.template.spec.domain.memory.guest",
    ]
    assert "conflicts with selected instance type" in str(info.value)


@pytest.mark.parametrize(
    ("topology", "expected"),
    [
        ("sockets", {"sockets": 8, "cores": 1, "threads": 1}),
        ("cores", {"sockets": 1, "cores": 8, "threads": 1}),
        ("threads", {"sockets": 1, "cores": 1, "threads": 8}),
        ("preferCores", {"sockets": 1, "cores": 8, "threads": 1}),
        ("spread", {"sockets": 4, "cores": 2, "threads": 1}),
    ],
)
def test_guest_topology(topology, expected):
    assert guest_topology(8, {"cpu": {"preferredCPUTopology": topology}}) == expected


def test_preference_only_fills_unset_values():
    spec = {"domain": {"devices": {"autoattachSerialConsole": False}}, "terminationGracePeriodSeconds": 1}
    pref = {
        "devices": {"preferredAutoattachSerialConsole": True, "preferredRng": {}},
        "preferredTerminationGracePeriodSeconds": 9,
    }
    out, _ = apply_to_vmi_spec(spec, preference=pref)
    assert out["domain"]["devices"] == {"autoattachSerialConsole": False, "rng": {}}
    assert out["terminationGracePeriodSeconds"] == 1


def test_matcher_kind_and_object_validation():
    assert matcher_kind({"name": "x"}) == "VirtualMachineClusterInstancetype"
    assert matcher_kind({"name": "x", "kind": "virtualmachineinstancetype"}) == "VirtualMachineInstancetype"
    assert matcher_kind({"name": "x"}, preference=True) == "VirtualMachineClusterPreference"
    validate_instancetype(CSMALL)
    validate_instancetype(CLARGE)
    validate_preference(VIRTIO)
    bad = {**CSMALL, "spec": {"cpu": {"guest": 0}, "memory": {"guest": "12XB"}}}
    with pytest.raises(ValidationError) as info:
        validate_instancetype(bad)
    assert info.value.fields == ["spec.cpu.guest", "spec.memory.guest"]
    with pytest.raises(ValidationError):
        validate_preference({**VIRTIO, "spec": {"cpu": {"preferredCPUTopology": "diagonal"}}})
