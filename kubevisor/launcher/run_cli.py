"""`kubevisor vm run -f vmi.yaml`: boot one VMI manifest on this host, without an apiserver.

    kubevisor vm run -f vmi.yaml [--console] [--demo] [--accel auto|kvm|tcg] [--grace SECONDS]
                                 [-p [ADDR:]HOSTPORT:GUESTPORT[/udp]]

--console attaches the serial console (raw mode on a terminal; Ctrl-] detaches, the VM keeps
running). SIGINT/SIGTERM power the guest down (ACPI) and kill it after the grace period
(`--grace`, else spec.terminationGracePeriodSeconds, KubeVirt's default 30). --demo streams the
console until the login prompt and cloud-init's finished marker appear, then powers down.
Nothing stays behind: the run dir with sockets, overlays and logs is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from kubevisor.api.errors import ValidationError
from kubevisor.hypervisor import accel as accel_mod
from kubevisor.hypervisor.argv import LaunchError, check_launchable
from kubevisor.hypervisor.console import Console, attach_terminal
from kubevisor.hypervisor.model import PortForward
from kubevisor.hypervisor.vm import VirtualMachine, VMError, VMState
from kubevisor.launcher import runner

PROG = "kubevisor vm run"
DEFAULT_GRACE = 30
LOGIN_PROMPT = re.compile(rb"[\w.-]+ login: ")
CLOUD_INIT_FINISHED = re.compile(rb"Cloud-init v\. \S+ finished at [^\r\n]*[\r\n]")
_PUBLISH = re.compile(
    r"^(?:(?P<addr>[0-9.]+):)?(?P<host>\d{1,5}):(?P<guest>\d{1,5})(?:/(?P<proto>tcp|udp))?$"
)


class _Output:
    """Status lines on stderr; CRLF while the terminal is in raw mode."""

    raw = False

    def say(self, message: str) -> None:
        sys.stderr.write(f"kubevisor: {message}" + ("\r\n" if self.raw else "\n"))
        sys.stderr.flush()


out = _Output()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Boot one VMI manifest on this host.")
    p.add_argument("-f", "--filename", required=True, type=Path, help="VirtualMachineInstance (or VM) YAML")
    p.add_argument("--console", action="store_true", help="attach the serial console (Ctrl-] detaches)")
    p.add_argument("--demo", action="store_true",
                   help="show the console until login prompt and cloud-init finish, then power down")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds from ACPI power-down to SIGKILL (default: terminationGracePeriodSeconds)")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[ADDR:]HOST:GUEST[/udp]",
                   help="forward a host port to a guest port (masquerade interface)")
    p.add_argument("--timeout", type=float, default=600.0, help="--demo: give up after this many seconds")
    p.add_argument("--claims-dir", type=Path, default=None,
                   help="persistentVolumeClaim X is the disk CLAIMS_DIR/X/disk.img "
                        "(default: claims/ next to the VMI file)")
    p.add_argument("--secrets-dir", type=Path, default=None,
                   help="Secret X (secret disks, cloud-init secretRef) is the files of SECRETS_DIR/X/ "
                        "(default: secrets/ next to the VMI file)")
    p.add_argument("--configmaps-dir", type=Path, default=None,
                   help="ConfigMap X is the files of CONFIGMAPS_DIR/X/ "
                        "(default: configmaps/ next to the VMI file)")
    return p


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: kubevisor vm run -f vmi.yaml [--console] [--demo] [--accel auto|kvm|tcg] [--grace S]")
        return 0 if argv else 2
    if argv[0] != "run":
        print(f"kubevisor vm: unknown subcommand {argv[0]!r} (run)", file=sys.stderr)
        return 2
    opts = _parser().parse_args(argv[1:])
    logging.basicConfig(level=logging.WARNING, format="kubevisor: %(message)s")
    try:
        publish = [_parse_publish(p) for p in opts.publish]
        return asyncio.run(_run(opts, publish))
    except (runner.RunError, ValidationError, LaunchError, accel_mod.AccelError, VMError) as e:
        print(f"{PROG}: {_one_line(str(e))}", file=sys.stderr)
        return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_publish(spec: str) -> PortForward:
    m = _PUBLISH.match(spec)
    if not m or not (0 < int(m["host"]) < 65536 and 0 < int(m["guest"]) < 65536):
        raise runner.RunError(f"--publish {spec!r}: expected [ADDR:]HOSTPORT:GUESTPORT[/udp]")
    return PortForward("udp" if m["proto"] == "udp" else "tcp", m["addr"] or "127.0.0.1",
                       int(m["host"]), int(m["guest"]))


def load_vmi(path: Path) -> dict[str, Any]:
    """Read, default and validate a VMI (or a VM, whose template becomes the VMI)."""
    from kubevisor.api.vm import default_vm, validate_vm, vmi_from_vm
    from kubevisor.api.vmi import default_vmi, validate_vmi

    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as e:
        raise runner.RunError(f"{path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise runner.RunError(f"{path}: not valid YAML: {_one_line(str(e))}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise runner.RunError(f"{path}: expected exactly one VirtualMachineInstance document")
    obj: dict[str, Any] = docs[0]
    if obj.get("kind") == "VirtualMachine":
        vm = default_vm(obj)
        validate_vm(vm)
        obj = vmi_from_vm(vm)
    vmi = default_vmi(obj)
    validate_vmi(vmi)
    return vmi


async def _run(opts: argparse.Namespace, publish: list[PortForward]) -> int:
    vmi = load_vmi(opts.filename)
    namespace, name = runner.vmi_key(vmi)
    accel = await asyncio.to_thread(accel_mod.resolve, opts.accel)
    check_launchable(vmi, accel)
    grace = opts.grace if opts.grace is not None else float(
        vmi["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE))
    run_dir = runner.run_dir_for(namespace, name)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    stale = runner.claim_run_dir(run_dir)
    if stale is not None:
        killed = f"killed its QEMU (pid {stale.qemu.pid}), " if stale.qemu_was_alive and stale.qemu else ""
        out.say(f"a previous run of {namespace}/{name} did not finish: {killed}removed its leftovers")
    vm: VirtualMachine | None = None
    console: Console | None = None
    try:
        pod_dir = opts.filename.resolve().parent
        vm = runner.prepare(
            vmi, run_dir, accel, publish,
            claims_dir=opts.claims_dir or pod_dir / "claims",
            secrets_dir=opts.secrets_dir or pod_dir / "secrets",
            configmaps_dir=opts.configmaps_dir or pod_dir / "configmaps",
        )
        started = time.monotonic()
        await vm.start()
        out.say(f"VM {namespace}/{name} started (QEMU pid {vm.pid}, {accel.upper()}); run dir {run_dir}")
        for pf in vm.env.port_forwards:
            out.say(f"port {pf.guest_port}/{pf.protocol} -> {pf.host_addr}:{pf.host_port}")
        if opts.console or opts.demo:
            console = await Console.connect(vm.env.serial_socket)
        if vmi["spec"].get("startStrategy") == "Paused":
            out.say("startStrategy Paused: the guest waits to be unpaused (virtctl unpause)")
        else:
            await vm.resume()
        if opts.demo:
            assert console is not None
            ok = await _demo(vm, console, stop, opts.timeout, started)
            if not ok:
                await _shutdown(vm, grace)
                return 1
        elif opts.console:
            assert console is not None
            await _interactive(vm, console, stop)
        else:
            out.say(f"serial console log: {vm.env.serial_log}; Ctrl-C or SIGTERM powers the VM down")
            await _first(vm.wait(None), stop.wait())
        return await _shutdown(vm, grace)
    finally:
        if console is not None:
            await console.close()
        if vm is not None:
            await vm.kill()
        runner.remove_run_dir(run_dir)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _shutdown(vm: VirtualMachine, grace: float) -> int:
    """Power the VM down (if it still runs) and say how it ended."""
    if vm.state is not VMState.STOPPED:
        out.say(f"powering down (ACPI), grace period {grace:g}s")
        t0 = time.monotonic()
        if await vm.powerdown(grace):
            out.say(f"guest powered off after {time.monotonic() - t0:.1f}s")
        else:
            out.say(f"guest did not power off within {grace:g}s: QEMU killed")
        return 0
    reason = vm.shutdown_reason or f"QEMU exited with {vm.exit_code}"
    out.say(f"VM stopped ({reason})")
    return 0 if vm.shutdown_reason is not None else 1


async def _interactive(vm: VirtualMachine, console: Console, stop: asyncio.Event) -> None:
    is_tty = sys.stdin.isatty()
    out.say("console attached; Ctrl-] detaches" + (" (Ctrl-C goes to the guest)" if is_tty else ""))
    out.raw = is_tty
    try:
        await _first(attach_terminal(console), vm.wait(None), stop.wait())
    finally:
        out.raw = False
    if vm.state is not VMState.STOPPED and not stop.is_set():
        out.say("detached; the VM keeps running. Ctrl-C or SIGTERM powers it down")
        await _first(vm.wait(None), stop.wait())


async def _demo(vm: VirtualMachine, console: Console, stop: asyncio.Event, timeout: float,
                started: float) -> bool:
    """Stream the console until both markers appear. False if they did not."""

    def show(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    show(bytes(console.buffer))  # what arrived before (no await in between: nothing is lost)
    console.on_output = show
    found: dict[str, tuple[float, str]] = {}

    async def watch(label: str, pattern: re.Pattern[bytes]) -> None:
        m = await console.expect(pattern, timeout)
        found[label] = (time.monotonic() - started, m.group(0).decode(errors="replace").strip())

    async def both() -> None:
        await asyncio.gather(watch("login prompt", LOGIN_PROMPT),
                             watch("cloud-init", CLOUD_INIT_FINISHED))

    with contextlib.suppress(TimeoutError, EOFError):
        await _first(both(), vm.wait(None), stop.wait())
    console.on_output = None
    sys.stdout.write("\n")
    for label, (seconds, text) in sorted(found.items(), key=lambda kv: kv[1][0]):
        out.say(f"{label} after {seconds:.1f}s: {text}")
    if len(found) == 2:
        return True
    missing = {"login prompt", "cloud-init"} - set(found)
    why = "interrupted" if stop.is_set() else ("VM stopped" if vm.state is VMState.STOPPED else "timed out")
    out.say(f"{why} before: {', '.join(sorted(missing))}")
    return False
