"""Bad input gets the matching Status and leaves the store as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from apiserver_fixture import RunningServer, running_server

pytestmark = pytest.mark.e2e

CM_PATH = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("apiserver-bad") / "data") as srv:
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                                },
                            }
                        },
                    }
                ],
            },
        }
        status, _, _ = srv.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        assert status == 201
        yield srv


def revision(server: RunningServer) -> str:
    status, body, _ = server.request("GET", CM_PATH)
    assert status == 200
    return str(body["metadata"]["resourceVersion"])


def check(
    server: RunningServer, method: str, path: str, code: int, reason: str, message: str = "", **kwargs: Any
) -> dict[str, Any]:
    before = revision(server)
    status, body, _ = server.request(method, path, **kwargs)
    assert status == code, body
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == reason, body
    assert body["code"] == code
    assert message in body["message"], body["message"]
    assert revision(server) == before  # nothing was written
    return dict(body)


def test_malformed_json(server: RunningServer) -> None:
    check(server, "POST", CM_PATH, 400, "BadRequest", "could not be decoded as json", raw=b'{"metadata": {')


def test_malformed_yaml(server: RunningServer) -> None:
    check(
        server,
        "POST",
        CM_PATH,
        400,
        "BadRequest",
        "could not be decoded as yaml",
        raw=b"metadata: [unclosed\n  name: x",
        content_type="application/yaml",
    )


def test_body_not_an_object(server: RunningServer) -> None:
    check(server, "POST", CM_PATH, 400, "BadRequest", "must be a JSON object", body=[1, 2])


def test_kind_mismatch(server: RunningServer) -> None:
    check(
        server,
        "POST",
        CM_PATH,
        400,
        "BadRequest",
        "does not match the expected kind",
        body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}},
    )
    check(
        server,
        "POST",
        CM_PATH,
        400,
        "BadRequest",
        "does not match the expected API version",
        body={"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
    )


@pytest.mark.parametrize("name", ["Upper", "under_score", "-lead", "trail-", "a" * 254, "dots..dots"])
def test_non_dns1123_names(server: RunningServer, name: str) -> None:
    body = check(
        server,
        "POST",
        CM_PATH,
        422,
        "Invalid",
        "metadata.name",
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}},
    )
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_namespace_name_must_be_a_label(server: RunningServer) -> None:
    check(
        server,
        "POST",
        "/api/v1/namespaces",
        422,
        "Invalid",
        "RFC 1123 label",
        body={"metadata": {"name": "has.dot"}},
    )


def test_unknown_fields_under_strict(server: RunningServer) -> None:
    check(
        server,
        "POST",
        CM_PATH + "?fieldValidation=Strict",
        400,
        "BadRequest",
        'unknown field "bogus"',
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1},
    )
    check(
        server,
        "POST",
        "/apis/example.com/v1/namespaces/default/things?fieldValidation=Strict",
        400,
        "BadRequest",
        'unknown field "spec.color"',
        body={
            "apiVersion": "example.com/v1",
            "kind": "Thing",
            "metadata": {"name": "t"},
            "spec": {"size": 1, "color": "red"},
        },
    )


def test_unknown_fields_under_warn_are_pruned_with_a_warning(server: RunningServer) -> None:
    status, body, headers = server.request(
        "POST",
        "/apis/example.com/v1/namespaces/default/things?fieldValidation=Warn",
        {
            "apiVersion": "example.com/v1",
            "kind": "Thing",
            "metadata": {"name": "warned"},
            "spec": {"size": 1, "color": "red"},
        },
    )
    assert status == 201 and body["spec"] == {"size": 1}
    assert 'unknown field \\"spec.color\\"' in headers.get("Warning", "")


def test_schema_violation(server: RunningServer) -> None:
    body = check(
        server,
        "POST",
        "/apis/example.com/v1/namespaces/default/things",
        422,
        "Invalid",
        "spec.size",
        body={
            "apiVersion": "example.com/v1",
            "kind": "Thing",
            "metadata": {"name": "t"},
            "spec": {"size": "big"},
        },
    )
    assert body["details"]["causes"][0]["field"] == "spec.size"


def test_body_over_3_mib(server: RunningServer) -> None:
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big"},
        "data": {"a": "x" * (3 * 1024 * 1024)},
    }
    check(server, "POST", CM_PATH, 413, "RequestEntityTooLarge", "limit is", raw=json.dumps(big).encode())


def test_strategic_merge_on_custom_resource_is_415(server: RunningServer) -> None:
    status, _, _ = server.request(
        "POST",
        "/apis/example.com/v1/namespaces/default/things",
        {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "smp"}},
    )
    assert status == 201
    check(
        server,
        "PATCH",
        "/apis/example.com/v1/namespaces/default/things/smp",
        415,
        "UnsupportedMediaType",
        "application/merge-patch+json",
        body={"spec": {"size": 2}},
        content_type="application/strategic-merge-patch+json",
    )


def test_bad_selectors_and_params(server: RunningServer) -> None:
    check(server, "GET", CM_PATH + "?labelSelector=a%20in%20(", 400, "BadRequest", "invalid label selector")
    check(
        server, "GET", CM_PATH + "?fieldSelector=spec.x%3D1", 400, "BadRequest", "field label not supported"
    )
    check(server, "GET", CM_PATH + "?limit=many", 400, "BadRequest", "limit")
    check(server, "GET", CM_PATH + "?watch=maybe", 400, "BadRequest", "watch")
    check(server, "GET", CM_PATH + "?continue=%%%", 400, "BadRequest", "continue")
    check(
        server, "POST", CM_PATH + "?dryRun=Some", 400, "BadRequest", "All", body={"metadata": {"name": "x"}}
    )


def test_json_patch_test_failure_is_422(server: RunningServer) -> None:
    status, _, _ = server.request("POST", CM_PATH, {"metadata": {"name": "jp"}, "data": {"a": "1"}})
    assert status == 201
    check(
        server,
        "PATCH",
        CM_PATH + "/jp",
        422,
        "Invalid",
        "test",
        body=[
            {"op": "test", "path": "/data/a", "value": "2"},
            {"op": "replace", "path": "/data/a", "value": "3"},
        ],
        content_type="application/json-patch+json",
    )


def test_stale_update_and_missing_things(server: RunningServer) -> None:
    status, created, _ = server.request("POST", CM_PATH, {"metadata": {"name": "stale"}, "data": {"a": "1"}})
    assert status == 201
    status, _, _ = server.request(
        "PATCH", CM_PATH + "/stale", {"data": {"a": "2"}}, content_type="application/merge-patch+json"
    )
    assert status == 200
    created["data"] = {"a": "3"}
    check(server, "PUT", CM_PATH + "/stale", 409, "Conflict", "the object has been modified", body=created)
    check(server, "GET", CM_PATH + "/nope", 404, "NotFound", 'configmaps "nope" not found')
    check(server, "GET", "/apis/nope.example.com/v1/things", 404, "NotFound", "could not find")
    check(
        server,
        "POST",
        "/api/v1/namespaces/missing/configmaps",
        404,
        "NotFound",
        'namespaces "missing"',
        body={"metadata": {"name": "x"}},
    )


def test_unauthenticated(server: RunningServer) -> None:
    import ssl
    import urllib.request

    req = urllib.request.Request(server.url + CM_PATH)
    try:
        urllib.request.urlopen(
            req, context=ssl.create_default_context(cafile=str(server.data_dir / "pki/ca.crt"))
        )
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as err:
        assert err.code == 401
        assert json.loads(err.read())["reason"] == "Unauthorized"
