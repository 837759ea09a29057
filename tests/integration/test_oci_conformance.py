"""kubevisor-runtime on raw OCI bundles, driven like runtime-tools' validation drives runc.

Most tests share one VM: a pod (CRI annotations) whose sandbox container holds the VM, and whose
other containers each check part of the runtime spec from inside. The kill -9 tests boot their
own single-container VMs (no annotations: one VM per container).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from oci_helpers import (
    Runtime,
    base_config,
    become_subreaper,
    runtime_wrapper,
    sandbox_leftovers,
    wait_child,
    write_bundle,
)
from oci_image import busybox_rootfs

pytestmark = pytest.mark.vm

POD = "pod1"


class ConsoleSocket:
    """The caller's end of runc's --console-socket: receives the pty master as SCM_RIGHTS."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(300)

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        self.path.unlink()

    def receive(self) -> int:
        conn, _ = self.sock.accept()
        with conn:
            name, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        assert name and len(fds) == 1, (name, fds)
        return fds[0]


def read_all(fd: int, timeout: float = 120) -> str:
    """Everything from a pty master until the other side is closed (EIO) or the timeout."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


def pod_annotations(kind: str, crio: bool = False) -> dict[str, str]:
    if crio:
        return {"io.kubernetes.cri-o.ContainerType": kind, "io.kubernetes.cri-o.SandboxID": POD}
    return {"io.kubernetes.cri.container-type": kind, "io.kubernetes.cri.sandbox-id": POD}


def vm_dirs(run_dir: Path) -> list[Path]:
    sb = run_dir / "sb"
    return sorted(sb.iterdir()) if sb.exists() else []


def qemu_pid(root: Path, sandbox_id: str) -> int:
    sandbox = json.loads((root / ".sandboxes" / sandbox_id / "sandbox.json").read_text())
    procs = json.loads((Path(sandbox["vm_dir"]) / "procs.json").read_text())
    return int(procs["qemu"]["pid"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("conf")
    run_dir = tmp / "run"
    become_subreaper()
    wrapper = runtime_wrapper(tmp / "kubevisor-runtime", {"KUBEVISOR_RUN": str(run_dir)})
    root = tmp / "state"
    rt = Runtime(wrapper, root)
    rootfs = busybox_rootfs(tmp / "rootfs")
    hostdata = tmp / "hostdata"
    hostdata.mkdir()
    (hostdata / "hello").write_text("from the host\n")
    sandbox = write_bundle(
        tmp / "b-pod", base_config(rootfs, ["sleep", "100000"], annotations=pod_annotations("sandbox"))
    )
    pod_shim = rt.create(sandbox, POD, tmp / "pod.pid", tmp / "pod.out")
    rt("start", POD)
    yield {"tmp": tmp, "root": root, "rt": rt, "rootfs": rootfs, "hostdata": hostdata, "run_dir": run_dir}
    for st in json.loads(rt("list", "--format", "json").stdout or "[]"):
        rt("delete", "--force", st["id"], check=False)
    wait_child(pod_shim)
    assert sandbox_leftovers(run_dir, root, wrapper) == []
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == []


def test_lifecycle_state_pidfile_and_exit_code(env: Any) -> None:
    rt, tmp, rootfs = env["rt"], env["tmp"], env["rootfs"]
    go = rootfs / "tmp" / "go-life"
    script = "read x; while [ ! -e /tmp/go-life ]; do sleep 0.1; done; exit $x"
    bundle = write_bundle(
        tmp / "b-life", base_config(rootfs, ["sh", "-c", script], annotations=pod_annotations("container"))
    )
    pid_file = tmp / "life.pid"
    # The runtime hands its own stdio to the container process: this pipe is the container's stdin.
    r, w = os.pipe()
    os.write(w, b"42\n")
    os.close(w)
    try:
        with (tmp / "life.out").open("w") as out:  # a file: the shim keeps the runtime's stdout
            subprocess.run(
                rt.argv("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "life"),
                stdin=r,
                stdout=out,
                stderr=out,
                check=True,
                timeout=300,
            )
    finally:
        os.close(r)
    st = rt.state("life")
    shim = int(pid_file.read_text())
    assert st["status"] == "created" and st["pid"] == shim and st["id"] == "life"
    assert st["bundle"] == str(bundle) and st["ociVersion"]
    assert st["annotations"]["io.kubernetes.cri.sandbox-id"] == POD
    assert os.waitpid(shim, os.WNOHANG) == (0, 0)  # the shim is our (subreaper's) child and alive
    rt("start", "life")
    assert rt.state("life")["status"] == "running"
    assert os.waitpid(shim, os.WNOHANG) == (0, 0)  # lives as long as the container process
    go.touch()
    assert wait_child(shim) == 42
    st = rt.state("life")
    assert st["status"] == "stopped" and st["pid"] == 0
    again = rt("start", "life", check=False)
    assert again.returncode != 0 and "stopped" in again.stderr
    rt("delete", "life")
    gone = rt("state", "life", check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    go.unlink()


def test_created_container_transitions(env: Any) -> None:
    """A created container (process set up, program not run) can be killed or deleted; a running one
    cannot be started again."""
    rt, tmp = env["rt"], env["tmp"]
    marker = env["rootfs"] / "tmp" / "ran"
    config = base_config(env["rootfs"], ["sh", "-c", "touch /tmp/ran; sleep 100000"])
    config["annotations"] = pod_annotations("container")
    bundle = write_bundle(tmp / "b-created", config)
    # kill of a created container: it stops without its program ever running
    shim = rt.create(bundle, "cr1", tmp / "cr1.pid", tmp / "cr1.out")
    assert rt.state("cr1")["status"] == "created"
    rt("kill", "cr1", "KILL")
    assert wait_child(shim) == 128 + signal.SIGKILL
    assert rt.wait_status("cr1", "stopped")["status"] == "stopped"
    assert not marker.exists()
    rt("delete", "cr1")
    # delete of a created container needs no --force (it is not running) and ends its shim
    shim = rt.create(bundle, "cr2", tmp / "cr2.pid", tmp / "cr2.out")
    rt("delete", "cr2")
    assert wait_child(shim) == 128 + signal.SIGKILL
    assert rt("state", "cr2", check=False).returncode != 0 and not marker.exists()
    # start twice: the second is refused, the container keeps running
    shim = rt.create(bundle, "cr3", tmp / "cr3.pid", tmp / "cr3.out")
    rt("start", "cr3")
    again = rt("start", "cr3", check=False)
    assert again.returncode != 0 and "running" in again.stderr
    assert rt.state("cr3")["status"] == "running"
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists()  # the program runs once it is started
    rt("delete", "--force", "cr3")
    assert wait_child(shim) == 128 + signal.SIGKILL
    marker.unlink()


def test_process_and_mounts_inside(env: Any) -> None:
    rt, tmp = env["rt"], env["tmp"]
    script = r"""
echo "env=$GREETING"
echo "cwd=$(pwd)"
echo "ids=$(id -u):$(id -g):$(id -G)"
echo "hostname=$(hostname)"
echo "nofile=$(ulimit -n):$(ulimit -Hn)"
(touch /rootfs-write) 2>/dev/null && echo rootfs=rw || echo rootfs=ro
echo x > /scratch/f && echo "tmpfs=$(cat /scratch/f):$(grep ' /scratch ' /proc/mounts | cut -d' ' -f3)"
echo "bind=$(cat /hostdata/hello)"
(echo data > /hostdata/new) 2>/dev/null && echo bindro=no || echo bindro=yes
echo "arg1=$1"
echo "arg2=$2"
echo "pid1=$(cat /proc/1/cmdline | tr '\0' ' ')"
echo "kernel=$(uname -r)"
echo "err=to-stderr" >&2
exit 3
"""
    config = base_config(
        env["rootfs"],
        ["sh", "-c", script, "sh", "two words", 'it\'s "quoted" $HOME'],
        annotations=pod_annotations("container", crio=True),
        hostname="conformance",
    )
    config["process"].update(
        env=["PATH=/bin", "GREETING=hello world"],
        cwd="/data",
        user={"uid": 1000, "gid": 1000, "additionalGids": [10, 20]},
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768}],
    )
    config["root"]["readonly"] = True
    config["mounts"] += [
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777", "size=1m"]},
        {
            "destination": "/hostdata",
            "type": "bind",
            "source": str(env["hostdata"]),
            "options": ["rbind", "ro"],
        },
    ]
    bundle = write_bundle(tmp / "b-proc", config)
    out = tmp / "proc.out"
    shim = rt.create(bundle, "proc", tmp / "proc.pid", out)
    rt("start", "proc")
    assert wait_child(shim) == 3
    lines = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert lines["env"] == "hello world"
    assert lines["cwd"] == "/data"
    assert lines["ids"] == "1000:1000:1000 10 20"
    assert lines["hostname"] == "conformance"
    assert lines["nofile"] == "512:768"
    assert lines["rootfs"] == "ro"
    assert lines["tmpfs"] == "x:tmpfs"
    assert lines["bind"] == "from the host"
    assert lines["bindro"] == "yes"
    assert lines["arg1"] == "two words"
    assert lines["arg2"] == 'it\'s "quoted" $HOME'
    assert lines["pid1"].startswith("sh -c")
    assert lines["kernel"] != os.uname().release  # the guest's kernel, not the host's
    assert lines["err"] == "to-stderr"
    assert not (env["hostdata"] / "new").exists()
    assert not (env["rootfs"] / "rootfs-write").exists()
    rt("delete", "proc")


def test_pod_containers_share_one_vm(env: Any) -> None:
    """CRI annotations (containerd's and CRI-O's) put a pod's containers into the pod's VM."""
    rt, tmp = env["rt"], env["tmp"]
    before = vm_dirs(env["run_dir"])
    assert len(before) == 1  # the pod sandbox's VM
    shims = []
    for i, crio in enumerate((False, True)):
        bundle = write_bundle(
            tmp / f"b-member{i}",
            base_config(
                env["rootfs"],
                ["sh", "-c", "cat /proc/sys/kernel/random/boot_id"],
                annotations=pod_annotations("container", crio=crio),
            ),
        )
        shims.append(rt.create(bundle, f"member{i}", tmp / f"member{i}.pid", tmp / f"member{i}.out"))
    assert vm_dirs(env["run_dir"]) == before
    for i, shim in enumerate(shims):
        rt("start", f"member{i}")
        assert wait_child(shim) == 0
    boot_ids = {(tmp / f"member{i}.out").read_text().strip() for i in range(2)}
    assert len(boot_ids) == 1 and "" not in boot_ids  # one guest kernel
    for i in range(2):
        rt("delete", f"member{i}")
    assert vm_dirs(env["run_dir"]) == before  # the pod's VM stays with its sandbox container
    # a container that names a pod which does not exist is refused, and nothing is left
    orphan = write_bundle(
        tmp / "b-orphan",
        base_config(
            env["rootfs"],
            ["true"],
            annotations={
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "nopod",
            },
        ),
    )
    r = rt("create", "--bundle", str(orphan), "orphan", check=False)
    assert r.returncode != 0 and "nopod" in r.stderr
    assert rt("state", "orphan", check=False).returncode != 0


def test_exec_kill_ps_pause_update_events(env: Any) -> None:
    rt, tmp = env["rt"], env["tmp"]
    bundle = write_bundle(
        tmp / "b-svc",
        base_config(
            env["rootfs"],
            ["sh", "-c", "trap 'echo got-usr1' USR1; while true; do sleep 0.2; done"],
            annotations=pod_annotations("container"),
        ),
    )
    out = tmp / "svc.out"
    shim = rt.create(bundle, "svc", tmp / "svc.pid", out)
    vms = vm_dirs(env["run_dir"])
    dup = rt("create", "--bundle", str(bundle), "svc", check=False, timeout=60)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    assert len(dup.stderr.strip().splitlines()) == 1
    assert vm_dirs(env["run_dir"]) == vms and rt.state("svc")["status"] == "created"  # untouched
    rt("start", "svc")
    assert rt.state("svc")["status"] == "running"
    # foreground exec: output and exit code come back through the runtime itself
    ex = rt(
        "exec", "--env", "X=y z", "--cwd", "/tmp", "svc", "sh", "-c", 'echo "$X $(pwd)"; exit 4', check=False
    )
    assert (ex.stdout, ex.returncode) == ("y z /tmp\n", 4)
    ids = rt("exec", "-u", "1000:1000", "-g", "10", "svc", "sh", "-c", "echo $(id -u):$(id -G)")
    assert ids.stdout == "1000:1000 10\n"
    # detached exec on a terminal: the pty master comes over --console-socket, as conmon gets it
    with ConsoleSocket(tmp / "console.sock") as console:
        rt(
            "exec", "--detach", "--tty", "--console-socket", str(console.path), "--pid-file",
            str(tmp / "tty.pid"), "svc", "sh", "-c", "tty; read line; echo got=$line; exit 6",
        )  # fmt: skip
        master = console.receive()
    try:
        os.write(master, b"hello\r")
        text = read_all(master)
    finally:
        os.close(master)
    assert wait_child(int((tmp / "tty.pid").read_text())) == 6
    assert "/dev/pts/" in text and "got=hello" in text, text
    # detached exec with a process.json and a pid-file, like conmon
    proc_json = tmp / "exec.json"
    proc_json.write_text(
        json.dumps(
            {"args": ["sh", "-c", "exit 9"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
        )
    )
    rt("exec", "--process", str(proc_json), "--detach", "--pid-file", str(tmp / "exec.pid"), "svc")
    assert wait_child(int((tmp / "exec.pid").read_text())) == 9
    assert json.loads(rt("ps", "--format", "json", "svc").stdout)[0] == shim
    stats = json.loads(rt("events", "--stats", "svc").stdout)
    assert stats["type"] == "stats" and stats["data"]["memory"]["usage"]["usage"] > 0
    rt("update", "--memory", str(64 << 20), "svc")
    refused = rt("update", "--blkio-weight", "100", "svc", check=False)
    assert refused.returncode != 0 and "cannot be changed" in refused.stderr
    rt("pause", "svc")
    assert rt.state("svc")["status"] == "paused"
    rt("resume", "svc")
    assert rt.state("svc")["status"] == "running"
    rt("kill", "svc", "USR1")
    running = rt("delete", "svc", check=False)
    assert running.returncode != 0 and "not stopped" in running.stderr
    rt("kill", "--all", "svc", "9")
    assert wait_child(shim) == 128 + signal.SIGKILL
    assert "got-usr1" in out.read_text()
    assert rt.state("svc")["status"] == "stopped"
    rt("delete", "svc")


def test_bad_input_one_line_error_and_nothing_left(env: Any) -> None:
    rt, tmp, root = env["rt"], env["tmp"], env["root"]
    before = vm_dirs(env["run_dir"])
    bad = tmp / "b-bad"
    bad.mkdir()
    cases: list[tuple[list[str], str]] = []
    (bad / "config.json").write_text("{not json")
    cases.append((["create", "--bundle", str(bad), "bad1"], "invalid JSON"))
    cases.append((["create", "--bundle", str(tmp / "no-such-bundle"), "bad1"], "no such file"))
    for verb in (["start"], ["state"], ["kill"], ["delete"], ["exec"]):
        cases.append(([*verb, "nosuch", *(["true"] if verb == ["exec"] else [])], "does not exist"))
    cases.append((["kill", POD, "NOSIG"], "invalid signal"))
    cases.append((["create", "--bundle", str(bad), "../evil"], "invalid container id"))
    for args, needle in cases:
        r = rt(*args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    tty_config = base_config(env["rootfs"], ["sh"])
    tty_config["process"]["terminal"] = True
    no_args = base_config(env["rootfs"], ["sh"])
    no_args["process"]["args"] = []
    missing_bind = base_config(env["rootfs"], ["true"], annotations=pod_annotations("container"))
    missing_bind["mounts"].append(
        {"destination": "/x", "type": "bind", "source": str(tmp / "no-such-dir"), "options": ["rbind"]}
    )
    spec_cases: list[tuple[Any, str]] = [
        (base_config(tmp / "no-such-rootfs", ["true"]), "root.path"),  # missing rootfs
        ({"ociVersion": "1.0.2", "process": {"args": ["true"], "cwd": "/"}}, "root.path is required"),
        ([1, 2], "not a JSON object"),
        (dict(base_config(env["rootfs"], ["true"]), mounts={"a": 1}), "mounts must be a list"),
        (tty_config, "console-socket"),  # a terminal without a console socket
        (no_args, "process.args"),
        # the pod's VM is booted: the failure comes after the share was set up there
        (missing_bind, "mounts[3].source"),
        # a process that cannot start fails create (crun's error), and its own VM is torn down again
        (base_config(env["rootfs"], ["/no/such/binary"]), "/no/such/binary"),
    ]
    for i, (config_json, needle) in enumerate(spec_cases):
        (bad / "config.json").write_text(json.dumps(config_json))
        r = rt("create", "--bundle", str(bad), f"bad{i}", check=False)
        assert r.returncode != 0 and needle in r.stderr, (needle, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert vm_dirs(env["run_dir"]) == before, needle
        assert rt("state", f"bad{i}", check=False).returncode != 0
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [POD]
    assert sorted(p.name for p in (root / ".sandboxes").iterdir()) == [POD]
    pod = json.loads((root / ".sandboxes" / POD / "sandbox.json").read_text())
    assert pod["containers"] == [POD]  # the failed member is no longer in the pod's VM
    shared = Path(pod["vm_dir"]) / "shared"
    assert sorted(p.name for p in shared.iterdir()) == [POD]  # nor is its share
    assert rt.state(POD)["status"] == "running"


@pytest.mark.parametrize("victim", ["shim", "qemu"])
def test_kill9_reads_stopped_and_force_delete_cleans(env: Any, victim: str) -> None:
    rt, tmp = env["rt"], env["tmp"]
    cid = f"k9{victim}"
    before = vm_dirs(env["run_dir"])
    bundle = write_bundle(tmp / f"b-{cid}", base_config(env["rootfs"], ["sleep", "100000"]))
    shim = rt.create(bundle, cid, tmp / f"{cid}.pid", tmp / f"{cid}.out")
    rt("start", cid)
    mine = [d for d in vm_dirs(env["run_dir"]) if d not in before]
    assert len(mine) == 1  # no annotations: a VM of its own
    assert rt.state(cid)["status"] == "running"
    if victim == "shim":
        os.kill(shim, signal.SIGKILL)
        assert wait_child(shim) == 128 + signal.SIGKILL
    else:
        os.kill(qemu_pid(env["root"], cid), signal.SIGKILL)
        assert wait_child(shim) == 128 + signal.SIGKILL  # the shim reports the lost VM as killed
    st = rt.state(cid)
    assert st["status"] == "stopped" and st["pid"] == 0
    rt("delete", "--force", cid)
    assert vm_dirs(env["run_dir"]) == before
    assert sandbox_leftovers(mine[0]) == []
    assert not (env["root"] / cid).exists() and not (env["root"] / ".sandboxes" / cid).exists()
