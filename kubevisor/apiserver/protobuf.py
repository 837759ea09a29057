"""Decoding of the Kubernetes protobuf encoding for the few kinds kubectl's generators send
(pure). `kubectl create namespace|configmap|secret|serviceaccount` post protobuf bodies
(`application/vnd.kubernetes.protobuf`) through typed clients; everything else is JSON.

Wire format: the magic `k8s\\0`, then a `runtime.Unknown` message {1: TypeMeta{1: apiVersion,
2: kind}, 2: raw (the typed object), 3: contentEncoding, 4: contentType}. Field numbers below
are those of the upstream `generated.proto` files.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field; value is int or bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        value: int | bytes
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _str(value: Any) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a string field")
    return value.decode()


def _map(entries: list[bytes], value_of: Callable[[bytes], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for entry in entries:
        key, val = "", b""
        for number, _, value in fields(entry):
            if number == 1:
                key = _str(value)
            elif number == 2:
                val = value
        out[key] = value_of(val)
    return out


def _time(data: bytes) -> str:
    seconds = 0
    for number, _, value in fields(data):
        if number == 1:
            seconds = value
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def object_meta(data: bytes) -> Obj:
    meta: Obj = {}
    labels: list[bytes] = []
    annotations: list[bytes] = []
    finalizers: list[str] = []
    owners: list[Obj] = []
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for number, _, value in fields(data):
        if number in names:
            if value:  # gogo-protobuf writes empty strings for unset fields
                meta[names[number]] = _str(value)
        elif number == 7:
            meta["generation"] = value
        elif number == 8:
            pass  # creationTimestamp is set by the server
        elif number == 11:
            labels.append(value)
        elif number == 12:
            annotations.append(value)
        elif number == 13:
            owners.append(_owner(value))
        elif number == 14:
            finalizers.append(_str(value))
    if labels:
        meta["labels"] = _map(labels, _str)
    if annotations:
        meta["annotations"] = _map(annotations, _str)
    if owners:
        meta["ownerReferences"] = owners
    if finalizers:
        meta["finalizers"] = finalizers
    return meta


def _owner(data: bytes) -> Obj:
    ref: Obj = {}
    for number, _, value in fields(data):
        if number in (1, 3, 4, 5):
            ref[{1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}[number]] = _str(value)
        elif number in (6, 7):
            ref[{6: "controller", 7: "blockOwnerDeletion"}[number]] = bool(value)
    return ref


def _configmap(data: bytes) -> Obj:
    obj: Obj = {}
    data_entries: list[bytes] = []
    binary_entries: list[bytes] = []
    for number, _, value in fields(data):
        if number == 1:
            obj["metadata"] = object_meta(value)
        elif number == 2:
            data_entries.append(value)
        elif number == 3:
            binary_entries.append(value)
        elif number == 4:
            obj["immutable"] = bool(value)
    if data_entries:
        obj["data"] = _map(data_entries, _str)
    if binary_entries:
        obj["binaryData"] = _map(binary_entries, _b64)
    return obj


def _secret(data: bytes) -> Obj:
    obj: Obj = {}
    data_entries: list[bytes] = []
    string_entries: list[bytes] = []
    for number, _, value in fields(data):
        if number == 1:
            obj["metadata"] = object_meta(value)
        elif number == 2:
            data_entries.append(value)
        elif number == 3 and value:
            obj["type"] = _str(value)
        elif number == 4:
            string_entries.append(value)
        elif number == 5:
            obj["immutable"] = bool(value)
    if data_entries:
        obj["data"] = _map(data_entries, _b64)
    if string_entries:
        obj["stringData"] = _map(string_entries, _str)
    return obj


def _namespace(data: bytes) -> Obj:
    obj: Obj = {}
    for number, _, value in fields(data):
        if number == 1:
            obj["metadata"] = object_meta(value)
        elif number == 2:
            fins = [_str(v) for n, _, v in fields(value) if n == 1]
            obj["spec"] = {"finalizers": fins} if fins else {}
    return obj


def _service_account(data: bytes) -> Obj:
    obj: Obj = {}
    for number, _, value in fields(data):
        if number == 1:
            obj["metadata"] = object_meta(value)
        elif number == 3:
            name = next((_str(v) for n, _, v in fields(value) if n == 1), "")
            obj.setdefault("imagePullSecrets", []).append({"name": name})
        elif number == 4:
            obj["automountServiceAccountToken"] = bool(value)
    return obj


DECODERS: dict[tuple[str, str], Callable[[bytes], Obj]] = {
    ("v1", "ConfigMap"): _configmap,
    ("v1", "Secret"): _secret,
    ("v1", "Namespace"): _namespace,
    ("v1", "ServiceAccount"): _service_account,
}


def decode(body: bytes) -> Obj:
    """A protobuf-encoded object as its JSON form; raises ProtobufError for anything unsupported."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic number")
    api_version = kind = ""
    raw = b""
    for number, _, value in fields(body[len(MAGIC) :]):
        if number == 1:
            for n, _, v in fields(value):
                if n == 1:
                    api_version = _str(v)
                elif n == 2:
                    kind = _str(v)
        elif number == 2:
            raw = value
        elif number == 3 and value:
            raise ProtobufError("content encodings are not supported")
    decoder = DECODERS.get((api_version, kind))
    if decoder is None:
        raise ProtobufError(
            f"protobuf bodies are supported only for {sorted(k for _, k in DECODERS)}; "
            f"got {api_version}/{kind}: send JSON"
        )
    obj = decoder(raw)
    obj["apiVersion"], obj["kind"] = api_version, kind
    return obj
