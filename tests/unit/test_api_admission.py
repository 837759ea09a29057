"""kubevisor.api.admission: pure admission, and wired into Kubevisor's apiserver with our CRDs."""

import asyncio
import contextlib
import tempfile
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from kubevisor.api import admission
from kubevisor.api.errors import ValidationError
from kubevisor.api.kinds import KINDS

FIXTURES = Path(__file__).parent / "fixtures" / "api"


def load(name):
    return yaml.safe_load((FIXTURES / name).read_text())


def test_vmi_create_applies_presets_then_defaults():
    vmi = load("valid/vmi-minimal.yaml")
    vmi["metadata"]["labels"] = {"size": "small"}
    del vmi["spec"]["domain"]["memory"]
    preset = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstancePreset",
        "metadata": {"name": "small"},
        "spec": {
            "selector": {"matchLabels": {"size": "small"}},
            "domain": {"resources": {"requests": {"memory": "64Mi"}}},
        },
    }
    out, _ = admission.admit("CREATE", vmi, presets=[preset])
    assert out["spec"]["domain"]["memory"]["guest"] == "64Mi"  # defaulted from the preset's request
    assert out["spec"]["domain"]["machine"]["type"] == "q35"


def test_vmi_spec_is_immutable_for_users():
    vmi, _ = admission.admit("CREATE", load("valid/vmi-minimal.yaml"))
    changed = {**vmi, "spec": {**vmi["spec"], "terminationGracePeriodSeconds": 1}}
    with pytest.raises(ValidationError) as info:
        admission.admit("UPDATE", changed, vmi)
    assert info.value.fields == ["spec"]
    admission.admit("UPDATE", changed, vmi, privileged=True)
    with_status = {**vmi, "status": {"phase": "Running"}}
    admission.admit("UPDATE", with_status, vmi)


def test_vm_running_is_deprecated_warning():
    vm = load("valid/vm-instancetype.yaml")
    _, warnings = admission.admit("CREATE", vm)
    assert warnings == ["spec.running is deprecated, please use spec.runStrategy instead."]


def rs(selector_labels, template_labels, replicas=2):
    vmi = load("valid/vmi-minimal.yaml")
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels},
            "template": {"metadata": {"labels": template_labels}, "spec": vmi["spec"]},
        },
    }


def test_replicaset_rules():
    out, _ = admission.admit("CREATE", rs({"app": "a"}, {"app": "a"}))
    assert out["spec"]["template"]["spec"]["domain"]["machine"]["type"] == "q35"
    with pytest.raises(ValidationError) as info:
        admission.admit("CREATE", rs({"app": "a"}, {"app": "b"}))
    assert info.value.fields == ["spec.selector"]
    with pytest.raises(ValidationError) as info:
        admission.admit("CREATE", rs({"app": "a"}, {"app": "a"}, replicas=-1))
    assert info.value.fields == ["spec.replicas"]
    bad = rs({"app": "a"}, {"app": "a"})
    bad["spec"]["template"]["spec"]["domain"]["devices"]["disks"] = [{"name": "x", "disk": {"bus": "ide9"}}]
    with pytest.raises(ValidationError) as info:
        admission.admit("CREATE", bad)
    assert "spec.template.spec.domain.devices.disks[0].disk.bus" in info.value.fields


def test_migration_and_preset_rules():
    mig = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"generateName": "m-"},
        "spec": {},
    }
    with pytest.raises(ValidationError) as info:
        admission.admit("CREATE", mig)
    assert info.value.fields == ["spec.vmiName"]
    admission.admit("CREATE", {**mig, "spec": {"vmiName": "v"}})
    preset = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstancePreset",
        "metadata": {"name": "p"},
        "spec": {},
    }
    with pytest.raises(ValidationError) as info:
        admission.admit("CREATE", preset)
    assert info.value.fields == ["spec.selector"]


# ---------------------------------------------------------------- through the real apiserver
@contextlib.asynccontextmanager
async def served():
    from kubevisor.apiserver.extensions import Extensions
    from kubevisor.apiserver.registry import Registry, WriteOptions
    from kubevisor.apiserver.server import APIServer
    from kubevisor.apiserver.storage import SQLiteStorage

    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(Path(tmp) / "state.db")
        await storage.start()
        registry = Registry(storage, Extensions())
        admission.register(registry)
        ns = registry.lookup("", "v1", "namespaces")
        await registry.create(ns, "", {"metadata": {"name": "default"}}, WriteOptions())
        assert len(await admission.install_crds(registry)) == len(KINDS)
        assert await admission.install_crds(registry) == []  # idempotent
        api = APIServer(storage, registry, {"t": "admin", "c": "system:kubevisor:controller"}, "127.0.0.1:0")
        client = TestClient(TestServer(api.app))
        await client.start_server()
        try:
            yield client
        finally:
            await client.close()
            await storage.close()


AUTH = {"Authorization": "Bearer t"}
VMIS = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances"


def test_apiserver_admission_end_to_end():
    async def run():
        async with served() as client:
            # A bad manifest: 422 with the field path, as kube-apiserver + KubeVirt answer.
            bad = load("invalid/unknown-bus.yaml")
            resp = await client.post(VMIS, json=bad, headers=AUTH)
            status = await resp.json()
            assert resp.status == 422, status
            assert status["reason"] == "Invalid" and status["details"]["kind"] == "VirtualMachineInstance"
            assert status["details"]["causes"][0]["field"] == "spec.domain.devices.disks[0].disk.bus"

            # An unknown field: the CRD schema rejects it under strict field validation.
            resp = await client.post(
                VMIS + "?fieldValidation=Strict", json=load("invalid/unknown-spec-field.yaml"), headers=AUTH
            )
            assert resp.status in (400, 422), await resp.text()
            assert "spec.domian" in await resp.text()

            # A good one is stored defaulted.
            resp = await client.post(VMIS, json=load("valid/vmi-legacy.yaml"), headers=AUTH)
            assert resp.status == 201, await resp.text()
            stored = await (await client.get(VMIS + "/legacy", headers=AUTH)).json()
            assert stored["spec"]["domain"]["machine"]["type"] == "q35"
            assert stored["spec"]["domain"]["devices"]["disks"][1]["cdrom"]["bus"] == "sata"

            # Users cannot change a VMI's spec afterwards.
            stored["spec"]["terminationGracePeriodSeconds"] = 3
            resp = await client.put(VMIS + "/legacy", json=stored, headers=AUTH)
            assert resp.status == 422, await resp.text()
            # Kubevisor's own components (system: users) may, as KubeVirt's service accounts may.
            resp = await client.put(VMIS + "/legacy", json=stored, headers={"Authorization": "Bearer c"})
            assert resp.status == 200, await resp.text()

            # kubectl-style table with KubeVirt's printer columns.
            resp = await client.get(
                VMIS, headers={**AUTH, "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
            )
            table = await resp.json()
            assert [c["name"] for c in table["columnDefinitions"]][:6] == [
                "Name",
                "Age",
                "Phase",
                "IP",
                "NodeName",
                "Ready",
            ]

    asyncio.run(run())


def test_replicaset_template_keeps_cpu_unset_so_presets_apply_to_its_vmis():
    out, _ = admission.admit("CREATE", rs({"app": "a"}, {"app": "a", "size": "two"}))
    template = out["spec"]["template"]
    assert "cpu" not in template["spec"]["domain"]
    preset = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstancePreset",
        "metadata": {"name": "two"},
        "spec": {"selector": {"matchLabels": {"size": "two"}}, "domain": {"cpu": {"cores": 2}}},
    }
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "rs-x", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    created, warnings = admission.admit("CREATE", vmi, presets=[preset])
    assert warnings == []
    assert created["spec"]["domain"]["cpu"]["cores"] == 2
    assert created["metadata"]["annotations"]["virtualmachinepreset.kubevirt.io/two"] == "kubevirt.io/v1"
