"""/metrics: apiserver_request_total by verb and resource, as kube-apiserver names them.

Read with `kubectl get --raw /metrics` and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apiserver_fixture import KUBECTL_VERSIONS, Kubectl, kubectl_binary, running_server
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def request_counts(kubectl: Kubectl) -> dict[tuple[str, str, str], float]:
    text = kubectl.run("get", "--raw", "/metrics").stdout
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            key = (labels["verb"], labels["resource"], labels["subresource"])
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def test_requests_are_counted_by_verb_and_resource(tmp_path: Path) -> None:
    binary = kubectl_binary(KUBECTL_VERSIONS[-1])
    if not binary.exists():
        pytest.skip("kubectl not installed")
    with running_server(tmp_path / "server") as server:
        kubectl = Kubectl(binary, server, tmp_path / "cache")
        before = request_counts(kubectl)
        kubectl.run("create", "configmap", "m1", "--from-literal=a=1")
        kubectl.run("patch", "configmap", "m1", "-p", '{"data":{"a":"2"}}')
        kubectl.run("patch", "configmap", "m1", "-p", '{"data":{"a":"3"}}')
        status, body, _ = server.request("GET", "/api/v1/namespaces/default/configmaps/m1")
        assert status == 200
        server.request("PUT", "/api/v1/namespaces/default/configmaps/m1", body)
        server.request("GET", "/api/v1/namespaces/default/configmaps/nope")
        after = request_counts(kubectl)

        def delta(verb: str, resource: str = "configmaps", sub: str = "") -> float:
            key = (verb, resource, sub)
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert delta("POST") == 1
        assert delta("PATCH") == 2
        assert delta("PUT") == 1
        assert delta("GET") >= 2  # kubectl may read before it writes
        text = kubectl.run("get", "--raw", "/metrics").stdout
        assert 'code="404"' in text and 'verb="GET"' in text
