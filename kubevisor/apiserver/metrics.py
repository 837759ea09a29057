"""Request metrics, as kube-apiserver exposes them at /metrics (Prometheus text format).

`apiserver_request_total{verb, group, version, resource, subresource, scope, code}` counts
every resource request once it is answered, with kube-apiserver's verbs: GET is get, list or
watch; POST create; PUT update; PATCH patch; DELETE delete or deletecollection. Benchmarks read it
to count the writes a controller makes (bench/density: PATCH and UPDATE per VMI). One registry
per server, so several servers in one process keep separate counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "code")


def verb_of(method: str, named: bool, watch: bool, apply: bool = False) -> str:
    """kube-apiserver's `verb` label: GET, LIST, WATCH, POST, PUT, PATCH, APPLY, DELETE, DELETECOLLECTION."""
    if method == "GET":
        return "WATCH" if watch else ("GET" if named else "LIST")
    if method == "POST":
        return "POST"
    if method == "PUT":
        return "PUT"
    if method == "PATCH":
        return "APPLY" if apply else "PATCH"
    if method == "DELETE":
        return "DELETE" if named else "DELETECOLLECTION"
    return method


class RequestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, "
            "subresource, scope and HTTP response code.",
            LABELS,
            registry=self.registry,
        )

    def observe(
        self,
        verb: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        scope: str,
        code: int,
    ) -> None:
        self.requests.labels(verb, group, version, resource, subresource, scope, str(code)).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
