"""A process identified by pid + start time (so a recycled pid is never mistaken for ours).

Small on purpose; converges with `kubevisor.procs` (the hypervisor layer's records) once that lands.
Imported by every `kubevisor-runtime` verb, so it avoids heavy modules (dataclasses pulls in
inspect: ~9 ms per call).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None  # a zombie has exited; only its exit status is left
    return int(fields[19])


class ProcRecord:
    __slots__ = ("pid", "start")

    def __init__(self, pid: int, start: int) -> None:
        self.pid = pid
        self.start = start

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProcRecord) and (self.pid, self.start) == (other.pid, other.start)

    def __hash__(self) -> int:
        return hash((self.pid, self.start))

    def __repr__(self) -> str:
        return f"ProcRecord(pid={self.pid}, start={self.start})"

    @classmethod
    def of(cls, pid: int) -> ProcRecord:
        st = start_time(pid)
        if st is None:
            raise ProcessLookupError(f"process {pid} is not running")
        return cls(pid, st)

    def alive(self) -> bool:
        return self.pid > 0 and start_time(self.pid) == self.start

    def send(self, sig: int) -> bool:
        """Send sig if this is still the recorded process; True if sent."""
        if not self.alive():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
            return True
        return False

    def kill_and_wait(self, timeout: float = 10.0, first: int = signal.SIGTERM) -> None:
        """TERM (or `first`), then KILL after `timeout`; returns once the process is gone."""
        if not self.send(first):
            return
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                self.send(signal.SIGKILL)
                deadline = time.monotonic() + 10.0
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            time.sleep(0.02)

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, data: dict[str, int] | None) -> ProcRecord | None:
        if not data:
            return None
        return cls(int(data["pid"]), int(data["start"]))
