"""Process plumbing for the agent: spawning without `subprocess`, and one reaper for every child.

The agent is PID 1 in the guest (or a child subreaper on the host in tests), so orphaned container
processes are reparented to it and it must reap them all. A single thread calls ``waitpid(-1)``;
everyone else waits on its results. ``subprocess`` would race with that thread, hence posix_spawn.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Sequence

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def exit_status(wait_status: int) -> int:
    """A wait status as a shell would report it: the exit code, or 128 + the signal number."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


class Reaper:
    """Reaps every child; ``wait(pid)`` returns a child's exit status (shell convention)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._statuses: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            except InterruptedError:
                continue
            with self._cond:
                self._statuses[pid] = exit_status(status)
                # Bound memory for children nobody ever asks about (daemons in containers).
                if len(self._statuses) > 4096:
                    for old in list(self._statuses)[:1024]:
                        del self._statuses[old]
                self._cond.notify_all()

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while pid not in self._statuses:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 1.0)
            return self._statuses.pop(pid)

    def poll(self, pid: int) -> int | None:
        with self._cond:
            return self._statuses.get(pid)


def spawn(
    argv: Sequence[str],
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start argv with the given fds as its stdio (None: /dev/null); returns the pid."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, null if stdin is None else stdin, 0),
            (os.POSIX_SPAWN_DUP2, null if stdout is None else stdout, 1),
            (os.POSIX_SPAWN_DUP2, null if stderr is None else stderr, 2),
        ]
        return os.posix_spawnp(
            argv[0], list(argv), dict(os.environ) if env is None else env, file_actions=actions
        )
    finally:
        os.close(null)


def run(reaper: Reaper, argv: Sequence[str], timeout: float = 120.0) -> tuple[int, str]:
    """Run argv to completion; returns (exit status, combined stdout+stderr)."""
    r, w = os.pipe()
    try:
        pid = spawn(argv, stdout=w, stderr=w)
    finally:
        os.close(w)
    chunks: list[bytes] = []
    with os.fdopen(r, "rb") as out:
        while True:
            data = out.read1(65536)
            if not data:
                break
            chunks.append(data)
    status = reaper.wait(pid, timeout)
    if status is None:
        os.kill(pid, 9)
        status = reaper.wait(pid) or 137
    return status, b"".join(chunks).decode(errors="replace")
