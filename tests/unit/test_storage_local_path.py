"""The local-path provisioner's pure part: class, PV objects, directory names and safe removal."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor.storage import local_path as lp


def claim(name: str = "data", ns: str = "default", uid: str = "1234-abcd", **spec: object) -> lp.Obj:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, **spec},
    }


def test_storage_class_is_default_and_ours() -> None:
    sc = lp.storage_class()
    assert lp.is_default_class(sc) and sc["provisioner"] == lp.PROVISIONER
    assert sc["reclaimPolicy"] == "Delete"


def test_default_class_picks_the_newest_default() -> None:
    old = {
        "metadata": {
            "name": "a",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {lp.DEFAULT_CLASS_ANNOTATION: "true"},
        }
    }
    new = {
        "metadata": {
            "name": "b",
            "creationTimestamp": "2026-02-01T00:00:00Z",
            "annotations": {lp.BETA_DEFAULT_CLASS_ANNOTATION: "true"},
        }
    }
    plain = {"metadata": {"name": "c", "creationTimestamp": "2026-03-01T00:00:00Z"}}
    assert lp.default_class([old, new, plain]) == new
    assert lp.default_class([plain]) is None


def test_persistent_volume_binds_the_claim_on_a_node(tmp_path: Path) -> None:
    c = claim()
    path = lp.volume_dir(tmp_path, c)
    assert path == tmp_path / "pvc-1234-abcd_default_data"
    pv = lp.persistent_volume(c, lp.storage_class(), "node1", path)
    assert pv["metadata"]["name"] == "pvc-1234-abcd"
    assert pv["spec"]["claimRef"]["uid"] == "1234-abcd"
    assert pv["spec"]["capacity"] == {"storage": "1Gi"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["hostPath"] == {"path": str(path), "type": "DirectoryOrCreate"}
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term == {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node1"]}
    assert lp.volume_path(pv) == path and lp.is_ours(pv)
    status = lp.bound_claim_status(c, pv)
    assert status == {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}


@pytest.mark.parametrize(
    "meta",
    [
        {"name": "../x", "namespace": "default", "uid": "u1"},
        {"name": "ok", "namespace": "a/b", "uid": "u1"},
        {"name": "ok", "namespace": "default", "uid": "../../etc"},
    ],
)
def test_volume_dir_refuses_names_that_are_not_names(tmp_path: Path, meta: lp.Obj) -> None:
    with pytest.raises(lp.LocalPathError):
        lp.volume_dir(tmp_path, {"metadata": meta})


def test_claim_without_size_is_refused() -> None:
    c = claim()
    del c["spec"]["resources"]
    with pytest.raises(lp.LocalPathError, match=r"requests\.storage"):
        lp.requested_storage(c)


def test_claim_gone_by_name_or_by_uid() -> None:
    pv = lp.persistent_volume(claim(), lp.storage_class(), "n", Path("/x/pvc-1234-abcd_default_data"))
    assert not lp.claim_is_gone(pv, {"default/data": claim()})
    assert lp.claim_is_gone(pv, {})
    assert lp.claim_is_gone(pv, {"default/data": claim(uid="another")})


def test_remove_only_our_directory_under_the_base(tmp_path: Path) -> None:
    base = tmp_path / "base"
    c = claim()
    path = lp.volume_dir(base, c)
    (path / "sub").mkdir(parents=True)
    (path / "disk.img").write_bytes(b"x")
    pv = lp.persistent_volume(c, lp.storage_class(), "n", path)
    assert lp.remove_volume_dir(base, pv) and not path.exists()
    assert lp.remove_volume_dir(base, pv)  # already gone: fine

    victim = tmp_path / "precious"
    victim.mkdir()
    for bad in (victim, base / "other_dir", base / "pvc-1234-abcd_default_data" / ".." / ".." / "precious"):
        forged = lp.persistent_volume(c, lp.storage_class(), "n", bad)
        with pytest.raises(lp.LocalPathError):
            lp.remove_volume_dir(base, forged)
    link = base / "pvc-1234-abcd_default_data"
    link.symlink_to(victim)
    with pytest.raises(lp.LocalPathError, match="symlink"):
        lp.remove_volume_dir(base, pv)
    assert victim.exists()
