"""The kwok-style fake node (kubevisor.node.fake): VMIs reach Running without QEMU, and go away.

It is what bench/density --fake measures the control plane with, so it must drive the same
phases as the real node agent: pod Running, VMI Scheduled -> Running, deletion finished.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from test_controller_e2e import KUBECTL, Cluster, wait_for

from kubevisor.controller.kube import NODES, VMIS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    c = Cluster(tmp_path_factory.mktemp("fake-node-e2e"))
    fake: subprocess.Popen[bytes] | None = None
    try:
        c.start_apiserver()
        c.apply_crds()
        with open(c.tmp / "fake-node.log", "wb") as log:
            fake = subprocess.Popen(
                [sys.executable, "-m", "kubevisor.node.fake", "--kubeconfig", str(c.kubeconfig)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        c.start_controller(heartbeat_timeout=60)
        yield c
    finally:
        if fake is not None:
            fake.terminate()
            fake.wait(timeout=30)
        c.stop()


def test_fake_node_runs_and_deletes_vmis(cluster: Cluster) -> None:
    node = wait_for("fake node", lambda: cluster.kube.get(NODES, None, "fake-0"))
    assert node["status"]["allocatable"]["pods"] == "110000"
    ns = cluster.namespace()
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "f1"},
        "spec": {
            "domain": {"devices": {}, "resources": {"requests": {"memory": "90Mi"}}},
            "volumes": [],
        },
    }
    cluster.kube.create(VMIS, ns, vmi)
    running = wait_for(
        "Running",
        lambda: (v := cluster.vmi(ns, "f1")) and (v.get("status") or {}).get("phase") == "Running" and v,
    )
    assert running["status"]["nodeName"] == "fake-0"
    pod = cluster.launcher_pods(ns)[0]
    assert pod["status"]["phase"] == "Running"
    assert "Running" in cluster.kubectl("get", "vmi", "-n", ns, "f1")
    cluster.kube.request("DELETE", VMIS.path(ns, "f1"))
    wait_for("VMI gone", lambda: cluster.vmi(ns, "f1") is None)
    wait_for("pod gone", lambda: not cluster.launcher_pods(ns))
