"""The embedded apiserver used by the official Python client (CRUD, watch, informer) and kopf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_fixture import RunningServer, running_server
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.informer import SharedInformer

pytestmark = pytest.mark.e2e

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("apiserver-py") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: RunningServer) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(server.kubeconfig))


@pytest.fixture(scope="module")
def gadgets(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(CRD)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition("gadgets.example.com")
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return
        time.sleep(0.1)
    raise AssertionError("CRD not established")


def test_configmap_crud_and_conflict(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "py-cm"}, "data": {"a": "1"}})
    assert cm.metadata.uid and cm.metadata.resource_version
    got = core.read_namespaced_config_map("py-cm", "default")
    got.data["b"] = "2"
    updated = core.replace_namespaced_config_map("py-cm", "default", got)
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
    stale = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="py-cm", resource_version=cm.metadata.resource_version),
        data={"c": "3"},
    )
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("py-cm", "default", stale)
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "py-cm"}})
    assert err.value.status == 409
    core.patch_namespaced_config_map("py-cm", "default", {"data": {"a": None}})
    assert core.read_namespaced_config_map("py-cm", "default").data == {"b": "2"}
    names = [c.metadata.name for c in core.list_namespaced_config_map("default").items]
    assert "py-cm" in names
    core.delete_namespaced_config_map("py-cm", "default")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("py-cm", "default")
    assert err.value.status == 404


def test_custom_objects_status_and_watch(api: client.ApiClient, gadgets: None) -> None:
    co = client.CustomObjectsApi(api)
    args = ("example.com", "v1", "default", "gadgets")
    listed = co.list_namespaced_custom_object(*args)
    rv = listed["metadata"]["resourceVersion"]
    seen: list[tuple[str, str, Any]] = []

    def consume() -> None:
        w = watch.Watch()
        for event in w.stream(
            co.list_namespaced_custom_object,
            *args,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=20,
        ):
            obj = event["object"]
            seen.append((event["type"], obj["metadata"].get("name", ""), obj.get("status")))
            if event["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.5)
    co.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "example.com/v1",
            "kind": "Gadget",
            "metadata": {"name": "g1"},
            "spec": {"x": 1},
            "status": {"ignored": True},
        },
    )
    co.patch_namespaced_custom_object_status(*args, "g1", {"status": {"phase": "Ready"}})
    co.patch_namespaced_custom_object(*args, "g1", {"spec": {"x": 2}})
    got = co.get_namespaced_custom_object(*args, "g1")
    assert got["spec"] == {"x": 2} and got["status"] == {"phase": "Ready"}
    assert got["metadata"]["generation"] == 2  # status changes do not bump generation
    co.delete_namespaced_custom_object(*args, "g1")
    thread.join(timeout=30)
    assert [(t, n) for t, n, _ in seen] == [
        ("ADDED", "g1"),
        ("MODIFIED", "g1"),
        ("MODIFIED", "g1"),
        ("DELETED", "g1"),
    ]
    assert seen[0][2] is None  # status is dropped on create when /status is a subresource


def test_informer_tracks_state(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "informer"}})
    informer = SharedInformer(core.list_namespaced_config_map, namespace="informer")
    events: list[str] = []
    for kind in ("ADDED", "MODIFIED", "DELETED"):
        informer.add_event_handler(kind, lambda obj, kind=kind: events.append(f"{kind}:{obj.metadata.name}"))
    core.create_namespaced_config_map("informer", {"metadata": {"name": "before"}})
    informer.start()
    try:
        for i in range(5):
            core.create_namespaced_config_map(
                "informer", {"metadata": {"name": f"cm{i}"}, "data": {"i": str(i)}}
            )
        core.patch_namespaced_config_map("cm1", "informer", {"data": {"i": "x"}})
        core.delete_namespaced_config_map("cm2", "informer")
        core.delete_namespaced_config_map("before", "informer")
        want = {c.metadata.name: c.data for c in core.list_namespaced_config_map("informer").items}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            have = {c.metadata.name: c.data for c in informer.cache.list()}
            if have == want:
                break
            time.sleep(0.1)
        assert have == want
        assert "ADDED:before" in events and "DELETED:cm2" in events and "MODIFIED:cm1" in events
    finally:
        # stop() joins the watch thread, which returns when its stream next yields; don't wait on it
        threading.Thread(target=informer.stop, daemon=True).start()


KOPF_OPERATOR = """
import kopf

@kopf.on.create("example.com", "v1", "gadgets")
def created(spec, patch, **_):
    patch.status["handled"] = spec.get("x", 0) * 10
    return {"seen": True}
"""


def test_kopf_standalone_handles_custom_resource(
    api: client.ApiClient, gadgets: None, server: RunningServer, tmp_path: Path
) -> None:
    co = client.CustomObjectsApi(api)
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "kopf"}})
    script = tmp_path / "operator.py"
    script.write_text(KOPF_OPERATOR)
    env = dict(os.environ, KUBECONFIG=str(server.kubeconfig))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", "kopf", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        co.create_namespaced_custom_object(
            "example.com",
            "v1",
            "kopf",
            "gadgets",
            {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "k1"}, "spec": {"x": 4}},
        )
        deadline = time.monotonic() + 60
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = (
                co.get_namespaced_custom_object("example.com", "v1", "kopf", "gadgets", "k1").get("status")
                or {}
            )
            if status.get("handled") == 40:
                break
            time.sleep(0.3)
        assert status.get("handled") == 40, status
        assert status.get("created") == {"seen": True}
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert b"Traceback" not in out or b"CancelledError" in out, out.decode()[-3000:]


def test_crd_with_two_served_versions_and_deletion(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    schema = {
        "openAPIV3Schema": {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {"n": {"type": "integer", "default": 7}}}
            },
        }
    }
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "dual.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Cluster",
                "names": {"plural": "dual", "singular": "dualone", "kind": "Dual", "listKind": "DualList"},
                "versions": [
                    {"name": "v1beta1", "served": True, "storage": False, "schema": schema},
                    {"name": "v1", "served": True, "storage": True, "schema": schema},
                ],
            },
        }
    )
    co = client.CustomObjectsApi(api)
    deadline = time.monotonic() + 30
    while True:
        try:
            co.create_cluster_custom_object(
                "example.com",
                "v1beta1",
                "dual",
                {"apiVersion": "example.com/v1beta1", "kind": "Dual", "metadata": {"name": "d1"}, "spec": {}},
            )
            break
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    as_v1 = co.get_cluster_custom_object("example.com", "v1", "dual", "d1")
    assert as_v1["apiVersion"] == "example.com/v1" and as_v1["spec"] == {"n": 7}
    as_beta = co.list_cluster_custom_object("example.com", "v1beta1", "dual")["items"]
    assert [o["apiVersion"] for o in as_beta] == ["example.com/v1beta1"]
    crd = ext.read_custom_resource_definition("dual.example.com")
    assert crd.status.stored_versions == ["v1"]
    assert crd.status.accepted_names.kind == "Dual"
    # deleting the CRD deletes its objects first, then the CRD and its API
    ext.delete_custom_resource_definition("dual.example.com")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ext.read_custom_resource_definition("dual.example.com")
        except ApiException as exc:
            assert exc.status == 404
            break
        time.sleep(0.1)
    with pytest.raises(ApiException) as err:
        co.list_cluster_custom_object("example.com", "v1", "dual")
    assert err.value.status == 404


def test_pod_binding_status_and_graceful_deletion(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_node({"metadata": {"name": "node-a"}})
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "bound"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "bound"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"},
    }
    core.create_namespaced_pod_binding("bound", "default", binding, _preload_content=False)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_binding("bound", "default", binding, _preload_content=False)
    assert err.value.status == 409
    listed = core.list_namespaced_pod("default", field_selector="spec.nodeName=node-a").items
    assert [p.metadata.name for p in listed] == ["bound"]
    core.patch_namespaced_pod_status(
        "bound",
        "default",
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
    )
    core.patch_namespaced_pod_status(
        "bound", "default", {"status": {"conditions": [{"type": "ContainersReady", "status": "True"}]}}
    )
    pod = core.read_namespaced_pod("bound", "default")
    assert pod.status.phase == "Running"
    assert {c.type for c in pod.status.conditions} == {"PodScheduled", "Ready", "ContainersReady"}
    # a pod on an existing node waits for its node agent to finish the deletion
    core.delete_namespaced_pod("bound", "default")
    pod = core.read_namespaced_pod("bound", "default")
    assert pod.metadata.deletion_timestamp is not None and pod.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("bound", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("bound", "default")
    assert err.value.status == 404


def test_delete_collection_with_selector(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "dc"}})
    for i in range(6):
        core.create_namespaced_config_map(
            "dc", {"metadata": {"name": f"c{i}", "labels": {"even": str(i % 2 == 0)}}}
        )
    core.delete_collection_namespaced_config_map("dc", label_selector="even=True", dry_run="All")
    assert len(core.list_namespaced_config_map("dc").items) == 6
    core.delete_collection_namespaced_config_map("dc", label_selector="even=True")
    assert sorted(c.metadata.name for c in core.list_namespaced_config_map("dc").items) == ["c1", "c3", "c5"]


def test_events_k8s_io_and_core_events_are_the_same_objects(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    events = client.EventsV1Api(api)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "subject", "namespace": "default", "uid": "u-1"}
    events.create_namespaced_event(
        "default",
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "new-style"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "kubevisor/test",
            "reportingInstance": "test-1",
            "action": "Testing",
            "reason": "Tested",
            "type": "Normal",
            "regarding": ref,
            "note": "written through events.k8s.io",
        },
    )
    as_core = core.read_namespaced_event("new-style", "default")
    assert as_core.message == "written through events.k8s.io"
    assert as_core.involved_object.name == "subject" and as_core.reporting_component == "kubevisor/test"
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "old-style"},
            "involvedObject": ref,
            "reason": "Old",
            "message": "core event",
            "type": "Warning",
            "count": 3,
            "source": {"component": "pytest"},
        },
    )
    # a core event has no eventTime, which the client's EventsV1Event model requires: read it raw
    raw = events.read_namespaced_event("old-style", "default", _preload_content=False)
    as_new = json.loads(raw.data)
    assert as_new["note"] == "core event" and as_new["regarding"]["name"] == "subject"
    assert as_new["deprecatedCount"] == 3 and as_new["apiVersion"] == "events.k8s.io/v1"
    raw = events.list_namespaced_event(
        "default", field_selector="regarding.name=subject", _preload_content=False
    )
    assert {e["metadata"]["name"] for e in json.loads(raw.data)["items"]} == {"new-style", "old-style"}
    events.patch_namespaced_event("old-style", "default", {"note": "patched"}, _preload_content=False)
    assert core.read_namespaced_event("old-style", "default").message == "patched"
