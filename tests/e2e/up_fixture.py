"""`kubevisor up` as a user runs it, for the e2e tests that need the whole system: the real console
script in a data dir of its own, kubectl and the official client on its admin kubeconfig, and
what its runs leave on this host (run dirs, QEMU records, serial logs, pod state)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from test_controller_e2e import Cluster, wait_for

from kubevisor import procs
from kubevisor.controller.kube import PODS, Kube
from kubevisor.up import NODE_STOP_TIMEOUT, Layout

KUBEVISOR = Path(sys.executable).with_name("kubevisor")  # the console script, as a user runs it
BOOT = 600.0  # TCG on a shared 2-core machine: generous, never asserted as a duration

Obj = dict[str, Any]


class Up(Cluster):
    """One `kubevisor up --data-dir DIR` process; kubectl and the client use its admin kubeconfig."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.layout = Layout(tmp / "data")
        self.kubeconfig = self.layout.kubeconfig
        self.output = tmp / "up.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [str(KUBEVISOR), "up", "--data-dir", str(self.layout.root), "--listen", "127.0.0.1:0"]
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"kubevisor up exited:\n{self.text()}"
            return "Kubevisor is up" in self.text() and self.text().rstrip().endswith("brings them back.")

        wait_for("kubevisor up", up, timeout=300)
        self.kube = Kube.from_kubeconfig(str(self.kubeconfig))

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=NODE_STOP_TIMEOUT + 60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.interrupt()
        super().stop()

    # -- what a run leaves on this host --------------------------------------------------------
    def run_dir(self, ns: str, name: str) -> Path:
        return self.layout.run / "vms" / f"{ns}_{name}"

    def qemu(self, ns: str, name: str) -> procs.ProcessRecord | None:
        return procs.read_record(self.run_dir(ns, name) / "qemu.json")

    def qemu_argv(self, ns: str, name: str) -> list[str]:
        record = self.qemu(ns, name)
        assert record is not None and procs.is_alive(record), f"no QEMU for {ns}/{name}"
        return Path(f"/proc/{record.pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")

    def leftovers(self, ns: str | None = None) -> list[Path]:
        """What runs of VMs (of namespace ns, else all) left on this host: run dirs, pod state, pod logs."""
        found: list[Path] = []
        for directory in (self.layout.run / "vms", self.layout.pod_logs):  # named <namespace>_...
            if directory.is_dir():
                found += [p for p in directory.iterdir() if ns is None or p.name.startswith(f"{ns}_")]
        pods = self.layout.node_state / "pods"  # named by pod uid; the VMI file names the namespace
        for pod_dir in pods.iterdir() if pods.is_dir() else []:
            try:
                vmi_ns = yaml.safe_load((pod_dir / "vmi.yaml").read_text())["metadata"]["namespace"]
            except (OSError, TypeError, KeyError, yaml.YAMLError):
                vmi_ns = None
            if ns is None or vmi_ns in (ns, None):
                found.append(pod_dir)
        return found

    def console(self, ns: str, name: str) -> bytes:
        try:
            return (self.run_dir(ns, name) / "serial0.log").read_bytes()
        except FileNotFoundError:
            return b""

    def wait_console(self, ns: str, name: str, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        match = wait_for(
            f"{pattern.pattern!r} on the console of {ns}/{name}",
            lambda: pattern.search(self.console(ns, name)),
            timeout=BOOT,
            interval=0.5,
        )
        assert isinstance(match, re.Match)
        return match

    # -- objects --------------------------------------------------------------------------------
    def apply(self, ns: str, *docs: Obj) -> None:
        self.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(docs))

    def delete_vm(self, ns: str, name: str) -> None:
        self.kubectl("delete", "vm", "-n", ns, name, "--wait=true", "--timeout=300s", timeout=330)
        wait_for(f"VMI {name} gone", lambda: self.vmi(ns, name) is None, timeout=BOOT)
        wait_for(f"pods of {name} gone", lambda: not self.pods_of(ns, name), timeout=BOOT)

    def pods_of(self, ns: str, vmi_name: str) -> list[Obj]:
        selector = f"kubevirt.io=virt-launcher,vm.kubevirt.io/name={vmi_name}"
        return list(self.kube.list(PODS, ns, label_selector=selector)["items"])

    def running_vmi(self, ns: str, name: str, other_than: str | None = None) -> Obj:
        """The VMI once it is Running (with a uid other than `other_than`, if given)."""
        vmi = wait_for(
            f"VMI {ns}/{name} Running",
            lambda: (
                (v := self.vmi(ns, name))
                and (v.get("status") or {}).get("phase") == "Running"
                and v["metadata"]["uid"] != other_than
                and v
            ),
            timeout=BOOT,
        )
        assert isinstance(vmi, dict)
        return vmi

    def event_reasons(self, ns: str, uid: str) -> set[str]:
        return {e["reason"] for e in self.events(ns) if e["involvedObject"].get("uid") == uid}

    def pod_log_path(self, pod: Obj) -> Path:
        meta = pod["metadata"]
        return (
            self.layout.pod_logs / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / "compute" / "0.log"
        )
