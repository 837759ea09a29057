"""Debian packages as build inputs: look up, download into the cache, extract — never install on the host.

`apt-get download` fetches exactly the candidate version that `apt-cache show` describes; the
package's SHA256 from the archive index names the cached file and is checked after download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from kubevisor import paths

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


class DebError(RuntimeError):
    """A package cannot be looked up, downloaded or extracted."""


@dataclass(frozen=True)
class DebInfo:
    package: str
    version: str
    architecture: str
    sha256: str
    depends: tuple[str, ...]  # package names of the first alternative of each Depends entry


def validate_package_name(name: str) -> str:
    if not _PACKAGE_NAME.match(name):
        raise DebError(f"invalid Debian package name {name!r}")
    return name


def parse_control_stanza(text: str) -> dict[str, str]:
    """Parse the first RFC822-style stanza of `apt-cache show` output (continuation lines joined)."""
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" and last:
            fields[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip()
        fields[last] = value.strip()
    return fields


def parse_depends(value: str) -> tuple[str, ...]:
    """Names of the first alternative of each dependency: 'a (>= 1) | b, c:any' -> ('a', 'c')."""
    names: list[str] = []
    for entry in value.split(","):
        first = entry.split("|")[0].strip()
        if not first:
            continue
        name = re.split(r"[\s(:\[]", first, maxsplit=1)[0]
        names.append(name)
    return tuple(names)


# Packages looked up together in one apt-cache call (each call parses all package lists: ~1 s).
PREFETCH = (
    "linux-image-cloud-amd64",
    "busybox-static",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "dropbear-bin",
    "syslinux",
)
APT_STATE_PATHS = (
    Path("/var/lib/apt/lists"),
    Path("/etc/apt/sources.list"),
    Path("/etc/apt/sources.list.d"),
    Path("/etc/apt/preferences.d"),
)
_memo: dict[str, DebInfo] = {}


def apt_state_fingerprint() -> str:
    """Changes whenever apt's view of candidates may change (update, new sources, pins)."""
    digest = hashlib.sha256()
    for base in APT_STATE_PATHS:
        entries = sorted(base.iterdir()) if base.is_dir() else [base]
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            digest.update(f"{entry}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _index_cache() -> Path:
    return debs_dir() / "apt-index.json"


def _load_index_cache(fingerprint: str) -> dict[str, DebInfo]:
    try:
        doc = json.loads(_index_cache().read_text())
    except (OSError, ValueError):
        return {}
    if doc.get("fingerprint") != fingerprint:
        return {}
    return {
        name: DebInfo(**{**fields, "depends": tuple(fields["depends"])})
        for name, fields in doc.get("packages", {}).items()
    }


def _save_index_cache(fingerprint: str, packages: dict[str, DebInfo]) -> None:
    try:
        debs_dir().mkdir(parents=True, exist_ok=True)
        tmp = _index_cache().with_suffix(f".{os.getpid()}.tmp")
        doc = {"fingerprint": fingerprint, "packages": {n: asdict(i) for n, i in packages.items()}}
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, _index_cache())
    except OSError:
        pass  # a read-only cache only costs speed


def _apt_cache_show(packages: list[str]) -> dict[str, DebInfo]:
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    found: dict[str, DebInfo] = {}
    for stanza in proc.stdout.split("\n\n"):
        fields = parse_control_stanza(stanza)
        if not fields.get("Package"):
            continue
        try:
            found[fields["Package"]] = DebInfo(
                package=fields["Package"],
                version=fields["Version"],
                architecture=fields["Architecture"],
                sha256=fields["SHA256"],
                depends=parse_depends(fields.get("Depends", "")),
            )
        except KeyError as exc:
            raise DebError(f"apt-cache show {fields['Package']}: missing field {exc.args[0]}") from None
    return found


def info(package: str) -> DebInfo:
    """The candidate version of `package` as apt sees it now (memoised per apt state)."""
    validate_package_name(package)
    if package in _memo:
        return _memo[package]
    fingerprint = apt_state_fingerprint()
    cached = _load_index_cache(fingerprint)
    if package not in cached:
        wanted = sorted({package, *(p for p in PREFETCH if p not in cached)})
        fresh = _apt_cache_show(wanted)
        if package not in fresh:
            # an unknown name makes apt-cache fail for the whole batch: ask for it alone
            fresh.update(_apt_cache_show([package]))
        if package not in fresh:
            raise DebError(f"package {package!r} not found by apt-cache (run apt-get update?)")
        cached.update(fresh)
        _save_index_cache(fingerprint, cached)
    _memo.clear()
    _memo.update(cached)
    return cached[package]


def resolve_metapackage(package: str, prefix: str) -> DebInfo:
    """Follow a metapackage (e.g. linux-image-cloud-amd64) to the dependency starting with `prefix`."""
    meta = info(package)
    for dep in meta.depends:
        if dep.startswith(prefix):
            return info(dep)
    raise DebError(f"{package}: no dependency starting with {prefix!r} in {meta.depends}")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def debs_dir() -> Path:
    return paths.cache_dir() / "debs"


def download(pkg: DebInfo) -> Path:
    """The .deb file of exactly `pkg` in the cache (downloaded once, SHA256 checked)."""
    target = debs_dir() / f"{pkg.package}_{pkg.sha256[:16]}.deb"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
        proc = subprocess.run(
            [
                "apt-get",
                "download",
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                f"{pkg.package}={pkg.version}",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        files = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or len(files) != 1:
            raise DebError(f"apt-get download {pkg.package}={pkg.version} failed: {proc.stderr.strip()}")
        got = _sha256_file(files[0])
        if got != pkg.sha256:
            raise DebError(f"{pkg.package}: SHA256 mismatch (index {pkg.sha256}, downloaded {got})")
        os.replace(files[0], target)
    return target


def extract(deb: Path, dest: Path) -> None:
    """Unpack the data part of a .deb into `dest` (like dpkg would, without running scripts)."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = ["dpkg-deb", "-x", str(deb), str(dest)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DebError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}")


def fetch_and_extract(packages: list[str], dest: Path) -> list[DebInfo]:
    """Download the candidate of each package and unpack all of them into `dest`."""
    infos = [info(p) for p in packages]
    for pkg in infos:
        extract(download(pkg), dest)
    return infos
