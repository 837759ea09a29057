"""kubevisor.api.kinds / crds: generated CRDs are up to date, structural, and KubeVirt-shaped."""

import json
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

from kubevisor.api import crds
from kubevisor.api.kinds import BY_KIND, KINDS, lookup

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def test_generated_files_are_up_to_date():
    assert crds.stale_files(DEPLOY) == [], "run: python -m kubevisor.api.crds"


def test_check_mode_detects_drift(tmp_path):
    crds.write(tmp_path)
    assert crds.main(["--dir", str(tmp_path), "--check"]) == 0
    victim = tmp_path / crds.filename(KINDS[0])
    victim.write_text(victim.read_text() + "# edited\n")
    assert crds.main(["--dir", str(tmp_path), "--check"]) == 1
    crds.write(tmp_path)
    assert crds.main(["--dir", str(tmp_path), "--check"]) == 0


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_is_a_valid_apiextensions_object(kind):
    doc = yaml.safe_load((DEPLOY / crds.filename(kind)).read_text())
    # The official client's model knows every field of a CRD: a misspelt key would be dropped.
    model = ApiClient().deserialize(json.dumps(doc), "V1CustomResourceDefinition", "application/json")
    round_trip = ApiClient().sanitize_for_serialization(model)
    assert _strip_nulls(round_trip) == _strip_nulls(doc)


def _strip_nulls(node):
    if isinstance(node, dict):
        return {k: _strip_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_strip_nulls(v) for v in node]
    return node


def _walk(node, path="$"):
    yield path, node
    for key in ("properties", "additionalProperties"):
        value = node.get(key)
        if isinstance(value, dict) and key == "properties":
            for name, sub in value.items():
                yield from _walk(sub, f"{path}.{name}")
        elif isinstance(value, dict):
            yield from _walk(value, f"{path}{{*}}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[*]")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_schema_is_structural(kind):
    for version in kind.crd()["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object"
        assert schema["properties"]["metadata"] == {"type": "object"}
        for path, node in _walk(schema):
            if node.get("x-kubernetes-int-or-string"):
                assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
                continue
            assert "type" in node, f"{path} has no type"
            assert node.get("additionalProperties") is not False, path
            assert not ("properties" in node and "additionalProperties" in node), path


def test_kubevirt_names_and_columns():
    vmi, vm, rs = (
        BY_KIND["VirtualMachineInstance"],
        BY_KIND["VirtualMachine"],
        BY_KIND["VirtualMachineInstanceReplicaSet"],
    )
    assert [c["name"] for c in vmi.printer_columns if not c.get("priority")] == [
        "Age",
        "Phase",
        "IP",
        "NodeName",
        "Ready",
    ]
    assert [c["name"] for c in vm.printer_columns] == ["Age", "Status", "Ready"]
    assert vm.short_names == ("vm", "vms") and vmi.short_names == ("vmi", "vmis")
    assert rs.crd()["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert not vmi.status_subresource and vm.status_subresource
    assert lookup("vmirs") is rs and lookup("VirtualMachine") is vm and lookup("vmcf").namespaced is False
    assert BY_KIND["VirtualMachineInstancePreset"].storage_version == "v1alpha3"
    assert lookup("nope") is None


def test_vmi_crd_schema_accepts_a_defaulted_vmi():
    """The CRD schema (as an apiserver would apply it) accepts what default_vmi produces."""
    import jsonschema

    from kubevisor.api.vmi import default_vmi

    fixture = Path(__file__).parent / "fixtures" / "api" / "valid" / "vmi-legacy.yaml"
    vmi = default_vmi(yaml.safe_load(fixture.read_text()))
    schema = BY_KIND["VirtualMachineInstance"].crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(vmi, schema)
