"""The generated kubevirt.io CRDs (deploy/crds) with the real kubectl against `kubevisor apiserver`:
short names, KubeVirt's printer columns, strict unknown-field errors by path, the VMIRS scale
subresource, and that every KubeVirt-shaped fixture manifest is accepted by the CRD schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from apiserver_fixture import Kubectl, RunningServer, kubectl_binary, running_server

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "crds"
FIXTURES = REPO / "tests" / "unit" / "fixtures" / "api"
KUBECTL_VERSION = "1.32"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("api-crds") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def kubectl(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    binary = kubectl_binary(KUBECTL_VERSION)
    if not binary.exists():
        pytest.skip(f"{binary} not installed")
    k = Kubectl(binary, server, tmp_path_factory.mktemp("kubectl-cache"))
    k.run("apply", "-f", str(CRDS))
    for path in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        k.run("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return k


def header(output: str) -> list[str]:
    return output.splitlines()[0].split()


def test_vmi_short_names_and_columns(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(FIXTURES / "valid" / "vmi-legacy.yaml"))
    out = kubectl.run("get", "vmis").stdout
    assert header(out) == ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"]
    assert "legacy" in out
    wide = kubectl.run("get", "vmi", "legacy", "-o", "wide").stdout
    assert header(wide) == ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY", "LIVE-MIGRATABLE", "PAUSED"]
    assert kubectl.json("get", "virtualmachineinstance", "legacy")["kind"] == "VirtualMachineInstance"


def test_vm_columns(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(FIXTURES / "valid" / "vm-legacy.yaml"))
    assert header(kubectl.run("get", "vms").stdout) == ["NAME", "AGE", "STATUS", "READY"]


def test_unknown_field_is_named_by_path(kubectl: Kubectl) -> None:
    result = kubectl.run("apply", "-f", str(FIXTURES / "invalid" / "unknown-disk-field.yaml"), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.domain.devices.disks[0].buss"' in result.stderr


def test_vmirs_scale_subresource(kubectl: Kubectl) -> None:
    vmi = yaml.safe_load((FIXTURES / "valid" / "vmi-minimal.yaml").read_text())
    rs = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "cirros-rs"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "cirros"}},
            "template": {"metadata": {"labels": {"app": "cirros"}}, "spec": vmi["spec"]},
        },
    }
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(rs))
    kubectl.run("scale", "vmirs", "cirros-rs", "--replicas=2")
    assert kubectl.json("get", "vmirs", "cirros-rs")["spec"]["replicas"] == 2
    assert header(kubectl.run("get", "vmirs").stdout) == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]


def test_instancetypes_and_presets(kubectl: Kubectl) -> None:
    docs = [
        {
            "apiVersion": "instancetype.kubevirt.io/v1beta1",
            "kind": "VirtualMachineClusterInstancetype",
            "metadata": {"name": "csmall"},
            "spec": {"cpu": {"guest": 1}, "memory": {"guest": "128Mi"}},
        },
        {
            "apiVersion": "instancetype.kubevirt.io/v1beta1",
            "kind": "VirtualMachinePreference",
            "metadata": {"name": "virtio"},
            "spec": {"devices": {"preferredDiskBus": "virtio"}},
        },
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstancePreset",
            "metadata": {"name": "small"},
            "spec": {
                "selector": {"matchLabels": {"size": "small"}},
                "domain": {"resources": {"requests": {"memory": "64Mi"}}},
            },
        },
    ]
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert "csmall" in kubectl.run("get", "vmcf").stdout
    assert "virtio" in kubectl.run("get", "vmpref").stdout
    result = kubectl.run("get", "vmipreset", "small", check=False)
    assert result.returncode == 0 and "small" in result.stdout
