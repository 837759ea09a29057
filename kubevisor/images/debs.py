"""Debian packages as build inputs: look up, download into the cache, extract — never install on the host.

`apt-get download` fetches exactly the candidate version that `apt-cache show` describes; the
package's SHA256 from the archive index names the cached file and is checked after download.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
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


def info(package: str) -> DebInfo:
    """The candidate version of `package` as apt sees it now."""
    validate_package_name(package)
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise DebError(f"package {package!r} not found by apt-cache: {proc.stderr.strip()}")
    fields = parse_control_stanza(proc.stdout)
    try:
        return DebInfo(
            package=fields["Package"],
            version=fields["Version"],
            architecture=fields["Architecture"],
            sha256=fields["SHA256"],
            depends=parse_depends(fields.get("Depends", "")),
        )
    except KeyError as exc:
        raise DebError(f"apt-cache show {package}: missing field {exc.args[0]}") from None


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
