"""A registry of cached, content-addressed guest assets.

An asset is a directory built by a function. Its cache key is a hash of the asset's name, the
source of the module that builds it, the files it names and the inputs its `inputs()` function
returns (package versions, other assets' keys). A build happens in a temporary directory next to
the cache and is renamed into place, under a per-asset file lock, so concurrent callers build it
once and a crash never leaves a half-built asset behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevisor import paths

Log = Callable[[str], None]
BuildFn = Callable[[Path, Log], None]
InputsFn = Callable[[], dict[str, Any]]

_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MANIFEST = "asset.json"


class AssetError(RuntimeError):
    """An asset is unknown or failed to build."""


@dataclass(frozen=True)
class Asset:
    name: str
    description: str
    build: BuildFn
    inputs: InputsFn
    # files whose content is part of the key (guest scripts, configs); the builder's module is always included
    files: tuple[Path, ...] = field(default_factory=tuple)
    # bump to force a rebuild when something outside `files` changes meaning
    version: str = "1"


_REGISTRY: dict[str, Asset] = {}


def validate_name(name: str) -> str:
    if not _ASSET_NAME.match(name):
        raise AssetError(f"invalid asset name {name!r}: lowercase letters, digits and '-' only")
    return name


def register(
    name: str,
    build: BuildFn,
    *,
    description: str,
    inputs: InputsFn | None = None,
    files: tuple[Path, ...] = (),
    version: str = "1",
) -> Asset:
    """Add an asset. Registering the same name again replaces it (module reloads in tests)."""
    asset = Asset(
        name=validate_name(name),
        description=description,
        build=build,
        inputs=inputs or dict,
        files=tuple(files),
        version=version,
    )
    _REGISTRY[name] = asset
    return asset


# Importing these modules registers their assets (in build order).
BUILTIN_MODULES: tuple[str, ...] = (
    "kubevisor.images.kernel",
    "kubevisor.images.boot_initramfs",
    "kubevisor.images.legacy_disk",
    "kubevisor.images.containerdisk",
)


def _load_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def registered() -> dict[str, Asset]:
    _load_builtin()
    return dict(_REGISTRY)


def get(name: str) -> Asset:
    _load_builtin()
    try:
        return _REGISTRY[validate_name(name)]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(root: Path) -> str:
    """Hash of every regular file's relative path and content under `root`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + file_digest(path).encode() + b"\n")
    return digest.hexdigest()


def compute_key(
    name: str, version: str, builder_source: str, files: dict[str, str], inputs: dict[str, Any]
) -> str:
    """The cache key: pure function of everything that determines the built asset."""
    doc = {
        "name": name,
        "version": version,
        "builder": hashlib.sha256(builder_source.encode()).hexdigest(),
        "files": files,
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _project_relative(path: Path) -> str:
    project = Path(__file__).resolve().parents[2]
    try:
        return str(path.resolve().relative_to(project))
    except ValueError:
        return str(path)


def key(name: str) -> str:
    asset = get(name)
    module = sys.modules[asset.build.__module__]
    source = inspect.getsource(module)
    # Keyed by the path inside the project, so every clone of the same sources shares the cache.
    files = {_project_relative(p): (tree_digest(p) if p.is_dir() else file_digest(p)) for p in asset.files}
    return compute_key(asset.name, asset.version, source, files, asset.inputs())


def assets_dir() -> Path:
    return paths.cache_dir() / "assets"


def path_for(name: str, asset_key: str) -> Path:
    return assets_dir() / f"{name}-{asset_key[:16]}"


@contextmanager
def _locked(name: str) -> Iterator[None]:
    lock_dir = assets_dir() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_built(name: str) -> Path | None:
    target = path_for(name, key(name))
    return target if (target / MANIFEST).exists() else None


def ensure(name: str, log: Log | None = None) -> Path:
    """The directory of the built asset `name`, building it first when its inputs changed."""
    asset = get(name)
    asset_key = key(name)
    target = path_for(name, asset_key)
    if (target / MANIFEST).exists():
        return target
    emit: Log = log or (lambda _msg: None)
    with _locked(name):
        if (target / MANIFEST).exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=target.parent))
        try:
            started = time.monotonic()
            asset.build(tmp, emit)
            manifest = {
                "name": name,
                "key": asset_key,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(time.monotonic() - started, 2),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            os.chmod(tmp, 0o755)
            if target.exists():  # a stale directory without manifest (interrupted old layout)
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
