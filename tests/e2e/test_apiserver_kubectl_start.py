"""Issue 3, "Start and access" and the first step of the kubectl matrix: each kubectl version
1.29-1.33 (its own --cache-dir) creates its own CRD, waits for Established and creates, reads
and deletes resources of it; the server reports a Kubernetes version in 1.29-1.33 (the
machine's kubectl dispatcher picks its client by it) and answers /healthz, /livez, /readyz.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from apiserver_fixture import (
    KUBECTL_DIR,
    KUBECTL_VERSIONS,
    Kubectl,
    RunningServer,
    kubectl_binary,
    running_server,
)

pytestmark = pytest.mark.e2e


def crd(group: str) -> str:
    return f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: gizmos, singular: gizmo, kind: Gizmo, shortNames: [gz]}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {{type: integer, default: 3}}
              label: {{type: string}}
"""


def gizmo(group: str, name: str, ns: str, label: str) -> str:
    return (
        f"apiVersion: {group}/v1\nkind: Gizmo\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec: {{label: {label}}}\n"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("apiserver-start") / "data") as srv:
        yield srv


def kubectl_for(version: str, server: RunningServer, tmp_path: Path) -> Kubectl:
    binary = kubectl_binary(version)
    if not binary.exists():
        pytest.skip(f"{binary} not installed")
    return Kubectl(binary, server, tmp_path / "cache")


def test_version_and_health_endpoints(server: RunningServer) -> None:
    status, body, _ = server.request("GET", "/version")
    assert status == 200
    assert body["major"] == "1" and 29 <= int(re.sub(r"\D", "", body["minor"])) <= 33, body
    assert re.fullmatch(r"v1\.(29|3[0-3])\.\d+.*", body["gitVersion"]), body
    for path in ("/healthz", "/livez", "/readyz"):
        status, text, _ = server.request("GET", path)
        assert (status, text) == (200, "ok"), path
    # the admin kubeconfig written into the data dir carries the CA and a bearer token
    config = yaml.safe_load(server.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == server.url
    assert config["clusters"][0]["cluster"].get("certificate-authority-data") or config["clusters"][0][
        "cluster"
    ].get("certificate-authority")
    assert server.token()


def test_machine_kubectl_dispatcher_picks_a_client(server: RunningServer, tmp_path: Path) -> None:
    dispatcher = KUBECTL_DIR / "kubectl"
    if not dispatcher.exists():
        pytest.skip("no kubectl dispatcher on this machine")
    k = Kubectl(dispatcher, server, tmp_path / "cache")
    versions = json.loads(k.run("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"].startswith("v1.")
    assert "namespaces" in k.run("api-resources").stdout


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_each_kubectl_creates_a_crd_then_its_resources(
    version: str, server: RunningServer, tmp_path: Path
) -> None:
    k = kubectl_for(version, server, tmp_path)
    tag = version.replace(".", "")
    group, ns = f"v{tag}.example.com", f"crd{tag}"
    server_minor = json.loads(k.run("version", "-o", "json").stdout)["serverVersion"]["minor"]
    assert 29 <= int(re.sub(r"\D", "", server_minor)) <= 33
    assert k.run("get", "--raw", "/healthz").stdout.strip() == "ok"
    assert k.run("get", "--raw", "/readyz").stdout.strip() == "ok"
    assert "created" in k.run("create", "-f", "-", stdin=crd(group)).stdout
    k.run("wait", "--for=condition=Established", f"crd/gizmos.{group}", "--timeout=30s")
    k.run("create", "namespace", ns)
    # discovery (cached in --cache-dir) finds the new kind, by its full name and its short name
    k.run("create", "-f", "-", stdin=gizmo(group, "g1", ns, "one"))
    k.run("create", "-f", "-", stdin=gizmo(group, "g2", ns, "two"))
    dup = k.run("create", "-f", "-", stdin=gizmo(group, "g1", ns, "again"), check=False)
    assert dup.returncode != 0 and "AlreadyExists" in dup.stderr
    got = k.json("get", f"gizmos.{group}", "g1", "-n", ns)
    assert got["spec"] == {"label": "one", "size": 3}  # defaulted from the schema
    names = k.run("get", f"gizmos.{group}", "-n", ns, "-o", "name").stdout.split()
    assert names == [f"gizmo.{group}/g1", f"gizmo.{group}/g2"]
    k.run("delete", f"gizmos.{group}", "g2", "-n", ns)
    assert k.run("get", f"gizmos.{group}", "-n", ns, "-o", "name").stdout.split() == [f"gizmo.{group}/g1"]
    # deleting the CRD deletes its resources and the kind disappears from discovery
    k.run("delete", "crd", f"gizmos.{group}", "--timeout=60s")
    gone = k.run("get", f"gizmos.{group}", "-n", ns, check=False)
    assert gone.returncode != 0
    k.run("delete", "namespace", ns, "--timeout=60s")
