"""On-disk state of kubevisor-runtime under `--root`: one directory per container, file locks.

Layout:
  <root>/<id>/state.json        the container record (see `ContainerRecord`)
  <root>/<id>/exit              the exit status, written by the shim when the process ends
  <root>/.sandboxes/<sid>/      sandbox.json (kubevisor.sandbox.Sandbox)
  <root>/.locks/<name>.lock     flock(2) targets; a container lock guards its record, a sandbox lock
                                guards membership (which containers run in which VM)
Creating `<root>/<id>` with mkdir is what reserves an id, so a duplicate create fails atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from kubevisor.sandbox.pidrec import ProcRecord

TYPE_CHECKING = False  # typing is not imported at run time: this module loads on every verb
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/kubevisor-runtime"
OCI_VERSION = "1.1.0"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")

# Locks held by this process; a forked shim must close them (flock follows the open file).
HELD_LOCK_FDS: set[int] = set()


class StateError(Exception):
    """A user-facing error about container state (unknown id, wrong status...)."""


class NoSuchContainer(StateError):
    """No record for this id (never created, deleted, or a create that died before its record)."""


def validate_id(cid: str) -> str:
    if not _ID.match(cid):
        raise StateError(f"invalid container id {cid!r}: letters, digits and _ . + - only, at most 128")
    return cid


class ContainerRecord:
    """One container's record (a plain class: dataclasses would cost every verb ~9 ms of imports)."""

    FIELDS = (
        "id", "bundle", "rootfs", "sandbox_id", "status", "created", "owner", "annotations", "shim",
        "guest_pid", "execs",
    )  # fmt: skip

    def __init__(
        self,
        id: str,
        bundle: str,
        rootfs: str,
        sandbox_id: str,
        status: str = "creating",
        created: str = "",
        owner: str = "root",
        annotations: dict[str, str] | None = None,
        shim: dict[str, int] | None = None,
        guest_pid: int = 0,
        execs: dict[str, dict[str, int]] | None = None,
    ) -> None:
        self.id = id
        self.bundle = bundle
        self.rootfs = rootfs
        self.sandbox_id = sandbox_id
        self.status = status
        self.created = created
        self.owner = owner
        self.annotations: dict[str, str] = annotations if annotations is not None else {}
        self.shim = shim
        self.guest_pid = guest_pid
        self.execs: dict[str, dict[str, int]] = execs if execs is not None else {}

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.FIELDS})

    @property
    def shim_record(self) -> ProcRecord | None:
        return ProcRecord.from_json(self.shim)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def dir(self, cid: str) -> Path:
        return self.root / validate_id(cid)

    def sandbox_dir(self, sid: str) -> Path:
        return self.root / ".sandboxes" / validate_id(sid)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        HELD_LOCK_FDS.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            HELD_LOCK_FDS.discard(fd)
            os.close(fd)

    def reserve(self, cid: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        d = self.dir(cid)
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            raise StateError(f"container with id {cid!r} already exists") from None
        return d

    def load(self, cid: str) -> ContainerRecord:
        try:
            data = json.loads((self.dir(cid) / "state.json").read_text())
        except FileNotFoundError:
            raise NoSuchContainer(f"container {cid!r} does not exist") from None
        except ValueError as exc:
            raise StateError(f"container {cid!r}: corrupt state: {exc}") from None
        return ContainerRecord.from_json(data)

    def save(self, rec: ContainerRecord) -> None:
        d = self.dir(rec.id)
        tmp = d / f"state.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(rec.to_json()))
        os.replace(tmp, d / "state.json")

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "state.json").exists()
        )

    def exit_status(self, cid: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.dir(cid) / "exit").read_text())
        return None

    def status(self, rec: ContainerRecord) -> str:
        """The record's status corrected by what is alive: a dead shim means stopped."""
        if rec.status in ("created", "running", "paused"):
            shim = rec.shim_record
            if shim is None or not shim.alive():
                return "stopped"
        return rec.status

    def oci_state(self, rec: ContainerRecord) -> dict[str, Any]:
        status = self.status(rec)
        shim = rec.shim_record
        pid = shim.pid if shim is not None and status in ("created", "running", "paused") else 0
        state: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": rec.id,
            "pid": pid,
            "status": status,
            "bundle": rec.bundle,
            "rootfs": rec.rootfs,
            "created": rec.created,
            "owner": rec.owner,
        }
        if rec.annotations:
            state["annotations"] = rec.annotations
        return state
