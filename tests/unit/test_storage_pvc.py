"""kubevisor.storage.pvc: disk.img in a Filesystem-mode claim, KubeVirt's size toleration."""

import pytest

from kubevisor.storage.pvc import ClaimSpaceError, bytes_available, ensure_disk_image


def test_created_sparse_with_claim_size_and_kept(tmp_path):
    image = ensure_disk_image(tmp_path, 10 * 2**20)
    assert image.created and not image.shrunk and image.size == 10 * 2**20
    assert image.path == tmp_path / "disk.img"
    assert image.path.stat().st_size == 10 * 2**20 and image.path.stat().st_blocks == 0
    image.path.write_bytes(b"guest data")  # the data is the user's: a second call keeps it
    again = ensure_disk_image(tmp_path, 10 * 2**20)
    assert not again.created and image.path.read_bytes() == b"guest data"


def test_toleration(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # 5 % less space than the claim asks for: accepted, the image takes what there is.
    shrunk = ensure_disk_image(tmp_path / "a", 1000 * 512, available=950 * 512)
    assert shrunk.shrunk and shrunk.size == 950 * 512
    # 20 % less: beyond KubeVirt's 10 % toleration, an error and no file.
    with pytest.raises(ClaimSpaceError):
        ensure_disk_image(tmp_path / "b", 1000 * 512, available=800 * 512)
    assert not (tmp_path / "b" / "disk.img").exists()


def test_real_free_space_is_measured(tmp_path):
    assert bytes_available(tmp_path) > 0
    with pytest.raises(ClaimSpaceError):
        ensure_disk_image(tmp_path, bytes_available(tmp_path) * 10 + 2**40)
