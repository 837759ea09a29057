"""`kubevisor vm run` without booting: bad specs, stale run dirs, option parsing."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevisor import procs
from kubevisor.launcher import run_cli, runner

EXAMPLE = Path(__file__).parents[2] / "examples" / "vmi-legacy.yaml"


@pytest.fixture
def run_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "run"
    monkeypatch.setenv("KUBEVISOR_RUN", str(root))
    return root


def _example() -> dict[str, Any]:
    vmi: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return vmi


def _qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _bad(mutate: Any) -> dict[str, Any]:
    vmi = copy.deepcopy(_example())
    mutate(vmi)
    return vmi


def _disks(vmi: dict[str, Any]) -> list[dict[str, Any]]:
    disks: list[dict[str, Any]] = vmi["spec"]["domain"]["devices"]["disks"]
    return disks


BAD_SPECS = {
    "unknown bus": (lambda v: _disks(v)[0]["disk"].update(bus="floppy"),
                    "spec.domain.devices.disks[0].disk.bus"),
    "disk without volume": (lambda v: _disks(v).append({"name": "extra", "disk": {}}),
                            "spec.domain.devices.disks[2]"),
    "memory 12XB": (lambda v: v["spec"]["domain"]["resources"]["requests"].update(memory="12XB"),
                    "spec.domain.resources.requests.memory"),
    "duplicate disk names": (lambda v: _disks(v).append(copy.deepcopy(_disks(v)[0])),
                             "spec.domain.devices.disks[2].name"),
    "missing image file": (lambda v: v["spec"]["volumes"][0].update(
        containerDisk=None, hostDisk={"path": "/nonexistent/disk.img", "type": "Disk"}) or
        v["spec"]["volumes"][0].pop("containerDisk"), "spec.volumes[0].hostDisk"),
    "image not in store": (lambda v: v["spec"]["volumes"][0]["containerDisk"].update(
        image="kubevisor/nope:1.0"), "spec.volumes[0].containerDisk.image"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_one_line_error_nothing_started_nothing_left(
    case: str, run_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, field = BAD_SPECS[case]
    manifest = tmp_path / "vmi.yaml"
    manifest.write_text(yaml.safe_dump(_bad(mutate)))
    before = _qemu_pids()
    rc = run_cli.main(["run", "-f", str(manifest), "--accel", "tcg"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1, err
    assert err[0].startswith("kubevisor vm run: ")
    assert field in err[0], err[0]
    assert _qemu_pids() - before == set()
    assert not (run_root / "vms" / "default_legacy").exists()


def test_unreadable_manifest(run_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.yaml").write_text("a: [unclosed")
    assert run_cli.main(["run", "-f", str(tmp_path / "x.yaml")]) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert run_cli.main(["run", "-f", str(tmp_path / "missing.yaml")]) == 1


def test_invalid_name_never_becomes_a_path(run_root: Path) -> None:
    with pytest.raises(runner.RunError, match=r"metadata\.name"):
        runner.vmi_key({"metadata": {"name": "../../etc"}})
    with pytest.raises(runner.RunError, match=r"metadata\.namespace"):
        runner.vmi_key({"metadata": {"name": "ok", "namespace": "a/b"}})


def test_stale_run_dir_is_cleaned_and_orphan_killed(run_root: Path) -> None:
    run_dir = runner.run_dir_for("default", "stale")
    run_dir.mkdir(parents=True)
    # A dead launcher and a live "QEMU" (a sleep standing in for the orphan).
    dead = subprocess.Popen(["true"])
    dead.wait()
    procs.write_record(run_dir / runner.LAUNCHER_RECORD,
                       procs.ProcessRecord(dead.pid, 1, procs.boot_id(), ("kubevisor",), "launcher"))
    orphan = subprocess.Popen(["sleep", "60"])
    procs.write_record(run_dir / "qemu.json", procs.ProcessRecord.of(orphan.pid, ["sleep"], "qemu"))
    (run_dir / "volumes").mkdir()
    (run_dir / "volumes" / "overlay.qcow2").write_bytes(b"x")
    stale = runner.claim_run_dir(run_dir)
    assert stale is not None and stale.qemu_was_alive and stale.qemu is not None
    assert stale.qemu.pid == orphan.pid
    assert orphan.wait(10) != 0
    assert sorted(p.name for p in run_dir.iterdir()) == [runner.LAUNCHER_RECORD]
    own = procs.read_record(run_dir / runner.LAUNCHER_RECORD)
    assert own is not None and own.pid == os.getpid()
    runner.remove_run_dir(run_dir)


def test_live_launcher_owns_its_run_dir(run_root: Path) -> None:
    run_dir = runner.run_dir_for("default", "busy")
    run_dir.mkdir(parents=True)
    owner = subprocess.Popen(["sleep", "60"])
    try:
        procs.write_record(run_dir / runner.LAUNCHER_RECORD,
                           procs.ProcessRecord.of(owner.pid, ["kubevisor"], "launcher"))
        with pytest.raises(runner.RunError, match="already running"):
            runner.claim_run_dir(run_dir)
        assert (run_dir / runner.LAUNCHER_RECORD).exists()
    finally:
        owner.kill()
        owner.wait()


def test_publish_parsing() -> None:
    pf = run_cli._parse_publish("2222:22")
    assert (pf.protocol, pf.host_addr, pf.host_port, pf.guest_port) == ("tcp", "127.0.0.1", 2222, 22)
    pf = run_cli._parse_publish("0.0.0.0:5353:53/udp")
    assert (pf.protocol, pf.host_addr) == ("udp", "0.0.0.0")
    with pytest.raises(runner.RunError):
        run_cli._parse_publish("22")


def test_explicit_kvm_that_cannot_work_is_a_one_line_error_and_starts_nothing(
    run_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubevisor.hypervisor import accel

    monkeypatch.setenv("KUBEVISOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        accel,
        "probe_kvm",
        lambda deadline=accel.PROBE_DEADLINE: accel.Verdict(
            False, "probe guest did not reach init within 6s under KVM", procs.boot_id(), None
        ),
    )
    before = _qemu_pids()
    rc = run_cli.main(["run", "-f", str(EXAMPLE), "--accel", "kvm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1, err
    assert err[0].startswith("kubevisor vm run: accel kvm: KVM cannot run guests on this host"), err[0]
    assert "--accel tcg" in err[0]
    assert _qemu_pids() - before == set()
    assert not (run_root / "vms" / "default_legacy").exists()
