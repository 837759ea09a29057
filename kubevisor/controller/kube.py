"""Thin typed access to any Kubernetes resource through the official `kubernetes` client.

Requests go through `kubernetes.client.ApiClient` (its configuration, auth, TLS and
connection pool), exactly as the client's own DynamicClient does, but without discovery:
controllers know which resources they need. Objects are plain dicts (the JSON the server
sent), so the pure reconcile logic never depends on generated model classes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

Obj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Resource:
    """One REST resource: group/version/plural, and whether it lives in namespaces."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
EVENTS = Resource("", "v1", "events", "Event")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
SECRETS = Resource("", "v1", "secrets", "Secret", status_subresource=False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", status_subresource=False)
PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
STORAGE_CLASSES = Resource(
    "storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False, status_subresource=False
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
VMS = Resource("kubevirt.io", "v1", "virtualmachines", "VirtualMachine")
# KubeVirt's VMI CRD has no status subresource: status is written with the whole object.
VMIS = Resource(
    "kubevirt.io", "v1", "virtualmachineinstances", "VirtualMachineInstance", status_subresource=False
)
VMIRS = Resource("kubevirt.io", "v1", "virtualmachineinstancereplicasets", "VirtualMachineInstanceReplicaSet")


class ApiError(Exception):
    """A non-2xx answer from the apiserver, with the Status fields that matter."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        return self.status == 410


def _error_from(status: int, data: bytes | str | None) -> ApiError:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    try:
        body = json.loads(text)
    except ValueError:
        return ApiError(status, "", text.strip()[:300])
    if not isinstance(body, dict):
        return ApiError(status, "", text.strip()[:300])
    return ApiError(
        int(body.get("code") or status), str(body.get("reason") or ""), str(body.get("message") or "")
    )


def key_of(obj: Obj) -> str:
    """The work-queue key of an object: `namespace/name`, or `name` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def split_key(key: str) -> tuple[str | None, str]:
    if "/" in key:
        ns, name = key.split("/", 1)
        return ns, name
    return None, key


CONNECTION_POOL = 64


class Kube:
    """CRUD, watch and subresources for any `Resource`, returning dicts."""

    def __init__(self, api_client: k8s_client.ApiClient, *, request_timeout: float = 30.0) -> None:
        self.api = api_client
        self.request_timeout = request_timeout

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> Kube:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        # One connection per concurrent caller: informers' watches plus every controller's workers
        # (urllib3's default of 10 dropped connections with "Connection pool is full").
        configuration.connection_pool_maxsize = CONNECTION_POOL
        return cls(k8s_client.ApiClient(configuration))

    def close(self) -> None:
        self.api.close()

    # -- raw request ------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        header_params = {"Accept": "application/json", "Content-Type": content_type}
        request = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=header_params,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            return self.api.call_api(*request, _request_timeout=timeout or self.request_timeout)
        except ApiException as exc:
            raise _error_from(exc.status or 0, exc.body) from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        response = self._send(method, path, query=query, body=body, content_type=content_type)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise _error_from(response.status, data)
        if not data:
            return {}
        return cast(Obj, json.loads(data))

    # -- verbs ------------------------------------------------------------------------
    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        query: list[tuple[str, Any]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        return self.request("GET", res.path(namespace), query=query)

    def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        return self.request("GET", res.path(namespace, name))

    def create(self, res: Resource, namespace: str | None, body: Obj) -> Obj:
        return self.request("POST", res.path(namespace), body=body)

    def replace(self, res: Resource, obj: Obj, *, subresource: str | None = None) -> Obj:
        meta = obj["metadata"]
        return self.request("PUT", res.path(meta.get("namespace"), meta["name"], subresource), body=obj)

    def update_status(self, res: Resource, obj: Obj) -> Obj:
        return self.replace(res, obj, subresource="status" if res.status_subresource else None)

    def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> Obj:
        return self.request(
            "PATCH", res.path(namespace, name, subresource), body=patch, content_type=content_type
        )

    def delete(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
        propagation: str | None = None,
    ) -> Obj:
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            # Never delete a same-named successor of the object we decided about.
            body["preconditions"] = {"uid": uid}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if propagation:
            body["propagationPolicy"] = propagation
        return self.request("DELETE", res.path(namespace, name), body=body)

    def bind(self, namespace: str, pod_name: str, node_name: str, pod_uid: str | None = None) -> Obj:
        binding: Obj = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod_name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        if pod_uid:
            binding["metadata"]["uid"] = pod_uid
        return self.request("POST", PODS.path(namespace, pod_name, "binding"), body=binding)

    def watch(
        self,
        res: Resource,
        resource_version: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 60,
        on_response: Any = None,
    ) -> Iterator[Obj]:
        """Yield watch events ({type, object}) from `resource_version` until the server ends the stream.

        An ERROR event is raised as ApiError (410 Gone means: re-list). `on_response` receives
        the open HTTP response so that another thread can close it to stop the watch.
        """
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        response = self._send("GET", res.path(namespace), query=query, timeout=(10.0, timeout_seconds + 30.0))
        if not 200 <= response.status <= 299:
            raise _error_from(response.status, response.read())
        if on_response is not None:
            on_response(response.response)
        try:
            for line in iter_resp_lines(response.response):
                if not line.strip():
                    continue
                event = cast(Obj, json.loads(line))
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(
                        int(status.get("code") or 500),
                        str(status.get("reason") or ""),
                        str(status.get("message") or ""),
                    )
                yield event
        finally:
            response.response.close()
            response.response.release_conn()
