"""Benchmark: reaching a running VM through the apiserver (console, VNC, port-forward).

Starts `kubevisor up` in a fresh data dir, boots one legacy VM (TCG here), then measures:

1. Console keystroke echo: a character typed into a logged-in shell until its echo comes back,
   through the apiserver's `console` websocket (apiserver -> node agent -> serial socket), and,
   in the same run, directly on the launcher's serial socket (the floor: guest echo under TCG).
2. VNC screenshot: GET vnc/screenshot (QEMU's PNG screendump, relayed) end to end.
3. Port-forward throughput: a file served by the guest's httpd, fetched through
   `virtctl port-forward` (local TCP -> websocket -> apiserver -> node agent -> guest), against a
   direct connection to the same guest port (the launcher's forward of the declared port 80).

Prints one JSON document.

    python bench/access/run.py [--echoes 50] [--screenshots 20] [--mib 16] [--fetches 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import loadavg, machine  # noqa: E402
from kubevisor.launcher.runner import read_domain_info  # noqa: E402
from kubevisor.virtctl.client import VMI, Client, load_config  # noqa: E402

VM = "bench-access"
USER, PASSWORD = "demo", "kubevisor"
LOGIN_PROMPT = re.compile(rb"[\w.-]+ login: ")
PROMPT = re.compile(rb"[$#] (\x1b\[6n)?")
BIG = "/srv/www/big.bin"


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "median": round(statistics.median(ordered), 4),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
    }


def manifest(mib: int) -> str:
    user_data = "#cloud-config\n" + yaml.safe_dump({
        "users": [{"name": USER, "plain_text_passwd": PASSWORD, "lock_passwd": False, "shell": "/bin/sh"}],
        "runcmd": [f"dd if=/dev/urandom of={BIG} bs=1M count={mib} 2>/dev/null && echo BIG-FILE-READY"],
    })
    return yaml.safe_dump({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": VM, "namespace": "default"},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "terminationGracePeriodSeconds": 10,
            "domain": {
                "memory": {"guest": "256Mi"},
                "devices": {
                    "disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}},
                              {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                    "interfaces": [{"name": "default", "masquerade": {}, "ports": [{"port": 80}]}],
                },
            },
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [
                {"name": "containerdisk", "containerDisk": {"image": "kubevisor/legacy:latest"}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}},
            ],
        }}},
    })


def wait(what: str, fn: Any, timeout: float = 600.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}")


class Up:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "KUBECONFIG": str(root / "kubeconfig")}
        self.out = open(root / "up.out", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubevisor.cli", "up", "--data-dir", str(root), "--listen", "127.0.0.1:0"],
            stdout=self.out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        wait("kubevisor up", lambda: "Kubevisor is up" in (root / "up.out").read_text(), 180)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(["kubectl", *args], env=self.env, input=stdin, capture_output=True, text=True,
                              check=True).stdout

    @property
    def run_dir(self) -> Path:
        return self.root / "run" / "vms" / f"default_{VM}"

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=180)
        self.out.close()


async def read_until(ws: Any, pattern: re.Pattern[bytes], timeout: float = 60.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while not pattern.search(buf):
        msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
        if msg.type != 2:  # BINARY
            raise RuntimeError(f"console ended: {msg.type}")
        buf += msg.data
    return buf


async def console_echo(echoes: int) -> list[float]:
    """Log in over the console websocket, then time single keystrokes until their echo."""
    config = load_config()
    async with Client(config) as client:
        ws = await client.websocket(VMI, VM, "console")
        await ws.send_bytes(b"\r")
        await read_until(ws, re.compile(LOGIN_PROMPT.pattern + rb"|" + PROMPT.pattern))
        await ws.send_bytes(USER.encode() + b"\r")
        await read_until(ws, re.compile(rb"assword: |[$#] "))
        await ws.send_bytes(PASSWORD.encode() + b"\r")
        await read_until(ws, PROMPT)
        await asyncio.sleep(1.0)
        times = []
        for _ in range(echoes):
            t0 = time.perf_counter()
            await ws.send_bytes(b"x")
            await read_until(ws, re.compile(rb"x"), timeout=30)
            times.append(time.perf_counter() - t0)
            await ws.send_bytes(b"\x7f")  # erase it again
            await read_until(ws, re.compile(rb"\x08"), timeout=30)
        await ws.send_bytes(b"\x15")  # ^U: clear the line
        await ws.close()
        return times


def serial_echo(run_dir: Path, echoes: int) -> list[float]:
    """The same keystrokes on the serial socket itself (nobody else holds it now)."""
    time.sleep(1.0)  # the websocket session lets go of the socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(run_dir / "serial0.sock"))
        sock.settimeout(30)
        times = []
        for _ in range(echoes):
            t0 = time.perf_counter()
            sock.sendall(b"x")
            buf = b""
            while b"x" not in buf:
                buf += sock.recv(4096)
            times.append(time.perf_counter() - t0)
            sock.sendall(b"\x7f")
            buf = b""
            while b"\x08" not in buf:
                buf += sock.recv(4096)
        return times


async def screenshots(count: int) -> tuple[list[float], int]:
    config = load_config()
    async with Client(config) as client:
        times, size = [], 0
        for _ in range(count):
            t0 = time.perf_counter()
            png = await client.subresource("GET", VMI, VM, "vnc/screenshot", raw=True)
            times.append(time.perf_counter() - t0)
            size = len(png)
        return times, size


def fetch(port: int, path: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=300) as resp:
        size = len(resp.read())
    return time.perf_counter() - t0, size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def throughput(up: Up, fetches: int) -> dict[str, Any]:
    info = read_domain_info(up.run_dir)
    assert info is not None
    direct = next(p.host_port for p in info.ports if p.guest_port == 80)
    local = free_port()
    forward = subprocess.Popen(
        [sys.executable, "-m", "kubevisor.virtctl", "port-forward", f"vm/{VM}", f"{local}:80"],
        env=up.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait("port-forward", lambda: _connects(local), 60)
        fetch(local, "/index.html")  # the first tunnel sets up the path
        rows: dict[str, list[float]] = {"direct": [], "port_forward": []}
        size = 0
        for _ in range(fetches):  # interleaved, so both see the same load
            for label, port in (("direct", direct), ("port_forward", local)):
                seconds, size = fetch(port, "/big.bin")
                rows[label].append(size / seconds / 1e6)
    finally:
        forward.terminate()
        forward.wait(timeout=30)
    direct_mbs = statistics.median(rows["direct"])
    tunnel_mbs = statistics.median(rows["port_forward"])
    return {
        "bytes": size,
        "direct_mb_s": [round(x, 2) for x in rows["direct"]],
        "port_forward_mb_s": [round(x, 2) for x in rows["port_forward"]],
        "median_direct_mb_s": round(direct_mbs, 2),
        "median_port_forward_mb_s": round(tunnel_mbs, 2),
        "ratio": round(tunnel_mbs / direct_mbs, 3),
    }


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--echoes", type=int, default=50)
    parser.add_argument("--screenshots", type=int, default=20)
    parser.add_argument("--mib", type=int, default=16, help="size of the file fetched through the tunnel")
    parser.add_argument("--fetches", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "access", "machine": machine(), "loadavg_before": loadavg()}
    with tempfile.TemporaryDirectory(prefix="kv-bench-access-") as tmp:
        up = Up(Path(tmp))
        os.environ["KUBECONFIG"] = up.env["KUBECONFIG"]
        try:
            up.kubectl("apply", "-f", "-", stdin=manifest(args.mib))
            serial = up.run_dir / "serial0.log"
            wait("the big file in the guest",
                 lambda: serial.exists() and b"BIG-FILE-READY" in serial.read_bytes())
            wait("the login prompt", lambda: LOGIN_PROMPT.search(serial.read_bytes()))
            info = read_domain_info(up.run_dir)
            result["accel"] = info.accel if info is not None else ""
            via = asyncio.run(console_echo(args.echoes))
            direct = serial_echo(up.run_dir, args.echoes)
            result["console_echo_s"] = {
                "apiserver_websocket": stats(via),
                "serial_socket_direct": stats(direct),
                "relay_overhead_median_s": round(statistics.median(via) - statistics.median(direct), 4),
            }
            times, size = asyncio.run(screenshots(args.screenshots))
            result["vnc_screenshot_s"] = {**stats(times), "png_bytes": size}
            result["port_forward"] = throughput(up, args.fetches)
        finally:
            up.stop()
    result["loadavg_after"] = loadavg()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
