"""Pod status as the node agent reports it (pure): running, or ended with an exit code.

The launcher process is the pod's one container, `compute`. Exit 0 (the guest powered
itself off, or was powered down on request) ends the pod Succeeded; anything else Failed.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

CONTAINER = "compute"


def _conditions(now: str, ready: bool, initialized: bool = True) -> list[Obj]:
    flag = "True" if ready else "False"
    return [
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
        {
            "type": "Initialized",
            "status": "True" if initialized else "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        },
        {"type": "ContainersReady", "status": flag, "lastProbeTime": None, "lastTransitionTime": now},
        {"type": "Ready", "status": flag, "lastProbeTime": None, "lastTransitionTime": now},
    ]


def _image(pod: Obj) -> str:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == CONTAINER:
            return str(c.get("image") or "")
    return ""


def running_status(pod: Obj, host_ip: str, started_at: str, now: str) -> Obj:
    return {
        "phase": "Running",
        "conditions": _conditions(now, ready=True),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        # Launcher processes share the node's network (a hostNetwork pod): the pod IP is the node's.
        "podIP": host_ip,
        "podIPs": [{"ip": host_ip}],
        "startTime": started_at,
        "containerStatuses": [
            {
                "name": CONTAINER,
                "image": _image(pod),
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started_at}},
            }
        ],
        "qosClass": "Burstable",
    }


def terminated_status(
    pod: Obj, host_ip: str, started_at: str | None, exit_code: int, now: str, message: str = ""
) -> Obj:
    reason = "Completed" if exit_code == 0 else "Error"
    terminated: Obj = {"exitCode": exit_code, "reason": reason, "finishedAt": now}
    if started_at:
        terminated["startedAt"] = started_at
    if message:
        terminated["message"] = message
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": _conditions(now, ready=False),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": started_at or now,
        "containerStatuses": [
            {
                "name": CONTAINER,
                "image": _image(pod),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }


def rejected_status(reason: str, message: str) -> Obj:
    """A pod this node cannot run at all (as kubelet's admission rejection)."""
    return {"phase": "Failed", "reason": reason, "message": message}
