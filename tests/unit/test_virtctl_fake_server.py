"""virtctl against a small server that speaks KubeVirt's protocol (tests/unit/virtctl_fake.py):
REST lifecycle calls, error lines and exit codes, console through a pty, vnc proxy, port-forward."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from virtctl_fake import FakeServer

from kubevisor.virtctl.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    srv = FakeServer(tmp_path)
    srv.cluster.add_vm("web")
    srv.cluster.add_vm("off", running=False)
    try:
        yield srv
    finally:
        srv.stop()


def virtctl(server: FakeServer, *argv: str) -> int:
    return main(["--kubeconfig", str(server.kubeconfig), *argv])


def test_lifecycle_requests(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert virtctl(server, "start", "web") == 0
    assert virtctl(server, "stop", "web", "--grace-period=0", "--force") == 0
    assert virtctl(server, "restart", "web") == 0
    assert virtctl(server, "pause", "vm", "web") == 0
    assert virtctl(server, "unpause", "vmi", "web") == 0
    assert virtctl(server, "soft-reboot", "web") == 0
    assert virtctl(server, "reset", "web") == 0
    assert server.cluster.calls == [
        ("start", "web", {}),
        ("stop", "web", {"gracePeriod": 0}),
        ("restart", "web", {}),
        ("pause", "web", {}),
        ("unpause", "web", {}),
        ("softreboot", "web", {}),
        ("reset", "web", {}),
    ]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "VM web was scheduled to start"
    assert out[3] == "VMI web was scheduled to pause"


def test_clear_errors(server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert virtctl(server, "start", "ghost") == 1
    assert 'virtualmachines.kubevirt.io "ghost" not found' in capsys.readouterr().err
    assert virtctl(server, "pause", "vm", "off") == 1
    assert "is not running" in capsys.readouterr().err
    assert virtctl(server, "pause", "vm", "ghost") == 1
    assert 'virtualmachine "ghost" not found' in capsys.readouterr().err
    assert virtctl(server, "stop", "web", "--force") == 1
    assert "Must both use --force=true and set --grace-period" in capsys.readouterr().err
    bad = server.write_kubeconfig(tmp_path / "bad", "wrong")
    assert main(["--kubeconfig", str(bad), "start", "web"]) == 1
    assert "Unauthorized" in capsys.readouterr().err
    nobody = server.write_kubeconfig(tmp_path / "nobody", "nobody")
    assert main(["--kubeconfig", str(nobody), "vnc", "screenshot", "web", "-f", str(tmp_path / "x")]) == 1
    assert "Forbidden" in capsys.readouterr().err
    assert main(["--kubeconfig", str(nobody), "port-forward", "vmi/web", "0:80"]) == 1
    assert "Forbidden" in capsys.readouterr().err
    dead = server.write_kubeconfig(tmp_path / "dead", "x")
    dead.write_text(dead.read_text().replace(f":{server.port}", ":1"))
    assert main(["--kubeconfig", str(dead), "start", "web"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the server" in err and len(err.strip().splitlines()) == 1


def test_namespace_from_the_context_and_the_flag(server: FakeServer, tmp_path: Path) -> None:
    server.cluster.add_vm("web", ns="team")
    kc = server.write_kubeconfig(tmp_path / "team", "s3cret", namespace="team")
    server.cluster.vms.pop(("default", "web"))
    assert main(["--kubeconfig", str(kc), "start", "web"]) == 0
    assert main(["--kubeconfig", str(kc), "-n", "default", "start", "web"]) == 1
    env_before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kc)
    try:
        assert main(["start", "web"]) == 0
    finally:
        if env_before is None:
            del os.environ["KUBECONFIG"]
        else:
            os.environ["KUBECONFIG"] = env_before


def test_guestosinfo_screenshot_version(
    server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert virtctl(server, "guestosinfo", "web") == 0
    assert json.loads(capsys.readouterr().out)["os"]["name"] == "Kubevisor Legacy"
    shot = tmp_path / "shot.png"
    assert virtctl(server, "vnc", "screenshot", "web", "--file", str(shot), "-m") == 0
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert server.cluster.calls[-1] == ("screenshot", "web", {"moveCursor": "true"})
    assert virtctl(server, "version") == 0
    out = capsys.readouterr().out
    assert 'Server Version: version.Info{GitVersion:"v1.5.0-kubevisor"' in out
    assert out.startswith("Client Version: version.Info{GitVersion:")


def spawn(server: FakeServer, *argv: str, **kw: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "kubevisor.virtctl", "--kubeconfig", str(server.kubeconfig), *argv],
        env=env,
        **kw,  # type: ignore[call-overload]
    )


def read_until(fd: int, needle: bytes, timeout: float = 30) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen in {buf!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"EOF before {needle!r} in {buf!r}")
            buf += chunk
    return buf


def console_pty(server: FakeServer, name: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    proc = spawn(server, "console", name, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    return proc, master


def test_console_raw_tty_escape_and_takeover(server: FakeServer) -> None:
    first, m1 = console_pty(server, "web")
    second = None
    try:
        # one read: the notice and the prompt may arrive in the same chunk
        assert b"The escape sequence is ^]" in read_until(m1, b"login: ")
        os.write(m1, b"demo\r")  # raw mode: no local echo, bytes go through as typed
        read_until(m1, b"DEMO\r")
        second, m2 = console_pty(server, "web")
        read_until(m2, b"login: ")
        read_until(m1, b"another user connected to the console")
        assert first.wait(30) == 0
        os.write(m2, b"x\x1d")  # ^] ends the session
        assert second.wait(30) == 0
        assert ("console-in", "web", b"x") in server.cluster.calls
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_console_of_a_stopped_vm_fails_at_once(server: FakeServer) -> None:
    proc, master = console_pty(server, "off")
    try:
        assert proc.wait(30) == 1
        assert b"is not running" in read_until(master, b"not running")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_vnc_proxy_only_prints_the_port_and_relays_rfb(server: FakeServer) -> None:
    proc = spawn(server, "vnc", "web", "--proxy-only", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            assert sock.recv(12) == b"RFB 003.008\n"
    finally:
        proc.terminate()
        proc.wait()


def test_port_forward_tcp_udp_and_stdio(server: FakeServer) -> None:
    proc = spawn(server, "port-forward", "vm/web", "0:8080", "udp/0:53", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        tcp_line = proc.stdout.readline().decode()
        udp_line = proc.stdout.readline().decode()
        tcp_port = int(tcp_line.split(":")[1].split()[0])
        udp_port = int(udp_line.split(":")[1].split()[0])
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=30) as sock:
            sock.sendall(b"hello")
            assert sock.recv(100) == b"echo:hello"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(30)
            udp.sendto(b"q1", ("127.0.0.1", udp_port))
            assert udp.recvfrom(100)[0] == b"echo:q1"
        assert ("portforward", "web", ("8080", "tcp")) in server.cluster.calls
        assert ("portforward", "web", ("53", "udp")) in server.cluster.calls
    finally:
        proc.terminate()
        proc.wait()
    stdio = spawn(
        server,
        "port-forward",
        "--stdio=true",
        "vmi/web/default",
        "22",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out, _ = stdio.communicate(b"ping", timeout=60)
    assert out == b"echo:ping"
    off = spawn(server, "port-forward", "vm/off", "0:80", stderr=subprocess.PIPE)
    _, err = off.communicate(timeout=60)
    assert off.returncode == 1 and b"is not running" in err
