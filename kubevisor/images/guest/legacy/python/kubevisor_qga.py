"""A QEMU guest agent protocol responder on the virtio-serial port `org.qemu.guest_agent.0` (stdlib only).

Implements the commands a hypervisor layer needs: guest-ping, guest-sync, guest-sync-delimited,
guest-info, guest-get-osinfo, guest-get-host-name, guest-get-time, guest-network-get-interfaces,
guest-shutdown. Requests are JSON objects, possibly preceded by 0xFF resync bytes; responses are
one JSON object per line.
"""

from __future__ import annotations

import json
import os
import platform
import select
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PORT_NAME = "org.qemu.guest_agent.0"
VERSION = "0.0-kubevisor"

Handler = Callable[[dict[str, Any]], Any]


class QgaError(Exception):
    def __init__(self, klass: str, desc: str) -> None:
        super().__init__(desc)
        self.klass = klass
        self.desc = desc


def os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key] = value.strip().strip('"')
    except OSError:
        pass
    return info


def cmd_osinfo(_args: dict[str, Any]) -> dict[str, Any]:
    rel = os_release()
    uname = platform.uname()
    return {
        "id": rel.get("ID", "kubevisor"),
        "name": rel.get("NAME", "Kubevisor legacy"),
        "pretty-name": rel.get("PRETTY_NAME", "Kubevisor legacy"),
        "version": rel.get("VERSION", ""),
        "version-id": rel.get("VERSION_ID", ""),
        "kernel-release": uname.release,
        "kernel-version": uname.version,
        "machine": uname.machine,
    }


def cmd_host_name(_args: dict[str, Any]) -> dict[str, Any]:
    return {"host-name": socket.gethostname()}


def cmd_time(_args: dict[str, Any]) -> int:
    return time.time_ns()


def _prefix_len(mask_hex: str) -> int:
    return bin(int(mask_hex, 16)).count("1")


def cmd_interfaces(_args: dict[str, Any]) -> list[dict[str, Any]]:
    """Interfaces with MAC and IPv4/IPv6 addresses, from `ip -o addr` (busybox)."""
    result: dict[str, dict[str, Any]] = {}
    for name in sorted(os.listdir("/sys/class/net")):
        entry: dict[str, Any] = {"name": name, "ip-addresses": []}
        try:
            entry["hardware-address"] = Path(f"/sys/class/net/{name}/address").read_text().strip()
        except OSError:
            pass
        result[name] = entry
    import subprocess  # late: the agent starts during boot, when every import costs (TCG)

    proc = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        name = parts[1].rstrip(":").split("@")[0]
        family = parts[2]
        if family not in ("inet", "inet6") or name not in result:
            continue
        address, _, prefix = parts[3].partition("/")
        result[name]["ip-addresses"].append(
            {
                "ip-address-type": "ipv4" if family == "inet" else "ipv6",
                "ip-address": address,
                "prefix": int(prefix or (32 if family == "inet" else 128)),
            }
        )
    return list(result.values())


def cmd_shutdown(args: dict[str, Any]) -> None:
    mode = args.get("mode", "powerdown")
    applet = {"powerdown": "poweroff", "halt": "halt", "reboot": "reboot"}.get(mode)
    if applet is None:
        raise QgaError("GenericError", f"invalid mode {mode!r}")
    import subprocess

    subprocess.Popen([applet], start_new_session=True)


COMMANDS: dict[str, Handler] = {
    "guest-ping": lambda _a: {},
    "guest-sync": lambda a: a.get("id"),
    "guest-sync-delimited": lambda a: a.get("id"),
    "guest-get-osinfo": cmd_osinfo,
    "guest-get-host-name": cmd_host_name,
    "guest-get-time": cmd_time,
    "guest-network-get-interfaces": cmd_interfaces,
    "guest-shutdown": cmd_shutdown,
}
# commands that answer nothing on success (per the QGA schema)
NO_RESPONSE = {"guest-shutdown"}


def cmd_info(_args: dict[str, Any]) -> dict[str, Any]:
    names = set(COMMANDS) | {"guest-info"}
    return {
        "version": VERSION,
        "supported_commands": [
            {"name": n, "enabled": True, "success-response": n not in NO_RESPONSE} for n in sorted(names)
        ],
    }


COMMANDS["guest-info"] = cmd_info


def handle(request: Any) -> bytes | None:
    """One request -> the bytes to send back (None: no response)."""
    if not isinstance(request, dict) or not isinstance(request.get("execute"), str):
        body: dict[str, Any] = {"error": {"class": "GenericError", "desc": "Invalid JSON syntax"}}
        return json.dumps(body).encode() + b"\n"
    name = request["execute"]
    args = request.get("arguments") or {}
    handler = COMMANDS.get(name)
    if handler is None:
        body = {"error": {"class": "CommandNotFound", "desc": f"The command {name} has not been found"}}
    else:
        try:
            value = handler(args if isinstance(args, dict) else {})
        except QgaError as exc:
            body = {"error": {"class": exc.klass, "desc": exc.desc}}
        except Exception as exc:  # a handler bug must not kill the agent
            body = {"error": {"class": "GenericError", "desc": str(exc)}}
        else:
            if name in NO_RESPONSE:
                return None
            body = {"return": value}
    if "id" in request and name not in ("guest-sync", "guest-sync-delimited"):
        body["id"] = request["id"]
    prefix = b"\xff" if name == "guest-sync-delimited" else b""
    return prefix + json.dumps(body).encode() + b"\n"


def split_requests(buffer: bytes) -> tuple[list[Any], bytes]:
    """Complete JSON requests in `buffer` and the unconsumed rest.

    A 0xFF byte resets the parser (QGA's resync): a partial request before it is dropped.
    A malformed complete line yields a None request (answered with an error).
    """
    segments = buffer.split(b"\xff")
    requests: list[Any] = []
    rest = b""
    for n, segment in enumerate(segments):
        found, rest = _parse_segment(segment)
        requests += found
        if n < len(segments) - 1:
            rest = b""
    return requests, rest


def _parse_segment(data: bytes) -> tuple[list[Any], bytes]:
    decoder = json.JSONDecoder()
    requests: list[Any] = []
    while True:
        data = data.lstrip(b" \t\r\n")
        if not data:
            return requests, b""
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return requests, data  # a partial multibyte character: wait for more
        try:
            obj, end = decoder.raw_decode(text)
        except json.JSONDecodeError:
            if b"\n" in data:
                data = data[data.index(b"\n") + 1 :]
                requests.append(None)
                continue
            return requests, data
        requests.append(obj)
        data = text[end:].encode()


def find_port(name: str = PORT_NAME) -> str | None:
    base = Path("/sys/class/virtio-ports")
    if not base.is_dir():
        return None
    for port in sorted(base.iterdir()):
        try:
            if (port / "name").read_text().strip() == name:
                return f"/dev/{port.name}"
        except OSError:
            continue
    return None


def serve(device: str) -> None:
    fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    buffer = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        events = poller.poll(1000)
        if not events:
            continue
        if any(ev & select.POLLHUP for _, ev in events):
            # no host side connected: nothing to read until it connects
            buffer = b""
            time.sleep(0.5)
            continue
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            buffer = b""
            time.sleep(0.5)
            continue
        buffer += chunk
        requests, buffer = split_requests(buffer)
        for request in requests:
            response = handle(request)
            if response:
                _write_all(fd, response)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return  # host went away
        data = data[n:]


def main() -> int:
    device = None
    for _ in range(50):
        device = find_port()
        if device:
            break
        time.sleep(0.2)
    if device is None:
        return 0  # no guest agent channel in this VM: nothing to do
    serve(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
