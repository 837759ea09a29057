"""The verbs of kubevisor-runtime that touch sandboxes (create, start, kill, delete, exec, ...).

Imported only by verbs that need it, so that `state`, `list`, `features` stay cheap.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kubevisor.oci.state import (
    HELD_LOCK_FDS,
    ContainerRecord,
    NoSuchContainer,
    Store,
    now_rfc3339,
    validate_id,
)
from kubevisor.sandbox.agent_client import AgentClient, AgentError
from kubevisor.sandbox.pidrec import ProcRecord
from kubevisor.sandbox.sandbox import Sandbox, SandboxError
from kubevisor.sandbox.specconv import SpecError, guest_config, validate, validate_process

# CRI annotations that group a pod's containers into one sandbox (see research/kata.md §1.1).
CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
SANDBOX_ID_KEYS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID")


class RuntimeFailure(Exception):
    """A verb failed; the message is printed as the one-line error."""


def load_config(bundle: Path) -> dict[str, Any]:
    path = bundle / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise RuntimeFailure(f"{path}: no such file") from None
    except ValueError as exc:
        raise RuntimeFailure(f"{path}: invalid JSON: {exc}") from None
    try:
        validate(config)
    except SpecError as exc:
        raise RuntimeFailure(str(exc)) from None
    if not isinstance(config.get("process"), dict):
        raise RuntimeFailure("config.json: process is required")
    return config


def pod_membership(annotations: dict[str, str], cid: str) -> tuple[str, bool]:
    """(sandbox id, whether this container creates the sandbox)."""
    ctype = next((annotations[k] for k in CONTAINER_TYPE_KEYS if k in annotations), "")
    sid = next((annotations[k] for k in SANDBOX_ID_KEYS if k in annotations), "")
    if ctype == "container" and sid and sid != cid:
        return sid, False
    return cid, True


def send_console(console_socket: str, master: int) -> None:
    """runc's console-socket protocol: one message, the pty name as data, the master as SCM_RIGHTS."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(console_socket)
        except OSError as exc:
            raise RuntimeFailure(f"--console-socket {console_socket}: {exc.strerror or exc}") from None
        sock.sendmsg([b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])


def fork_shim(
    store: Store, sb: Sandbox, cid: str, exec_id: str, tty_fd: int | None, exit_file: Path | None
) -> ProcRecord:
    """Fork the shim (a child of this process, so it is reparented to the caller's subreaper)."""
    from kubevisor.oci.shim import run_shim

    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the shim
        code = 255
        try:
            os.close(ready_r)
            for fd in list(HELD_LOCK_FDS):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if tty_fd is not None:
                # The pty is the process's stdio (as runc's container process has it): the
                # caller's stdin/stdout/stderr are let go, or a caller reading them to EOF hangs.
                for std in (0, 1, 2):
                    if std != tty_fd:
                        os.dup2(tty_fd, std)
            os.write(ready_w, b"1")
            os.close(ready_w)
            code = run_shim(sb.paths.agent_socket, cid, exec_id, tty_fd, exit_file, session=True)
        finally:
            os._exit(code)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as r:
        if r.read(1) != b"1":
            raise RuntimeFailure("the shim failed to start")
    return ProcRecord.of(pid)


def write_pid_file(path: str, pid: int) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(str(pid))
    os.replace(tmp, target)


def vm_overrides() -> dict[str, Any]:
    mem = os.environ.get("KUBEVISOR_SANDBOX_MEMORY_MIB")
    return {"memory_mib": int(mem)} if mem else {}


def create(
    store: Store,
    cid: str,
    bundle: Path,
    pid_file: str | None,
    console_socket: str | None,
    log_file: Path | None,
) -> None:
    validate_id(cid)  # before anything else, like runc
    bundle = bundle.resolve()
    config = load_config(bundle)
    root_path = Path(config["root"]["path"])
    rootfs = root_path if root_path.is_absolute() else bundle / root_path
    if not rootfs.is_dir():
        raise RuntimeFailure(f"root.path: {rootfs} does not exist or is not a directory")
    terminal = bool(config["process"].get("terminal"))
    if terminal and not console_socket:
        raise RuntimeFailure("process.terminal is true but no --console-socket was given")
    annotations = {k: str(v) for k, v in (config.get("annotations") or {}).items()}
    sid, owns_sandbox = pod_membership(annotations, cid)

    store.reserve(cid)
    rec = ContainerRecord(
        id=cid,
        bundle=str(bundle),
        rootfs=str(rootfs),
        sandbox_id=sid,
        created=now_rfc3339(),
        annotations=annotations,
    )
    sb: Sandbox | None = None
    created_in_guest = False
    shim: ProcRecord | None = None
    try:
        with store.lock(cid):
            store.save(rec)
            if owns_sandbox:
                from kubevisor.sandbox.sandbox import default_vm_config

                sb = Sandbox.create(sid, store.sandbox_dir(sid), default_vm_config(**vm_overrides()))
                sb.containers.append(cid)
                sb.save()
            else:
                with store.lock(f"sandbox-{sid}"):
                    try:
                        sb = Sandbox.load(store.sandbox_dir(sid))
                    except SandboxError:
                        raise RuntimeFailure(f"sandbox {sid!r} of this container does not exist") from None
                    if not sb.alive():
                        raise RuntimeFailure(f"sandbox {sid!r} is not running")
                    sb.containers.append(cid)
                    sb.save()
            gcfg, shared = guest_config(config, cid)
            sb.share(rootfs, f"{cid}/rootfs")
            for m in shared:
                try:
                    sb.share(Path(m.source), m.share_rel)
                except (SandboxError, OSError) as exc:
                    index = m.share_rel.rsplit("/", 1)[-1]
                    raise RuntimeFailure(f"mounts[{index}].source: {exc}") from None
            with sb.agent() as agent:
                result = agent.call("create_container", container_id=cid, config=gcfg)
            created_in_guest = True
            rec.guest_pid = int(result.get("pid", 0))
            tty_fd: int | None = None
            if terminal:
                assert console_socket is not None
                master, tty_fd = os.openpty()
                try:
                    send_console(console_socket, master)
                finally:
                    os.close(master)
            shim = fork_shim(store, sb, cid, "", tty_fd, store.dir(cid) / "exit")
            if tty_fd is not None:
                os.close(tty_fd)
            rec.shim = shim.to_json()
            rec.status = "created"
            store.save(rec)
            if pid_file:
                write_pid_file(pid_file, shim.pid)
    except BaseException:
        if shim is not None:
            shim.kill_and_wait(timeout=2, first=signal.SIGKILL)
        if sb is not None:
            if created_in_guest:
                with contextlib.suppress(AgentError, OSError), sb.agent(1.0) as agent:
                    agent.call("remove_container", container_id=cid, force=True, timeout=30)
            sb.unshare_container(cid)
            if owns_sandbox:
                sb.destroy()
            else:
                with store.lock(f"sandbox-{sid}"), contextlib.suppress(SandboxError):
                    sb = Sandbox.load(store.sandbox_dir(sid))
                    if cid in sb.containers:
                        sb.containers.remove(cid)
                        sb.save()
        if owns_sandbox:
            with contextlib.suppress(OSError):
                store.sandbox_dir(sid).rmdir()
        remove_state_dir(store, cid)
        raise


def remove_state_dir(store: Store, cid: str) -> None:
    d = store.dir(cid)
    for f in d.glob("*"):
        with contextlib.suppress(OSError):
            f.unlink()
    with contextlib.suppress(OSError):
        d.rmdir()


def sandbox_of(store: Store, rec: ContainerRecord) -> Sandbox:
    try:
        return Sandbox.load(store.sandbox_dir(rec.sandbox_id))
    except SandboxError:
        raise RuntimeFailure(f"sandbox of container {rec.id!r} is gone") from None


def agent_for(store: Store, rec: ContainerRecord) -> AgentClient:
    sb = sandbox_of(store, rec)
    if not sb.alive():
        raise RuntimeFailure(f"container {rec.id!r}: its VM is not running")
    return sb.agent()


def start(store: Store, cid: str) -> None:
    with store.lock(cid):
        rec = store.load(cid)
        status = store.status(rec)
        if status != "created":
            raise RuntimeFailure(f"cannot start container {cid!r}: it is {status}, not created")
        with agent_for(store, rec) as agent:
            agent.call("start_container", container_id=cid)
        rec.status = "running"
        store.save(rec)


SIGNALS = {s.name.removeprefix("SIG"): int(s) for s in signal.Signals}


def parse_signal(value: str) -> int:
    v = value.strip().upper()
    if v.isdigit():
        num = int(v)
        if 0 < num < 65:
            return num
    name = v.removeprefix("SIG")
    if name in SIGNALS:
        return SIGNALS[name]
    raise RuntimeFailure(f"invalid signal {value!r}")


def kill(store: Store, cid: str, sig: int, all_processes: bool) -> None:
    with store.lock(cid):
        rec = store.load(cid)
        status = store.status(rec)
        if status not in ("created", "running", "paused"):
            raise RuntimeFailure(f"container {cid!r} is not running")
        with agent_for(store, rec) as agent:
            agent.call("signal", container_id=cid, exec_id="", signal=sig, all=all_processes)


def delete(store: Store, cid: str, force: bool) -> None:
    """Like runc: an id without a record is an error, except with --force; either way a directory
    left by a create that died before writing its record is removed, so the id can be used again."""
    with store.lock(cid):
        try:
            rec = store.load(cid)
        except NoSuchContainer:
            remove_state_dir(store, cid)
            if force:
                return
            raise
        status = store.status(rec)
        if status in ("running", "paused") and not force:
            raise RuntimeFailure(f"cannot delete container {cid!r} that is not stopped: {status}")
        shims = [rec.shim_record, *(ProcRecord.from_json(e) for e in rec.execs.values())]
        for shim in shims:
            if shim is not None:
                shim.kill_and_wait(timeout=5, first=signal.SIGKILL)
        with contextlib.suppress(RuntimeFailure), store.lock(f"sandbox-{rec.sandbox_id}"):
            sb = sandbox_of(store, rec)
            if sb.alive():
                with contextlib.suppress(AgentError, OSError), sb.agent(2.0) as agent:
                    agent.call("remove_container", container_id=cid, force=True, timeout=60)
            sb.unshare_container(cid)
            if cid in sb.containers:
                sb.containers.remove(cid)
            if not sb.containers or rec.sandbox_id == cid:
                sb.destroy()
                with contextlib.suppress(OSError):
                    store.sandbox_dir(rec.sandbox_id).rmdir()
            else:
                sb.save()
        remove_state_dir(store, cid)


def exec_process(
    store: Store,
    cid: str,
    process: dict[str, Any],
    detach: bool,
    pid_file: str | None,
    console_socket: str | None,
) -> int:
    try:
        validate_process(process, "process")
    except SpecError as exc:
        raise RuntimeFailure(str(exc)) from None
    terminal = bool(process.get("terminal"))
    tty_fd: int | None = None
    own_tty = False
    if terminal and not console_socket:
        if detach or not os.isatty(0):
            raise RuntimeFailure("process.terminal is true but no --console-socket was given")
        tty_fd = 0  # foreground exec on the caller's own terminal
    for key in ("apparmorProfile", "selinuxLabel"):
        process.pop(key, None)
    exec_id = secrets.token_hex(8)
    with store.lock(cid):
        rec = store.load(cid)
        if store.status(rec) != "running":
            raise RuntimeFailure(f"cannot exec in container {cid!r}: it is {store.status(rec)}")
        sb = sandbox_of(store, rec)
        with agent_for(store, rec) as agent:
            agent.call("exec_process", container_id=cid, exec_id=exec_id, process=process)
        if terminal and console_socket:
            master, tty_fd = os.openpty()
            own_tty = True
            try:
                send_console(console_socket, master)
            finally:
                os.close(master)
        if detach:
            shim = fork_shim(store, sb, cid, exec_id, tty_fd, None)
            rec.execs[exec_id] = shim.to_json()
            store.save(rec)
            if pid_file:
                write_pid_file(pid_file, shim.pid)
            if own_tty and tty_fd is not None:
                os.close(tty_fd)
            return 0
    from kubevisor.oci.shim import run_shim

    if pid_file:
        write_pid_file(pid_file, os.getpid())
    saved = None
    if tty_fd == 0:
        import termios

        saved = termios.tcgetattr(0)
    try:
        return run_shim(sb.paths.agent_socket, cid, exec_id, tty_fd, None, session=own_tty)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def exec_spec_from_args(
    store: Store,
    cid: str,
    args: list[str],
    tty: bool,
    cwd: str | None,
    env: list[str],
    user: str | None,
    gids: list[int],
    caps: list[str],
    no_new_privs: bool,
) -> dict[str, Any]:
    """An exec process.json built like runc does: the container's process, with overrides."""
    rec = store.load(cid)
    base: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        base = json.loads((Path(rec.bundle) / "config.json").read_text()).get("process", {}) or {}
    process = {
        k: v
        for k, v in base.items()
        if k in ("env", "cwd", "user", "capabilities", "rlimits", "noNewPrivileges")
    }
    process["args"] = args
    process["terminal"] = tty
    process.setdefault("cwd", "/")
    if cwd:
        process["cwd"] = cwd
    if env:
        merged = {e.split("=", 1)[0]: e for e in process.get("env", [])}
        merged.update({e.split("=", 1)[0]: e for e in env})
        process["env"] = list(merged.values())
    if user:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise RuntimeFailure(f"--user {user!r}: must be uid[:gid] (numbers)")
        process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if gids:
        process.setdefault("user", {"uid": 0, "gid": 0})["additionalGids"] = gids
    if caps:
        capset = process.setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            capset[kind] = sorted(set(capset.get(kind, [])) | set(caps))
    if no_new_privs:
        process["noNewPrivileges"] = True
    return process


def simple_op(store: Store, cid: str, op: str, new_status: str | None = None, **args: Any) -> dict[str, Any]:
    with store.lock(cid):
        rec = store.load(cid)
        status = store.status(rec)
        if status == "stopped":
            raise RuntimeFailure(f"container {cid!r} is stopped")
        with agent_for(store, rec) as agent:
            result = agent.call(op, container_id=cid, **args)
        if new_status:
            rec.status = new_status
            store.save(rec)
        return result


def ps_pids(store: Store, cid: str) -> tuple[list[int], list[int]]:
    """(host pids standing for the container's processes (shims), guest pids)."""
    rec = store.load(cid)
    host = [
        r.pid
        for r in (rec.shim_record, *(ProcRecord.from_json(e) for e in rec.execs.values()))
        if r is not None and r.alive()
    ]
    guest: list[int] = []
    if store.status(rec) != "stopped":
        with contextlib.suppress(RuntimeFailure, AgentError, OSError), agent_for(store, rec) as agent:
            guest = list(agent.call("ps", container_id=cid).get("pids", []))
    return host, guest


def stats_event(store: Store, cid: str) -> dict[str, Any]:
    rec = store.load(cid)
    with agent_for(store, rec) as agent:
        raw = agent.call("stats", container_id=cid)["stats"]
    data: dict[str, Any] = {
        "cpu": {
            "usage": {
                "total": int(raw.get("cpu.usage_usec", 0)) * 1000,
                "user": int(raw.get("cpu.user_usec", 0)) * 1000,
                "kernel": int(raw.get("cpu.system_usec", 0)) * 1000,
            }
        },
        "memory": {
            "usage": {
                "usage": raw.get("memory.current", 0),
                "limit": raw.get("memory.max", 0) if raw.get("memory.max") != "max" else 0,
            }
        },
        "pids": {"current": raw.get("pids.current", 0)},
        "guest": {k.removeprefix("guest."): v for k, v in raw.items() if k.startswith("guest.")},
    }
    return {"type": "stats", "id": cid, "data": data}


def wait_for_exit(rec_shim: ProcRecord) -> int:
    """`run` without --detach: wait for our own shim child."""
    while True:
        try:
            _, status = os.waitpid(rec_shim.pid, 0)
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            while rec_shim.alive():
                time.sleep(0.1)
            return 0
        except InterruptedError:
            continue


def die(msg: str) -> None:
    print(msg, file=sys.stderr)
