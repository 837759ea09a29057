"""The local-path provisioner with the node agent: default StorageClass, binding, the claim's
`disk.img` mounted for the launcher, and reclaim policy Delete. Real kubectl where a user would
look; the launcher is the node agent e2e's stand-in (no QEMU; a guest writing to a claim across a VM's
deletion: test_up_vms_e2e.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_controller_e2e import KUBECTL, Cluster, vm_manifest, wait_for
from test_node_agent_e2e import Node

from kubevisor.controller.kube import PVCS, PVS, STORAGE_CLASSES, VMS, ApiError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Node]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    cluster = Cluster(tmp_path_factory.mktemp("local-path-e2e"))
    node = Node(cluster, "lp1")
    try:
        cluster.start_apiserver(pod_log_dir=node.logs)
        cluster.apply_crds()
        node.start()
        cluster.start_controller(heartbeat_timeout=60)
        yield cluster, node
    finally:
        node.stop()
        node.clean()
        cluster.stop()


def pvc_yaml(name: str, size: str) -> str:
    # No storageClassName: the default class is assigned.
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        }
    )


def kubectl_apply(cluster: Cluster, ns: str, doc: str, tmp: Path) -> None:
    path = tmp / f"{os.getpid()}-{abs(hash(doc))}.json"
    path.write_text(doc)
    cluster.kubectl("apply", "-n", ns, "-f", str(path))


def test_default_class_binds_a_claim_and_delete_reclaims_it(env: tuple[Cluster, Node]) -> None:
    cluster, _ = env
    sc = wait_for("StorageClass local-path", lambda: cluster.kube.get(STORAGE_CLASSES, None, "local-path"))
    assert sc["provisioner"] == "kubevisor.io/local-path"
    assert "local-path (default)" in cluster.kubectl("get", "storageclass")
    ns = cluster.namespace()
    kubectl_apply(cluster, ns, pvc_yaml("data", "64Mi"), cluster.tmp)
    wait_for("Bound", lambda: "Bound" in cluster.kubectl("get", "pvc", "-n", ns, "data"))
    pvc = cluster.kube.get(PVCS, ns, "data")
    assert pvc["spec"]["storageClassName"] == "local-path"
    assert pvc["status"]["capacity"] == {"storage": "64Mi"}
    pv = cluster.kube.get(PVS, None, pvc["spec"]["volumeName"])
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pv["status"]["phase"] == "Bound"
    directory = Path(pv["spec"]["hostPath"]["path"])
    assert directory.is_dir() and directory.parent == cluster.tmp / "local-path"
    (directory / "kept").write_text("x")

    cluster.kubectl("delete", "pvc", "-n", ns, "data")
    wait_for("directory removed", lambda: not directory.exists())
    wait_for("PV deleted", lambda: _gone(cluster, pv["metadata"]["name"]))


def _gone(cluster: Cluster, pv_name: str) -> bool:
    try:
        cluster.kube.get(PVS, None, pv_name)
    except ApiError as exc:
        return exc.not_found
    return False


def test_launcher_gets_the_claims_disk_image(env: tuple[Cluster, Node]) -> None:
    cluster, node = env
    ns = cluster.namespace()
    kubectl_apply(cluster, ns, pvc_yaml("disk", "32Mi"), cluster.tmp)
    volumes = [{"name": "root", "persistentVolumeClaim": {"claimName": "disk"}}]
    cluster.kube.create(VMS, ns, vm_manifest("withpvc", volumes=volumes))
    pod = wait_for(
        "pod Running",
        lambda: next(
            (p for p in cluster.launcher_pods(ns) if p.get("status", {}).get("phase") == "Running"), None
        ),
    )
    link = node.state / "pods" / pod["metadata"]["uid"] / "claims" / "disk"
    pv = cluster.kube.get(PVS, None, cluster.kube.get(PVCS, ns, "disk")["spec"]["volumeName"])
    assert link.resolve() == Path(pv["spec"]["hostPath"]["path"]).resolve()
    image = link / "disk.img"
    assert image.stat().st_size == 32 * 1024 * 1024
    assert image.stat().st_blocks == 0  # sparse
