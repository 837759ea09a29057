"""Node heartbeat timeout → NotReady, unreachable taints, VMIs Failed with NodeUnresponsive."""

import datetime as dt

from kubevisor.controller.node_health import (
    failed_vmi_status,
    marked_unreachable,
    not_ready_patch,
    reachable_taints,
    seconds_until_stale,
    vmis_to_fail,
)

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
NODE = {
    "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T11:00:00Z"},
    "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]},
    "status": {
        "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T11:59:00Z"}]
    },
}
LEASE = {"spec": {"renewTime": "2026-01-01T11:59:50.000000Z"}}


def test_lease_renewal_is_the_heartbeat():
    assert seconds_until_stale(NODE, LEASE, T0, 40) == 30
    assert seconds_until_stale(NODE, None, T0, 40) == -20
    assert seconds_until_stale(NODE, LEASE, T0 + dt.timedelta(seconds=31), 40) < 0


def test_not_ready_patch_and_recovery():
    conditions, taints = not_ready_patch(NODE, "2026-01-01T12:00:00Z")
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert ready["status"] == "Unknown" and ready["reason"] == "NodeStatusUnknown"
    marked = {**NODE, "spec": {"taints": taints}}
    assert marked_unreachable(marked) and not marked_unreachable(NODE)
    assert {t["effect"] for t in taints if t["key"] == "node.kubernetes.io/unreachable"} == {
        "NoSchedule",
        "NoExecute",
    }
    assert reachable_taints(marked) == [{"key": "other", "effect": "NoSchedule"}]


def test_vmis_on_the_node_fail_with_node_unresponsive():
    vmis = [
        {"metadata": {"name": "a"}, "status": {"phase": "Running", "nodeName": "n1"}},
        {"metadata": {"name": "b"}, "status": {"phase": "Succeeded", "nodeName": "n1"}},
        {"metadata": {"name": "c"}, "status": {"phase": "Running", "nodeName": "n2"}},
    ]
    victims = vmis_to_fail("n1", vmis)
    assert [v["metadata"]["name"] for v in victims] == ["a"]
    status = failed_vmi_status(victims[0], "t")
    assert status["phase"] == "Failed" and status["reason"] == "NodeUnresponsive"
    assert status["phaseTransitionTimestamps"][-1] == {"phase": "Failed", "phaseTransitionTimestamp": "t"}
