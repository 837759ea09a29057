"""VMIRS replica planning: scale up, scale down (which to delete), finished VMIs, status."""

from kubevisor.controller.replicas import compute_status, matches, plan, vmi_from_template

RS = {
    "metadata": {"name": "rs", "namespace": "default", "uid": "rs-uid"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "x"}},
        "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"domain": {}}},
    },
}


def vmi(name, phase="Running", ready=False, created="2026-01-01T00:00:00Z", deleting=False):
    meta = {"name": name, "creationTimestamp": created, "labels": {"app": "x"}}
    if deleting:
        meta["deletionTimestamp"] = created
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "status": {"phase": phase, "conditions": conds}}


def rs(replicas):
    out = {**RS, "spec": {**RS["spec"], "replicas": replicas}}
    return out


def test_scale_up_from_zero():
    p = plan(rs(2), [])
    assert p.create == 2 and p.delete == []


def test_steady():
    p = plan(rs(2), [vmi("a"), vmi("b")])
    assert p.create == 0 and p.delete == []


def test_scale_down_prefers_unscheduled_then_not_ready_then_newest():
    vmis = [
        vmi("running-ready-old", "Running", True, "2026-01-01T00:00:00Z"),
        vmi("running-notready", "Running", False, "2026-01-01T00:00:01Z"),
        vmi("pending", "Pending", False, "2026-01-01T00:00:00Z"),
        vmi("running-ready-new", "Running", True, "2026-01-01T00:00:09Z"),
    ]
    p = plan(rs(1), vmis)
    assert [v["metadata"]["name"] for v in p.delete] == ["pending", "running-notready", "running-ready-new"]


def test_finished_are_replaced_and_deleting_ignored():
    p = plan(rs(2), [vmi("done", "Succeeded"), vmi("gone", deleting=True), vmi("ok")])
    assert p.create == 1
    assert [v["metadata"]["name"] for v in p.delete] == ["done"]


def test_scale_to_zero():
    p = plan(rs(0), [vmi("a"), vmi("b")])
    assert p.create == 0 and len(p.delete) == 2


def test_template_vmi_owned_by_the_set():
    body = vmi_from_template(RS, "k2x7q")
    assert body["metadata"]["name"] == "rsk2x7q"
    assert body["metadata"]["labels"] == {"app": "x"}
    ref = body["metadata"]["ownerReferences"][0]
    assert ref["kind"] == "VirtualMachineInstanceReplicaSet" and ref["uid"] == "rs-uid" and ref["controller"]
    assert matches(RS, body)


def test_status_counts_and_selector_string():
    status = compute_status(RS, [vmi("a", ready=True), vmi("b"), vmi("c", "Failed")], None, "t")
    assert status["replicas"] == 2 and status["readyReplicas"] == 1
    assert status["labelSelector"] == "app=x"
    failed = compute_status(RS, [], "quota", "t")
    assert failed["conditions"][0]["type"] == "ReplicaFailure"


def test_empty_selector_selects_nothing():
    empty = {**RS, "spec": {**RS["spec"], "selector": {}}}
    assert not matches(empty, vmi("a"))
