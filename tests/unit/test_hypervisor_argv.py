"""VMI → QEMU argv, against reviewed fixtures; and QEMU itself accepts every fixture's argv.

Fixtures: tests/unit/fixtures/hypervisor/<name>.yaml (a defaulted VMI) and <name>.argv.json
(the expected argv). After a deliberate change, regenerate with
    .venv/bin/python tests/unit/test_hypervisor_argv.py --regenerate
and review the diff by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from qemu.qmp import ConnectError, QMPClient, Runstate

from kubevisor.hypervisor.argv import LaunchError, build_argv, check_launchable, guest_memory_mib
from kubevisor.hypervisor.firmware import efi_of, ovmf_code_for, ovmf_vars_template_for
from kubevisor.hypervisor.model import LaunchEnv, PortForward, VolumeSource

FIXTURES = Path(__file__).parent / "fixtures" / "hypervisor"
FIXTURE_RUN_DIR = Path("/run/kubevisor/vms")
FIXTURE_IMAGES = Path("/var/lib/kubevisor/volumes")
RAW_VOLUMES = ("cloudInitNoCloud", "cloudInitConfigDrive", "hostDisk")


def load_vmi(name: str) -> dict[str, Any]:
    vmi: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return vmi


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.yaml"))


def fixture_env(vmi: dict[str, Any], run_dir: Path, images: Path, ssh_port: int = 2222) -> LaunchEnv:
    """The LaunchEnv storage and the launcher would produce, with paths under the given roots."""
    meta = vmi["metadata"]
    accel = meta.get("annotations", {}).get("test.kubevisor.io/accel", "tcg")
    volumes = {}
    for vol in vmi["spec"].get("volumes", []):
        raw = any(k in vol for k in RAW_VOLUMES)
        suffix = "iso" if "cloudInit" in "".join(vol) or vol["name"].endswith("-iso") else "img"
        volumes[vol["name"]] = VolumeSource(
            path=images / f"{vol['name']}.{'qcow2' if not raw else suffix}",
            format="raw" if raw else "qcow2",
        )
    efi = efi_of(vmi)
    kernel_boot = vmi["spec"]["domain"].get("firmware", {}).get("kernelBoot")
    return LaunchEnv(
        accel=accel,
        run_dir=run_dir,
        volumes=volumes,
        port_forwards=(PortForward("tcp", "127.0.0.1", ssh_port, 22),),
        ovmf_code=ovmf_code_for(efi) if efi is not None else LaunchEnv.ovmf_code,
        ovmf_vars=run_dir / "OVMF_VARS.fd" if efi is not None else None,
        kernel=images / "kernel" if kernel_boot else None,
        initrd=images / "initrd" if kernel_boot else None,
    )


def expected_argv(name: str) -> list[str]:
    vmi = load_vmi(name)
    run_dir = FIXTURE_RUN_DIR / f"{vmi['metadata']['namespace']}_{vmi['metadata']['name']}"
    return build_argv(vmi, fixture_env(vmi, run_dir, FIXTURE_IMAGES))


@pytest.mark.parametrize("name", fixture_names())
def test_argv_matches_fixture(name: str) -> None:
    want = json.loads((FIXTURES / f"{name}.argv.json").read_text())
    assert expected_argv(name) == want


def _vmi(**domain: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "t", "namespace": "default"},
        "spec": {"domain": {"memory": {"guest": "64Mi"}, **domain}},
    }


def test_host_passthrough_needs_kvm() -> None:
    vmi = _vmi(cpu={"model": "host-passthrough"})
    with pytest.raises(LaunchError) as err:
        check_launchable(vmi, "tcg")
    assert err.value.field == "spec.domain.cpu.model"
    assert "KVM" in str(err.value) and "\n" not in str(err.value)
    check_launchable(vmi, "kvm")


@pytest.mark.parametrize(
    ("domain", "field"),
    [
        ({"machine": {"type": "virt"}}, "spec.domain.machine.type"),
        (
            {"devices": {"disks": [{"name": "a", "disk": {"bus": "ide"}}]}},
            "spec.domain.devices.disks[0].disk.bus",
        ),
        (
            {"devices": {"disks": [{"name": "a", "cdrom": {"bus": "virtio"}}]}},
            "spec.domain.devices.disks[0].cdrom.bus",
        ),
        ({"devices": {"disks": [{"name": "nope", "disk": {}}]}}, "spec.domain.devices.disks[0].name"),
        (
            {"devices": {"watchdog": {"name": "w", "i6300esb": {"action": "explode"}}}},
            "spec.domain.devices.watchdog.i6300esb.action",
        ),
        ({"memory": {"guest": "12XB"}}, "spec.domain.memory.guest"),
        ({"memory": {"guest": "1Mi"}}, "spec.domain.memory.guest"),
    ],
)
def test_launch_errors_name_the_field(domain: dict[str, Any], field: str, tmp_path: Path) -> None:
    vmi = _vmi(**domain)
    vmi["spec"]["volumes"] = [{"name": "a", "emptyDisk": {"capacity": "1Mi"}}]
    env = LaunchEnv(accel="tcg", run_dir=tmp_path, volumes={"a": VolumeSource(tmp_path / "a", "qcow2")})
    with pytest.raises(LaunchError) as err:
        build_argv(vmi, env)
    assert err.value.field == field


def test_interface_needs_pod_network() -> None:
    vmi = _vmi(devices={"interfaces": [{"name": "n", "bridge": {}}]})
    vmi["spec"]["networks"] = [{"name": "n", "pod": {}}]
    with pytest.raises(LaunchError, match=r"interfaces\[0\]\.bridge"):
        check_launchable(vmi, "tcg")
    vmi["spec"]["networks"] = [{"name": "n", "multus": {"networkName": "x"}}]
    with pytest.raises(LaunchError, match=r"interfaces\[0\]\.name"):
        check_launchable(vmi, "tcg")


def test_memory_fallback_and_units() -> None:
    assert guest_memory_mib(_vmi(memory={"guest": "1Gi"})) == 1024
    vmi = _vmi(resources={"requests": {"memory": "1G"}})
    del vmi["spec"]["domain"]["memory"]
    assert guest_memory_mib(vmi) == 954  # 10^9 bytes, rounded up to whole MiB
    assert guest_memory_mib(_vmi(memory={"guest": 268435456})) == 256


def test_paths_with_commas_stay_one_argument(tmp_path: Path) -> None:
    vmi = _vmi(devices={"disks": [{"name": "a", "disk": {}}]})
    odd = tmp_path / "a,b=c" / "disk.img"
    env = LaunchEnv(accel="tcg", run_dir=tmp_path / "run,dir", volumes={"a": VolumeSource(odd, "raw")})
    argv = build_argv(vmi, env)
    blockdev = json.loads(argv[argv.index("-blockdev") + 1])
    assert blockdev["file"]["filename"] == str(odd)
    assert f"path={tmp_path}/run,,dir/qmp.sock" in " ".join(argv)


# -- QEMU accepts the argv ---------------------------------------------------------------------


def _materialize(env: LaunchEnv, vmi: dict[str, Any]) -> None:
    """Create the files the env points at, so QEMU can open them."""
    env.run_dir.mkdir(parents=True, exist_ok=True)
    for src in env.volumes.values():
        src.path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", src.format, str(src.path), "16M"], check=True)
    if env.ovmf_vars is not None:
        efi = efi_of(vmi)
        assert efi is not None
        shutil.copyfile(ovmf_vars_template_for(efi), env.ovmf_vars)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _guest_kernel() -> Path | None:
    found = sorted(Path("/var/cache/kubevisor/assets").glob("kernel-*/bzImage"))
    return found[-1] if found else None


async def _start_and_quit(argv: list[str], qmp_socket: Path) -> str:
    """Start QEMU (paused by -S), check it over QMP, quit. Returns QEMU's error output on failure."""
    proc = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    qmp = QMPClient("argv-test")
    try:
        for _ in range(300):
            if proc.returncode is not None:
                break
            try:
                await qmp.connect(str(qmp_socket))
                break
            except ConnectError:
                await asyncio.sleep(0.05)
        if qmp.runstate != Runstate.RUNNING:
            await asyncio.wait_for(proc.wait(), 30)
            assert proc.stderr is not None
            return (await proc.stderr.read()).decode() or "QMP did not answer"
        status = await qmp.execute("query-status")
        assert isinstance(status, dict) and status["status"] == "prelaunch"
        await qmp.execute("quit")
        with contextlib.suppress(EOFError):  # QEMU hangs up right after answering `quit`
            await qmp.disconnect()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        return ""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("name", fixture_names())
async def test_qemu_accepts_fixture_argv(name: str, tmp_path: Path) -> None:
    vmi = load_vmi(name)
    env = fixture_env(vmi, tmp_path / "run", tmp_path / "images", ssh_port=_free_port())
    if env.accel == "kvm":
        env = LaunchEnv(**{**env.__dict__, "accel": "tcg"})
        vmi["spec"]["domain"]["cpu"]["model"] = "host-model"  # the rest of the argv is the same
    _materialize(env, vmi)
    if env.kernel is not None:
        kernel = _guest_kernel()
        if kernel is None:
            pytest.skip("no guest kernel built yet (kubevisor assets build)")
        env.kernel.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kernel, env.kernel)
        assert env.initrd is not None
        env.initrd.write_bytes(b"")
    argv = build_argv(vmi, env)
    stderr = await _start_and_quit(argv, env.qmp_socket)
    assert stderr == ""


def regenerate() -> None:
    for name in fixture_names():
        out = FIXTURES / f"{name}.argv.json"
        out.write_text(json.dumps(expected_argv(name), indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
    else:
        print(__doc__)
