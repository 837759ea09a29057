"""The KVM probe boots a real guest; `auto` follows its verdict (TCG on these nested hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor.hypervisor import accel

pytestmark = pytest.mark.vm


def test_probe_guest_really_boots_under_tcg() -> None:
    # The probe is a real kernel + /init printing the marker: under TCG, given time, it arrives.
    seconds, error = accel.boot_probe_guest("tcg", deadline=300)
    assert error == ""
    assert seconds is not None


def test_auto_follows_the_kvm_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEVISOR_CACHE", str(tmp_path))
    verdict = accel.kvm_verdict()
    assert accel.verdict_path().exists()
    assert accel.resolve("auto") == ("kvm" if verdict.kvm else "tcg")
    if not verdict.kvm:
        assert verdict.probe_seconds is None
        with pytest.raises(accel.AccelError, match="KVM cannot run guests"):
            accel.resolve("kvm")
    assert accel.kvm_verdict() == verdict  # from the cache: same verdict, no new probe
