"""The registry: per-kind semantics of create/update/patch/delete on top of storage.

Knows metadata rules (uid, timestamps, generation, finalizers, deletion), the status/main
split, field validation, schema pruning/defaulting, patches, server-side apply, dry runs and
admission hooks. Knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubevisor.apiserver import builtin_schemas, patches, protobuf, schema, ssa
from kubevisor.apiserver.errors import (
    APIError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
)
from kubevisor.apiserver.extensions import AdmissionRequest, Extensions
from kubevisor.apiserver.resources import ResourceType, builtin_types, crd_types
from kubevisor.apiserver.storage import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    Storage,
    StorageUnavailableError,
)

Obj = dict[str, Any]

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Strict"  # Strict | Warn | Ignore
    force: bool = False
    user: str = "admin"
    warnings: list[str] = field(default_factory=list)


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    return meta


def _content(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class Registry:
    """All served resource types and the generic operations on them."""

    def __init__(self, storage: Storage, extensions: Extensions | None = None) -> None:
        self.storage = storage
        self.extensions = extensions or Extensions()
        self.builtin: list[ResourceType] = builtin_types()
        self.custom: dict[str, list[ResourceType]] = {}  # CRD name -> its served types
        self.changed = asyncio.Event()  # set whenever discovery changes
        self.discovery_generation = 0
        self._service_ips: set[str] = set()

    # -- lookup --------------------------------------------------------------------------
    def all_types(self) -> list[ResourceType]:
        out = list(self.builtin)
        for types in self.custom.values():
            out.extend(types)
        return out

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self.builtin:
            if rt.group == group and rt.version == version and rt.plural == plural:
                return rt
        for types in self.custom.values():
            for rt in types:
                if rt.group == group and rt.version == version and rt.plural == plural:
                    return rt
        return None

    def lookup_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self.all_types():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def storage_types(self) -> list[ResourceType]:
        """One type per stored resource (the storage version of each CRD)."""
        seen: set[str] = set()
        out = []
        for rt in self.all_types():
            if rt.storage_prefix in seen:
                continue
            if (
                rt.custom
                and rt.version != rt.storage_version
                and any(
                    o.storage_prefix == rt.storage_prefix and o.version == o.storage_version
                    for o in self.all_types()
                )
            ):
                continue
            seen.add(rt.storage_prefix)
            out.append(rt)
        return out

    def register_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        try:
            types = crd_types(crd)
        except (KeyError, TypeError, ValueError):
            types = []
        if (crd.get("metadata") or {}).get("deletionTimestamp") is None or name in self.custom:
            self.custom[name] = types
        self.discovery_generation += 1
        self.changed.set()

    def unregister_crd(self, name: str) -> None:
        if self.custom.pop(name, None) is not None:
            self.discovery_generation += 1
            self.changed.set()

    # -- output ----------------------------------------------------------------------------
    @staticmethod
    def present(rt: ResourceType, obj: Obj) -> Obj:
        """An object as this version serves it (conversion None: only apiVersion changes)."""
        if rt.convert_out is not None:
            return rt.convert_out(obj)
        if obj.get("apiVersion") == rt.api_version:
            out = obj
        else:
            out = dict(obj)
            out["apiVersion"] = rt.api_version
        if rt.custom and rt.schema is not None:
            out = copy.deepcopy(out)
            schema.apply_defaults(out, rt.schema)
        return out

    # -- reads -------------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.storage.get(rt.key(namespace, name))
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    # -- validation helpers --------------------------------------------------------------------
    def decode(self, body: bytes, content_type: str) -> Any:
        if not body.strip():
            raise bad_request("the request body is empty")
        if content_type == "protobuf":
            try:
                return protobuf.decode(body)
            except protobuf.ProtobufError as exc:
                raise APIError(
                    415,
                    f"the body of the request could not be decoded as protobuf: {exc}",
                    "UnsupportedMediaType",
                ) from exc
        try:
            if "yaml" in content_type:
                return yaml.safe_load(body)
            return json.loads(body)
        except (ValueError, yaml.YAMLError) as exc:
            kind = "yaml" if "yaml" in content_type else "json"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise bad_request(f"the body of the request could not be decoded as {kind}: {first}") from exc

    def check_type(self, rt: ResourceType, obj: Any) -> Obj:
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if kind is not None and kind != rt.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind}) "
                f"for {rt.plural}.{rt.group or 'core'}"
            )
        same_group = rt.custom and isinstance(api_version, str) and api_version.split("/")[0] == rt.group
        if api_version is not None and api_version != rt.api_version and not same_group:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})"
            )
        out = dict(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        _meta(out)
        return out

    def _validate_name(self, rt: ResourceType, name: Any) -> None:
        if not isinstance(name, str) or not name:
            raise invalid(
                rt.kind, rt.group, "", [("metadata.name", "Required value: name or generateName is required")]
            )
        if rt.name_is_label:
            if len(name) > 63 or not DNS1123_LABEL.match(name):
                raise invalid(
                    rt.kind, rt.group, name, [("metadata.name", f'Invalid value: "{name}": {LABEL_MSG}')]
                )
        elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            raise invalid(
                rt.kind, rt.group, name, [("metadata.name", f'Invalid value: "{name}": {SUBDOMAIN_MSG}')]
            )

    def _validate_meta(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        name = meta.get("name", "")
        causes: list[tuple[str, str]] = []
        for field_name in ("labels", "annotations"):
            value = meta.get(field_name)
            if value is None:
                continue
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                causes.append((f"metadata.{field_name}", "Invalid value: must be a map of string to string"))
        for field_name in ("finalizers", "ownerReferences"):
            value = meta.get(field_name)
            if value is not None and not isinstance(value, list):
                causes.append((f"metadata.{field_name}", "Invalid value: must be a list"))
        for index, ref in enumerate(meta.get("ownerReferences") or []):
            if not isinstance(ref, dict) or not all(
                ref.get(k) for k in ("apiVersion", "kind", "name", "uid")
            ):
                causes.append(
                    (
                        f"metadata.ownerReferences[{index}]",
                        "Required value: apiVersion, kind, name and uid must be set",
                    )
                )
        if causes:
            raise invalid(rt.kind, rt.group, name, causes)

    def _strict_fields(self, rt: ResourceType, obj: Obj, opts: WriteOptions) -> None:
        """Unknown fields: prune (custom resources) and report per fieldValidation."""
        unknown: list[str] = []
        model = (
            None
            if rt.custom or rt.kind == "CustomResourceDefinition"
            else builtin_schemas.model_for(rt.group, rt.kind)
        )
        if rt.custom and rt.schema is not None:
            unknown = schema.prune(obj, rt.schema)
        elif model is not None:
            structural = builtin_schemas.structural(model)
            errors = schema.decode_errors(obj, structural)
            if errors:
                raise bad_request(f"unable to decode the {rt.kind}: " + "; ".join(errors[:5]))
            unknown = schema.prune(obj, structural)
        elif rt.known_fields is not None:
            for key in list(obj):
                if key not in rt.known_fields:
                    unknown.append(key)
                    del obj[key]
            meta = obj.get("metadata") or {}
            for key in list(meta):
                if key not in schema.OBJECT_META_FIELDS:
                    unknown.append(f"metadata.{key}")
                    del meta[key]
        if not unknown:
            return
        if opts.field_validation == "Strict":
            raise bad_request("strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown))
        if opts.field_validation == "Warn":
            opts.warnings.extend(f'unknown field "{u}"' for u in unknown)

    def _validate_schema(self, rt: ResourceType, obj: Obj) -> None:
        if rt.custom and rt.schema is not None:
            schema.apply_defaults(obj, rt.schema)
            errors = schema.validation_errors(obj, rt.schema)
            if errors:
                raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), errors)
        if rt.kind == "CustomResourceDefinition":
            self._validate_crd(obj)

    def _validate_crd(self, crd: Obj) -> None:
        name = crd["metadata"].get("name", "")
        spec = crd.get("spec")
        causes: list[tuple[str, str]] = []
        if not isinstance(spec, dict):
            raise invalid(
                "CustomResourceDefinition", "apiextensions.k8s.io", name, [("spec", "Required value")]
            )
        names = spec.get("names") or {}
        group = spec.get("group")
        if not group or not isinstance(group, str) or "." not in group:
            causes.append(
                ("spec.group", f"Invalid value: {group!r}: should be a domain with at least one dot")
            )
        for key in ("plural", "kind"):
            if not names.get(key):
                causes.append((f"spec.names.{key}", "Required value"))
        if names.get("plural") and group and name != f"{names['plural']}.{group}":
            causes.append(
                ("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
            )
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                (
                    "spec.scope",
                    f'Unsupported value: {spec.get("scope")!r}: supported values: "Cluster", "Namespaced"',
                )
            )
        versions = spec.get("versions")
        if not isinstance(versions, list) or not versions:
            causes.append(
                ("spec.versions", "Invalid value: must have exactly one version marked as storage version")
            )
        else:
            storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
            if len(storage) != 1:
                causes.append(
                    (
                        "spec.versions",
                        "Invalid value: must have exactly one version marked as storage version",
                    )
                )
            for index, version in enumerate(versions):
                if not isinstance(version, dict) or not version.get("name"):
                    causes.append((f"spec.versions[{index}].name", "Required value"))
                    continue
                root = (version.get("schema") or {}).get("openAPIV3Schema")
                if root is None:
                    causes.append(
                        (
                            f"spec.versions[{index}].schema.openAPIV3Schema",
                            "Required value: schemas are required",
                        )
                    )
                else:
                    for err in schema.structural_errors(
                        root, f"spec.versions[{index}].schema.openAPIV3Schema"
                    ):
                        field_path, _, msg = err.partition(": ")
                        causes.append((field_path, msg))
                for cindex, col in enumerate(version.get("additionalPrinterColumns") or []):
                    if not isinstance(col, dict) or not col.get("name") or not col.get("jsonPath"):
                        causes.append(
                            (
                                f"spec.versions[{index}].additionalPrinterColumns[{cindex}]",
                                "Required value: name and jsonPath",
                            )
                        )
        if causes:
            raise invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes)

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        if not rt.namespaced:
            return
        ns = self.storage.get(f"/core/namespaces/-/{namespace}")
        if ns is None:
            raise APIError(
                404,
                f'namespaces "{namespace}" not found',
                "NotFound",
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                f'{rt.plural} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                {
                    "name": name,
                    "group": rt.group,
                    "kind": rt.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def _set_namespace(self, rt: ResourceType, obj: Obj, namespace: str) -> None:
        meta = obj["metadata"]
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)

    def _keys_for(self, rt: ResourceType) -> ssa.KeyFn:
        def keys(names: tuple[str, ...]) -> list[str] | None:
            if rt.custom:
                return schema.list_map_keys(rt.schema, names) if rt.schema else None
            key = patches.merge_key_for(names)
            return [key] if key else None

        return keys

    async def _admit(
        self, op: str, rt: ResourceType, obj: Obj, old: Obj | None, sub: str, opts: WriteOptions
    ) -> Obj:
        hooks = self.extensions.hooks_for(rt.group, rt.kind)
        if not hooks[0] and not hooks[1]:
            return obj
        meta = obj.get("metadata") or {}
        req = AdmissionRequest(
            op, rt, sub, meta.get("namespace", ""), meta.get("name", ""), obj, old, opts.dry_run, opts.user
        )
        for mutate in hooks[0]:
            result = await mutate(req)
            if result is not None:
                req.obj = result
        for validate in hooks[1]:
            await validate(req)
        return req.obj

    def _allocate_cluster_ip(self) -> str:
        used = {str(o.get("spec", {}).get("clusterIP")) for _, o in self.storage.scan("/core/services/")[0]}
        used |= self._service_ips
        for n in range(1, 65000):
            ip = f"10.96.{n // 256}.{n % 256}"
            if n % 256 not in (0, 255) and ip not in used:
                self._service_ips.add(ip)
                return ip
        raise APIError(500, "no cluster IPs left")

    def _to_stored(self, rt: ResourceType, body: Any, opts: WriteOptions) -> tuple[ResourceType, Any]:
        """For a kind stored as another: check it as itself, then convert to the stored kind."""
        if rt.stored_as is None or rt.convert_in is None:
            return rt, body
        obj = self.check_type(rt, body)
        self._strict_fields(rt, obj, opts)
        stored = self.lookup(*rt.stored_as)
        if stored is None:
            raise APIError(500, f"{rt.plural}.{rt.group}: storage type {rt.stored_as} is not served")
        return stored, rt.convert_in(obj)

    # -- create ------------------------------------------------------------------------------
    async def create(self, rt: ResourceType, namespace: str, body: Any, opts: WriteOptions) -> Obj:
        rt, body = self._to_stored(rt, body, opts)
        obj = self.check_type(rt, body)
        meta = obj["metadata"]
        self._set_namespace(rt, obj, namespace)
        if not meta.get("name") and meta.get("generateName"):
            gen = str(meta["generateName"])
            meta["name"] = gen[:58] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        self._validate_name(rt, meta.get("name"))
        name = meta["name"]
        self._strict_fields(rt, obj, opts)
        self._validate_meta(rt, obj)
        if rt.namespaced:
            self._check_namespace(rt, namespace, name)
        for key in (
            "uid",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "generation",
            "creationTimestamp",
        ):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if rt.generation:
            meta["generation"] = 1
        if rt.defaulter is not None:
            rt.defaulter(obj)
        if rt.custom and rt.status:
            obj.pop("status", None)
        if rt.kind == "Service" and obj.get("spec", {}).get("clusterIP") in (None, ""):
            obj["spec"]["clusterIP"] = self._allocate_cluster_ip()
            obj["spec"]["clusterIPs"] = [obj["spec"]["clusterIP"]]
        if rt.kind == "CustomResourceDefinition":
            fins = meta.setdefault("finalizers", [])
            if CRD_CLEANUP_FINALIZER not in fins:
                fins.append(CRD_CLEANUP_FINALIZER)
            obj.setdefault("status", {})
        self._validate_schema(rt, obj)
        obj = await self._admit("CREATE", rt, obj, None, "", opts)
        ssa.track_update(None, obj, opts.field_manager or "unknown", rt.api_version, "", self._keys_for(rt))
        if opts.dry_run:
            if self.storage.get(rt.key(namespace, name)) is not None:
                raise already_exists(rt.plural, rt.group, name)
            return obj
        try:
            stored = await self.storage.create(rt.key(namespace if rt.namespaced else "", name), obj)
        except AlreadyExistsError as exc:
            raise already_exists(rt.plural, rt.group, name) from exc
        except StorageUnavailableError as exc:
            raise APIError(503, str(exc)) from exc
        await self._after_write(rt, stored)
        return stored

    async def _after_write(self, rt: ResourceType, obj: Obj | None, deleted_name: str = "") -> None:
        if rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io":
            if obj is not None:
                self.register_crd(obj)
            elif deleted_name:
                self.unregister_crd(deleted_name)

    # -- update ----------------------------------------------------------------------------
    def prepare_update(self, rt: ResourceType, old: Obj, new: Obj, sub: str, opts: WriteOptions) -> Obj:
        """The object to store when `new` replaces `old` through the main resource or `sub`."""
        old_meta = old["metadata"]
        if sub == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            if rt.custom and rt.schema is not None:
                self._strict_fields(rt, result, opts)
                self._validate_schema(rt, result)
            result["metadata"]["managedFields"] = new["metadata"].get(
                "managedFields", old_meta.get("managedFields")
            )
            if not result["metadata"]["managedFields"]:
                result["metadata"].pop("managedFields")
            return result
        result = new
        meta = _meta(result)
        self._strict_fields(rt, result, opts)
        self._validate_meta(rt, result)
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if meta.get("name") != old_meta["name"]:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({old_meta['name']})"
            )
        if rt.status:
            if "status" in old:
                result["status"] = old["status"]
            else:
                result.pop("status", None)
        if rt.defaulter is not None and rt.kind not in ("Namespace",):
            rt.defaulter(result)
        if rt.kind == "Namespace":
            result["spec"] = old.get("spec", {}) if "spec" not in result else result["spec"]
            result.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/metadata.name"] = (
                old_meta["name"]
            )
        if rt.kind == "Service":
            old_ip = old.get("spec", {}).get("clusterIP")
            spec = result.setdefault("spec", {})
            if spec.get("clusterIP") in (None, ""):
                spec["clusterIP"] = old_ip
                spec["clusterIPs"] = old.get("spec", {}).get("clusterIPs", [old_ip])
            elif spec["clusterIP"] != old_ip:
                raise invalid(
                    rt.kind,
                    rt.group,
                    old_meta["name"],
                    [("spec.clusterIP", "Invalid value: field is immutable")],
                )
        data_changed = old.get("data") != result.get("data") or old.get("binaryData") != result.get(
            "binaryData"
        )
        if rt.kind in ("ConfigMap", "Secret") and old.get("immutable") and data_changed:
            raise forbidden(
                f'{rt.kind} "{old_meta["name"]}" is invalid: data: Forbidden: field is immutable when '
                "`immutable` is set"
            )
        if (
            rt.kind == "Pod"
            and old.get("spec", {}).get("nodeName")
            and result.get("spec", {}).get("nodeName") != old["spec"]["nodeName"]
        ):
            raise invalid(
                rt.kind,
                rt.group,
                old_meta["name"],
                [("spec.nodeName", "Forbidden: pod updates may not change fields other than ...")],
            )
        self._validate_schema(rt, result)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(
                    rt.kind,
                    rt.group,
                    old_meta["name"],
                    [
                        (
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object "
                            "is being deleted, found new finalizers " + str(sorted(added)),
                        )
                    ],
                )
        if rt.generation:
            meta["generation"] = old_meta.get("generation", 1) + (
                1 if _content(result) != _content(old) else 0
            )
        return result

    def _unchanged(self, old: Obj, new: Obj) -> bool:
        def strip(o: Obj) -> Obj:
            out = dict(o)
            meta = {
                k: v
                for k, v in (o.get("metadata") or {}).items()
                if k not in ("resourceVersion", "managedFields")
            }
            out["metadata"] = meta
            return out

        return strip(old) == strip(new)

    async def _commit_update(self, rt: ResourceType, old: Obj, new: Obj, sub: str, opts: WriteOptions) -> Obj:
        new = await self._admit("UPDATE", rt, new, old, sub, opts)
        if self._unchanged(old, new):
            return old
        ssa.track_update(old, new, opts.field_manager or "unknown", rt.api_version, sub, self._keys_for(rt))
        new["metadata"].pop("resourceVersion", None)
        meta = new["metadata"]
        finalizing = (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not (rt.kind == "Namespace" and (new.get("spec") or {}).get("finalizers"))
        )
        if opts.dry_run:
            return new
        key = old_key(rt, old)
        expected = int(old["metadata"]["resourceVersion"])
        try:
            stored = await self.storage.update(key, new, expected)
            if finalizing:
                stored = await self.storage.delete(key, int(stored["metadata"]["resourceVersion"]))
                await self._after_write(rt, None, meta["name"])
                return stored
        except ConflictError as exc:
            raise conflict(rt.plural, rt.group, meta["name"]) from exc
        except NotFoundError as exc:
            raise not_found(rt.plural, rt.group, meta["name"]) from exc
        except StorageUnavailableError as exc:
            raise APIError(503, str(exc)) from exc
        await self._after_write(rt, stored)
        return stored

    async def update(
        self, rt: ResourceType, namespace: str, name: str, body: Any, opts: WriteOptions, sub: str = ""
    ) -> Obj:
        rt, body = self._to_stored(rt, body, opts)
        new = self.check_type(rt, body)
        old = self.get(rt, namespace, name)
        meta = new["metadata"]
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        self._set_namespace(rt, new, namespace)
        rv = meta.get("resourceVersion")
        if not rv:
            if rt.custom or rt.kind == "CustomResourceDefinition":
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")],
                )
        elif str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name)
        prepared = self.prepare_update(rt, old, new, sub, opts)
        return await self._commit_update(rt, old, prepared, sub, opts)

    # -- patch ---------------------------------------------------------------------------------
    async def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: bytes,
        content_type: str,
        opts: WriteOptions,
        sub: str = "",
    ) -> tuple[Obj, bool]:
        """Returns (object, created)."""
        ctype = content_type.split(";")[0].strip()
        if ctype == "application/strategic-merge-patch+json" and not rt.strategic:
            raise APIError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
                "UnsupportedMediaType",
            )
        if ctype not in (
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
            "application/apply-patch+cbor",
        ):
            raise APIError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml"
                + (", application/strategic-merge-patch+json" if rt.strategic else ""),
                "UnsupportedMediaType",
            )
        document = self.decode(body, "yaml" if ctype == "application/apply-patch+yaml" else "json")
        shown_as = rt
        if ctype == "application/apply-patch+yaml":
            rt, document = self._to_stored(rt, document, opts)
            return await self._apply(rt, namespace, name, document, opts, sub)
        if rt.stored_as is not None:
            stored_rt = self.lookup(*rt.stored_as)
            assert stored_rt is not None
            rt = stored_rt
        for _attempt in range(10):
            old = self.get(rt, namespace, name)
            target = copy.deepcopy(self.present(shown_as, old) if shown_as is not rt else old)
            try:
                if ctype == "application/json-patch+json":
                    patched = patches.apply_json_patch(target, document)
                elif ctype == "application/merge-patch+json":
                    if not isinstance(document, dict):
                        raise bad_request("merge patch must be a JSON object")
                    patched = patches.apply_merge_patch(target, document)
                else:
                    patched = patches.apply_strategic_merge_patch(target, document)
            except patches.PatchError as exc:
                raise APIError(exc.code, str(exc)) from exc
            if not isinstance(patched, dict):
                raise bad_request("the patch must leave an object")
            if shown_as is not rt:
                _, patched = self._to_stored(shown_as, patched, opts)
            patched = self.check_type(rt, patched)
            pmeta = patched["metadata"]
            if pmeta.get("name") != name:
                raise bad_request(
                    f"the name of the object ({pmeta.get('name')}) does not match the name on the "
                    f"URL ({name})"
                )
            explicit_rv = str(pmeta.get("resourceVersion", "")) != old["metadata"]["resourceVersion"]
            if explicit_rv:
                raise conflict(rt.plural, rt.group, name)
            prepared = self.prepare_update(rt, old, patched, sub, opts)
            try:
                return await self._commit_update(rt, old, prepared, sub, opts), False
            except APIError as exc:
                if exc.reason != "Conflict":
                    raise
            await asyncio.sleep(0)
        raise conflict(rt.plural, rt.group, name)

    async def _apply(
        self, rt: ResourceType, namespace: str, name: str, document: Any, opts: WriteOptions, sub: str
    ) -> tuple[Obj, bool]:
        if not opts.field_manager:
            raise bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set")
        applied = self.check_type(rt, document)
        ameta = applied["metadata"]
        if ameta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({ameta.get('name')}) does not match the name on the URL ({name})"
            )
        ameta["name"] = name
        self._set_namespace(rt, applied, namespace)
        keys = self._keys_for(rt)
        for _attempt in range(10):
            old = self.storage.get(rt.key(namespace if rt.namespaced else "", name))
            if old is None:
                if sub:
                    raise not_found(rt.plural, rt.group, name)
                obj = ssa.apply(None, applied, opts.field_manager, opts.force, rt.api_version, keys)
                managed = obj["metadata"].get("managedFields")
                plain = copy.deepcopy(opts)
                plain.field_manager = opts.field_manager
                created = await self.create(rt, namespace, obj, plain)
                if managed and not opts.dry_run:
                    # create() recorded an Update entry; the owner of a created object is the applier
                    fixed = copy.deepcopy(created)
                    fixed["metadata"]["managedFields"] = managed
                    try:
                        created = await self.storage.update(
                            rt.key(namespace if rt.namespaced else "", name),
                            fixed,
                            int(created["metadata"]["resourceVersion"]),
                        )
                    except ConflictError:
                        pass
                return created, True
            try:
                merged = ssa.apply(old, applied, opts.field_manager, opts.force, rt.api_version, keys, sub)
            except ssa.ApplyConflict as exc:
                n = len(exc.conflicts)
                lines = "\n".join(f'- conflict with "{m}": {p}' for m, p in exc.conflicts)
                msg = f"Apply failed with {n} conflict{'s' if n != 1 else ''}: " + (
                    f'conflict with "{exc.conflicts[0][0]}": {exc.conflicts[0][1]}' if n == 1 else lines
                )
                raise APIError(
                    409,
                    msg,
                    "Conflict",
                    {
                        "name": name,
                        "group": rt.group,
                        "kind": rt.plural,
                        "causes": [
                            {"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": p}
                            for m, p in exc.conflicts
                        ],
                    },
                ) from exc
            merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            managed = merged["metadata"].get("managedFields")
            prepared = self.prepare_update(rt, old, merged, sub, opts)
            prepared = await self._admit("UPDATE", rt, prepared, old, sub, opts)
            if managed:
                prepared["metadata"]["managedFields"] = managed
            if self._unchanged(old, prepared) and old["metadata"].get("managedFields") == managed:
                return old, False
            if opts.dry_run:
                return prepared, False
            prepared["metadata"].pop("resourceVersion", None)
            try:
                stored = await self.storage.update(
                    old_key(rt, old), prepared, int(old["metadata"]["resourceVersion"])
                )
            except ConflictError:
                continue
            except StorageUnavailableError as exc:
                raise APIError(503, str(exc)) from exc
            await self._after_write(rt, stored)
            return stored, False
        raise conflict(rt.plural, rt.group, name)

    # -- delete ----------------------------------------------------------------------------
    async def delete(
        self, rt: ResourceType, namespace: str, name: str, options: Obj | None, opts: WriteOptions
    ) -> tuple[Obj, bool]:
        """Returns (object, gone): gone is True when the object was removed from storage.

        A write that lands between our read and our write (a controller updating status while
        a user deletes) is not the caller's conflict: like kube-apiserver's GuaranteedUpdate,
        the delete is retried on the fresh object (preconditions are checked again each time).
        """
        for _ in range(DELETE_CONFLICT_RETRIES):
            try:
                return await self._delete_once(rt, namespace, name, options, opts)
            except _StorageConflict:
                continue
        raise conflict(rt.plural, rt.group, name)

    async def _delete_once(
        self, rt: ResourceType, namespace: str, name: str, options: Obj | None, opts: WriteOptions
    ) -> tuple[Obj, bool]:
        options = options or {}
        old = self.get(rt, namespace, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
            raise APIError(
                409,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{old['metadata'].get('uid')}",
                "Conflict",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name)
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is True:
            policy = "Orphan"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise invalid(
                "DeleteOptions",
                "",
                "",
                [
                    (
                        "propagationPolicy",
                        f'Unsupported value: "{policy}": '
                        'supported values: "Foreground", "Background", "Orphan", nil',
                    )
                ],
            )
        await self._admit("DELETE", rt, old, old, "", opts)
        new = copy.deepcopy(old)
        meta = new["metadata"]
        fins = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in fins:
            fins.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in fins:
            fins.append("orphan")
        grace = options.get("gracePeriodSeconds")
        graceful = (
            rt.kind == "Pod"
            and rt.group == ""
            and (new.get("spec") or {}).get("nodeName")
            and (new.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and grace != 0
            # a pod on a node that does not exist has no agent to finish its deletion
            and self.storage.get(f"/core/nodes/-/{new['spec']['nodeName']}") is not None
        )
        if rt.kind == "Namespace" and rt.group == "":
            if name in SYSTEM_NAMESPACES:
                raise forbidden(
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    {"name": name, "kind": "namespaces"},
                )
            new.setdefault("status", {})["phase"] = "Terminating"
            graceful = True
        if fins or graceful:
            if meta.get("deletionTimestamp"):
                # already being deleted: only record new finalizers asked for by this call
                if fins == list(meta.get("finalizers") or []):
                    if rt.kind == "Pod" and grace == 0 and not fins:
                        return await self._remove(rt, old, opts, retry_conflict=True)
                    return old, False
            else:
                seconds = (
                    int(
                        grace
                        if grace is not None
                        else (new.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                    )
                    if graceful and rt.kind == "Pod"
                    else 0
                )
                when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
                meta["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                meta["deletionGracePeriodSeconds"] = seconds
                if rt.generation:
                    meta["generation"] = meta.get("generation", 1) + 1
            meta["finalizers"] = fins
            if not fins:
                meta.pop("finalizers")
            if opts.dry_run:
                return new, False
            new["metadata"].pop("resourceVersion", None)
            try:
                stored = await self.storage.update(
                    old_key(rt, old), new, int(old["metadata"]["resourceVersion"])
                )
            except ConflictError as exc:
                raise _StorageConflict() from exc
            await self._after_write(rt, stored)
            return stored, False
        return await self._remove(rt, old, opts, retry_conflict=True)

    async def _remove(
        self, rt: ResourceType, old: Obj, opts: WriteOptions, retry_conflict: bool = False
    ) -> tuple[Obj, bool]:
        if opts.dry_run:
            return old, True
        try:
            gone = await self.storage.delete(old_key(rt, old), int(old["metadata"]["resourceVersion"]))
        except ConflictError as exc:
            if retry_conflict:
                raise _StorageConflict() from exc
            raise conflict(rt.plural, rt.group, old["metadata"]["name"]) from exc
        except NotFoundError as exc:
            raise not_found(rt.plural, rt.group, old["metadata"]["name"]) from exc
        await self._after_write(rt, None, old["metadata"]["name"])
        return gone, True

    async def finalize_namespace(self, name: str, finalizers: list[str], opts: WriteOptions) -> Obj:
        rt = self.lookup("", "v1", "namespaces")
        assert rt is not None
        old = self.get(rt, "", name)
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["finalizers"] = finalizers
        return await self._commit_update(rt, old, new, "finalize", opts)


DELETE_CONFLICT_RETRIES = 10


class _StorageConflict(Exception):
    """The object changed between a delete's read and its write: read again and retry."""


def old_key(rt: ResourceType, obj: Obj) -> str:
    meta = obj["metadata"]
    return rt.key(meta.get("namespace", "") if rt.namespaced else "", meta["name"])
