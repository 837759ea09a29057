"""The local image store: OCI archive and docker-archive import, disk resolution, reference validation."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from kubevisor.images import oci_archive, reference
from kubevisor.images.store import ImageStore, StoreError


def _disk(tmp_path: Path, content: bytes = b"QFI\xfb" + b"\0" * 70000 + b"tail") -> Path:
    disk = tmp_path / "test.qcow2"
    disk.write_bytes(content)
    return disk


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _docker_archive(tmp_path: Path, disk: Path, tags: list[str], gzip_layer: bool = False) -> Path:
    layer = oci_archive.containerdisk_layer(disk, tmp_path / "layer.tar")
    layer_bytes = layer.read_bytes()
    if gzip_layer:
        layer_bytes = gzip.compress(layer_bytes)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    out = tmp_path / "docker.tar"
    with tarfile.open(out, "w") as tar:
        _add(
            tar,
            "manifest.json",
            json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": ["abc123/layer.tar"]}]).encode(),
        )
        _add(tar, config_name, config)
        _add(tar, "abc123/layer.tar", layer_bytes)
    return out


def test_oci_archive_import_and_disk_resolution(tmp_path: Path) -> None:
    disk = _disk(tmp_path)
    layer = oci_archive.containerdisk_layer(disk, tmp_path / "layer.tar")
    archive = tmp_path / "image.oci.tar"
    digest = oci_archive.write_oci_archive(archive, [layer], "example.com/vm/disk:v1")
    store = ImageStore(tmp_path / "store")
    (record,) = store.import_archive(archive)
    assert record.ref == "example.com/vm/disk:v1" and record.digest == digest
    assert [r.ref for r in store.list()] == ["example.com/vm/disk:v1"]
    resolved = store.resolve_disk("example.com/vm/disk:v1")
    assert resolved.name == "test.qcow2"
    assert resolved.read_bytes() == disk.read_bytes()
    assert not resolved.stat().st_mode & 0o222  # read-only base
    assert store.resolve_disk(f"example.com/vm/disk@{digest}") == resolved
    # the store is a valid OCI layout
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    assert (tmp_path / "store" / "blobs" / "sha256" / digest[7:]).exists()


def test_docker_archive_import_gzip_layer_and_name_override(tmp_path: Path) -> None:
    disk = _disk(tmp_path, b"disk-bytes" * 100)
    archive = _docker_archive(tmp_path, disk, ["legacy/disk:1.0", "legacy/disk:latest"], gzip_layer=True)
    store = ImageStore(tmp_path / "store")
    records = store.import_archive(archive)
    assert sorted(r.ref for r in records) == ["legacy/disk:1.0", "legacy/disk:latest"]
    assert store.resolve_disk("legacy/disk").read_bytes() == b"disk-bytes" * 100
    (renamed,) = store.import_archive(archive, name="other/name:x")
    assert renamed.ref == "other/name:x"


def test_reimport_replaces_tag(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    first = _docker_archive(tmp_path, _disk(tmp_path, b"one"), ["a/b:latest"])
    store.import_archive(first)
    second_dir = tmp_path / "2"
    second_dir.mkdir()
    second = _docker_archive(second_dir, _disk(second_dir, b"two"), ["a/b:latest"])
    store.import_archive(second)
    assert len(store.list()) == 1
    assert store.resolve_disk("a/b:latest").read_bytes() == b"two"


def test_corrupt_blob_is_rejected_and_nothing_is_tagged(tmp_path: Path) -> None:
    layer = oci_archive.containerdisk_layer(_disk(tmp_path), tmp_path / "layer.tar")
    good = tmp_path / "good.tar"
    oci_archive.write_oci_archive(good, [layer], "x/y:z")
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.size == layer.stat().st_size:
                data = data[:-1] + b"X"
            _add(dst, member.name, data)
    store = ImageStore(tmp_path / "store")
    with pytest.raises(StoreError, match="digest mismatch"):
        store.import_archive(bad)
    assert store.list() == []


def test_unknown_format_missing_image_and_not_a_containerdisk(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w") as tar:
        _add(tar, "hello.txt", b"hi")
    with pytest.raises(StoreError, match="neither an OCI archive"):
        store.import_archive(junk)
    not_tar = tmp_path / "x.bin"
    not_tar.write_bytes(b"\0" * 10)
    with pytest.raises(StoreError, match="not a readable tar"):
        store.import_archive(not_tar)
    with pytest.raises(StoreError, match="not in the local store"):
        store.resolve_disk("nope/nothing:latest")
    # an image without /disk/ content
    empty_layer = tmp_path / "empty.tar"
    with tarfile.open(empty_layer, "w") as tar:
        _add(tar, "etc/hostname", b"x")
    archive = tmp_path / "nodisk.tar"
    oci_archive.write_oci_archive(archive, [empty_layer], "no/disk:latest")
    store.import_archive(archive)
    with pytest.raises(StoreError, match="not a containerDisk"):
        store.resolve_disk("no/disk:latest")
    assert not any(p.name.startswith(".extract") for p in (tmp_path / "store" / "disks").iterdir())


def test_path_traversal_in_docker_manifest_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        _add(
            tar,
            "manifest.json",
            json.dumps([{"Config": "../../etc/passwd", "RepoTags": ["a/b:c"], "Layers": []}]).encode(),
        )
    with pytest.raises(StoreError, match="escapes"):
        ImageStore(tmp_path / "store").import_archive(archive)


@pytest.mark.parametrize(
    "ref,tagged",
    [
        ("kubevisor/legacy", "kubevisor/legacy:latest"),
        ("kubevisor/legacy:latest", "kubevisor/legacy:latest"),
        (
            "quay.io/kubevirt/cirros-container-disk-demo:v1.2",
            "quay.io/kubevirt/cirros-container-disk-demo:v1.2",
        ),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    ],
)
def test_valid_references(ref: str, tagged: str) -> None:
    assert reference.parse(ref).tagged == tagged


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "../etc/passwd",
        "Upper/Case",
        "a//b",
        "a/b:",
        "a/b:bad/tag",
        "a b",
        "/abs",
        "a/b@sha256:xyz",
        "a/..:x",
    ],
)
def test_invalid_references(ref: str) -> None:
    with pytest.raises(reference.InvalidReference):
        reference.parse(ref)


def test_invalid_name_on_import_is_rejected_before_anything_is_written(tmp_path: Path) -> None:
    archive = _docker_archive(tmp_path, _disk(tmp_path), ["a/b:c"])
    with pytest.raises(reference.InvalidReference):
        ImageStore(tmp_path / "store").import_archive(archive, name="../../evil")
    assert not (tmp_path / "store").exists()
