"""Scheduler predicates, binding choice and kube-scheduler-style failure messages."""

from collections import Counter

import pytest

from kubevisor.controller.scheduling import (
    NodeUsage,
    failed_scheduling_message,
    filter_node,
    pod_requests,
    schedule,
    used_by_node,
)


def node(name, cpu="2", memory="4Gi", pods="110", labels=None, taints=None, unschedulable=False, extra=None):
    alloc = {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})}
    spec = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": {"allocatable": alloc, "capacity": alloc},
    }


def pod(
    memory="1Gi",
    cpu="100m",
    node_name=None,
    phase="Pending",
    selector=None,
    affinity=None,
    tolerations=None,
    extra=None,
):
    requests = {"memory": memory, "cpu": cpu, **(extra or {})}
    spec = {"containers": [{"name": "compute", "resources": {"requests": requests}}]}
    if node_name:
        spec["nodeName"] = node_name
    if selector:
        spec["nodeSelector"] = selector
    if affinity:
        spec["affinity"] = affinity
    if tolerations:
        spec["tolerations"] = tolerations
    return {"metadata": {"name": "p", "namespace": "default"}, "spec": spec, "status": {"phase": phase}}


def test_requests_sum_containers_and_count_the_pod():
    p = pod()
    p["spec"]["containers"].append({"name": "b", "resources": {"requests": {"cpu": "1"}}})
    assert pod_requests(p) == {"memory": 2**30 * 1000, "cpu": 1100, "pods": 1000}


def test_insufficient_memory_message_like_kube_scheduler():
    d = schedule(pod(memory="8Gi"), [node("n1")], {})
    assert d.node is None
    assert d.message == "0/1 nodes are available: 1 Insufficient memory."


def test_bound_pods_use_up_allocatable():
    bound = [
        pod(memory="3Gi", node_name="n1", phase="Running"),
        pod(memory="3Gi", node_name="n2", phase="Succeeded"),
    ]
    used = used_by_node(bound)
    assert schedule(pod(memory="2Gi"), [node("n1")], used).node is None
    assert schedule(pod(memory="2Gi"), [node("n1"), node("n2")], used).node == "n2"


def test_least_allocated_wins_ties_by_name():
    used = used_by_node([pod(memory="2Gi", cpu="1", node_name="a", phase="Running")])
    assert schedule(pod(), [node("a"), node("b"), node("c")], used).node == "b"


def test_node_selector_and_required_affinity():
    nodes = [node("plain"), node("ssd", labels={"disk": "ssd", "zone": "z1"})]
    assert schedule(pod(selector={"disk": "ssd"}), nodes, {}).node == "ssd"
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]},
                    {
                        "matchExpressions": [
                            {"key": "disk", "operator": "Exists"},
                            {"key": "zone", "operator": "NotIn", "values": ["z9"]},
                        ]
                    },
                ]
            }
        }
    }
    assert schedule(pod(affinity=affinity), nodes, {}).node == "ssd"
    d = schedule(pod(selector={"disk": "nvme"}), nodes, {})
    assert d.message == "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."


def test_taints_and_tolerations():
    taint = {"key": "dedicated", "value": "vms", "effect": "NoSchedule"}
    nodes = [node("t", taints=[taint])]
    d = schedule(pod(), nodes, {})
    assert d.message == "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: vms}."
    assert (
        schedule(pod(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "vms"}]), nodes, {}).node
        == "t"
    )
    assert schedule(pod(tolerations=[{"operator": "Exists"}]), nodes, {}).node == "t"
    prefer = [node("p", taints=[{"key": "x", "effect": "PreferNoSchedule"}])]
    assert schedule(pod(), prefer, {}).node == "p"


def test_unschedulable_node():
    d = schedule(pod(), [node("cordoned", unschedulable=True), node("full", memory="1Mi")], {})
    assert d.message == "0/2 nodes are available: 1 Insufficient memory, 1 node(s) were unschedulable."


def test_extended_resources_and_pod_count():
    kvm = {"devices.kubevirt.io/kvm": "1"}
    assert filter_node(pod(extra=kvm), node("n"), None) == ["Insufficient devices.kubevirt.io/kvm"]
    assert filter_node(pod(extra=kvm), node("n", extra={"devices.kubevirt.io/kvm": "1k"}), None) == []
    assert filter_node(pod(), node("n", pods="1"), Counter({"pods": 1000})) == ["Too many pods"]


@pytest.mark.parametrize(
    ("total", "reasons", "expected"),
    [
        (0, Counter(), "0/0 nodes are available."),
        (
            3,
            Counter({"Insufficient cpu": 1, "Insufficient memory": 2}),
            "0/3 nodes are available: 1 Insufficient cpu, 2 Insufficient memory.",
        ),
    ],
)
def test_failed_scheduling_message(total, reasons, expected):
    assert failed_scheduling_message(total, reasons) == expected


def test_node_usage_follows_pod_changes_as_a_recount_would():
    usage = NodeUsage()
    pending = pod(memory="1Gi")
    usage.update("ns/a", pending)
    assert usage.snapshot() == {}
    bound = pod(memory="1Gi", node_name="n1", phase="Running")
    usage.update("ns/a", bound)
    usage.update("ns/b", pod(memory="2Gi", node_name="n1", phase="Running"))
    usage.update("ns/c", pod(memory="3Gi", node_name="n2", phase="Running"))
    recount = [bound, pod(memory="2Gi", node_name="n1"), pod(memory="3Gi", node_name="n2")]
    assert usage.snapshot() == used_by_node(recount)
    usage.update("ns/b", pod(memory="2Gi", node_name="n1", phase="Succeeded"))  # terminal: frees its share
    usage.update("ns/c", None)  # deleted
    assert usage.snapshot() == used_by_node([bound])
    assert usage.snapshot()["n1"]["memory"] == 2**30 * 1000
