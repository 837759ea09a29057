"""Secret/ConfigMap data as the node agent projects it for the launcher (pure parts), and the
launcher's resolver reading it back."""

import base64
from pathlib import Path

import pytest

from kubevisor.controller.kube import CONFIGMAPS, SECRETS
from kubevisor.launcher.runner import objects_resolver
from kubevisor.node.claims import NotReady
from kubevisor.node.objects import object_data, pod_objects


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_secret_data_is_base64_decoded():
    secret = {"kind": "Secret", "data": {"userdata": b64(b"#cloud-config\n"), "bin": b64(b"\x00\xff")}}
    data = object_data(secret, "Secret", "Secret ns/s")
    assert data == {"userdata": b"#cloud-config\n", "bin": b"\x00\xff"}


def test_configmap_text_and_binary_data():
    cm = {"kind": "ConfigMap", "data": {"a.txt": "héllo"}, "binaryData": {"b": b64(b"\x01")}}
    assert object_data(cm, "ConfigMap", "ConfigMap ns/c") == {"a.txt": "héllo".encode(), "b": b"\x01"}


def test_bad_base64_is_a_permanent_error_naming_the_key():
    with pytest.raises(NotReady, match=r"data\.k is not valid base64") as err:
        object_data({"data": {"k": "***"}}, "Secret", "Secret ns/s")
    assert err.value.permanent


def test_pod_objects_lists_secret_and_configmap_volumes_only():
    pod = {
        "spec": {
            "volumes": [
                {"name": "d", "persistentVolumeClaim": {"claimName": "c"}},
                {"name": "s", "secret": {"secretName": "sec"}},
                {"name": "m", "configMap": {"name": "cm", "optional": True}},
            ]
        }
    }
    assert pod_objects(pod) == [(SECRETS, "sec", False), (CONFIGMAPS, "cm", True)]


def test_resolver_reads_the_projected_keys_and_misses_with_keyerror(tmp_path: Path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "k1").write_bytes(b"v1")
    (tmp_path / "app" / "k2").write_bytes(b"v2")
    resolve = objects_resolver(tmp_path)
    assert resolve("app") == {"k1": b"v1", "k2": b"v2"}
    for missing in ("other", "../app", ".."):
        with pytest.raises(KeyError):
            resolve(missing)
