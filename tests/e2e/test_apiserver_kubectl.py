"""The embedded apiserver driven by the real kubectl binaries, 1.29 to 1.33 (and 1.27/1.28 with
--validate=false). One server for the module; each kubectl version works in its own namespace
with its own --cache-dir.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from apiserver_fixture import KUBECTL_VERSIONS, Kubectl, RunningServer, kubectl_binary, running_server

pytestmark = pytest.mark.e2e

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Color, type: string, jsonPath: .spec.color, priority: 1}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A Widget is a test resource.
        properties:
          spec:
            type: object
            description: Spec of the widget.
            properties:
              replicas: {type: integer, default: 1, minimum: 0, description: How many.}
              color: {type: string, enum: [red, green, blue], description: The colour.}
              size: {type: string}
          status:
            type: object
            properties:
              replicas: {type: integer}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
"""


def widget(name: str, ns: str, color: str = "red", replicas: int = 2, extra: str = "") -> str:
    return (
        f"apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        f"  labels: {{app: demo}}\nspec:\n  color: {color}\n  replicas: {replicas}\n{extra}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("apiserver")
    logs = root / "pod-logs"
    logs.mkdir()
    with running_server(root / "data", extra_args=["--pod-log-dir", str(logs)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def crd(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    k = Kubectl(kubectl_binary("1.32"), server, tmp_path_factory.mktemp("cache-crd"))
    k.run("apply", "-f", "-", stdin=CRD)
    k.run("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=30s")


def kubectl_for(version: str, server: RunningServer, tmp_path: Path) -> Kubectl:
    binary = kubectl_binary(version)
    if not binary.exists():
        pytest.skip(f"{binary} not installed")
    return Kubectl(binary, server, tmp_path / "cache")


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_kubectl_crd_workflow(version: str, server: RunningServer, crd: None, tmp_path: Path) -> None:
    k = kubectl_for(version, server, tmp_path)
    ns = "v" + version.replace(".", "-")
    k.run("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
    # client-side apply: create, then update
    assert "created" in k.run("apply", "-f", "-", stdin=widget("w1", ns)).stdout
    assert "configured" in k.run("apply", "-f", "-", stdin=widget("w1", ns, replicas=3)).stdout
    obj = k.json("get", "widget", "w1", "-n", ns)
    assert obj["spec"] == {"color": "red", "replicas": 3}
    assert obj["metadata"]["generation"] == 2
    # get: table columns from printer columns; priority>0 only with -o wide
    plain = k.run("get", "wd", "-n", ns).stdout.splitlines()
    assert plain[0].split() == ["NAME", "REPLICAS", "READY", "AGE"] and plain[1].split()[:2] == ["w1", "3"]
    wide = k.run("get", "wd", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "REPLICAS", "COLOR", "READY", "AGE"] and "red" in wide[1]
    assert yaml.safe_load(k.run("get", "wd", "w1", "-n", ns, "-o", "yaml").stdout)["kind"] == "Widget"
    # diff leaves state unchanged; server dry run persists nothing
    diff = k.run("diff", "-f", "-", stdin=widget("w1", ns, replicas=9), check=False)
    assert diff.returncode == 1 and "+  replicas: 9" in diff.stdout
    k.run("apply", "--dry-run=server", "-f", "-", stdin=widget("w1", ns, replicas=8))
    assert k.json("get", "wd", "w1", "-n", ns)["spec"]["replicas"] == 3
    # strict validation: unknown fields and schema violations are rejected by the server
    bad = k.run("apply", "-f", "-", stdin=widget("w2", ns, extra="  bogus: 1\n"), check=False)
    assert bad.returncode != 0 and 'unknown field "spec.bogus"' in bad.stderr
    bad = k.run("apply", "-f", "-", stdin=widget("w2", ns, color="pink"), check=False)
    assert bad.returncode != 0 and "spec.color" in bad.stderr and "Unsupported value" in bad.stderr
    # patches: merge, json, strategic (415 on a CR), status subresource
    k.run("patch", "wd", "w1", "-n", ns, "--type", "merge", "-p", '{"spec":{"color":"blue"}}')
    k.run(
        "patch",
        "wd",
        "w1",
        "-n",
        ns,
        "--type",
        "json",
        "-p",
        '[{"op":"replace","path":"/spec/replicas","value":4}]',
    )
    smp = k.run("patch", "wd", "w1", "-n", ns, "-p", '{"spec":{"color":"green"}}', check=False)
    assert smp.returncode != 0 and "strategic-merge-patch+json is not supported" in smp.stderr
    k.run(
        "patch",
        "wd",
        "w1",
        "-n",
        ns,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        '{"status":{"replicas":4,"conditions":[{"type":"Ready","status":"True"}]},"spec":{"color":"red"}}',
    )
    obj = k.json("get", "wd", "w1", "-n", ns)
    assert obj["spec"] == {"color": "blue", "replicas": 4}  # /status ignored the spec change
    assert obj["status"]["replicas"] == 4
    k.run("wait", "--for=condition=Ready", "wd/w1", "-n", ns, "--timeout=30s")
    # label, annotate, scale
    k.run("label", "wd", "w1", "-n", ns, "tier=gold")
    k.run("annotate", "wd", "w1", "-n", ns, "note=hello")
    k.run("scale", "wd", "w1", "-n", ns, "--replicas=5")
    obj = k.json("get", "wd", "w1", "-n", ns)
    assert obj["metadata"]["labels"] == {"app": "demo", "tier": "gold"}
    assert obj["metadata"]["annotations"]["note"] == "hello"
    assert obj["spec"]["replicas"] == 5
    assert (
        k.run("get", "wd", "-n", ns, "-l", "tier=gold", "-o", "name").stdout.strip()
        == "widget.example.com/w1"
    )
    assert k.run("get", "wd", "-n", ns, "-l", "tier notin (gold)", "-o", "name").stdout.strip() == ""
    assert k.run("get", "wd", "-n", ns, "--field-selector", "metadata.name=w1", "-o", "name").stdout.strip()
    # server-side apply: create, a conflict with another manager, then forced
    k.run("apply", "--server-side", "-f", "-", stdin=widget("w3", ns, replicas=1))
    k.run("scale", "wd", "w3", "-n", ns, "--replicas=2")
    conflict = k.run("apply", "--server-side", "-f", "-", stdin=widget("w3", ns, replicas=6), check=False)
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower()
    k.run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=widget("w3", ns, replicas=6))
    assert k.json("get", "wd", "w3", "-n", ns)["spec"]["replicas"] == 6
    # describe shows events about the object
    uid = obj["metadata"]["uid"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "w1.ev1", "namespace": ns},
        "involvedObject": {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "name": "w1",
            "namespace": ns,
            "uid": uid,
        },
        "reason": "Tested",
        "message": "hello from the test",
        "type": "Normal",
        "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "pytest"},
    }
    k.run("apply", "-f", "-", stdin=json.dumps(event))
    described = k.run("describe", "wd", "w1", "-n", ns).stdout
    assert "Tested" in described and "hello from the test" in described
    # delete with each cascade mode, dependents follow the owner (or not)
    owner = k.json("get", "wd", "w3", "-n", ns)
    for name in ("dep-bg", "dep-orphan", "dep-fg"):
        dep = yaml.safe_load(widget(name, ns, replicas=1))
        dep["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "name": "w3",
                "uid": owner["metadata"]["uid"],
                "blockOwnerDeletion": True,
            }
        ]
        k.run("apply", "-f", "-", stdin=json.dumps(dep))
    k.run("delete", "wd", "w3", "-n", ns, "--cascade=foreground", "--timeout=60s")
    _wait_gone(k, ns, ["dep-bg", "dep-orphan", "dep-fg"])
    assert _names(k, ns) == {"w1"}
    k.run("apply", "-f", "-", stdin=widget("w4", ns))
    owner = k.json("get", "wd", "w4", "-n", ns)
    dep = yaml.safe_load(widget("dep-orphan", ns, replicas=1))
    dep["metadata"]["ownerReferences"] = [
        {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w4", "uid": owner["metadata"]["uid"]}
    ]
    k.run("apply", "-f", "-", stdin=json.dumps(dep))
    k.run("delete", "wd", "w4", "-n", ns, "--cascade=orphan", "--timeout=60s")
    orphan = k.json("get", "wd", "dep-orphan", "-n", ns)
    assert "ownerReferences" not in orphan["metadata"]
    k.run("apply", "-f", "-", stdin=widget("w5", ns))
    owner = k.json("get", "wd", "w5", "-n", ns)
    dep["metadata"]["name"] = "dep-bg"
    dep["metadata"]["ownerReferences"][0].update(name="w5", uid=owner["metadata"]["uid"])
    k.run("apply", "-f", "-", stdin=json.dumps(dep))
    k.run("delete", "wd", "w5", "-n", ns, "--cascade=background")
    _wait_gone(k, ns, ["dep-bg"])
    # finalizers hold a delete; wait --for=delete returns once the finalizer is removed
    k.run(
        "patch",
        "wd",
        "w1",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        '{"metadata":{"finalizers":["example.com/x"]}}',
    )
    k.run("delete", "wd", "w1", "-n", ns, "--wait=false")
    held = k.json("get", "wd", "w1", "-n", ns)
    assert held["metadata"]["deletionTimestamp"]
    waiter = subprocess.Popen(
        [
            str(k.binary),
            "--kubeconfig",
            str(server.kubeconfig),
            "--cache-dir",
            str(k.cache_dir),
            "wait",
            "--for=delete",
            "wd/w1",
            "-n",
            ns,
            "--timeout=60s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    k.run(
        "patch",
        "wd",
        "w1",
        "-n",
        ns,
        "--type",
        "json",
        "-p",
        '[{"op":"remove","path":"/metadata/finalizers"}]',
    )
    _out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert _names(k, ns) == {"dep-orphan"}
    # explain and api-resources come from OpenAPI v3 and discovery
    explained = k.run("explain", "widgets.spec").stdout
    assert "How many." in explained and "The colour." in explained
    resources = k.run("api-resources").stdout
    assert "widgets" in resources and "example.com/v1" in resources and "wd" in resources
    # namespace deletion removes its content, then the namespace
    k.run("delete", "namespace", ns, "--timeout=60s")
    assert k.run("get", "namespace", ns, check=False).returncode != 0


def _names(k: Kubectl, ns: str) -> set[str]:
    return {item["metadata"]["name"] for item in k.json("get", "wd", "-n", ns)["items"]}


def _wait_gone(k: Kubectl, ns: str, names: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not (_names(k, ns) & set(names)):
            return
        time.sleep(0.2)
    raise AssertionError(f"still present: {_names(k, ns) & set(names)}")


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_kubectl_builtin_kinds(version: str, server: RunningServer, tmp_path: Path) -> None:
    k = kubectl_for(version, server, tmp_path)
    ns = "b" + version.replace(".", "-")
    k.run("create", "namespace", ns)  # generators post protobuf
    k.run("create", "configmap", "gen", "-n", ns, "--from-literal=k=v")
    k.run("create", "secret", "generic", "sec", "-n", ns, "--from-literal=k=v")
    assert k.json("get", "cm", "gen", "-n", ns)["data"] == {"k": "v"}
    assert k.json("get", "secret", "sec", "-n", ns)["data"] == {"k": "dg=="}
    cm = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: {ns}}}\n"
        "data: {a: '1', b: '2'}\n"
    )
    k.run("apply", "-f", "-", stdin=cm)
    k.run("apply", "-f", "-", stdin=cm.replace("a: '1', ", ""))  # strategic merge patch removes a
    assert k.json("get", "cm", "cfg", "-n", ns)["data"] == {"b": "2"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p1", "namespace": ns},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80}],
                }
            ]
        },
    }
    typo = json.loads(json.dumps(pod))
    typo["spec"]["containers"][0]["imagee"] = "x"
    bad = k.run("apply", "-f", "-", stdin=json.dumps(typo), check=False)
    assert bad.returncode != 0 and 'unknown field "spec.containers[0].imagee"' in bad.stderr
    k.run("apply", "-f", "-", stdin=json.dumps(pod))
    assert "containerPort" in k.run("explain", "pods.spec.containers.ports").stdout
    # strategic merge on a built-in kind: lists merge by key
    k.run(
        "patch",
        "pod",
        "p1",
        "-n",
        ns,
        "-p",
        '{"spec":{"containers":[{"name":"main","env":[{"name":"B","value":"2"}]}]}}',
    )
    got = k.json("get", "pod", "p1", "-n", ns)
    assert [e["name"] for e in got["spec"]["containers"][0]["env"]] == ["A", "B"]
    assert got["spec"]["containers"][0]["image"] == "busybox"
    table = k.run("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "Pending" in table[1]
    assert (
        k.run(
            "get", "pods", "-n", ns, "--field-selector", "status.phase=Pending", "-o", "name"
        ).stdout.strip()
        == "pod/p1"
    )
    # logs come from the pod log directory in kubelet's layout
    logs_root = Path(server.data_dir).parent / "pod-logs"
    log_dir = logs_root / f"{ns}_p1_{got['metadata']['uid']}" / "main"
    log_dir.mkdir(parents=True)
    (log_dir / "0.log").write_text("line one\nline two\n")
    assert k.run("logs", "p1", "-n", ns).stdout == "line one\nline two\n"
    assert k.run("logs", "p1", "-n", ns, "--tail=1").stdout == "line two\n"
    follow = subprocess.Popen(
        [
            str(k.binary),
            "--kubeconfig",
            str(server.kubeconfig),
            "--cache-dir",
            str(k.cache_dir),
            "logs",
            "-f",
            "p1",
            "-n",
            ns,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follow.stdout is not None
    assert follow.stdout.readline() == "line one\n"
    assert follow.stdout.readline() == "line two\n"
    with (log_dir / "0.log").open("a") as fh:
        fh.write("line three\n")
    assert follow.stdout.readline() == "line three\n"
    k.run("patch", "pod", "p1", "-n", ns, "--subresource=status", "-p", '{"status":{"phase":"Succeeded"}}')
    assert follow.wait(timeout=30) == 0  # the stream ends when the pod finishes
    k.run("delete", "pod", "p1", "-n", ns)
    k.run("delete", "namespace", ns, "--timeout=60s")


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_kubectl_get_watch(version: str, server: RunningServer, crd: None, tmp_path: Path) -> None:
    k = kubectl_for(version, server, tmp_path)
    ns = "w" + version.replace(".", "-")
    k.run("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
    k.run("apply", "-f", "-", stdin=widget("a", ns))
    watcher = subprocess.Popen(
        [
            str(k.binary),
            "--kubeconfig",
            str(server.kubeconfig),
            "--cache-dir",
            str(k.cache_dir),
            "get",
            "wd",
            "-n",
            ns,
            "-w",
            "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        header = watcher.stdout.readline()
        assert "EVENT" in header and "REPLICAS" in header
        assert watcher.stdout.readline().split()[:2] == ["ADDED", "a"]
        k.run("scale", "wd", "a", "-n", ns, "--replicas=7")
        modified = watcher.stdout.readline().split()
        assert modified[:3] == ["MODIFIED", "a", "7"]
        k.run("delete", "wd", "a", "-n", ns)
        line = watcher.stdout.readline().split()
        assert line[:2] == ["DELETED", "a"]
    finally:
        watcher.kill()
        watcher.communicate()
    k.run("delete", "namespace", ns, "--timeout=60s")


@pytest.mark.parametrize("version", ["1.27", "1.28"])
def test_old_kubectl_with_validate_false(
    version: str, server: RunningServer, crd: None, tmp_path: Path
) -> None:
    k = kubectl_for(version, server, tmp_path)
    ns = "o" + version.replace(".", "-")
    k.run(
        "apply",
        "--validate=false",
        "-f",
        "-",
        stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n",
    )
    k.run("apply", "--validate=false", "-f", "-", stdin=widget("old", ns))
    assert "old" in k.run("get", "wd", "-n", ns).stdout
    k.run("delete", "namespace", ns, "--timeout=60s")
