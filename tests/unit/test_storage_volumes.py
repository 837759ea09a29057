"""kubevisor.storage: real qemu-img overlays and real ISO9660 seeds read back with pycdlib."""

import base64
import io
import json
import subprocess
from pathlib import Path

import pycdlib
import pytest
import yaml

from kubevisor.api.errors import ValidationError
from kubevisor.hypervisor.model import VolumeSource
from kubevisor.storage.volumes import cleanup_volumes, prepare_volumes


def qemu_img_info(path: Path) -> list[dict]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "--backing-chain", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def read_iso(path: Path) -> tuple[str, dict[str, bytes]]:
    """Volume label and {rock-ridge path: content} of every file in an ISO."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for dirname, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                rr = f"{dirname.rstrip('/')}/{name}"
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=rr)
                files[rr] = buf.getvalue()
        joliet = set()
        for dirname, _dirs, names in iso.walk(joliet_path="/"):
            joliet |= {f"{dirname.rstrip('/')}/{n}" for n in names}
        assert joliet == set(files), "Joliet names must match Rock Ridge names"
        return label, files
    finally:
        iso.close()


@pytest.fixture
def base_qcow2(tmp_path) -> Path:
    base = tmp_path / "store" / "disk.qcow2"
    base.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    return base


@pytest.fixture
def base_raw(tmp_path) -> Path:
    base = tmp_path / "store" / "disk.raw"
    base.parent.mkdir(exist_ok=True)
    base.write_bytes(b"\0" * 1024 * 1024)
    return base


def vmi(*volumes, name="testvm", hostname=None):
    spec = {"domain": {"devices": {}}, "volumes": list(volumes)}
    if hostname:
        spec["hostname"] = hostname
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "ns1"},
        "spec": spec,
    }


def test_container_disk_overlay_is_ephemeral(tmp_path, base_qcow2):
    spec = vmi({"name": "root", "containerDisk": {"image": "example/legacy:1"}})
    seen = []

    def resolver(ref):
        seen.append(ref)
        return base_qcow2

    work = tmp_path / "work"
    sources = prepare_volumes(spec, work, image_resolver=resolver)
    assert seen == ["example/legacy:1"]
    src = sources["root"]
    assert src == VolumeSource(path=work / "root.qcow2", format="qcow2", readonly=False)
    chain = qemu_img_info(src.path)
    assert chain[0]["format"] == "qcow2"
    assert chain[0]["backing-filename"] == str(base_qcow2)
    assert chain[0]["backing-filename-format"] == "qcow2"
    assert chain[1]["filename"] == str(base_qcow2)

    # Write into the overlay (as the guest would), then a second preparation starts clean.
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", str(src.path)],
        check=True,
        capture_output=True,
    )
    assert qemu_img_info(src.path)[0]["actual-size"] > 0
    base_before = base_qcow2.read_bytes()
    cleanup_volumes(work)
    assert not work.exists()
    assert base_qcow2.read_bytes() == base_before, "the base image is never written"
    again = prepare_volumes(spec, work, image_resolver=resolver)
    out = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "read -P 0 0 64k", str(again["root"].path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "Pattern verification failed" not in out
    cleanup_volumes(work)


def test_raw_base_is_detected(tmp_path, base_raw):
    sources = prepare_volumes(
        vmi({"name": "root", "containerDisk": {"image": "x:1"}}),
        tmp_path / "w",
        image_resolver=lambda _ref: base_raw,
    )
    assert qemu_img_info(sources["root"].path)[0]["backing-filename-format"] == "raw"


def test_empty_disk_is_sparse_qcow2_of_capacity(tmp_path):
    sources = prepare_volumes(vmi({"name": "scratch", "emptyDisk": {"capacity": "2Gi"}}), tmp_path / "w")
    info = qemu_img_info(sources["scratch"].path)[0]
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 * 2**30
    assert sources["scratch"].path.stat().st_size < 2**20  # sparse: metadata only


def test_host_disk_or_create_is_kept_and_disk_must_exist(tmp_path):
    target = tmp_path / "data" / "sub" / "disk.img"
    sources = prepare_volumes(
        vmi({"name": "hd", "hostDisk": {"path": str(target), "type": "DiskOrCreate", "capacity": "100Mi"}}),
        tmp_path / "w",
    )
    assert sources["hd"] == VolumeSource(path=target, format="raw")
    assert target.stat().st_size == 100 * 2**20
    assert target.stat().st_blocks == 0  # sparse
    cleanup_volumes(tmp_path / "w")
    assert target.exists(), "a DiskOrCreate hostDisk is the user's data"

    sources = prepare_volumes(
        vmi({"name": "hd", "hostDisk": {"path": str(target), "type": "Disk"}}), tmp_path / "w"
    )
    assert sources["hd"].path == target
    cleanup_volumes(tmp_path / "w")
    with pytest.raises(ValidationError) as info:
        prepare_volumes(
            vmi({"name": "hd", "hostDisk": {"path": str(tmp_path / "nope.img"), "type": "Disk"}}),
            tmp_path / "w",
        )
    assert info.value.fields == ["spec.volumes[0].hostDisk.path"]
    assert not (tmp_path / "w").exists()


def test_host_disk_path_must_be_clean(tmp_path):
    with pytest.raises(ValidationError) as info:
        prepare_volumes(
            vmi(
                {
                    "name": "hd",
                    "hostDisk": {"path": f"{tmp_path}/../x.img", "type": "DiskOrCreate", "capacity": "1Mi"},
                }
            ),
            tmp_path / "w",
        )
    assert info.value.fields == ["spec.volumes[0].hostDisk.path"]


def test_ephemeral_and_pvc(tmp_path, base_raw):
    claims = {"data": base_raw}
    sources = prepare_volumes(
        vmi(
            {"name": "eph", "ephemeral": {"persistentVolumeClaim": {"claimName": "data"}}},
            {"name": "pvc", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
        ),
        tmp_path / "w",
        claim_resolver=claims.__getitem__,
    )
    chain = qemu_img_info(sources["eph"].path)
    assert chain[0]["backing-filename"] == str(base_raw) and chain[0]["backing-filename-format"] == "raw"
    assert sources["pvc"] == VolumeSource(path=base_raw, format="raw", readonly=True)
    with pytest.raises(ValidationError) as info:
        prepare_volumes(
            vmi({"name": "pvc", "persistentVolumeClaim": {"claimName": "other"}}),
            tmp_path / "x",
            claim_resolver=claims.__getitem__,
        )
    assert info.value.fields == ["spec.volumes[0].persistentVolumeClaim.claimName"]


def test_nocloud_seed(tmp_path):
    network = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
    sources = prepare_volumes(
        vmi(
            {
                "name": "cloudinit",
                "cloudInitNoCloud": {"userData": "#cloud-config\nhostname: h\n", "networkData": network},
            },
            hostname="myhost",
        ),
        tmp_path / "w",
    )
    src = sources["cloudinit"]
    assert src.format == "raw" and src.readonly
    label, files = read_iso(src.path)
    assert label == "cidata"
    assert set(files) == {"/user-data", "/meta-data", "/network-config"}
    assert files["/user-data"] == b"#cloud-config\nhostname: h\n"
    assert files["/network-config"] == network.encode()
    meta = files["/meta-data"].decode()
    assert yaml.safe_load(meta) == {"instance-id": "testvm.ns1", "local-hostname": "myhost"}
    assert meta == "instance-id: testvm.ns1\nlocal-hostname: myhost\n"  # plain, as KubeVirt writes it


def test_configdrive_seed_from_base64(tmp_path):
    user = b"#!/bin/sh\necho hello from a long-named configdrive script\n"
    net = json.dumps({"links": [], "networks": [], "services": []})
    sources = prepare_volumes(
        vmi(
            {
                "name": "cd",
                "cloudInitConfigDrive": {
                    "userDataBase64": base64.b64encode(user).decode(),
                    "networkDataBase64": base64.b64encode(net.encode()).decode(),
                },
            }
        ),
        tmp_path / "w",
    )
    label, files = read_iso(sources["cd"].path)
    assert label == "config-2"
    assert set(files) == {
        "/openstack/latest/user_data",
        "/openstack/latest/meta_data.json",
        "/openstack/latest/network_data.json",
    }
    assert files["/openstack/latest/user_data"] == user
    assert json.loads(files["/openstack/latest/network_data.json"]) == json.loads(net)
    meta = json.loads(files["/openstack/latest/meta_data.json"])
    assert meta["hostname"] == "testvm" and meta["name"] == "testvm" and len(meta["uuid"]) == 36


def test_secret_ref_needs_resolver(tmp_path):
    spec = vmi(
        {
            "name": "ci",
            "cloudInitNoCloud": {
                "secretRef": {"name": "my-userdata"},
                "networkDataSecretRef": {"name": "my-net"},
            },
        }
    )
    with pytest.raises(ValidationError) as info:
        prepare_volumes(spec, tmp_path / "w")
    assert info.value.fields == ["spec.volumes[0].cloudInitNoCloud.secretRef.name"]
    assert "apiserver" in str(info.value)
    assert not (tmp_path / "w").exists()

    secrets = {"my-userdata": {"userdata": b"#cloud-config\n"}, "my-net": {"networkData": b"version: 2\n"}}
    sources = prepare_volumes(spec, tmp_path / "w", secret_resolver=secrets.__getitem__)
    _, files = read_iso(sources["ci"].path)
    assert files["/user-data"] == b"#cloud-config\n" and files["/network-config"] == b"version: 2\n"


def test_missing_image_names_field_and_leaves_nothing(tmp_path, base_qcow2):
    def resolver(ref):
        if ref == "missing:1":
            raise KeyError(ref)
        return base_qcow2

    work = tmp_path / "work"
    spec = vmi(
        {"name": "root", "containerDisk": {"image": "ok:1"}},
        {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
        {"name": "ci", "cloudInitNoCloud": {"userData": "x"}},
        {"name": "other", "containerDisk": {"image": "missing:1"}},
    )
    with pytest.raises(ValidationError) as info:
        prepare_volumes(spec, work, image_resolver=resolver)
    assert info.value.fields == ["spec.volumes[3].containerDisk.image"]
    assert "\n" not in str(info.value) and "spec.volumes[3].containerDisk.image" in str(info.value)
    assert not work.exists(), "partial work is removed"


def test_resolver_returning_missing_file(tmp_path):
    with pytest.raises(ValidationError) as info:
        prepare_volumes(
            vmi({"name": "root", "containerDisk": {"image": "x:1"}}),
            tmp_path / "w",
            image_resolver=lambda _r: tmp_path / "gone.qcow2",
        )
    assert info.value.fields == ["spec.volumes[0].containerDisk.image"]


def test_failure_in_existing_workdir_removes_only_new_files(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    with pytest.raises(ValidationError):
        prepare_volumes(
            vmi(
                {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
                {"name": "bad", "emptyDisk": {"capacity": "12XB"}},
            ),
            work,
        )
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith(".")) == ["keep.txt"]


def test_unsupported_source_is_an_error(tmp_path):
    with pytest.raises(ValidationError) as info:
        prepare_volumes(vmi({"name": "dv", "dataVolume": {"name": "x"}}), tmp_path / "w")
    assert info.value.fields == ["spec.volumes[0].dataVolume"]
    with pytest.raises(ValidationError) as info:
        prepare_volumes(vmi({"name": "cm", "configMap": {"name": "x"}}), tmp_path / "w")
    assert info.value.fields == ["spec.volumes[0].configMap.name"]
    assert "without an apiserver" in str(info.value)


def test_config_disks(tmp_path):
    configmaps = {"app-config": {"app.properties": b"a=1\n", "settings.yaml": b"x: 1\n"}}
    secrets = {"creds": {"password": b"s3cret"}}
    spec = vmi(
        {"name": "cm", "configMap": {"name": "app-config"}},
        {"name": "sec", "secret": {"secretName": "creds", "volumeLabel": "creds"}},
        {"name": "opt", "secret": {"secretName": "absent", "optional": True}},
        {
            "name": "dapi",
            "downwardAPI": {
                "fields": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                ]
            },
        },
    )
    spec["metadata"]["labels"] = {"tier": "web", "app": "shop"}
    sources = prepare_volumes(
        spec, tmp_path / "w", configmap_resolver=configmaps.__getitem__, secret_resolver=secrets.__getitem__
    )
    label, files = read_iso(sources["cm"].path)
    assert label == "cfgdata" and files == {"/app.properties": b"a=1\n", "/settings.yaml": b"x: 1\n"}
    label, files = read_iso(sources["sec"].path)
    assert label == "creds" and files == {"/password": b"s3cret"}
    assert read_iso(sources["opt"].path)[1] == {}
    _, files = read_iso(sources["dapi"].path)
    assert files == {"/labels": b'app="shop"\ntier="web"', "/name": b"testvm", "/tier": b"web"}
    assert all(s.readonly and s.format == "raw" for s in sources.values())

    with pytest.raises(ValidationError) as info:
        prepare_volumes(
            vmi({"name": "sec", "secret": {"secretName": "absent"}}),
            tmp_path / "x",
            secret_resolver=secrets.__getitem__,
        )
    assert info.value.fields == ["spec.volumes[0].secret.secretName"]


def test_iso_keeps_long_and_colliding_names(tmp_path):
    from kubevisor.storage.iso import write_iso

    names = [f"configuration-file-number-{i}.properties" for i in range(12)] + ["x" * 100]
    write_iso(
        tmp_path / "t.iso", "cfgdata", [(n, n.encode()) for n in names] + [("dir/sub/deep-file.txt", b"d")]
    )
    iso = pycdlib.PyCdlib()
    iso.open(str(tmp_path / "t.iso"))
    try:
        found = {}
        for dirname, _dirs, files in iso.walk(rr_path="/"):
            for name in files:
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=f"{dirname.rstrip('/')}/{name}")
                found[f"{dirname.rstrip('/')}/{name}".lstrip("/")] = buf.getvalue()
    finally:
        iso.close()
    assert found == {**{n: n.encode() for n in names}, "dir/sub/deep-file.txt": b"d"}


def test_cleanup_refuses_foreign_directories(tmp_path):
    (tmp_path / "precious").mkdir()
    with pytest.raises(ValueError):
        cleanup_volumes(tmp_path / "precious")
    assert (tmp_path / "precious").exists()
    cleanup_volumes(tmp_path / "never-created")  # nothing to do


@pytest.mark.parametrize(
    ("volumes", "field"),
    [
        ("not-a-list", "spec.volumes"),
        ([{"name": "Bad_Name", "emptyDisk": {"capacity": "1Gi"}}], "spec.volumes[0].name"),
        ([{"name": "x", "emptyDisk": ["1Gi"]}], "spec.volumes[0].emptyDisk"),
        ([{"name": "x", "emptyDisk": {}}], "spec.volumes[0].emptyDisk.capacity"),
        (
            [{"name": "x", "ephemeral": {"persistentVolumeClaim": "c"}}],
            "spec.volumes[0].ephemeral.persistentVolumeClaim.claimName",
        ),
        ([{"name": "x"}], "spec.volumes[0]"),
        (
            [{"name": "x", "hostDisk": {"path": "relative.img", "type": "Disk"}}],
            "spec.volumes[0].hostDisk.path",
        ),
        (
            [{"name": "x", "hostDisk": {"path": "/tmp/x.img", "type": "Sometimes"}}],
            "spec.volumes[0].hostDisk.type",
        ),
        (
            [{"name": "x", "cloudInitNoCloud": {"userDataBase64": "!!"}}],
            "spec.volumes[0].cloudInitNoCloud.userDataBase64",
        ),
    ],
)
def test_bad_volume_specs_name_the_field(tmp_path, volumes, field):
    spec = vmi()
    spec["spec"]["volumes"] = volumes
    with pytest.raises(ValidationError) as info:
        prepare_volumes(spec, tmp_path / "w")
    assert info.value.fields == [field]
    assert not (tmp_path / "w").exists()


def test_real_image_store_missing_image(tmp_path):
    """With the project's ImageStore (empty store), a missing image is a one-line field error."""
    from kubevisor.images.store import ImageStore

    store = ImageStore(tmp_path / "store")
    with pytest.raises(ValidationError) as info:
        prepare_volumes(
            vmi({"name": "root", "containerDisk": {"image": "kubevisor/nope:1"}}),
            tmp_path / "w",
            image_resolver=store.resolve_disk,
        )
    assert info.value.fields == ["spec.volumes[0].containerDisk.image"]
    assert "kubevisor/nope:1" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "value", ["vm-1", "legacy.default", "yes", "null", "No", "123", "1e3", "0x1f", "a b", "x: y"]
)
def test_nocloud_meta_data_round_trips_through_yaml(value):
    from kubevisor.storage.cloudinit import nocloud_meta_data

    meta = nocloud_meta_data(instance_id=value, hostname=value).decode()
    assert yaml.safe_load(meta) == {"instance-id": value, "local-hostname": value}
