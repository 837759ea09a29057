"""Process records: identity by start time, atomic writes, adopt/clean, kill with grace."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from kubevisor import procs


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


def test_record_roundtrip_and_liveness(tmp_path: Path) -> None:
    p = _sleeper()
    try:
        rec = procs.ProcessRecord.of(p.pid, ["sleep", "60"], "test")
        path = tmp_path / "sleep.json"
        procs.write_record(path, rec)
        assert procs.read_record(path) == rec
        assert procs.is_alive(rec)
        assert [f.name for f in tmp_path.iterdir()] == ["sleep.json"]  # no temp file left
    finally:
        p.kill()
        p.wait()
    assert not procs.is_alive(rec)


def test_reused_pid_is_not_alive() -> None:
    p = _sleeper()
    try:
        rec = procs.ProcessRecord.of(p.pid, ["sleep"], "test")
        # Same pid, different start time: what a reused pid looks like.
        assert not procs.is_alive(replace(rec, start_time=rec.start_time + 1))
        assert not procs.signal_process(replace(rec, start_time=rec.start_time + 1), 15)
        assert not procs.is_alive(replace(rec, boot_id="another-boot"))
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_zombie_is_not_alive() -> None:
    p = _sleeper()
    rec = procs.ProcessRecord.of(p.pid, ["sleep"], "test")
    p.kill()
    # Not reaped yet: a zombie with the same start time.
    assert procs.wait_gone(rec, 10)
    assert not procs.is_alive(rec)


def test_kill_with_grace_escalates_to_sigkill() -> None:
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    rec = procs.ProcessRecord.of(p.pid, ["python"], "test")
    assert procs.kill_with_grace(rec, grace=0.5) is True
    assert p.wait(5) == -9


def test_kill_with_grace_polite_process() -> None:
    p = _sleeper()
    rec = procs.ProcessRecord.of(p.pid, ["sleep"], "test")
    assert procs.kill_with_grace(rec, grace=10) is False
    assert p.wait(5) == -15


def test_adopt_and_clean(tmp_path: Path) -> None:
    p = _sleeper()
    path = tmp_path / "rec.json"
    procs.write_record(path, procs.ProcessRecord.of(p.pid, ["sleep"], "test"))
    assert procs.adopt(path) is not None
    found = procs.clean(path, grace=5)
    assert found is not None and found.pid == p.pid
    assert not path.exists()
    assert p.wait(5) == -15
    # A record of a dead process: adopt removes it.
    procs.write_record(path, found)
    assert procs.adopt(path) is None
    assert not path.exists()
    assert procs.clean(path) is None


def test_unreadable_record_is_none(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert procs.read_record(path) is None
