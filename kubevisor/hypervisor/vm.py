"""One QEMU process and its guest: start, power-down with a grace period, pause/resume/reset.

The state follows QMP events, not guesses: QEMU tells us when the guest stops, resumes,
resets, panics or shuts down, and the process's exit ends it all. QEMU is started in its own
session (a Ctrl-C meant for the owner never reaches it) and recorded (pid + start time) in
the run dir as soon as it exists, so an owner that dies leaves a record the next owner acts on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubevisor import procs
from kubevisor.hypervisor.model import LaunchEnv
from kubevisor.hypervisor.qmp import QMP, QMPError, QMPUnavailable

log = logging.getLogger(__name__)

QEMU_RECORD = "qemu.json"
QEMU_LOG = "qemu.log"


class VMState(enum.Enum):
    NEW = "New"  # nothing started
    PRELAUNCH = "Prelaunch"  # QEMU runs, guest not started yet (-S)
    RUNNING = "Running"
    PAUSED = "Paused"
    SHUTTING_DOWN = "ShuttingDown"  # ACPI power-down requested, guest still running
    SHUTDOWN = "Shutdown"  # guest shut down; QEMU is exiting
    CRASHED = "Crashed"  # guest panicked
    STOPPED = "Stopped"  # QEMU exited


class VMError(RuntimeError):
    pass


def qemu_record_path(run_dir: Path) -> Path:
    return run_dir / QEMU_RECORD


class VirtualMachine:
    def __init__(self, name: str, argv: Sequence[str], env: LaunchEnv) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.state = VMState.NEW
        self.shutdown_reason: str | None = None
        self.exit_code: int | None = None
        self.record: procs.ProcessRecord | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._qmp = QMP(f"kubevisor-{name}")
        self._waiters: list[tuple[frozenset[VMState], asyncio.Future[VMState]]] = []
        self._exit_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[VMState, str, dict[str, Any]], None]] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def record_path(self) -> Path:
        return qemu_record_path(self.env.run_dir)

    @property
    def log_path(self) -> Path:
        return self.env.run_dir / QEMU_LOG

    def add_listener(self, listener: Callable[[VMState, str, dict[str, Any]], None]) -> None:
        """Called as listener(new_state, event_name, event_data) on each QMP event and on exit."""
        self._listeners.append(listener)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, qmp_timeout: float = 60.0) -> None:
        """Spawn QEMU, record it, connect QMP. With -S in argv the guest waits for `resume()`."""
        if self.state is not VMState.NEW:
            raise VMError(f"{self.name}: already started")
        self.env.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as qemu_log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=qemu_log,
                stderr=qemu_log,
                start_new_session=True,  # the owner's terminal signals are not QEMU's
            )
        self.record = procs.ProcessRecord.of(self._proc.pid, self.argv, "qemu")
        procs.write_record(self.record_path, self.record)
        self._exit_task = asyncio.create_task(self._watch_exit())
        proc = self._proc
        try:
            await self._qmp.connect(self.env.qmp_socket, qmp_timeout, alive=lambda: proc.returncode is None)
        except QMPUnavailable:
            await self.kill()
            raise VMError(f"{self.name}: QEMU did not start: {self.qemu_error()}") from None
        self._qmp.on_event(self._on_event)
        try:
            status = await self._qmp.execute("query-status")
        except (QMPError, OSError, EOFError):
            # QEMU listens on QMP before it opens disks: a start failure can end the connection here.
            await self.kill()
            raise VMError(f"{self.name}: QEMU did not start: {self.qemu_error()}") from None
        self._set(
            VMState.PRELAUNCH if status["status"] == "prelaunch" else _from_status(status["status"]),
            "query-status",
            status,
        )

    async def resume(self) -> None:
        """Start the guest (after -S) or resume it after pause()."""
        await self._qmp.execute("cont")
        if self.state in (VMState.PRELAUNCH, VMState.PAUSED):
            self._set(VMState.RUNNING, "cont", {})

    async def pause(self) -> None:
        await self._qmp.execute("stop")

    async def reset(self) -> None:
        await self._qmp.execute("system_reset")

    async def status(self) -> dict[str, Any]:
        """QEMU's own view (`query-status`): {"status": "running", "running": true, ...}."""
        result: dict[str, Any] = await self._qmp.execute("query-status")
        return result

    async def powerdown(self, grace: float) -> bool:
        """ACPI power-button press; SIGKILL if QEMU still runs after grace seconds.

        Returns True if the guest went down by itself, False if it had to be killed.
        """
        if self.state is VMState.STOPPED:
            return True
        if self.state is VMState.PRELAUNCH:
            # The guest never ran: nothing to shut down gracefully.
            await self.kill()
            return True
        with contextlib.suppress(Exception):
            await self._qmp.execute("system_powerdown")
        if await self.wait(grace):
            return True
        log.info("%s: guest did not power down within %ss; killing QEMU", self.name, grace)
        await self.kill()
        return False

    async def kill(self) -> None:
        """SIGKILL QEMU (if it still runs) and wait for it."""
        if self.record is not None:
            procs.signal_process(self.record, signal.SIGKILL)
        await self.wait(None)

    async def wait(self, timeout: float | None) -> bool:
        """Wait until QEMU has exited (and everything is cleaned); False on timeout."""
        if self._exit_task is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._exit_task), timeout)
            return True
        except TimeoutError:
            return False

    async def wait_state(self, *states: VMState, timeout: float | None = None) -> VMState:
        """Wait until the VM is in one of states (returns at once if it is already)."""
        if self.state in states:
            return self.state
        fut: asyncio.Future[VMState] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def qemu_error(self) -> str:
        """The last line of QEMU's own output (its error message when it fails to start)."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no output"
        errors = [ln for ln in lines if "qemu-system" in ln and "warning:" not in ln]
        text = (errors or lines or ["no output"])[-1]
        return text.split("qemu-system-x86_64: ", 1)[-1]

    # -- internals -------------------------------------------------------------------------------
    async def _watch_exit(self) -> None:
        assert self._proc is not None
        self.exit_code = await self._proc.wait()
        await self._qmp.close()
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.env.pidfile.unlink()  # QEMU leaves it behind when killed
        self._set(VMState.STOPPED, "exit", {"code": self.exit_code})

    def _on_event(self, name: str, data: dict[str, Any]) -> None:
        new = self.state
        if name == "STOP":
            new = VMState.PAUSED
        elif name == "RESUME":
            new = VMState.RUNNING
        elif name == "POWERDOWN":
            new = VMState.SHUTTING_DOWN
        elif name == "SHUTDOWN":
            self.shutdown_reason = str(data.get("reason", "unknown"))
            new = VMState.SHUTDOWN
        elif name == "GUEST_PANICKED":
            new = VMState.CRASHED
        if self.state is VMState.STOPPED:
            return
        # Once shutting down, a STOP (QEMU pauses while it exits) is not a pause.
        if name == "STOP" and self.state in (VMState.SHUTDOWN, VMState.CRASHED):
            new = self.state
        self._set(new, name, data)

    def _set(self, state: VMState, event: str, data: dict[str, Any]) -> None:
        self.state = state
        for listener in self._listeners:
            listener(state, event, data)
        for states, fut in self._waiters:
            if state in states and not fut.done():
                fut.set_result(state)


def _from_status(status: str) -> VMState:
    return {
        "running": VMState.RUNNING,
        "paused": VMState.PAUSED,
        "prelaunch": VMState.PRELAUNCH,
        "shutdown": VMState.SHUTDOWN,
        "guest-panicked": VMState.CRASHED,
    }.get(status, VMState.PAUSED)


def clean_stale_qemu(run_dir: Path, grace: float = 5.0) -> procs.ProcessRecord | None:
    """Kill a QEMU left by a dead owner (if its record says it still runs) and drop the record."""
    found = procs.clean(qemu_record_path(run_dir), grace)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(run_dir / "qemu.pid")
    return found
