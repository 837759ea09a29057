"""Process records: every process we start is written down (pid + start time) by its owner.

A record is a small JSON file in the owner's state directory. The start time (field 22 of
`/proc/<pid>/stat`, clock ticks since boot) together with the host boot id makes a record
name exactly one process: a reused pid, or a record from before a reboot, is not alive.
Signals go through a pidfd opened *before* the identity check, so a check-then-kill race
cannot hit a different process.

A restarted owner calls `adopt()` for what still runs and `clean()` for the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    return _BOOT_ID_PATH.read_text().strip()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) is parenthesised and may contain spaces or parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (stat field 22), None if gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 is index 19 after dropping fields 1-2


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_time: int
    boot_id: str
    argv: tuple[str, ...]
    role: str

    @classmethod
    def of(cls, pid: int, argv: Sequence[str], role: str) -> ProcessRecord:
        """Record a process that runs now (call right after starting it)."""
        st = start_time(pid)
        if st is None:
            raise ProcessLookupError(f"process {pid} ({role}) is not running")
        return cls(pid=pid, start_time=st, boot_id=boot_id(), argv=tuple(argv), role=role)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "argv": list(self.argv)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        data = json.loads(text)
        return cls(
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            boot_id=str(data["boot_id"]),
            argv=tuple(str(a) for a in data["argv"]),
            role=str(data["role"]),
        )


def write_record(path: Path, record: ProcessRecord) -> None:
    """Atomically (write, fsync, rename) store a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(record.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_record(path: Path) -> ProcessRecord | None:
    """The record at path; None if absent or unreadable (a torn write cannot happen, see write)."""
    try:
        return ProcessRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def is_alive(record: ProcessRecord) -> bool:
    """True if the recorded process (same boot, pid and start time) runs and is not a zombie."""
    if record.boot_id != boot_id():
        return False
    fields = _stat_fields(record.pid)
    if fields is None:
        return False
    return int(fields[19]) == record.start_time and fields[0] not in ("Z", "X")


def _open_pidfd(record: ProcessRecord) -> int | None:
    """A pidfd for the recorded process, or None if it is gone (or the pid is someone else's)."""
    try:
        fd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return None
    # Opened first, checked second: if the check passes, the fd refers to the recorded process.
    if not is_alive(record):
        os.close(fd)
        return None
    return fd


def signal_process(record: ProcessRecord, sig: int) -> bool:
    """Send sig to the recorded process if it is still that process. True if sent."""
    fd = _open_pidfd(record)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def wait_gone(record: ProcessRecord, timeout: float) -> bool:
    """Wait until the recorded process has exited. True if it is gone within timeout.

    An exited child of ours counts as gone (a zombie); reaping it is its parent's business
    (Popen/asyncio keep the exit status), so this never calls waitpid.
    """
    fd = _open_pidfd(record)
    if fd is None:
        return True
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            # A pidfd becomes readable when the process exits (zombie or reaped).
            ready, _, _ = select.select([fd], [], [], max(0.0, min(remaining, 0.5)))
            if ready or not is_alive(record):
                return True
            if remaining <= 0:
                return False
    finally:
        os.close(fd)


def kill_with_grace(record: ProcessRecord, grace: float, sig: int = signal.SIGTERM) -> bool:
    """Send sig, wait up to grace seconds, then SIGKILL. True if it had to be SIGKILLed."""
    if not signal_process(record, sig):
        return False
    if wait_gone(record, grace):
        return False
    signal_process(record, signal.SIGKILL)
    wait_gone(record, 10.0)
    return True


def adopt(path: Path) -> ProcessRecord | None:
    """The record at path if its process still runs; a dead record is removed and None returned."""
    record = read_record(path)
    if record is not None and is_alive(record):
        return record
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return None


def clean(path: Path, grace: float = 5.0) -> ProcessRecord | None:
    """Stop the recorded process if it still runs (SIGTERM, then SIGKILL) and remove the record.

    Returns the record that was found (alive or not), None if there was none.
    """
    record = read_record(path)
    if record is not None and is_alive(record):
        kill_with_grace(record, grace)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return record
