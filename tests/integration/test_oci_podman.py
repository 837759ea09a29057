"""podman (Debian's podman + conmon) running containers with kubevisor-runtime: one VM each.

The image is built here from busybox-static with `podman import` (no registry). podman gets its
own storage, run and tmp directories, so the host's podman state is not touched.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import subprocess
import termios
import time
from typing import Any

import pytest
from oci_helpers import Podman, runtime_wrapper, settled_leftovers, state_left
from oci_image import busybox_image_tar

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        not (shutil.which("podman") and shutil.which("conmon")), reason="needs podman and conmon"
    ),
]

IMAGE = "localhost/kv-busybox:test"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("podman")
    run_dir = tmp / "run"
    root = tmp / "runtime-root"
    wrapper = runtime_wrapper(tmp / "kubevisor-runtime", {"KUBEVISOR_RUN": str(run_dir)}, root=root)
    podman = Podman(tmp, wrapper)
    podman("import", str(busybox_image_tar(tmp)), IMAGE)
    yield {"tmp": tmp, "podman": podman, "run_dir": run_dir, "wrapper": wrapper, "root": root}
    podman.remove_containers()
    leftovers = settled_leftovers(run_dir, wrapper, tmp / "runroot") + state_left(root)
    podman.remove_images_and_storage()
    assert leftovers == []


def nothing_left(env: Any) -> list[str]:
    """No VM, shim, monitor, virtiofsd, socket or mount of ours, and no runtime state."""
    return settled_leftovers(env["run_dir"], env["wrapper"]) + state_left(env["root"])


def run(env: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    podman: Podman = env["podman"]
    return podman("run", "--rm", "--network", "none", *args, check=check)


def test_echo_exit_code_guest_kernel_and_isolation(env: Any) -> None:
    assert run(env, IMAGE, "echo", "hi").stdout == "hi\n"
    assert run(env, IMAGE, "sh", "-c", "exit 7", check=False).returncode == 7
    kernel = run(env, IMAGE, "sh", "-c", "uname -r; echo; ps -o pid,comm").stdout
    release, _, ps = kernel.partition("\n\n")
    assert release.strip() and release.strip() != os.uname().release
    names = [line.split()[1] for line in ps.strip().splitlines()[1:]]
    assert "ps" in names and set(names) <= {"sh", "ps"}, ps  # only the container's own processes
    assert env["run_dir"].exists() and env["root"].exists() and nothing_left(env) == []


def test_no_host_process_visible_even_without_a_pid_namespace(env: Any) -> None:
    """--pid host drops the container's PID namespace: under runc it would see the host's
    processes; here it sees the guest's (its agent, its kernel threads) and none of the host's."""
    every_cmdline = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$f; echo; done"
    marker = subprocess.Popen(["sleep", "31337"], stdin=subprocess.DEVNULL)
    try:
        out = run(env, "--pid", "host", IMAGE, "sh", "-c", every_cmdline).stdout
    finally:
        marker.kill()
        marker.wait()
    assert "kvagent" in out  # the guest's PID 1, the agent: this is the VM's process table
    for host_only in ("sleep 31337", "conmon", "podman", "qemu-system", "virtiofsd", "pytest"):
        assert host_only not in out, (host_only, out)
    assert nothing_left(env) == []


def read_until(fd: int, needle: bytes, timeout: float = 120, buf: bytes = b"") -> bytes:
    """buf and what more is read from fd until needle is in it (output may come in any chunks)."""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen; got {buf[-400:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {needle!r}; got {buf[-400:]!r}")
            buf += chunk
    return buf


def test_interactive_terminal(env: Any) -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x18\x00\x50\x00\x00\x00\x00\x00")  # 24 x 80

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    podman: Podman = env["podman"]
    proc = subprocess.Popen(
        podman.argv("run", "-it", "--rm", "--name", "tty1", "--network", "none", IMAGE, "sh"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_tty,
    )
    os.close(slave)
    try:
        os.write(master, b"echo calc=$((6*7)); tty; stty size\n")
        out = read_until(master, b"calc=42")
        out = read_until(master, b"24 80", buf=out)
        assert b"/dev/pts/" in out
        os.write(master, b"exit 3\n")
        assert proc.wait(120) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            podman("rm", "--force", "--time", "0", "--ignore", "tty1", check=False)  # not left to others
        os.close(master)


def test_detached_exec_logs_kill_stop_rm(env: Any) -> None:
    podman: Podman = env["podman"]
    script = (
        "trap 'echo got-usr1' USR1; trap 'echo ignoring-term' TERM; echo started; while :; do sleep 0.2; done"
    )
    podman("run", "-d", "--name", "svc", "--network", "none", IMAGE, "sh", "-c", script)
    cid = podman("inspect", "--format", "{{.Id}}", "svc").stdout.strip()
    assert (env["root"] / cid / "state.json").exists()  # the wrapper's --root is where state goes
    deadline = time.monotonic() + 60
    while "started" not in podman("logs", "svc").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "started" in podman("logs", "svc").stdout
    assert podman("exec", "svc", "sh", "-c", "echo $((1+2))").stdout == "3\n"
    assert podman("exec", "svc", "sh", "-c", "exit 5", check=False).returncode == 5
    podman("kill", "-s", "USR1", "svc")
    while "got-usr1" not in podman("logs", "svc").stdout and time.monotonic() < deadline + 60:
        time.sleep(0.2)
    assert "got-usr1" in podman("logs", "svc").stdout
    # TERM is trapped and ignored: stop escalates to KILL after the timeout
    podman("stop", "--time", "2", "svc")
    inspect = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "svc").stdout.split()
    assert inspect == ["exited", "137"]
    assert "ignoring-term" in podman("logs", "svc").stdout
    podman("rm", "svc")
    # rm -f of a running container
    podman("run", "-d", "--name", "svc2", "--network", "none", IMAGE, "sleep", "100000")
    podman("rm", "-f", "svc2")
    assert podman("ps", "-a", "--format", "{{.Names}}").stdout.strip() == ""
    assert nothing_left(env) == []
