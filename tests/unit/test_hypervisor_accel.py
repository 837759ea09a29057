"""Accelerator verdict caching and resolution (the probe itself: tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubevisor import procs
from kubevisor.hypervisor import accel


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[bool]:
    """Point the cache at tmp_path and count probes; the probe answers 'no KVM'."""
    monkeypatch.setenv("KUBEVISOR_CACHE", str(tmp_path))
    calls: list[bool] = []

    def fake_probe(deadline: float = accel.PROBE_DEADLINE) -> accel.Verdict:
        calls.append(True)
        return accel.Verdict(False, "probe guest did not reach init", procs.boot_id(), None)

    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    return calls


def test_verdict_is_cached_per_boot(probes: list[bool]) -> None:
    assert accel.resolve("auto") == "tcg"
    assert accel.resolve("auto") == "tcg"
    assert len(probes) == 1
    cached = json.loads(accel.verdict_path().read_text())
    assert cached["boot_id"] == procs.boot_id() and cached["kvm"] is False
    # After a reboot (another boot id) the cached verdict no longer counts.
    accel.verdict_path().write_text(json.dumps({**cached, "boot_id": "previous-boot", "kvm": True}))
    assert accel.resolve("auto") == "tcg"
    assert len(probes) == 2


def test_explicit_kvm_that_cannot_work_is_a_clear_error(probes: list[bool]) -> None:
    with pytest.raises(accel.AccelError) as err:
        accel.resolve("kvm")
    assert "KVM cannot run guests" in str(err.value) and "--accel tcg" in str(err.value)


def test_tcg_needs_no_probe(probes: list[bool]) -> None:
    assert accel.resolve("tcg") == "tcg"
    assert probes == []


def test_corrupt_cache_is_reprobed(probes: list[bool]) -> None:
    accel.verdict_path().parent.mkdir(parents=True)
    accel.verdict_path().write_text("{garbage")
    assert accel.resolve("auto") == "tcg"
    assert len(probes) == 1
