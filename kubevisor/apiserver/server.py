"""The HTTP surface: routing, content negotiation, lists, watches, Tables, subresources.

One catch-all aiohttp handler parses the Kubernetes path grammar and dispatches to the
registry. Every error leaves as a metav1.Status with the matching code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kubevisor.apiserver import discovery, openapi
from kubevisor.apiserver.errors import APIError, bad_request
from kubevisor.apiserver.extensions import APIPath, LogOptions
from kubevisor.apiserver.metrics import RequestMetrics, verb_of
from kubevisor.apiserver.registry import Registry, WriteOptions
from kubevisor.apiserver.resources import ResourceType
from kubevisor.apiserver.selectors import (
    SelectorError,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from kubevisor.apiserver.storage import CompactedError, Storage
from kubevisor.apiserver.tables import build_table, eval_jsonpath

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MAX_BODY = 3 * 1024 * 1024
KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "kubevisor",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
USER_KEY = web.RequestKey("user", str)
TABLE_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
BOOKMARK_INTERVAL = 60.0
TRUE_VALUES = ("1", "t", "T", "TRUE", "true", "True")
FALSE_VALUES = ("0", "f", "F", "FALSE", "false", "False")


def parse_bool(value: str | None, name: str) -> bool:
    """Go's strconv.ParseBool, which the real apiserver uses for query parameters."""
    if value is None or value == "":
        return False
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise bad_request(f"invalid value for {name}: {value!r}: must be a boolean")


def parse_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise bad_request(f"invalid value for {name}: {value!r}: must be an integer") from exc


def json_response(
    obj: Any, status: int = 200, content_type: str = "application/json", warnings: list[str] | None = None
) -> web.Response:
    resp = web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status)
    resp.headers["Content-Type"] = content_type
    for warning in warnings or []:
        resp.headers.add("Warning", f'299 - "{warning.replace(chr(34), chr(92) + chr(34))}"')
    return resp


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


@dataclass
class Route:
    group: str
    version: str
    namespace: str
    plural: str
    name: str
    sub: tuple[str, ...]


def encode_continue(rev: int, key: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rev, "start": key + "\x00"}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return int(data["rv"]), str(data["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise bad_request(f"continue key is not valid: {exc}") from exc


class APIServer:
    def __init__(
        self,
        storage: Storage,
        registry: Registry,
        tokens: dict[str, str],
        address: str,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.storage = storage
        self.registry = registry
        self.tokens = tokens
        self.address = address
        self.ready = False
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)
        self._openapi_cache: dict[tuple[str, str], tuple[int, Obj, str]] = {}
        self.metrics = metrics or RequestMetrics()

    # -- middleware ------------------------------------------------------------------------
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        public = path.rstrip("/") in ("/version", "/healthz", "/livez", "/readyz") or path.startswith(
            ("/healthz/", "/livez/", "/readyz/")
        )
        if not public:
            auth = request.headers.get("Authorization", "")
            token = auth[7:].strip() if auth.startswith("Bearer ") else ""
            user = self.tokens.get(token) if token else None
            if user is None:
                return json_response(APIError(401, "Unauthorized").status(), 401)
            request[USER_KEY] = user
        try:
            return await handler(request)
        except APIError as exc:
            return json_response(exc.status(), exc.code)
        except web.HTTPRequestEntityTooLarge:
            return json_response(
                APIError(413, f"Request entity too large: limit is {MAX_BODY}").status(), 413
            )
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug: report it as a Status, never a traceback page
            log.exception("internal error on %s %s", request.method, request.path_qs)
            return json_response(APIError(500, f"Internal error occurred: {exc}").status(), 500)

    # -- dispatch --------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return json_response(
                {
                    "paths": [
                        "/api",
                        "/api/v1",
                        "/apis",
                        "/healthz",
                        "/livez",
                        "/metrics",
                        "/openapi/v3",
                        "/readyz",
                        "/version",
                    ]
                }
            )
        head = parts[0]
        if head == "version" and len(parts) == 1:
            return json_response(KUBE_VERSION)
        if head in ("healthz", "livez", "readyz"):
            if head != "livez" and (not self.ready or not self.storage.healthy):
                return web.Response(status=500, text=f"[-]storage not ready\n{head} check failed\n")
            return web.Response(text="ok")
        if head == "openapi":
            return self._openapi(parts, request)
        if head == "metrics" and len(parts) == 1:
            body, ctype = self.metrics.exposition()
            response = web.Response(body=body)
            response.headers["Content-Type"] = ctype
            return response
        if head == "api":
            if len(parts) == 1:
                return self._discovery_root(request, core=True)
            if len(parts) == 2:
                return self._resource_list("", parts[1])
            return await self._counted(request, "", parts[1], parts[2:])
        if head == "apis":
            if len(parts) == 1:
                return self._discovery_root(request, core=False)
            if len(parts) == 2:
                doc = discovery.legacy_group(parts[1], self.registry.all_types(), self._extra())
                if doc is None:
                    raise not_found_path()
                return json_response(doc)
            if len(parts) == 3:
                return self._resource_list(parts[1], parts[2])
            spec = self.registry.extensions.groups.get((parts[1], parts[2]))
            if spec is not None:
                return await spec.handler(request, self._api_path(parts[1], parts[2], parts[3:]))
            return await self._counted(request, parts[1], parts[2], parts[3:])
        raise not_found_path()

    def _extra(self) -> list[Any]:
        return list(self.registry.extensions.groups.values())

    @staticmethod
    def _api_path(group: str, version: str, rest: list[str]) -> APIPath:
        ns = ""
        if len(rest) >= 2 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        resource = rest[0] if rest else ""
        name = rest[1] if len(rest) > 1 else ""
        return APIPath(group, version, ns, resource, name, tuple(rest[2:]))

    def _discovery_root(self, request: web.Request, core: bool) -> web.Response:
        accept = request.headers.get("Accept", "")
        types = self.registry.all_types()
        for media, ctype in (("v2", discovery.AGGREGATED_V2), ("v2beta1", discovery.AGGREGATED_V2BETA1)):
            if f"v={media};" in accept.replace(" ", "") and "as=APIGroupDiscoveryList" in accept:
                return json_response(
                    discovery.aggregated(
                        types, self._extra(), core, media, self.registry.extensions.subresources
                    ),
                    content_type=ctype,
                )
        if core:
            return json_response(discovery.legacy_api_versions(self.address))
        return json_response(discovery.legacy_group_list(types, self._extra()))

    def _resource_list(self, group: str, version: str) -> web.Response:
        doc = discovery.legacy_resource_list(
            group, version, self.registry.all_types(), self._extra(), self.registry.extensions.subresources
        )
        if doc is None:
            raise not_found_path()
        return json_response(doc)

    def _openapi(self, parts: list[str], request: web.Request) -> web.Response:
        if len(parts) < 2 or parts[1] != "v3":
            raise not_found_path()
        types = self.registry.all_types()
        gvs = sorted({(rt.group, rt.version) for rt in types})
        if len(parts) == 2:
            paths = {}
            for group, version in gvs:
                _, _, digest = self._openapi_doc(group, version, types)
                paths[openapi.gv_path(group, version)] = {
                    "serverRelativeURL": f"/openapi/v3/{openapi.gv_path(group, version)}?hash={digest}"
                }
            return json_response({"paths": paths})
        rest = parts[2:]
        if rest[0] == "api" and len(rest) == 2:
            group, version = "", rest[1]
        elif rest[0] == "apis" and len(rest) == 3:
            group, version = rest[1], rest[2]
        else:
            raise not_found_path()
        if (group, version) not in gvs:
            raise not_found_path()
        _, doc, _ = self._openapi_doc(group, version, types)
        return json_response(doc)

    def _openapi_doc(self, group: str, version: str, types: list[ResourceType]) -> tuple[int, Obj, str]:
        cached = self._openapi_cache.get((group, version))
        if cached is not None and cached[0] == self.registry.discovery_generation:
            return cached
        doc = openapi.document(group, version, types, KUBE_VERSION["gitVersion"])
        entry = (self.registry.discovery_generation, doc, openapi.doc_hash(doc))
        self._openapi_cache[(group, version)] = entry
        return entry

    # -- resources ---------------------------------------------------------------------------
    def _route(self, group: str, version: str, rest: list[str]) -> Route:
        ns = ""
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        return Route(group, version, ns, plural, name, tuple(rest[2:]))

    async def _counted(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        """_resource, counted in apiserver_request_total."""
        route = self._route(group, version, rest)
        code = 500
        try:
            response = await self._resource(request, group, version, rest)
            code = response.status
            return response
        except APIError as exc:
            code = exc.code
            raise
        finally:
            watch = request.method == "GET" and request.query.get("watch") in TRUE_VALUES
            apply = request.headers.get("Content-Type", "").startswith("application/apply-patch")
            scope = "resource" if route.name else ("namespace" if route.namespace else "cluster")
            self.metrics.observe(
                verb_of(request.method, bool(route.name), watch, apply),
                group,
                version,
                route.plural,
                "/".join(route.sub),
                scope,
                code,
            )

    async def _resource(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        route = self._route(group, version, rest)
        rt = self.registry.lookup(group, version, route.plural)
        if rt is None:
            raise not_found_path()
        if route.namespace and not rt.namespaced:
            raise not_found_path()
        ns = route.namespace if rt.namespaced else ""
        method = request.method
        if not route.name:
            if method == "GET":
                if parse_bool(request.query.get("watch"), "watch"):
                    return await self._watch(request, rt, ns)
                return self._list(request, rt, ns)
            if method == "POST":
                if rt.namespaced and not ns:
                    raise APIError(
                        405,
                        "the server does not allow this method on the requested resource",
                        "MethodNotAllowed",
                    )
                opts = self._write_options(request)
                body = self.registry.decode(await request.read(), self._content_type(request))
                obj = await self.registry.create(rt, ns, body, opts)
                return json_response(self.registry.present(rt, obj), 201, warnings=opts.warnings)
            if method == "DELETE":
                return await self._delete_collection(request, rt, ns)
            raise method_not_allowed()
        if rt.namespaced and not ns:
            raise not_found_path()
        if not route.sub:
            return await self._item(request, rt, ns, route.name)
        return await self._subresource(request, rt, ns, route.name, route.sub)

    @staticmethod
    def _content_type(request: web.Request) -> str:
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if ctype in ("", "application/json", "*/*"):
            return "application/json"
        if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
            return "yaml"
        if ctype == "application/vnd.kubernetes.protobuf":
            return "protobuf"
        raise APIError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json, application/yaml (got {ctype})",
            "UnsupportedMediaType",
        )

    def _write_options(self, request: web.Request) -> WriteOptions:
        query = request.query
        dry = query.getall("dryRun", [])
        for value in dry:
            if value != "All":
                raise bad_request(f'Invalid value: "{value}": valid values are "All"')
        validation = query.get("fieldValidation", "") or "Warn"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{validation}": supported values: "Ignore", '
                '"Warn", "Strict"'
            )
        manager = query.get("fieldManager", "")
        if not manager:
            ua = request.headers.get("User-Agent", "unknown")
            manager = ua.split("/")[0][:128] or "unknown"
        if len(manager) > 128:
            raise bad_request("fieldManager: Too long: must have at most 128 bytes")
        return WriteOptions(
            user=request.get(USER_KEY, "admin"),
            dry_run=bool(dry),
            field_manager=manager,
            field_validation=validation,
            force=parse_bool(query.get("force"), "force"),
        )

    def _predicate(self, request: web.Request, rt: ResourceType) -> Callable[[Obj], bool] | None:
        label_text = request.query.get("labelSelector", "")
        field_text = request.query.get("fieldSelector", "")
        try:
            labels = parse_label_selector(label_text) if label_text else []
            fields = parse_field_selector(field_text, rt.field_selectors) if field_text else []
        except SelectorError as exc:
            raise bad_request(str(exc)) from exc
        if not labels and not fields:
            return None
        allowed = rt.field_selectors

        def predicate(obj: Obj) -> bool:
            return labels_match(labels, (obj.get("metadata") or {}).get("labels")) and fields_match(
                fields, obj, allowed
            )

        return predicate

    def _list(self, request: web.Request, rt: ResourceType, ns: str) -> web.Response:
        query = request.query
        if parse_bool(query.get("sendInitialEvents"), "sendInitialEvents"):
            raise APIError(422, "sendInitialEvents is forbidden for list", "Invalid")
        predicate = self._predicate(request, rt)
        limit = parse_int(query.get("limit"), "limit") or 0
        token = query.get("continue", "")
        rv_text = query.get("resourceVersion", "")
        revision: int | None = None
        start = ""
        if token:
            revision, start = decode_continue(token)
        elif rv_text and query.get("resourceVersionMatch") == "Exact":
            revision = parse_int(rv_text, "resourceVersion")
        elif rv_text and rv_text != "0":
            parse_int(rv_text, "resourceVersion")
        try:
            pairs, rev = self.storage.scan(rt.prefix(ns), revision)
        except CompactedError as exc:
            if token:
                raise APIError(
                    410,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use the "
                    "continue token in this response to retrieve the remainder of the results.",
                    "Expired",
                ) from exc
            raise APIError(410, str(exc), "Expired") from exc
        items: list[Obj] = []
        more_key = ""
        remaining = 0
        for key, obj in pairs:
            if start and key <= start:
                continue
            if predicate is not None and not predicate(obj):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(obj)
            more_key = key
        meta: Obj = {"resourceVersion": str(rev)}
        if remaining:
            meta["continue"] = encode_continue(rev, more_key)
            meta["remainingItemCount"] = remaining
        if wants_table(request):
            table = build_table(
                rt.columns,
                [self.registry.present(rt, o) for o in items],
                query.get("includeObject", "Metadata"),
                meta,
            )
            return json_response(table, content_type=TABLE_TYPE)
        return json_response(
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": meta,
                "items": [self.registry.present(rt, o) for o in items],
            }
        )

    async def _watch(self, request: web.Request, rt: ResourceType, ns: str) -> web.StreamResponse:
        query = request.query
        predicate = self._predicate(request, rt)
        bookmarks = parse_bool(query.get("allowWatchBookmarks"), "allowWatchBookmarks")
        initial_events = parse_bool(query.get("sendInitialEvents"), "sendInitialEvents")
        if initial_events and (query.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
            raise APIError(
                422,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and "
                "allowWatchBookmarks to true",
                "Invalid",
            )
        timeout = parse_int(query.get("timeoutSeconds"), "timeoutSeconds")
        if timeout is None:
            timeout = random.randint(1800, 3600)
        rv_text = query.get("resourceVersion", "")
        from_rev = None if rv_text in ("", "0") or initial_events else parse_int(rv_text, "resourceVersion")
        table = wants_table(request)
        include = query.get("includeObject", "Metadata")
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        if table:
            response.headers["Content-Type"] = TABLE_TYPE
        response.enable_chunked_encoding()
        try:
            watcher, initial = self.storage.watch(rt.prefix(ns), from_rev, predicate)
        except CompactedError as exc:
            await response.prepare(request)
            err = APIError(410, str(exc), "Expired").status()
            await response.write(json.dumps({"type": "ERROR", "object": err}).encode() + b"\n")
            return response

        def render(kind: str, obj: Obj) -> bytes:
            shown = self.registry.present(rt, obj)
            if table:
                shown = build_table(
                    rt.columns,
                    [shown],
                    include,
                    {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                )
            return json.dumps({"type": kind, "object": shown}, separators=(",", ":")).encode() + b"\n"

        def bookmark(extra: Obj | None = None) -> bytes:
            meta: Obj = {"resourceVersion": str(self.storage.revision)}
            if extra:
                meta["annotations"] = extra
            return (
                json.dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
                    }
                ).encode()
                + b"\n"
            )

        try:
            await response.prepare(request)
            for first in initial or []:
                await response.write(render("ADDED", first))
            if initial_events:
                await response.write(bookmark({"k8s.io/initial-events-end": "true"}))
            deadline = time.monotonic() + timeout
            last_bookmark = time.monotonic()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    # The final bookmark names the current revision: everything up to it is sent first
                    # (a client resumes from the bookmark; an event still queued would be lost).
                    while watcher.pending():
                        item = await watcher.next(0)
                        if item is None:
                            break
                        await response.write(render(item[0], item[1].obj))
                    if bookmarks and not watcher.closed:
                        await response.write(bookmark())
                    break
                wait = (
                    min(left, BOOKMARK_INTERVAL - (time.monotonic() - last_bookmark)) if bookmarks else left
                )
                item = await watcher.next(max(wait, 0.01))
                if item is None:
                    if watcher.closed:
                        break
                    if (
                        bookmarks
                        and time.monotonic() - last_bookmark >= BOOKMARK_INTERVAL
                        and watcher.pending() == 0
                    ):
                        await response.write(bookmark())
                        last_bookmark = time.monotonic()
                    continue
                kind, event = item
                await response.write(render(kind, event.obj))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watcher.close()
        return response

    async def _item(self, request: web.Request, rt: ResourceType, ns: str, name: str) -> web.Response:
        method = request.method
        if method == "GET":
            obj = self.registry.present(rt, self.registry.get(rt, ns, name))
            if wants_table(request):
                return json_response(
                    build_table(
                        rt.columns,
                        [obj],
                        request.query.get("includeObject", "Metadata"),
                        {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                    ),
                    content_type=TABLE_TYPE,
                )
            return json_response(obj)
        if method == "PUT":
            opts = self._write_options(request)
            body = self.registry.decode(await request.read(), self._content_type(request))
            obj = await self.registry.update(rt, ns, name, body, opts)
            return json_response(self.registry.present(rt, obj), warnings=opts.warnings)
        if method == "PATCH":
            return await self._patch(request, rt, ns, name, "")
        if method == "DELETE":
            opts = self._write_options(request)
            raw = await request.read()
            options: Obj = {}
            if raw.strip():
                decoded = self.registry.decode(raw, "application/json")
                if not isinstance(decoded, dict):
                    raise bad_request("DeleteOptions must be an object")
                options = decoded
            for key in ("propagationPolicy",):
                if key in request.query:
                    options[key] = request.query[key]
            if "gracePeriodSeconds" in request.query:
                options["gracePeriodSeconds"] = parse_int(
                    request.query["gracePeriodSeconds"], "gracePeriodSeconds"
                )
            if "orphanDependents" in request.query:
                options["orphanDependents"] = parse_bool(
                    request.query["orphanDependents"], "orphanDependents"
                )
            if options.get("dryRun"):
                opts.dry_run = True
            obj, gone = await self.registry.delete(rt, ns, name, options, opts)
            if gone and rt.group == "" and rt.kind not in ("Pod", "Namespace"):
                return json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": obj["metadata"].get("uid"),
                        },
                    }
                )
            if gone and rt.custom:
                return json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": obj["metadata"].get("uid"),
                        },
                    }
                )
            return json_response(self.registry.present(rt, obj))
        raise method_not_allowed()

    async def _patch(
        self, request: web.Request, rt: ResourceType, ns: str, name: str, sub: str
    ) -> web.Response:
        opts = self._write_options(request)
        ctype = request.headers.get("Content-Type", "")
        body = await request.read()
        obj, created = await self.registry.patch(rt, ns, name, body, ctype, opts, sub)
        return json_response(self.registry.present(rt, obj), 201 if created else 200, warnings=opts.warnings)

    async def _delete_collection(self, request: web.Request, rt: ResourceType, ns: str) -> web.Response:
        opts = self._write_options(request)
        predicate = self._predicate(request, rt)
        raw = await request.read()
        options: Obj = {}
        if raw.strip():
            decoded = self.registry.decode(raw, "application/json")
            options = decoded if isinstance(decoded, dict) else {}
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        pairs, _ = self.storage.scan(rt.prefix(ns))
        deleted = []
        for _key, obj in pairs:
            if predicate is not None and not predicate(obj):
                continue
            meta = obj["metadata"]
            try:
                gone, _ = await self.registry.delete(
                    rt, meta.get("namespace", ""), meta["name"], options, opts
                )
            except APIError as exc:
                if exc.code == 404:
                    continue
                raise
            deleted.append(self.registry.present(rt, gone))
        return json_response(
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.storage.revision)},
                "items": deleted,
            }
        )

    # -- subresources --------------------------------------------------------------------------
    async def _subresource(
        self, request: web.Request, rt: ResourceType, ns: str, name: str, sub: tuple[str, ...]
    ) -> web.StreamResponse:
        what = sub[0]
        method = request.method
        extra = self.registry.extensions.subresources.get((rt.group, rt.plural, what))
        if extra is not None:
            self.registry.get(rt, ns, name)  # 404 for a missing parent
            return await extra.handler(request, APIPath(rt.group, rt.version, ns, rt.plural, name, sub))
        if len(sub) != 1 or what not in rt.subresource_names():
            raise not_found_path()
        if what == "status":
            if method == "GET":
                return json_response(self.registry.present(rt, self.registry.get(rt, ns, name)))
            if method == "PUT":
                opts = self._write_options(request)
                body = self.registry.decode(await request.read(), self._content_type(request))
                obj = await self.registry.update(rt, ns, name, body, opts, sub="status")
                return json_response(self.registry.present(rt, obj), warnings=opts.warnings)
            if method == "PATCH":
                return await self._patch(request, rt, ns, name, "status")
            raise method_not_allowed()
        if what == "scale":
            return await self._scale(request, rt, ns, name)
        if what == "binding" and method == "POST":
            return await self._binding(request, rt, ns, name)
        if what == "log" and method == "GET":
            return await self._log(request, rt, ns, name)
        if what == "finalize" and method == "PUT":
            opts = self._write_options(request)
            body = self.registry.decode(await request.read(), self._content_type(request))
            if not isinstance(body, dict):
                raise bad_request("the body of the request must be a Namespace")
            fins = (body.get("spec") or {}).get("finalizers") or []
            obj = await self.registry.finalize_namespace(name, list(fins), opts)
            return json_response(obj)
        raise method_not_allowed()

    def _scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        assert rt.scale is not None
        spec_vals = eval_jsonpath(obj, rt.scale.spec_replicas_path)
        status_vals = eval_jsonpath(obj, rt.scale.status_replicas_path)
        meta = obj["metadata"]
        scale: Obj = {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": spec_vals[0] if spec_vals else 0},
            "status": {"replicas": status_vals[0] if status_vals else 0},
        }
        if rt.scale.label_selector_path:
            sel = eval_jsonpath(obj, rt.scale.label_selector_path)
            if sel:
                scale["status"]["selector"] = sel[0]
        return scale

    async def _scale(self, request: web.Request, rt: ResourceType, ns: str, name: str) -> web.Response:
        assert rt.scale is not None
        method = request.method
        current = self.registry.get(rt, ns, name)
        if method == "GET":
            return json_response(self._scale_of(rt, current))
        opts = self._write_options(request)
        raw = await request.read()
        scale = self._scale_of(rt, current)
        if method == "PUT":
            new_scale = self.registry.decode(raw, self._content_type(request))
            if not isinstance(new_scale, dict):
                raise bad_request("the body of the request must be a Scale")
            rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                from kubevisor.apiserver.errors import conflict

                raise conflict(rt.plural, rt.group, name)
        elif method == "PATCH":
            from kubevisor.apiserver import patches

            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            document = self.registry.decode(raw, "json")
            try:
                if ctype == "application/json-patch+json":
                    new_scale = patches.apply_json_patch(scale, document)
                elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    new_scale = patches.apply_merge_patch(scale, document)
                else:
                    raise APIError(415, f"unsupported patch type for scale: {ctype}", "UnsupportedMediaType")
            except patches.PatchError as exc:
                raise APIError(exc.code, str(exc)) from exc
        else:
            raise method_not_allowed()
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise APIError(
                422,
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas!r}: '
                "must be greater than or equal to 0",
                "Invalid",
            )
        updated = copy.deepcopy(current)
        path = rt.scale.spec_replicas_path.lstrip(".").split(".")
        node = updated
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = replicas
        prepared = self.registry.prepare_update(rt, current, updated, "scale", opts)
        obj = await self.registry._commit_update(rt, current, prepared, "scale", opts)
        return json_response(self._scale_of(rt, obj))

    async def _binding(self, request: web.Request, rt: ResourceType, ns: str, name: str) -> web.Response:
        opts = self._write_options(request)
        body = self.registry.decode(await request.read(), self._content_type(request))
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("target"), dict)
            or not body["target"].get("name")
        ):
            raise APIError(422, 'Binding "" is invalid: target.name: Required value', "Invalid")
        node = body["target"]["name"]
        for _ in range(10):
            pod = self.registry.get(rt, ns, name)
            if pod["metadata"].get("deletionTimestamp"):
                raise APIError(409, f"pod {name} is being deleted, cannot be assigned to a host", "Conflict")
            current = (pod.get("spec") or {}).get("nodeName")
            if current:
                raise APIError(
                    409,
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already '
                    f'assigned to node "{current}"',
                    "Conflict",
                )
            updated = copy.deepcopy(pod)
            updated["spec"]["nodeName"] = node
            conds = updated.setdefault("status", {}).setdefault("conditions", [])
            conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": _now(),
                }
            )
            try:
                await self.registry._commit_update(rt, pod, updated, "binding", opts)
            except APIError as exc:
                if exc.reason == "Conflict":
                    continue
                raise
            return json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
            )
        raise APIError(409, f"binding pod {name} kept conflicting", "Conflict")

    async def _log(self, request: web.Request, rt: ResourceType, ns: str, name: str) -> web.StreamResponse:
        pod = self.registry.get(rt, ns, name)
        containers = [
            c.get("name") for c in (pod.get("spec") or {}).get("containers") or [] if isinstance(c, dict)
        ]
        container = request.query.get("container", "")
        if not container:
            default = (pod["metadata"].get("annotations") or {}).get(
                "kubectl.kubernetes.io/default-container"
            )
            if isinstance(default, str) and default in containers:
                container = default
            elif len(containers) == 1:
                container = str(containers[0])
            else:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(str(c) for c in containers)}]"
                )
        init = [
            c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or [] if isinstance(c, dict)
        ]
        if container not in containers and container not in init:
            raise bad_request(f"container {container} is not valid for pod {name}")
        source = self.registry.extensions.log_source
        if source is None:
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: no node agent serves its logs'
            )
        query = request.query
        options = LogOptions(
            container=container,
            follow=parse_bool(query.get("follow"), "follow"),
            tail_lines=parse_int(query.get("tailLines"), "tailLines"),
            timestamps=parse_bool(query.get("timestamps"), "timestamps"),
            previous=parse_bool(query.get("previous"), "previous"),
            since_seconds=parse_int(query.get("sinceSeconds"), "sinceSeconds"),
            limit_bytes=parse_int(query.get("limitBytes"), "limitBytes"),
        )
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        try:
            async for chunk in source.stream(pod, options):
                if options.limit_bytes is not None:
                    chunk = chunk[: max(0, options.limit_bytes - sent)]
                await response.write(chunk)
                sent += len(chunk)
                if options.limit_bytes is not None and sent >= options.limit_bytes:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def _now() -> str:
    from kubevisor.apiserver.registry import now

    return now()


def not_found_path() -> APIError:
    return APIError(404, "the server could not find the requested resource", "NotFound", {})


def method_not_allowed() -> APIError:
    return APIError(
        405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
    )
