"""Reaching and driving VMs as a KubeVirt user does, end to end (issue: subresources, virtctl).

One `kubevisor up` (the real command) for the module, one legacy VM booted under TCG from a
containerDisk with a cloud-init user (password and SSH key). Every test goes through the
apiserver's `subresources.kubevirt.io` with the real virtctl (consoles driven through a pty),
kubectl, ssh and an RFB handshake; the apiserver relays to the node agent over mutual TLS, the
node agent to the launcher's sockets. The tests run in file order: the lifecycle ones that
reboot or stop the VM come last.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from up_fixture import Up

from kubevisor.apiserver.certs import NodeAccessPKI, issue_node_access_client
from kubevisor.virtctl.client import VMI as VMI_RESOURCE
from kubevisor.virtctl.client import Client, load_config

pytestmark = [pytest.mark.e2e, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[2]
VIRTCTL = [sys.executable, "-m", "kubevisor.virtctl"]
VM = "access"
USER, PASSWORD = "demo", "kubevisor"
BOOT_TIMEOUT = 300.0
LOGIN_PROMPT = re.compile(rb"[\w.-]+ login: ")
SHELL_PROMPT = re.compile(rb"[$#] (\x1b\[6n)?")


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 120.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (AssertionError, subprocess.CalledProcessError, OSError, ValueError) as exc:
            # a kubectl that fails (the VMI is between two runs) is polled again, not fatal
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class System(Up):
    """`kubevisor up` (the shared fixture) and what a KubeVirt user drives it with: virtctl, kubectl."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def virtctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VIRTCTL, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def vm(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "vm", VM, "-o", "json"))

    def vmi(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "vmi", VM, "-o", "json"))

    def printable(self) -> str:
        return str((self.vm().get("status") or {}).get("printableStatus") or "")

    def condition(self, type_: str) -> str:
        for cond in (self.vmi().get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return str(cond.get("status"))
        return ""

    @property
    def serial_log(self) -> Path:
        return self.run_dir("default", VM) / "serial0.log"

    def server(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        return str(config["clusters"][0]["cluster"]["server"])

    def ca_file(self) -> str:
        return str(self.layout.apiserver / "pki" / "ca.crt")


class Terminal:
    """A command on a pty (as a user's terminal), read with expect()."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once, nothing else
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the program ended
            raise EOFError from None
        if not chunk:
            raise EOFError
        self.buffer += chunk
        return chunk

    def expect(self, pattern: re.Pattern[bytes] | bytes, timeout: float = 60.0) -> re.Match[bytes]:
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.buffer)
            if m:
                self.buffer = self.buffer[m.end():]
                return m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{regex.pattern!r} not seen; tail: {self.buffer[-600:]!r}")
            try:
                self._read(min(remaining, 0.5))
            except EOFError:
                m = regex.search(self.buffer)
                if m:
                    return m
                raise AssertionError(
                    f"{regex.pattern!r} not seen before exit; tail: {self.buffer[-600:]!r}"
                ) from None

    def quiet_for(self, seconds: float) -> bytes:
        """Whatever arrives within `seconds` (nothing, for a paused guest)."""
        self.buffer = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._read(deadline - time.monotonic())
            except EOFError:
                break
        return self.buffer

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_pid, status = os.waitpid(self.pid, os.WNOHANG)
            if with_pid:
                os.close(self.fd)
                self.fd = -1
                return os.waitstatus_to_exitcode(status)
            try:
                self._read(0.2)
            except EOFError:
                time.sleep(0.05)
        raise AssertionError(f"still running; tail: {self.buffer[-400:]!r}")

    def close(self) -> None:
        """Kill the program if it still runs; idempotent."""
        if self.fd < 0:
            return
        with_pid, _ = os.waitpid(self.pid, os.WNOHANG)
        if not with_pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.fd = -1


def manifest(pubkey: str) -> str:
    user_data = "#cloud-config\n" + yaml.safe_dump({
        "users": [{"name": USER, "plain_text_passwd": PASSWORD, "lock_passwd": False,
                   "shell": "/bin/sh", "ssh_authorized_keys": [pubkey]}],
    })
    return yaml.safe_dump({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": VM, "namespace": "default"},
        "spec": {
            "runStrategy": "Always",
            "template": {"spec": {
                "terminationGracePeriodSeconds": 10,
                "domain": {
                    "memory": {"guest": "256Mi"},
                    "devices": {
                        "disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}},
                                  {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                        "interfaces": [{"name": "default", "masquerade": {}}],
                    },
                },
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [
                    {"name": "containerdisk", "containerDisk": {"image": "kubevisor/legacy:latest"}},
                    {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}},
                ],
            }},
        },
    })


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, ssh_key: Path) -> Iterator[System]:
    s = System(tmp_path_factory.mktemp("up"))
    try:
        s.start()
        s.kubectl("apply", "-f", "-", stdin=manifest(ssh_key.with_suffix(".pub").read_text().strip()))
        wait_for("the VM Running", lambda: s.printable() == "Running", timeout=BOOT_TIMEOUT)
        wait_for("the login prompt", lambda: LOGIN_PROMPT.search(s.serial_log.read_bytes()), BOOT_TIMEOUT)
        yield s
    finally:
        s.stop()


def console(system: System) -> Terminal:
    term = Terminal([*VIRTCTL, "console", VM], system.env)
    term.expect(b"The escape sequence is ^]")
    return term


def login(term: Terminal) -> None:
    term.send(b"\r")
    term.expect(LOGIN_PROMPT)
    term.send(USER.encode() + b"\r")
    term.expect(b"assword: ")
    term.send(PASSWORD.encode() + b"\r")
    term.expect(SHELL_PROMPT)


# -- console ------------------------------------------------------------------------------------
def test_console_logs_in_and_a_second_console_takes_over(system: System) -> None:
    first = console(system)
    second: Terminal | None = None
    try:
        login(first)
        first.send(b"echo console-$((6*7))\r")
        first.expect(b"console-42")
        second = console(system)
        first.expect(b"another user connected to the console", timeout=30)
        assert first.wait() == 0
        second.send(b"\r")
        second.expect(SHELL_PROMPT)  # the same session of the guest's getty, now here
        second.send(b"\x1d")  # ^] ends virtctl console
        assert second.wait() == 0
    finally:
        first.close()
        if second is not None:
            second.close()


def test_active_console_connections_are_in_metrics(system: System) -> None:
    def gauge() -> float:
        for line in system.kubectl("get", "--raw", "/metrics").splitlines():
            if line.startswith("kubevirt_console_active_connections{") and f'vmi="{VM}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    term = console(system)
    try:
        wait_for("one console in the gauge", lambda: gauge() == 1.0, timeout=20)
        term.send(b"\x1d")
        assert term.wait() == 0
        wait_for("no console in the gauge", lambda: gauge() == 0.0, timeout=20)
    finally:
        term.close()


# -- VNC ----------------------------------------------------------------------------------------
def rfb_framebuffer_update(port: int) -> tuple[int, int, bytes]:
    """RFB 3.8 with security None up to one FramebufferUpdate: (width, height, first rect header)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rwb")
        version = f.read(12)
        assert version.startswith(b"RFB 003."), version
        f.write(b"RFB 003.008\n")
        f.flush()
        count = f.read(1)[0]
        types = f.read(count)
        assert 1 in types, f"security types {list(types)}"  # None
        f.write(b"\x01")
        f.flush()
        assert struct.unpack(">I", f.read(4))[0] == 0  # SecurityResult OK
        f.write(b"\x01")  # ClientInit: shared
        f.flush()
        width, height = struct.unpack(">HH", f.read(4))
        f.read(16)  # pixel format
        (name_len,) = struct.unpack(">I", f.read(4))
        f.read(name_len)
        f.write(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # FramebufferUpdateRequest, full
        f.flush()
        kind = f.read(1)
        assert kind == b"\x00", f"server message type {kind!r}, want FramebufferUpdate"
        f.read(1)
        (rects,) = struct.unpack(">H", f.read(2))
        assert rects >= 1
        return width, height, f.read(12)


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, the decompressed scanlines) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_vnc_proxy_speaks_rfb_and_screenshot_shows_the_console(system: System, tmp_path: Path) -> None:
    proxy = subprocess.Popen([*VIRTCTL, "vnc", "--proxy-only", VM], env=system.env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline()
        port = int(json.loads(line)["port"])
        width, height, _rect = rfb_framebuffer_update(port)
        assert (width, height) != (0, 0)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    shot = tmp_path / "screen.png"
    done = system.virtctl("vnc", "screenshot", VM, "--file", str(shot))
    assert done.returncode == 0, done.stderr
    width, height, rows = png_pixels(shot.read_bytes())
    assert width >= 640 and height >= 350
    # A blank screen is all zero bytes whatever the PNG filters; text makes thousands non-zero.
    assert sum(1 for b in rows if b) > 2000


def test_a_second_vnc_session_closes_the_first(system: System) -> None:
    async def scenario() -> tuple[int, bytes]:
        config = load_config(str(system.kubeconfig))
        async with Client(config) as client:
            first = await client.websocket(VMI_RESOURCE, VM, "vnc")
            greeting = await first.receive()  # the RFB version string, through every hop
            second = await client.websocket(VMI_RESOURCE, VM, "vnc")
            try:
                while True:
                    msg = await asyncio.wait_for(first.receive(), 30)
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        return int(msg.data), greeting.data
            finally:
                await second.close()
                await first.close()

    code, greeting = asyncio.run(scenario())
    assert greeting.startswith(b"RFB 003.")
    assert code == 1001  # going away: another session took over


# -- port-forward and ssh -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_port_forward_serves_the_guest_http_page(system: System) -> None:
    assert "Kubevisor legacy guest" in forward_page(system)


def forward_page(system: System) -> str:
    port = free_port()
    forward = subprocess.Popen([*VIRTCTL, "port-forward", f"vm/{VM}", f"{port}:80"], env=system.env,
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def page() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as resp:
                return str(resp.read().decode())

        return str(wait_for("the page", page, timeout=60))
    finally:
        forward.terminate()
        forward.wait(timeout=30)


def test_a_restarted_node_agent_reuses_the_forwards_qemu_has(system: System) -> None:
    forwards = system.run_dir("default", VM) / "access-forwards.json"
    before = json.loads(forwards.read_text())
    assert [f["guestPort"] for f in before] == [80]
    record = json.loads((system.layout.record("node")).read_text())
    os.kill(record["pid"], signal.SIGKILL)
    wait_for("a new node agent", lambda: json.loads((system.layout.record("node")).read_text())["pid"]
             != record["pid"], timeout=60)
    assert "Kubevisor legacy guest" in forward_page(system)
    assert json.loads(forwards.read_text()) == before  # no second forward of the same port
    assert system.printable() == "Running"


def test_ssh_runs_a_command_with_the_cloud_init_key(system: System, ssh_key: Path) -> None:
    done = system.virtctl(
        "ssh", "-i", str(ssh_key), "-l", USER, "--local-ssh-opts", "-o StrictHostKeyChecking=no",
        "--local-ssh-opts=-oUserKnownHostsFile=/dev/null", f"vm/{VM}", "-c", "echo ssh-$((6*7)) $(id -un)",
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "ssh-42 demo" in done.stdout


def test_guestosinfo_and_vmi_status_from_the_guest_agent(system: System) -> None:
    done = system.virtctl("guestosinfo", VM)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["os"]["id"] == "kubevisor" and info["hostname"] == VM
    # the node agent writes what its agent sees on its next round (every 5 s), not at once
    assert wait_for("AgentConnected", lambda: system.condition("AgentConnected") == "True", timeout=30)
    status = wait_for("guestOSInfo in the VMI status",
                      lambda: (s := system.vmi()["status"]).get("guestOSInfo") and s, timeout=30)
    assert status["guestOSInfo"]["kernelRelease"] == info["os"]["kernelRelease"]
    assert system.condition("SoftwareEmulation") == "True"  # TCG on these machines
    iface = status["interfaces"][0]
    assert iface["name"] == "default" and iface["interfaceName"] == "eth0" and iface["ipAddress"]


def test_a_missing_vm_is_a_clear_error(system: System) -> None:
    calls = (["console", "nosuch", "--timeout", "1"], ["start", "nosuch"], ["pause", "vmi", "nosuch"],
             ["vnc", "screenshot", "nosuch", "--file", "/dev/null"], ["port-forward", "vm/nosuch", "1:80"])
    for args in calls:
        done = system.virtctl(*args, timeout=60)
        assert done.returncode != 0, args
        assert '"nosuch" not found' in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)


# -- credentials ----------------------------------------------------------------------------------
SUBRESOURCE_CALLS = [
    ("PUT", "virtualmachines", "start"), ("PUT", "virtualmachines", "stop"),
    ("PUT", "virtualmachines", "restart"), ("GET", "virtualmachines", "expand-spec"),
    ("PUT", "virtualmachineinstances", "pause"), ("PUT", "virtualmachineinstances", "unpause"),
    ("PUT", "virtualmachineinstances", "softreboot"), ("PUT", "virtualmachineinstances", "reset"),
    ("GET", "virtualmachineinstances", "console"), ("GET", "virtualmachineinstances", "vnc"),
    ("GET", "virtualmachineinstances", "vnc/screenshot"), ("GET", "virtualmachineinstances", "guestosinfo"),
    ("GET", "virtualmachineinstances", "portforward/80/tcp"),
]


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no-token", "bad-token"])
def test_every_subresource_needs_valid_credentials(system: System, token: str | None) -> None:
    ctx = ssl.create_default_context(cafile=system.ca_file())
    base = f"{system.server()}/apis/subresources.kubevirt.io/v1/namespaces/default"
    for method, resource, sub in SUBRESOURCE_CALLS:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if sub in ("console", "vnc") or sub.startswith("portforward"):
            headers.update({"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                            "Sec-WebSocket-Protocol": "plain.kubevirt.io"})
        req = urllib.request.Request(f"{base}/{resource}/{VM}/{sub}", method=method, headers=headers,
                                     data=b"{}" if method == "PUT" else None)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, context=ctx, timeout=30)
        assert info.value.code == 401, (method, sub, info.value.code)
    assert system.printable() == "Running"  # none of them did anything


def test_the_node_agent_only_serves_the_apiserver(system: System, tmp_path: Path) -> None:
    node = json.loads(system.kubectl("get", "nodes", "-o", "json"))["items"][0]
    endpoint = node["metadata"]["annotations"]["kubevisor.io/access-endpoint"]
    access = NodeAccessPKI(system.layout.node_access)
    url = f"https://{endpoint}/v1/namespaces/default/virtualmachineinstances/{VM}/guestosinfo"
    # Without a client certificate the TLS handshake itself is refused.
    bare = ssl.create_default_context(cafile=str(access.ca))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(url, context=bare, timeout=30)
    # A client certificate of the same CA for another identity: 403.
    crt, key = tmp_path / "intruder.crt", tmp_path / "intruder.key"
    issue_node_access_client(access, "system:node:intruder", crt, key)
    ctx = ssl.create_default_context(cafile=str(access.ca))
    ctx.load_cert_chain(str(crt), str(key))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, context=ctx, timeout=30)
    assert info.value.code == 403
    # The apiserver's own certificate gets through.
    ctx = ssl.create_default_context(cafile=str(access.ca))
    ctx.load_cert_chain(str(access.client_cert), str(access.client_key))
    with urllib.request.urlopen(url, context=ctx, timeout=30) as resp:
        assert json.loads(resp.read())["os"]["id"] == "kubevisor"


# -- pause, soft reboot, reset ----------------------------------------------------------------------
def test_pause_silences_the_guest_and_unpause_resumes_it(system: System) -> None:
    done = system.virtctl("pause", "vm", VM)
    assert done.returncode == 0, done.stderr
    wait_for("Paused", lambda: system.printable() == "Paused", timeout=30)
    assert system.condition("Paused") == "True"
    assert system.condition("Ready") == "False"
    again = system.virtctl("pause", "vmi", VM)
    assert again.returncode != 0 and "already paused" in again.stderr
    term = console(system)
    try:
        term.send(b"\r")
        assert term.quiet_for(4.0) == b"", "a paused guest answered on its console"
        done = system.virtctl("unpause", "vm", VM)
        assert done.returncode == 0, done.stderr
        term.expect(re.compile(rb"login: |[$#] "), timeout=60)  # the Enter typed while paused
        wait_for("Running", lambda: system.printable() == "Running", timeout=30)
        assert system.condition("Paused") == ""
        term.send(b"\x1d")
        term.wait()
    finally:
        term.close()


def boots(system: System) -> int:
    return system.serial_log.read_bytes().count(b"SYSLINUX")


def test_soft_reboot_and_reset_restart_the_guest(system: System) -> None:
    uid = system.vmi()["metadata"]["uid"]
    before = boots(system)
    done = system.virtctl("soft-reboot", VM)
    assert done.returncode == 0, done.stderr
    wait_for("a reboot through the guest", lambda: boots(system) > before, timeout=BOOT_TIMEOUT)
    assert b"reboot" in system.serial_log.read_bytes()
    wait_for("the login prompt again", lambda: LOGIN_PROMPT.search(
        system.serial_log.read_bytes().rsplit(b"SYSLINUX", 1)[1]), timeout=BOOT_TIMEOUT)
    before = boots(system)
    done = system.virtctl("reset", VM)
    assert done.returncode == 0, done.stderr
    wait_for("a reset", lambda: boots(system) > before, timeout=BOOT_TIMEOUT)
    assert system.vmi()["metadata"]["uid"] == uid  # the same VMI: the guest restarted inside it


# -- stop, start, restart ---------------------------------------------------------------------------
class StatusTrail:
    """Every printableStatus the VM shows, in order, as `kubectl get vm -w` prints them."""

    def __init__(self, system: System) -> None:
        self.proc = subprocess.Popen(
            ["kubectl", "get", "vm", VM, "-w", "--no-headers",
             "-o", "custom-columns=S:.status.printableStatus"],
            env=system.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            state = line.strip()
            if state and (not self.seen or self.seen[-1] != state):
                self.seen.append(state)

    def until(self, state: str, timeout: float = BOOT_TIMEOUT) -> list[str]:
        wait_for(state, lambda: self.seen and self.seen[-1] == state, timeout=timeout, interval=0.2)
        return list(self.seen)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_stop_start_restart_move_through_the_states(system: System) -> None:
    trail = StatusTrail(system)
    try:
        trail.until("Running", timeout=30)
        done = system.virtctl("stop", VM)
        assert done.returncode == 0, done.stderr
        assert trail.until("Stopped")[-3:] == ["Running", "Stopping", "Stopped"]
        assert system.vm()["spec"]["runStrategy"] == "Halted"
        refused = system.virtctl("console", VM, "--timeout", "1")
        assert refused.returncode != 0 and "not running" in refused.stderr
        stopped = system.virtctl("stop", VM)
        assert stopped.returncode != 0 and "VM is not running" in stopped.stderr
        done = system.virtctl("start", VM)
        assert done.returncode == 0, done.stderr
        assert trail.until("Running")[-3:] == ["Stopped", "Starting", "Running"]
        uid = system.vmi()["metadata"]["uid"]
        mark = len(trail.seen)
        done = system.virtctl("restart", VM)
        assert done.returncode == 0, done.stderr
        wait_for("a new VMI", lambda: system.vmi()["metadata"]["uid"] != uid, timeout=BOOT_TIMEOUT)
        after = trail.until("Running")[mark:]
        assert "Stopping" in after and after[-1] == "Running", after
    finally:
        trail.close()


def test_start_paused_waits_for_unpause(system: System) -> None:
    trail = StatusTrail(system)
    try:
        done = system.virtctl("stop", VM)
        assert done.returncode == 0, done.stderr
        trail.until("Stopped")
        logged = system.serial_log
        done = system.virtctl("start", "--paused", VM)
        assert done.returncode == 0, done.stderr
        trail.until("Paused")
        assert system.vmi()["spec"]["startStrategy"] == "Paused"
        assert system.condition("Paused") == "True"
        time.sleep(3)
        assert b"SYSLINUX" not in logged.read_bytes()  # not one instruction of the guest ran
        done = system.virtctl("unpause", "vmi", VM)
        assert done.returncode == 0, done.stderr
        trail.until("Running")
        wait_for("the boot", lambda: b"SYSLINUX" in logged.read_bytes(), timeout=BOOT_TIMEOUT)
    finally:
        trail.close()
