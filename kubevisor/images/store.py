"""A local OCI image store for containerDisks (OCI image-layout on disk).

    <root>/oci-layout, <root>/index.json       manifests, annotated with their reference
    <root>/blobs/sha256/<hex>                  content-addressed blobs (verified on import)
    <root>/disks/<manifest-hex>/disk/<file>    the image's /disk/ content, extracted once, read-only

`import_archive` takes an OCI archive (a tar of an image layout) or a docker-archive tarball
(`docker save`: manifest.json + config + layer tars). `resolve_disk(ref)` returns the disk file
of a containerDisk image — the read-only base that per-VMI overlays point at.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from kubevisor import paths
from kubevisor.images import reference
from kubevisor.images.reference import InvalidReference

REF_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST}
INDEX_TYPES = {MT_OCI_INDEX, MT_DOCKER_LIST}
DISK_DIR = "disk"


class StoreError(RuntimeError):
    """An archive is malformed, an image is missing, or a blob fails verification."""


class ImageNotFound(StoreError, LookupError):
    """The reference is not in the store, or its image has no disk under /disk/."""


@dataclass(frozen=True)
class ImageRecord:
    ref: str  # name:tag
    digest: str  # manifest digest
    size: int  # manifest + config + layers, bytes


def default_root() -> Path:
    return paths.data_dir() / "images"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _norm_member(name: str) -> str:
    """Tar member name without './' or leading '/', rejected if it escapes ('..')."""
    parts = [p for p in PurePosixPath(name.lstrip("/")).parts if p not in (".", "")]
    if ".." in parts:
        raise StoreError(f"archive member escapes its root: {name!r}")
    return "/".join(parts)


class _Archive:
    """Random access to the regular files of a (possibly compressed) tar archive."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError) as exc:
            raise StoreError(f"{path}: not a readable tar archive ({exc})") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in self.tar.getmembers():
            if member.isfile():
                self.members[_norm_member(member.name)] = member

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        if member is None:
            raise StoreError(f"archive has no file {name!r}")
        f = self.tar.extractfile(member)
        if f is None:
            raise StoreError(f"archive member {name!r} is not a file")
        return f

    def read(self, name: str, limit: int = 16 << 20) -> bytes:
        data = self.open(name).read(limit + 1)
        if len(data) > limit:
            raise StoreError(f"archive member {name!r} is too large for metadata")
        return data

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except json.JSONDecodeError as exc:
            raise StoreError(f"archive member {name!r} is not valid JSON: {exc}") from None

    def close(self) -> None:
        self.tar.close()


class ImageStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    # ------------------------------------------------------------ layout

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    def blob_path(self, digest: str) -> Path:
        reference.validate_digest(digest)
        return self.blobs / digest.split(":", 1)[1]

    def _init_layout(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
        if not (self.root / "index.json").exists():
            self._write_index({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []})

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}
        index: dict[str, Any] = json.loads(path.read_text())
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        tmp = self.root / ".index.json.tmp"
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        os.replace(tmp, self.root / "index.json")

    # ------------------------------------------------------------ blobs

    def put_blob(self, stream: IO[bytes], expected: str | None = None) -> tuple[str, int]:
        """Store a blob from a stream; verify it against `expected` when given."""
        if expected is not None:
            reference.validate_digest(expected)
            if self.blob_path(expected).exists():
                return expected, self.blob_path(expected).stat().st_size
        self.blobs.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=".blob-", dir=self.blobs)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            got = "sha256:" + digest.hexdigest()
            if expected is not None and got != expected:
                raise StoreError(f"blob digest mismatch: expected {expected}, got {got}")
            os.chmod(tmp_name, 0o444)
            os.replace(tmp_name, self.blob_path(got))
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        return got, size

    def put_bytes(self, data: bytes, expected: str | None = None) -> tuple[str, int]:
        return self.put_blob(io.BytesIO(data), expected)

    def read_blob(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        if not path.exists():
            raise StoreError(f"blob {digest} is missing from the store")
        return path.read_bytes()

    # ------------------------------------------------------------ import

    def import_archive(self, path: Path, name: str | None = None) -> list[ImageRecord]:
        """Import an OCI archive or docker-archive; `name` (ref) overrides/sets the image name."""
        override = reference.parse(name) if name else None
        archive = _Archive(path)
        try:
            with self._locked():
                self._init_layout()
                if archive.has("oci-layout") and archive.has("index.json"):
                    found = self._import_oci(archive, override)
                elif archive.has("manifest.json"):
                    found = self._import_docker(archive, override)
                else:
                    raise StoreError(
                        f"{path}: neither an OCI archive (oci-layout, index.json) "
                        "nor a docker-archive (manifest.json)"
                    )
                if not found:
                    raise StoreError(f"{path}: the archive holds no image")
                return [self._tag(ref, digest, size) for ref, digest, size in found]
        finally:
            archive.close()

    def _copy_manifest_blobs(self, archive: _Archive, manifest: dict[str, Any]) -> int:
        size = 0
        for desc in [manifest.get("config") or {}, *(manifest.get("layers") or [])]:
            digest = desc.get("digest")
            if not isinstance(digest, str):
                raise StoreError("manifest descriptor without a digest")
            reference.validate_digest(digest)
            if not self.blob_path(digest).exists():
                self.put_blob(archive.open(f"blobs/sha256/{digest.split(':', 1)[1]}"), digest)
            size += self.blob_path(digest).stat().st_size
        return size

    def _select_manifest(self, archive: _Archive, desc: dict[str, Any], depth: int = 0) -> dict[str, Any]:
        """Follow nested indexes to a linux/amd64 (or platform-less) image manifest descriptor."""
        if depth > 4:
            raise StoreError("image index nesting too deep")
        media = desc.get("mediaType")
        if media in MANIFEST_TYPES or media is None:
            return desc
        if media not in INDEX_TYPES:
            raise StoreError(f"unsupported manifest media type {media!r}")
        digest = reference.validate_digest(str(desc.get("digest")))
        nested = json.loads(archive.read(f"blobs/sha256/{digest.split(':', 1)[1]}"))
        candidates = nested.get("manifests") or []
        for cand in candidates:
            platform = cand.get("platform") or {}
            if platform.get("os", "linux") == "linux" and platform.get("architecture", "amd64") == "amd64":
                return self._select_manifest(archive, cand, depth + 1)
        raise StoreError("image index has no linux/amd64 manifest")

    def _import_oci(
        self, archive: _Archive, override: reference.Reference | None
    ) -> list[tuple[str, str, int]]:
        layout = archive.json("oci-layout")
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise StoreError("oci-layout: missing imageLayoutVersion")
        index = archive.json("index.json")
        results: list[tuple[str, str, int]] = []
        for top in index.get("manifests") or []:
            annotations = top.get("annotations") or {}
            desc = self._select_manifest(archive, top)
            digest = reference.validate_digest(str(desc.get("digest")))
            raw = archive.read(f"blobs/sha256/{digest.split(':', 1)[1]}")
            if sha256_digest(raw) != digest:
                raise StoreError(f"manifest {digest}: content does not match its digest")
            manifest = json.loads(raw)
            size = self._copy_manifest_blobs(archive, manifest) + len(raw)
            self.put_bytes(raw, digest)
            ref = self._ref_for(annotations, override)
            results.append((ref, digest, size))
        return results

    @staticmethod
    def _ref_for(annotations: dict[str, Any], override: reference.Reference | None) -> str:
        if override is not None:
            return override.tagged
        for key in (CONTAINERD_NAME_ANNOTATION, REF_ANNOTATION):
            value = annotations.get(key)
            if not isinstance(value, str) or not value:
                continue
            try:
                parsed = reference.parse(value)
            except InvalidReference:
                continue
            if "/" in value or ":" in value or key == CONTAINERD_NAME_ANNOTATION:
                return parsed.tagged
        raise StoreError(
            "the archive does not name its image (no ref.name annotation with a name): "
            "pass a name, e.g. `kubevisor images import FILE --name example/disk:latest`"
        )

    def _import_docker(
        self, archive: _Archive, override: reference.Reference | None
    ) -> list[tuple[str, str, int]]:
        entries = archive.json("manifest.json")
        if not isinstance(entries, list):
            raise StoreError("manifest.json: expected a list")
        results: list[tuple[str, str, int]] = []
        for entry in entries:
            config_name = _norm_member(str(entry.get("Config", "")))
            config_raw = archive.read(config_name)
            config_digest, config_size = self.put_bytes(config_raw)
            layers: list[dict[str, Any]] = []
            for layer_name in entry.get("Layers") or []:
                member = _norm_member(str(layer_name))
                head = archive.open(member).read(2)
                layer_digest, layer_size = self.put_blob(archive.open(member))
                media = MT_OCI_LAYER_GZIP if head == b"\x1f\x8b" else MT_OCI_LAYER
                layers.append({"mediaType": media, "digest": layer_digest, "size": layer_size})
            manifest = {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config_size},
                "layers": layers,
            }
            raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
            digest, _ = self.put_bytes(raw)
            size = len(raw) + config_size + sum(int(layer["size"]) for layer in layers)
            tags = [str(t) for t in entry.get("RepoTags") or []]
            if override is not None:
                tags = [override.tagged]
            if not tags:
                raise StoreError("docker-archive image without RepoTags: pass a name (--name)")
            for tag in tags:
                results.append((reference.parse(tag).tagged, digest, size))
        return results

    def _tag(self, ref: str, digest: str, size: int) -> ImageRecord:
        index = self._read_index()
        manifests = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_ANNOTATION) != ref]
        manifests.append(
            {
                "mediaType": MT_OCI_MANIFEST,
                "digest": digest,
                "size": len(self.read_blob(digest)),
                "annotations": {REF_ANNOTATION: ref, "io.kubevisor.image.size": str(size)},
            }
        )
        index["manifests"] = manifests
        self._write_index(index)
        return ImageRecord(ref, digest, size)

    # ------------------------------------------------------------ queries

    def list(self) -> list[ImageRecord]:
        records = []
        for m in self._read_index().get("manifests", []):
            annotations = m.get("annotations") or {}
            ref = annotations.get(REF_ANNOTATION)
            if ref:
                records.append(
                    ImageRecord(ref, m["digest"], int(annotations.get("io.kubevisor.image.size", 0)))
                )
        return sorted(records, key=lambda r: r.ref)

    def lookup(self, ref: str) -> ImageRecord:
        parsed = reference.parse(ref)
        for record in self.list():
            if parsed.digest and record.digest == parsed.digest:
                if not parsed.tag or record.ref == parsed.tagged:
                    return record
            elif not parsed.digest and record.ref == parsed.tagged:
                return record
        raise ImageNotFound(
            f"image {ref!r} is not in the local store {self.root} "
            "(import it with `kubevisor images import FILE`)"
        )

    def remove(self, ref: str) -> None:
        record = self.lookup(ref)
        with self._locked():
            index = self._read_index()
            index["manifests"] = [
                m
                for m in index["manifests"]
                if (m.get("annotations") or {}).get(REF_ANNOTATION) != record.ref
            ]
            self._write_index(index)

    # ------------------------------------------------------------ containerDisk

    def resolve_disk(self, ref: str) -> Path:
        """The disk file under /disk/ of image `ref`, extracted once into the store (read-only)."""
        record = self.lookup(ref)
        target = self.root / "disks" / record.digest.split(":", 1)[1]
        found = self._disk_file(target)
        if found is not None:
            return found
        with self._locked():
            found = self._disk_file(target)
            if found is not None:
                return found
            manifest = json.loads(self.read_blob(record.digest))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
            try:
                for layer in manifest.get("layers") or []:
                    self._extract_disk_layer(self.blob_path(str(layer["digest"])), tmp)
                disk_dir = tmp / DISK_DIR
                files = sorted(p for p in disk_dir.iterdir() if p.is_file()) if disk_dir.is_dir() else []
                if not files:
                    raise ImageNotFound(f"image {ref!r} has no file under /{DISK_DIR}/: not a containerDisk")
                for f in files:
                    f.chmod(0o444)
                tmp.chmod(0o755)
                if target.exists():
                    shutil.rmtree(target)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        found = self._disk_file(target)
        assert found is not None
        return found

    @staticmethod
    def _disk_file(target: Path) -> Path | None:
        disk_dir = target / DISK_DIR
        if not disk_dir.is_dir():
            return None
        files = sorted(p for p in disk_dir.iterdir() if p.is_file())
        return files[0] if files else None

    @staticmethod
    def _extract_disk_layer(blob: Path, dest: Path) -> None:
        """Apply the /disk/ part of one layer: regular files, and whiteouts of earlier files."""
        try:
            tar = tarfile.open(blob, "r:*")  # noqa: SIM115 - closed by the with below
        except tarfile.TarError as exc:
            raise StoreError(f"layer {blob.name[:12]}: unsupported layer format ({exc})") from None
        with tar:
            for member in tar:
                name = _norm_member(member.name)
                parts = name.split("/")
                if parts[0] != DISK_DIR or len(parts) != 2:
                    continue
                base = parts[1]
                if base.startswith(".wh."):
                    victim = dest / DISK_DIR / base[4:]
                    if base == ".wh..wh..opq":
                        shutil.rmtree(dest / DISK_DIR, ignore_errors=True)
                    elif victim.exists():
                        victim.unlink()
                    continue
                if not member.isfile():
                    continue
                out = dest / DISK_DIR / base
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                if out.exists():
                    out.unlink()
                with out.open("wb") as f:
                    _copy_sparse(src, f)


def _copy_sparse(src: IO[bytes], dst: IO[bytes], block: int = 1 << 16) -> None:
    """Copy, seeking over all-zero blocks so that disk images stay sparse."""
    zero = bytes(block)
    length = 0
    while True:
        chunk = src.read(block)
        if not chunk:
            break
        length += len(chunk)
        if chunk == zero[: len(chunk)]:
            dst.seek(len(chunk), os.SEEK_CUR)
        else:
            dst.write(chunk)
    dst.truncate(length)
