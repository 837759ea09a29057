"""`kubevisor up` without starting anything: the plan of children, argument errors, `down`."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor import up
from kubevisor.node.pod_runner import MAX_GRACE, pod_grace


def test_children_share_one_layout(tmp_path: Path) -> None:
    u = up.Up(up.Layout(tmp_path), "127.0.0.1:0", "node1", "INFO", python="/py")
    u.plan()
    api, ctrl, node = (u.children[r] for r in up.ROLES)
    assert api.argv[:4] == ["/py", "-m", "kubevisor.cli", "apiserver"]
    assert "--kubevirt" in api.argv
    assert api.argv[api.argv.index("--pod-log-dir") + 1] == str(tmp_path / "logs" / "pods")
    assert node.argv[node.argv.index("--pod-log-dir") + 1] == str(tmp_path / "logs" / "pods")
    # The kubeconfigs the controller and node use are the ones the apiserver writes for their users.
    for child, user in ((ctrl, up.CONTROLLER_USER), (node, "system:node:node1")):
        assert user in api.argv
        path = Path(child.argv[child.argv.index("--kubeconfig") + 1])
        assert path == tmp_path / "apiserver" / f"{user.replace(':', '_')}.kubeconfig"
    assert "--stop-pods-on-exit" in node.argv and "--no-leader-elect" in ctrl.argv
    # Launchers started by the node agent keep their run dirs inside the data dir.
    assert node.env["KUBEVISOR_RUN"] == str(tmp_path / "run")


def test_node_access_link_files(tmp_path: Path) -> None:
    """The apiserver gets the node-access client files, the node agent its serving certificate."""
    u = up.Up(up.Layout(tmp_path), "127.0.0.1:0", "node1", "INFO", python="/py")
    u.plan()
    api, node = u.children["apiserver"], u.children["node"]
    access = tmp_path / "node-access"
    assert api.argv[api.argv.index("--node-access-dir") + 1] == str(access)
    assert node.argv[node.argv.index("--access-cert") + 1] == str(access / "node-node1.crt")
    assert node.argv[node.argv.index("--access-client-ca") + 1] == str(access / "ca.crt")


def test_a_restarted_apiserver_keeps_the_port_it_was_given(tmp_path: Path) -> None:
    # --listen HOST:0 picks a port once; the controller's and node's kubeconfigs name it, so a
    # restart of the apiserver must listen there again, not on a new random port.
    u = up.Up(up.Layout(tmp_path), "127.0.0.1:0", "node1", "INFO", python="/py")
    u.plan()
    api = u.children["apiserver"]
    u.server_url = "https://127.0.0.1:40123"
    u.pin_listen_port(api)
    assert api.argv[api.argv.index("--listen") + 1] == "127.0.0.1:40123"
    fixed = up.Up(up.Layout(tmp_path), "127.0.0.1:6443", "node1", "INFO", python="/py")
    fixed.plan()
    fixed.server_url = "https://127.0.0.1:6443"
    fixed.pin_listen_port(fixed.children["apiserver"])
    assert "127.0.0.1:6443" in fixed.children["apiserver"].argv


@pytest.mark.parametrize(
    "args",
    [["--listen", "nohost"], ["--listen", "127.0.0.1:99999"], ["--node-name", "Bad_Name"]],
)
def test_bad_arguments(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert up.main(["--data-dir", str(tmp_path), *args]) == 2
    assert "kubevisor up:" in capsys.readouterr().err


def test_data_dir_must_be_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert up.main(["--data-dir", str(target)]) == 2


def test_down_with_nothing_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert up.down_main(["--data-dir", str(tmp_path)]) == 0
    assert "nothing is running" in capsys.readouterr().out


def test_pod_grace_honours_the_deletion_then_the_spec() -> None:
    pod = {"metadata": {}, "spec": {"terminationGracePeriodSeconds": 45}}
    assert pod_grace(pod) == 45
    pod["metadata"]["deletionGracePeriodSeconds"] = 0
    assert pod_grace(pod) == 0
    assert pod_grace({"metadata": {}, "spec": {}}) == 30
    assert pod_grace({"metadata": {}, "spec": {"terminationGracePeriodSeconds": 10**6}}) == MAX_GRACE


def test_next_steps_say_how_to_reach_virtctl_when_it_is_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    virtctl = bin_dir / "virtctl"
    virtctl.write_text("#!/bin/sh\n")
    virtctl.chmod(0o755)
    python = str(bin_dir / "python3")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert f"export PATH={bin_dir}:$PATH" in up.path_hint(python)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin")
    assert up.path_hint(python) == ""
