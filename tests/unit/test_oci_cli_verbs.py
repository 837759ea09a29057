"""kubevisor-runtime's verbs that need no VM (features, spec, --version, list, state, delete of an
unknown id, logging, update's refusals) and the flags podman/conmon, containerd and CRI-O pass."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubevisor.oci.main import _read_resources, build_parser, default_spec, main, verb_of
from kubevisor.oci.runtime import RuntimeFailure, parse_signal
from kubevisor.oci.state import ContainerRecord, Store
from kubevisor.sandbox.pidrec import ProcRecord
from kubevisor.sandbox.specconv import validate

REPO = Path(__file__).resolve().parents[2]


def run_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own (stderr and exit status as callers see them)."""
    return subprocess.run(
        [sys.executable, "-m", "kubevisor.oci", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0
    first, spec = r.stdout.splitlines()[:2]
    assert first.startswith("kubevisor-runtime version ") and spec == "spec: 1.1.0"


def test_features_has_what_cri_o_requires() -> None:
    r = run_cli("features")
    assert r.returncode == 0
    features = json.loads(r.stdout)
    assert (features["ociVersionMin"], features["ociVersionMax"]) == ("1.0.0", "1.1.0")
    assert {"bind", "rbind", "ro"} <= set(features["mountOptions"])
    assert {"pid", "mount", "network", "uts", "ipc"} <= set(features["linux"]["namespaces"])


def test_spec_writes_a_valid_default_and_refuses_to_overwrite(tmp_path: Path) -> None:
    r = run_cli("spec", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    validate(config)  # what create checks
    assert config["root"]["path"] == "rootfs" and config["process"]["args"] == ["sh"]
    assert {"type": "user"} not in config["linux"]["namespaces"]
    again = run_cli("spec", "--bundle", str(tmp_path))
    assert again.returncode == 1 and "exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert {"type": "user"} in default_spec(rootless=True)["linux"]["namespaces"]


def record(store: Store, cid: str, shim: ProcRecord | None, status: str) -> None:
    store.reserve(cid)
    store.save(
        ContainerRecord(
            id=cid,
            bundle=f"/bundles/{cid}",
            rootfs=f"/bundles/{cid}/rootfs",
            sandbox_id=cid,
            status=status,
            created="2026-01-01T00:00:00.000000000Z",
            shim=shim.to_json() if shim else None,
            annotations={"a": "b"},
        )
    )


def test_list_and_state_read_a_dead_shim_as_stopped(tmp_path: Path) -> None:
    store = Store(tmp_path)
    me = ProcRecord.of(os.getpid())  # a live process stands in for a shim
    record(store, "alive", me, "running")
    record(store, "dead", ProcRecord(me.pid, me.start + 1), "running")  # same pid, other process
    (tmp_path / "half").mkdir()  # a create that died before its record: not listed
    states = json.loads(run_cli("--root", str(tmp_path), "list", "--format", "json").stdout)
    assert [(s["id"], s["status"], s["pid"]) for s in states] == [
        ("alive", "running", me.pid),
        ("dead", "stopped", 0),
    ]
    assert run_cli("--root", str(tmp_path), "list", "-q").stdout.split() == ["alive", "dead"]
    table = run_cli("--root", str(tmp_path), "list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"] and len(table) == 3
    state = json.loads(run_cli("--root", str(tmp_path), "state", "dead").stdout)
    assert {k: state[k] for k in ("ociVersion", "id", "status", "pid", "bundle", "annotations")} == {
        "ociVersion": "1.1.0",
        "id": "dead",
        "status": "stopped",
        "pid": 0,
        "bundle": "/bundles/dead",
        "annotations": {"a": "b"},
    }


def test_delete_of_an_unknown_id_is_an_error_except_with_force(tmp_path: Path) -> None:
    """runc's behaviour, which podman's and containerd's cleanup paths rely on."""
    plain = run_cli("--root", str(tmp_path), "delete", "nosuch")
    assert plain.returncode == 1 and "does not exist" in plain.stderr
    assert run_cli("--root", str(tmp_path), "delete", "--force", "nosuch").returncode == 0
    (tmp_path / "half").mkdir()  # reserved by a create that died before writing its record
    (tmp_path / "half" / "state.json.123.tmp").write_text("{")
    assert run_cli("--root", str(tmp_path), "delete", "--force", "half").returncode == 0
    assert not (tmp_path / "half").exists()  # the id can be created again


def test_errors_are_one_line_on_stderr_and_in_the_log(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    text_log, json_log = tmp_path / "log.txt", tmp_path / "log.json"
    r = run_cli("--root", root, "--log", str(text_log), "state", "nosuch")
    assert r.returncode == 1 and r.stderr == "kubevisor-runtime: container 'nosuch' does not exist\n"
    assert "level=error msg=\"container 'nosuch' does not exist\"" in text_log.read_text()
    r = run_cli("--root", root, "--log", str(json_log), "--log-format", "json", "state", "nosuch")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    entry = json.loads(json_log.read_text())
    assert entry["level"] == "error" and entry["msg"] == "container 'nosuch' does not exist"
    # no --log: JSON goes to stderr, as runc does (conmon and containerd always pass --log)
    r = run_cli("--root", root, "--log-format=json", "kill", "nosuch", "KILL")
    assert r.returncode == 1
    assert json.loads(r.stderr)["msg"] == "container 'nosuch' does not exist"
    # --debug logs the call itself
    run_cli("--root", root, "--log", str(text_log), "--debug", "list")
    assert "level=debug" in text_log.read_text()
    r = run_cli("--root", root, "create", "--bogus", "x")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--bogus" in r.stderr


def test_checkpoint_and_restore_are_refused(tmp_path: Path) -> None:
    for verb in ("checkpoint", "restore"):
        r = run_cli("--root", str(tmp_path), verb, "--image-path", "/x", "c1")
        assert r.returncode == 1 and "not supported" in r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        # conmon (podman, CRI-O)
        ["--systemd-cgroup", "--log-format=json", "--log=/b/oci-log", "create", "--bundle", "/b",
         "--pid-file", "/b/pidfile", "--no-pivot", "--no-new-keyring", "--console-socket", "/s", "c1"],
        ["--log-format=json", "exec", "--pid-file", "/p", "--process", "/p.json", "--detach",
         "--console-socket", "/s", "c1"],
        # containerd's runc.v2 shim (go-runc)
        ["--root", "/run/containerd/runc/ns", "--log", "/b/log.json", "--log-format", "json",
         "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--preserve-fds", "2",
         "--pidfd-socket", "/s", "c1"],
        ["--root", "/r", "exec", "--process", "/p.json", "--pidfd-socket", "/s", "--detach", "--pid-file",
         "/p", "c1"],
        ["--root", "/r", "kill", "--all", "c1", "15"],
        ["--root", "/r", "kill", "-a", "c1", "SIGKILL"],
        ["--root", "/r", "delete", "--force", "c1"],
        ["--root", "/r", "update", "--resources", "-", "c1"],
        ["--root", "/r", "ps", "--format", "json", "c1"],
        ["--root", "/r", "events", "--stats", "c1"],
        ["--root", "/r", "events", "--interval", "1s", "c1"],
        ["--root", "/r", "pause", "c1"],
        ["--root", "/r", "resume", "c1"],
        # runc's exec flags, all of them
        ["exec", "--cwd", "/tmp", "-e", "A=1", "--env", "B=2", "-t", "-u", "1000:1000", "-g", "10",
         "--additional-gids", "20", "--process-label", "l", "--apparmor", "p", "--no-new-privs", "-c",
         "CAP_KILL", "--cap", "CAP_CHOWN", "--preserve-fds", "1", "--cgroup", "a:b", "--ignore-paused",
         "--console-socket", "/s", "c1", "sh", "-c", "echo"],
        ["run", "--bundle", "/b", "--detach", "--keep", "--no-subreaper", "--no-pivot", "--pid-file", "/p",
         "c1"],
        ["--rootless", "false", "--debug", "--criu", "/x", "list", "--format", "json", "--quiet"],
        ["--rootless=auto", "spec", "--rootless", "--bundle", "/b"],
        ["start", "c1"],
        ["state", "c1"],
        ["features"],
    ],
)  # fmt: skip
def test_every_flag_callers_pass_is_accepted(argv: list[str]) -> None:
    args = build_parser(verb_of(argv)).parse_args(argv)
    assert args.verb == next(a for a in argv if a in ("create", "exec", "kill", "delete", "update", "ps",
                                                     "events", "pause", "resume", "run", "list", "spec",
                                                     "start", "state", "features"))  # fmt: skip


def test_exec_flags_are_parsed_into_their_values() -> None:
    argv = ["exec", "-e", "A=1", "-u", "7:8", "-g", "10", "-c", "CAP_KILL", "--tty", "c1", "sh", "-c", "x y"]
    args = build_parser("exec").parse_args(argv)
    assert (args.env, args.user, args.additional_gids, args.cap, args.tty) == (
        ["A=1"],
        "7:8",
        [10],
        ["CAP_KILL"],
        True,
    )
    assert args.command == ["sh", "-c", "x y"]


@pytest.mark.parametrize(
    ("value", "number"),
    [("KILL", 9), ("SIGKILL", 9), ("sigterm", 15), ("9", 9), ("15", 15), ("USR1", 10), ("SIGWINCH", 28)],
)
def test_parse_signal(value: str, number: int) -> None:
    assert parse_signal(value) == number


@pytest.mark.parametrize("value", ["NOSIG", "0", "65", "-1", ""])
def test_parse_signal_refuses(value: str) -> None:
    with pytest.raises(RuntimeFailure, match="invalid signal"):
        parse_signal(value)


def update_args(*argv: str) -> argparse.Namespace:
    return build_parser("update").parse_args(["update", *argv, "c1"])


def test_update_maps_memory_cpu_pids(tmp_path: Path) -> None:
    resources = tmp_path / "r.json"
    resources.write_text(json.dumps({"memory": {"limit": 1 << 26}, "cpu": {"shares": 512}}))
    got = _read_resources(
        update_args("--resources", str(resources), "--pids-limit", "50", "--cpuset-cpus", "0")
    )
    assert got == {"memory": {"limit": 1 << 26}, "cpu": {"shares": 512, "cpus": "0"}, "pids": {"limit": 50}}
    assert _read_resources(update_args("--memory", "1000", "--cpu-quota", "5000")) == {
        "memory": {"limit": 1000},
        "cpu": {"quota": 5000},
    }


@pytest.mark.parametrize(
    ("argv", "content", "needle"),
    [
        (["--blkio-weight", "100"], None, "cannot be changed inside a VM sandbox"),
        (["--l3-cache-schema", "L3:0=f"], None, "cannot be changed"),
        ([], {"blockIO": {"weight": 10}}, "blockIO cannot be changed"),
        ([], {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}, "hugepageLimits cannot be changed"),
        ([], {}, "no resources given"),
        ([], "{not json", "invalid JSON"),
    ],
)
def test_update_refuses_what_a_vm_cannot_change(
    tmp_path: Path, argv: list[str], content: object, needle: str
) -> None:
    if content is not None:
        path = tmp_path / "r.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        argv = [*argv, "--resources", str(path)]
    with pytest.raises(RuntimeFailure, match=needle):
        _read_resources(update_args(*argv))


def test_main_returns_one_for_a_known_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "start", "nosuch"]) == 1
    assert capsys.readouterr().err == "kubevisor-runtime: container 'nosuch' does not exist\n"


def test_exec_process_from_flags_starts_from_the_containers_process(tmp_path: Path) -> None:
    """`exec` without --process builds process.json like runc: the container's process (env, cwd,
    user, capabilities, rlimits) with the flags on top."""
    from kubevisor.oci.runtime import exec_spec_from_args

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps(
            {
                "process": {
                    "args": ["sleep", "1"],
                    "env": ["PATH=/bin", "A=1"],
                    "cwd": "/srv",
                    "user": {"uid": 5, "gid": 5},
                    "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}],
                    "terminal": True,
                }
            }
        )
    )
    store = Store(tmp_path / "root")
    store.reserve("c1")
    store.save(ContainerRecord(id="c1", bundle=str(bundle), rootfs="", sandbox_id="c1", status="running"))
    plain = exec_spec_from_args(store, "c1", ["sh", "-c", "a b"], False, None, [], None, [], [], False)
    assert plain["args"] == ["sh", "-c", "a b"] and plain["terminal"] is False
    assert (plain["env"], plain["cwd"], plain["user"]) == (["PATH=/bin", "A=1"], "/srv", {"uid": 5, "gid": 5})
    assert plain["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}]
    flags = exec_spec_from_args(
        store, "c1", ["id"], True, "/tmp", ["A=2", "B=3"], "7:8", [10, 20], ["CAP_KILL"], True
    )
    assert flags["env"] == ["PATH=/bin", "A=2", "B=3"] and flags["cwd"] == "/tmp" and flags["terminal"]
    assert flags["user"] == {"uid": 7, "gid": 8, "additionalGids": [10, 20]}
    assert flags["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_KILL"]
    assert flags["capabilities"]["permitted"] == ["CAP_KILL"] and flags["noNewPrivileges"] is True
    with pytest.raises(RuntimeFailure, match="uid"):
        exec_spec_from_args(store, "c1", ["id"], False, None, [], "nobody", [], [], False)
