"""Pure logic of the apiserver: selectors, patches, schemas, tables, server-side apply."""

from __future__ import annotations

import pytest

from kubevisor.apiserver import patches, schema, ssa, tables
from kubevisor.apiserver.selectors import (
    METADATA_FIELDS,
    SelectorError,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app in (web, db),tier", {"app": "db", "tier": "x"}, True),
        ("app notin (web)", {"app": "web"}, False),
        ("!app", {"tier": "x"}, True),
        ("!app", {"app": "x"}, False),
        ("example.com/role=a,x", {"example.com/role": "a"}, False),
        ("", {"a": "b"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize("bad", ["app=", "app in", "app in (a", "a,", "a b", "Bad Key=1", "a=b=c"])
def test_bad_label_selectors(bad: str) -> None:
    if bad == "app=":  # an empty value is valid
        assert labels_match(parse_label_selector(bad), {"app": ""})
        return
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_field_selectors() -> None:
    obj = {"metadata": {"name": "x", "namespace": "ns"}}
    reqs = parse_field_selector("metadata.name=x,metadata.namespace!=other", METADATA_FIELDS)
    assert fields_match(reqs, obj, METADATA_FIELDS)
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.x"):
        parse_field_selector("spec.x=1", METADATA_FIELDS)


def test_merge_patch() -> None:
    assert patches.apply_merge_patch(
        {"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}
    ) == {"a": {"c": 2, "d": 3}, "l": [2]}


def test_json_patch_test_failure_is_422() -> None:
    with pytest.raises(patches.PatchError) as err:
        patches.apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert err.value.code == 422
    with pytest.raises(patches.PatchError) as err:
        patches.apply_json_patch({"a": 1}, {"op": "add"})
    assert err.value.code == 400


def test_strategic_merge_lists_and_directives() -> None:
    pod = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [
                {"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}]},
                {"name": "d", "image": "j"},
            ]
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "containers": [
                {"name": "c", "env": [{"name": "B", "value": "2"}]},
                {"name": "d", "$patch": "delete"},
                {"name": "e", "image": "k"},
            ],
            "$setElementOrder/containers": [{"name": "e"}, {"name": "c"}],
        },
    }
    out = patches.apply_strategic_merge_patch(pod, patch)
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["e", "c"]
    assert out["spec"]["containers"][1]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert patches.apply_strategic_merge_patch(
        {"data": {"a": "1"}}, {"data": {"$patch": "replace", "b": "2"}}
    ) == {"data": {"b": "2"}}


SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer", "default": 1, "minimum": 0},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"n": {"type": "string"}}},
                },
            },
        }
    },
}


def test_schema_prune_default_validate() -> None:
    obj = {
        "apiVersion": "x/v1",
        "kind": "K",
        "metadata": {"name": "a", "junk": 1},
        "spec": {
            "mode": "a",
            "extra": 1,
            "free": {"anything": [1]},
            "items": [{"n": "x", "m": 2}],
            "port": "http",
        },
        "top": True,
    }
    unknown = schema.prune(obj, SCHEMA)
    assert sorted(unknown) == ["metadata.junk", "spec.extra", "spec.items[0].m", "top"]
    schema.apply_defaults(obj, SCHEMA)
    assert obj["spec"]["replicas"] == 1 and obj["spec"]["free"] == {"anything": [1]}
    assert schema.validation_errors(obj, SCHEMA) == []
    obj["spec"].update(mode="c", replicas=-1, port=1.5)
    fields = {f for f, _ in schema.validation_errors(obj, SCHEMA)}
    assert fields == {"spec.mode", "spec.replicas", "spec.port"}


def test_structural_errors() -> None:
    assert schema.structural_errors(SCHEMA) == []
    errs = schema.structural_errors({"type": "object", "properties": {"a": {}}})
    assert errs and "properties[a].type" in errs[0]


def test_jsonpath_and_columns() -> None:
    obj = {
        "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]},
        "spec": {"n": 3},
    }
    assert tables.eval_jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert tables.eval_jsonpath(obj, ".spec.missing") == []
    col = tables.jsonpath_column("N", "integer", ".spec.n")
    assert col.getter(obj) == 3
    assert tables.human_duration(5) == "5s" and tables.human_duration(3 * 3600 + 60) == "3h1m"
    assert tables.human_duration(3 * 86400) == "3d"


def test_ssa_conflicts_and_removal() -> None:
    def keys(names: tuple[str, ...]) -> list[str] | None:
        return ["name"] if names == ("spec", "containers") else None

    live = ssa.apply(None, {"metadata": {"name": "x"}, "spec": {"a": 1, "b": 2}}, "one", False, "v1", keys)
    # another manager changes a field through an update
    changed = dict(live, spec={"a": 5, "b": 2})
    ssa.track_update(live, changed, "two", "v1", "", keys)
    with pytest.raises(ssa.ApplyConflict) as err:
        ssa.apply(changed, {"metadata": {"name": "x"}, "spec": {"a": 1, "b": 2}}, "one", False, "v1", keys)
    assert err.value.conflicts == [("two", ".spec.a")]
    # applying again without b removes b (owned only by "one"); same value for a co-owns
    out = ssa.apply(changed, {"metadata": {"name": "x"}, "spec": {"a": 5}}, "one", False, "v1", keys)
    assert out["spec"] == {"a": 5}
    forced = ssa.apply(
        changed, {"metadata": {"name": "x"}, "spec": {"a": 9, "b": 2}}, "one", True, "v1", keys
    )
    assert forced["spec"] == {"a": 9, "b": 2}
    owners = {e["manager"]: e for e in forced["metadata"]["managedFields"]}
    assert "f:a" not in (owners.get("two", {}).get("fieldsV1", {}).get("f:spec") or {})


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return bytes([number << 3 | 0, payload])
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_protobuf_configmap_envelope() -> None:
    from kubevisor.apiserver import protobuf

    meta = (
        _field(1, b"cfg")
        + _field(3, b"ns")
        + _field(2, b"")
        + _field(11, _field(1, b"app") + _field(2, b"x"))
    )
    raw = _field(1, meta) + _field(2, _field(1, b"a") + _field(2, b"1")) + _field(4, 1)
    body = protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"ConfigMap")) + _field(2, raw)
    assert protobuf.decode(body) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "immutable": True,
        "data": {"a": "1"},
        "metadata": {"name": "cfg", "namespace": "ns", "labels": {"app": "x"}},
    }
    with pytest.raises(protobuf.ProtobufError, match="send JSON"):
        protobuf.decode(protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Pod")))
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b"not protobuf")


def test_builtin_schemas_from_client_models() -> None:
    from kubevisor.apiserver import builtin_schemas

    pod_schema = builtin_schemas.structural("V1Pod")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "i",
                    "imagee": "typo",
                    "resources": {"limits": {"cpu": 1, "memory": "1Gi"}},
                    "ports": [{"containerPort": 80}],
                }
            ]
        },
    }
    assert schema.decode_errors(pod, pod_schema) == []  # quantities may be numbers
    assert schema.prune(pod, pod_schema) == ["spec.containers[0].imagee"]
    bad = {"spec": {"containers": [{"name": True, "ports": [{"containerPort": "80"}]}]}}
    assert schema.decode_errors(bad, pod_schema) == [
        "spec.containers[0].name: cannot unmarshal bool into a field of type string",
        "spec.containers[0].ports[0].containerPort: cannot unmarshal string into a field of type integer",
    ]
    components = builtin_schemas.openapi_components("V1ConfigMap")
    assert "description" in components["io.k8s.kubevisor.V1ConfigMap"]["properties"]["data"]
