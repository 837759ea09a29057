"""The real agent (kubevisor.agent) driven over a unix socket on the host, with the host's crun.

No VM: the agent's logic (bundles, crun create/start/exec, stdio relay, exit codes, signals) is the
same code that runs as the guest's init.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubevisor.agent import protocol as p
from kubevisor.sandbox.agent_client import AgentClient, AgentError

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("crun") or not Path("/bin/busybox").exists(),
    reason="needs root, crun and busybox",
)


PRELUDE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"cgroup2", b"/sys/fs/cgroup", b"cgroup2", 0, None) != 0:
    raise OSError(ctypes.get_errno(), "mount cgroup2")
from kubevisor.agent.server import main
sys.exit(main(sys.argv[1:]))
"""


def make_rootfs(root: Path) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin/busybox")
    for applet in ("sh", "echo", "cat", "sleep", "id", "hostname", "pwd", "env"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "dev", "tmp"):
        (rootfs / d).mkdir()
    return rootfs


def spec(rootfs: Path, args, **process):
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "cwd": "/",
            "env": ["PATH=/bin"],
            **process,
        },
        "root": {"path": str(rootfs)},
        "hostname": "agenttest",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "cgroupsPath": "/kubevisor-test/x",
        },
    }


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent")
    sock = tmp / "agent.sock"
    # The host's cgroups are a v1/v2 hybrid, which crun refuses: give the agent its own mount
    # namespace with a plain cgroup2 at /sys/fs/cgroup (the guest has exactly that).
    proc = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-c",
            PRELUDE,
            "--listen",
            str(sock),
            "--run-dir",
            str(tmp / "run"),
            "--crun-arg=--cgroup-manager=disabled",
        ]
    )
    client = AgentClient.connect(sock, timeout=20)
    yield client, make_rootfs(tmp)
    client.close()
    proc.wait(20)


def collect(stream, timeout=60):
    out, err = b"", b""
    while True:
        frame = stream.recv(timeout)
        if frame.type == p.RESPONSE:
            return out, err, frame.json()["exit_status"]
        if frame.flags & p.FLAG_STDERR:
            err += frame.payload
        else:
            out += frame.payload


def test_run_exit_code_and_streams(agent):
    client, rootfs = agent
    cfg = spec(rootfs, ["sh", "-c", "echo out; echo err >&2; hostname; exit 7"])
    client.call("create_container", container_id="c1", config=cfg)
    assert client.call("state", container_id="c1")["status"] == "created"
    stream = client.open("attach", container_id="c1", exec_id="")
    client.call("start_container", container_id="c1")
    out, err, status = collect(stream)
    assert (out, err, status) == (b"out\nagenttest\n", b"err\n", 7)
    client.call("remove_container", container_id="c1")
    with pytest.raises(AgentError, match="does not exist"):
        client.call("state", container_id="c1")


def test_output_before_attach_is_replayed_and_stdin_flows(agent):
    client, rootfs = agent
    client.call("create_container", container_id="c2", config=spec(rootfs, ["sh", "-c", "echo early; cat"]))
    client.call("start_container", container_id="c2")
    time.sleep(0.5)
    stream = client.open("attach", container_id="c2", exec_id="")
    stream.send_data(b"from stdin\n")
    stream.send_data(b"", eof=True)
    out, _, status = collect(stream)
    assert (out, status) == (b"early\nfrom stdin\n", 0)
    client.call("remove_container", container_id="c2")


def test_exec_signal_and_duplicate(agent):
    client, rootfs = agent
    client.call("create_container", container_id="c3", config=spec(rootfs, ["sleep", "1000"]))
    with pytest.raises(AgentError, match="already exists"):
        client.call("create_container", container_id="c3", config=spec(rootfs, ["true"]))
    init = client.open("attach", container_id="c3", exec_id="")
    client.call("start_container", container_id="c3")
    client.call(
        "exec_process",
        container_id="c3",
        exec_id="e1",
        process={
            "args": ["sh", "-c", "echo $((6*7)); pwd"],
            "cwd": "/tmp",
            "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
        },
    )
    ex = client.open("attach", container_id="c3", exec_id="e1")
    out, _, status = collect(ex)
    assert (out, status) == (b"42\n/tmp\n", 0)
    # TERM is ignored by a pid namespace's init without a handler (as with runc); KILL is not.
    client.call("signal", container_id="c3", exec_id="", signal=9)
    assert collect(init)[2] == 128 + 9
    client.call("remove_container", container_id="c3")


def test_bad_requests_are_errors(agent):
    client, _ = agent
    with pytest.raises(AgentError, match="unknown op"):
        client.call("nope")
    with pytest.raises(AgentError, match="invalid container_id"):
        client.call("create_container", container_id="../x", config={})
    with pytest.raises(AgentError, match="crun"):
        client.call(
            "create_container",
            container_id="bad",
            config={
                "ociVersion": "1.0.2",
                "root": {"path": "/nonexistent"},
                "process": {"args": ["x"], "cwd": "/"},
            },
        )
    assert "bad" not in client.call("list")["containers"]
