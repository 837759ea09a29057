"""containerd (Debian's, with its io.containerd.runc.v2 shim) running kubevisor-runtime via
`ctr run --runc-binary`. The test starts its own containerd (own root, state, socket; the CRI
plugin off) and imports an OCI image tarball it builds from busybox-static.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from oci_helpers import runtime_wrapper, settled_leftovers, state_left
from oci_image import busybox_rootfs, oci_archive

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("containerd", "ctr", "containerd-shim-runc-v2")),
        reason="needs containerd, ctr and containerd-shim-runc-v2",
    ),
]

IMAGE = "localhost/kv-busybox:ctr"
NAMESPACE = "kvtest"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("ctrd")
    run_dir = tmp / "run"
    wrapper = runtime_wrapper(tmp / "kubevisor-runtime", {"KUBEVISOR_RUN": str(run_dir)})
    sock = tmp / "c.sock"
    (tmp / "config.toml").write_text(
        "version = 2\n"
        f'root = "{tmp / "root"}"\n'
        f'state = "{tmp / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  address = ""\n'
        '[metrics]\n  address = ""\n'
    )
    with (tmp / "containerd.log").open("wb") as log:
        daemon = subprocess.Popen(
            ["containerd", "--config", str(tmp / "config.toml")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    ctr = ["ctr", "--address", str(sock), "--namespace", NAMESPACE]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
            assert daemon.poll() is None, (tmp / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.2)
        image = oci_archive(busybox_rootfs(tmp / "rootfs"), tmp / "image.tar", IMAGE)
        subprocess.run(
            [*ctr, "images", "import", "--snapshotter", "native", str(image)], check=True, timeout=120
        )
        yield {"tmp": tmp, "ctr": ctr, "wrapper": wrapper, "run_dir": run_dir}
        for task in ("svc",):
            subprocess.run([*ctr, "task", "kill", "--signal", "KILL", task], capture_output=True, check=False)
            subprocess.run([*ctr, "task", "delete", "--force", task], capture_output=True, check=False)
            subprocess.run([*ctr, "containers", "delete", task], capture_output=True, check=False)
        leftovers = settled_leftovers(run_dir, wrapper) + state_left(runtime_root(tmp))
    finally:
        daemon.terminate()
        daemon.wait(30)
        subprocess.run(
            ["umount", "--recursive", "--lazy", str(tmp / "root")], capture_output=True, check=False
        )
    assert leftovers == []


def runtime_root(tmp: Path) -> Path:
    """containerd's shim calls the runtime with --root <runc-root>/<namespace>."""
    return tmp / "runtime-root" / NAMESPACE


def nothing_left(env: Any) -> list[str]:
    return settled_leftovers(env["run_dir"], env["wrapper"]) + state_left(runtime_root(env["tmp"]))


def run_args(env: Any, *extra: str) -> list[str]:
    return [
        *env["ctr"], "run", "--snapshotter", "native",
        "--runc-binary", str(env["wrapper"]), "--runc-root", str(runtime_root(env["tmp"]).parent),
        *extra,
    ]  # fmt: skip


def test_ctr_run_output_exit_code_and_guest_kernel(env: Any) -> None:
    proc = subprocess.run(
        [*run_args(env, "--rm", IMAGE, "one"), "sh", "-c", "echo hi; uname -r; exit 3"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    hi, release = proc.stdout.split()
    assert (
        hi == "hi"
        and release != subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    )
    assert nothing_left(env) == []


def test_ctr_detached_task_exec_kill(env: Any) -> None:
    ctr = env["ctr"]
    subprocess.run(
        [*run_args(env, "--detach", "--null-io", IMAGE, "svc"), "sleep", "100000"], check=True, timeout=300
    )
    tasks = subprocess.run([*ctr, "task", "ls"], capture_output=True, text=True, check=True).stdout
    assert "svc" in tasks and "RUNNING" in tasks
    assert (runtime_root(env["tmp"]) / "svc" / "state.json").exists()  # the root nothing_left checks
    ex = subprocess.run(
        [*ctr, "task", "exec", "--exec-id", "e1", "svc", "sh", "-c", "echo $((20+22)); exit 4"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (ex.stdout, ex.returncode) == ("42\n", 4), ex.stderr
    subprocess.run([*ctr, "task", "kill", "--signal", "KILL", "svc"], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while "STOPPED" not in subprocess.run([*ctr, "task", "ls"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    subprocess.run([*ctr, "task", "delete", "svc"], check=True, timeout=120)
    subprocess.run([*ctr, "containers", "delete", "svc"], check=True, timeout=60)
    assert nothing_left(env) == []
