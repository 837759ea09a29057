"""`subresources.kubevirt.io/v1` of `kubevisor apiserver --kubevirt`, without a node or a VM:
discovery, version, expand-spec with real instancetypes, the VM start/stop/restart rules as
kubectl sees their effect, dry runs, and the clear 4xx answers (wrong method, unknown
subresource, not a websocket, VMI not running, no node access configured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiserver_fixture import Kubectl, RunningServer, kubectl_binary, running_server

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SUB = "/apis/subresources.kubevirt.io/v1/namespaces/default"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("virtapi") / "data", extra_args=["--kubevirt"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def kubectl(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    binary = kubectl_binary("1.32")
    if not binary.exists():
        pytest.skip(f"{binary} not installed")
    k = Kubectl(binary, server, tmp_path_factory.mktemp("kubectl-cache"))
    k.run("wait", "--for=condition=Established", "crd/virtualmachines.kubevirt.io", "--timeout=60s")
    return k


def virtctl(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    return subprocess.run([sys.executable, "-m", "kubevisor.virtctl", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def vm_manifest(name: str, **spec: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {**spec, "template": {"spec": {
            "domain": {"devices": {}, **({} if "instancetype" in spec else {"memory": {"guest": "64Mi"}})},
        }}},
    })


def test_discovery_and_version(server: RunningServer, kubectl: Kubectl) -> None:
    status, doc, _ = server.request("GET", "/apis/subresources.kubevirt.io/v1")
    assert status == 200
    names = {r["name"] for r in doc["resources"]}
    assert {"virtualmachines/start", "virtualmachineinstances/console",
            "virtualmachineinstances/vnc", "virtualmachineinstances/vnc/screenshot"} <= names
    done = virtctl(server, "version")
    assert done.returncode == 0, done.stderr
    assert "Server Version: version.Info{GitVersion:\"v" in done.stdout


def test_expand_spec_applies_the_instancetype_and_preference(server: RunningServer, kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all([
        {"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineClusterInstancetype",
         "metadata": {"name": "u1.small"}, "spec": {"cpu": {"guest": 2}, "memory": {"guest": "192Mi"}}},
        {"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachinePreference",
         "metadata": {"name": "sockets", "namespace": "default"},
         "spec": {"cpu": {"preferredCPUTopology": "preferSockets"}}},
    ]))
    kubectl.run("apply", "-f", "-", stdin=vm_manifest(
        "typed", runStrategy="Halted", instancetype={"name": "u1.small"},
        preference={"name": "sockets", "kind": "VirtualMachinePreference"}))
    done = virtctl(server, "expand", "--vm", "typed", "-o", "json")
    assert done.returncode == 0, done.stderr
    expanded = json.loads(done.stdout)
    domain = expanded["spec"]["template"]["spec"]["domain"]
    assert domain["memory"]["guest"] == "192Mi"
    assert domain["cpu"]["sockets"] == 2
    assert "instancetype" not in expanded["spec"] and "preference" not in expanded["spec"]
    kubectl.run("apply", "-f", "-", stdin=vm_manifest("untyped-ref", runStrategy="Halted",
                                                        instancetype={"name": "nope"}))
    missing = virtctl(server, "expand", "--vm", "untyped-ref")
    assert missing.returncode != 0 and '"nope" not found' in missing.stderr


def run_strategy(kubectl: Kubectl, name: str) -> str:
    return str(kubectl.json("get", "vm", name)["spec"].get("runStrategy"))


def test_start_and_stop_change_the_run_strategy(server: RunningServer, kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", stdin=vm_manifest("halted", runStrategy="Halted"))
    dry = virtctl(server, "start", "halted", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert run_strategy(kubectl, "halted") == "Halted"  # a dry run changes nothing
    done = virtctl(server, "start", "halted")
    assert done.returncode == 0, done.stderr
    assert run_strategy(kubectl, "halted") == "Always"
    again = virtctl(server, "start", "halted")
    assert again.returncode != 0 and "does not support manual start requests" in again.stderr
    done = virtctl(server, "stop", "halted")
    assert done.returncode == 0, done.stderr
    assert run_strategy(kubectl, "halted") == "Halted"


def test_manual_start_queues_a_request_for_the_controller(server: RunningServer, kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", stdin=vm_manifest("manual", runStrategy="Manual"))
    done = virtctl(server, "start", "manual")
    assert done.returncode == 0, done.stderr
    vm = kubectl.json("get", "vm", "manual")
    assert vm["status"]["stateChangeRequests"] == [{"action": "Start"}]
    # no controller runs here, so the request stays queued and a second one is refused
    again = virtctl(server, "restart", "manual")
    assert again.returncode != 0 and "VM is not running" in again.stderr
    stop = virtctl(server, "stop", "manual")
    assert stop.returncode != 0 and "VM is not running" in stop.stderr


def test_a_vmi_that_is_not_running_gets_a_clear_4xx(server: RunningServer, kubectl: Kubectl) -> None:
    fixture = REPO / "tests" / "unit" / "fixtures" / "api" / "valid" / "vmi-legacy.yaml"
    kubectl.run("apply", "-f", str(fixture))
    for method, sub in (("PUT", "pause"), ("PUT", "softreboot"), ("GET", "guestosinfo"),
                        ("GET", "vnc/screenshot")):
        status, body, _ = server.request(method, f"{SUB}/virtualmachineinstances/legacy/{sub}",
                                         body={} if method == "PUT" else None)
        assert status == 409, (sub, status, body)
        assert body["kind"] == "Status" and "VMI is not running" in body["message"]
    status, body, _ = server.request("GET", f"{SUB}/virtualmachineinstances/missing/guestosinfo")
    assert status == 404 and '"missing" not found' in body["message"]


def test_running_vmi_without_node_access_is_503_not_a_hang(server: RunningServer, kubectl: Kubectl) -> None:
    kubectl.run("patch", "vmi", "legacy", "--type", "merge", "-p",
                json.dumps({"status": {"phase": "Running", "nodeName": "nowhere"}}))
    status, body, _ = server.request("PUT", f"{SUB}/virtualmachineinstances/legacy/pause", body={})
    assert status == 503 and "node-access" in body["message"]


def test_wrong_method_unknown_subresource_and_not_a_websocket(
    server: RunningServer, kubectl: Kubectl
) -> None:
    status, body, _ = server.request("GET", f"{SUB}/virtualmachines/halted/start")
    assert status == 405 and body["reason"] == "MethodNotAllowed"
    status, body, _ = server.request("GET", f"{SUB}/virtualmachineinstances/legacy/teleport")
    assert status == 404 and body["kind"] == "Status"
    status, body, _ = server.request("GET", f"{SUB}/virtualmachineinstances/legacy/console")
    assert status == 400 and "websocket" in body["message"]
    status, body, _ = server.request("PUT", f"{SUB}/virtualmachines/halted/start", raw=b"{not json",
                                     content_type="application/json")
    assert status == 400 and body["reason"] == "BadRequest"
    status, body, _ = server.request("PUT", f"{SUB}/virtualmachines/ghost/start", body={})
    assert status == 404 and '"ghost" not found' in body["message"]
