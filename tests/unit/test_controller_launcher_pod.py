"""VMI → launcher Pod: names, labels, owner, resources (KubeVirt's overhead model)."""

import copy

import pytest

from kubevisor.controller.launcher_pod import (
    KVM_RESOURCE,
    LauncherConfig,
    LauncherPodError,
    launcher_pod_name,
    memory_overhead,
    random_suffix,
    render_launcher_pod,
)
from kubevisor.controller.quantity import to_bytes

MI = 2**20

VMI = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachineInstance",
    "metadata": {"name": "testvm", "namespace": "ns1", "uid": "1111-2222", "labels": {"app": "web"}},
    "spec": {
        "domain": {
            "cpu": {"cores": 1},
            "memory": {"guest": "1Gi"},
            "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
        },
        "nodeSelector": {"disktype": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "terminationGracePeriodSeconds": 0,
        "volumes": [
            {"name": "root", "containerDisk": {"image": "cirros"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}},
        ],
    },
}


def render(vmi=VMI, **config):
    return render_launcher_pod(copy.deepcopy(vmi), LauncherConfig(**config), "x7k2q")


def test_overhead_matches_kubevirt_example_1vcpu_1gi():
    # research: 1 vCPU / 1Gi → 240 + 2 (pagetables) + 8 (vCPU) + 8 (IOThread) + 32 (video) = 290Mi
    assert memory_overhead(VMI) == 290 * MI


def test_overhead_4vcpu_32gi_without_graphics():
    vmi = copy.deepcopy(VMI)
    vmi["spec"]["domain"]["cpu"] = {"sockets": 2, "cores": 2}
    vmi["spec"]["domain"]["memory"]["guest"] = "32Gi"
    vmi["spec"]["domain"]["devices"]["autoattachGraphicsDevice"] = False
    assert memory_overhead(vmi) == (240 + 64 + 32 + 8) * MI


def test_pod_identity_labels_annotations_owner():
    pod = render()
    meta = pod["metadata"]
    assert meta["name"] == "virt-launcher-testvm-x7k2q"
    assert meta["namespace"] == "ns1"
    assert meta["labels"]["kubevirt.io"] == "virt-launcher"
    assert meta["labels"]["vm.kubevirt.io/name"] == "testvm"
    assert meta["labels"]["kubevirt.io/created-by"] == "1111-2222"
    assert meta["labels"]["app"] == "web"
    assert meta["annotations"]["kubevirt.io/domain"] == "testvm"
    assert meta["annotations"]["kubectl.kubernetes.io/default-container"] == "compute"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "name": "testvm",
            "uid": "1111-2222",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_pod_spec_scheduling_fields():
    spec = render()["spec"]
    assert spec["nodeSelector"] == {"disktype": "ssd", "kubevirt.io/schedulable": "true"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 15
    assert spec["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}}]
    assert [c["name"] for c in spec["containers"]] == ["compute"]


def test_requests_guest_memory_plus_overhead_and_default_cpu():
    res = render()["spec"]["containers"][0]["resources"]
    assert to_bytes(res["requests"]["memory"]) == (1024 + 290) * MI
    assert res["requests"]["cpu"] == "100m"
    assert KVM_RESOURCE not in res["requests"]
    assert "limits" not in res


def test_small_guest_memory_request_is_exact():
    vmi = copy.deepcopy(VMI)
    vmi["spec"]["domain"]["memory"] = {"guest": "128Mi"}
    res = render(vmi)["spec"]["containers"][0]["resources"]
    # 128Mi + 240 + 8 + 8 + 32 Mi + 128Mi/512 (256Ki)
    assert res["requests"]["memory"] == "426240Ki"


def test_kvm_device_only_when_required():
    res = render(require_kvm=True)["spec"]["containers"][0]["resources"]
    assert res["requests"][KVM_RESOURCE] == "1"
    assert res["limits"][KVM_RESOURCE] == "1"


def test_requests_memory_and_limits_carry_overhead():
    vmi = copy.deepcopy(VMI)
    vmi["spec"]["domain"]["memory"] = {}
    vmi["spec"]["domain"]["resources"] = {
        "requests": {"memory": "512Mi", "cpu": "1"},
        "limits": {"memory": "1Gi", "cpu": "2"},
    }
    res = render(vmi)["spec"]["containers"][0]["resources"]
    overhead = 240 + 1 + 8 + 8 + 32
    assert to_bytes(res["requests"]["memory"]) == (512 + overhead) * MI
    assert to_bytes(res["limits"]["memory"]) == (1024 + overhead) * MI
    assert res["requests"]["cpu"] == "1"
    assert res["limits"]["cpu"] == "2"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("memory", "guest"), "lots", "spec.domain.memory.guest"),
        (("cpu", "cores"), 0, "spec.domain.cpu.cores"),
    ],
)
def test_bad_fields_name_the_field(path, value, field):
    vmi = copy.deepcopy(VMI)
    vmi["spec"]["domain"][path[0]][path[1]] = value
    with pytest.raises(LauncherPodError, match=field.replace(".", r"\.")):
        render(vmi)


def test_no_memory_at_all_is_an_error():
    vmi = copy.deepcopy(VMI)
    vmi["spec"]["domain"]["memory"] = {}
    with pytest.raises(LauncherPodError, match="memory"):
        render(vmi)


def test_unstored_vmi_is_rejected():
    vmi = copy.deepcopy(VMI)
    del vmi["metadata"]["uid"]
    with pytest.raises(LauncherPodError, match=r"metadata\.uid"):
        render(vmi)


def test_long_names_stay_within_a_dns_label():
    name = launcher_pod_name("v" * 80, "abcde")
    assert len(name) == 63 and name.endswith("abcde")


def test_random_suffix_alphabet():
    s = random_suffix()
    assert len(s) == 5 and set(s) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_secrets_and_configmaps_the_launcher_reads_are_pod_volumes():
    vmi = copy.deepcopy(VMI)
    vmi["spec"]["volumes"] = [
        {"name": "root", "containerDisk": {"image": "cirros"}},
        {"name": "cfg", "configMap": {"name": "app-config", "optional": True}},
        {"name": "creds", "secret": {"secretName": "app-secret"}},
        {
            "name": "cloudinit",
            "cloudInitNoCloud": {"secretRef": {"name": "ud"}, "networkDataSecretRef": {"name": "nd"}},
        },
    ]
    pod = render(vmi)
    assert pod["spec"]["volumes"] == [
        {"name": "cfg", "configMap": {"name": "app-config", "optional": True}},
        {"name": "creds", "secret": {"secretName": "app-secret"}},
        {"name": "cloudinit-udata", "secret": {"secretName": "ud"}},
        {"name": "cloudinit-ndata", "secret": {"secretName": "nd"}},
    ]
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts == {
        "cfg": "/var/run/kubevirt-private/config-map/cfg",
        "creds": "/var/run/kubevirt-private/secret/creds",
        "cloudinit-udata": "/var/run/kubevirt-private/secret/cloudinit/userdata",
        "cloudinit-ndata": "/var/run/kubevirt-private/secret/cloudinit/networkdata",
    }


def test_inline_cloud_init_needs_no_pod_volume():
    vmi = copy.deepcopy(VMI)
    vmi["spec"]["volumes"] = [{"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]
    assert "volumes" not in render(vmi)["spec"]
