"""`kubevisor up`: the whole embedded system on this machine, in one command.

    kubevisor up [--data-dir DIR] [--listen 127.0.0.1:6443] [--node-name NAME]
    kubevisor down [--data-dir DIR]

Starts, as recorded child processes (kubevisor/procs.py), the apiserver (with the kubevirt.io
CRDs and admission), the controllers (VM, VMI, VMIRS, scheduler, node lifecycle) and the node
agent; writes the admin kubeconfig, waits until the Node is Ready and says what to do next.

Ctrl-C or SIGTERM (or `kubevisor down`) stops everything: the controllers first (so nothing
reacts), then the node agent powers its VMs down (ACPI, each VMI's grace period) and marks
their pods terminated as a node shutdown does, then the apiserver. A child that dies on its
own is restarted. A restart with the same data dir after `up` itself was killed adopts the
VMs that still run (same QEMU processes).

Layout of DIR: apiserver/ (database, PKI, kubeconfigs), node/ (pod state), run/ (the
launchers' run dirs: sockets, overlays, seeds, serial logs), local-path/ (PVC data of the
default StorageClass), logs/ (component and pod logs), procs/ (process records), node-access/
(the CA and certificates of the apiserver → node agent link, mutual TLS), kubeconfig (the
admin kubeconfig).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from kubevisor import paths, procs
from kubevisor.apiserver.certs import NodeAccessPKI, ensure_node_access_pki

PROG = "kubevisor up"
ROLES = ("apiserver", "controller", "node")
CONTROLLER_USER = "system:kubevisor-controller"
READY_TIMEOUT = 120.0
STOP_TIMEOUTS = {"controller": 20.0, "apiserver": 30.0}
NODE_STOP_TIMEOUT = 400.0  # the node agent powers every VM down within its grace period (max 300 s)
RESTART_BACKOFF_MAX = 30.0


def default_data_dir() -> Path:
    return paths.data_dir() / "cluster"


def node_user(node: str) -> str:
    return f"system:node:{node}"


def user_kubeconfig(data_dir: Path, user: str) -> Path:
    """Where `kubevisor apiserver --kubeconfig-for USER` writes USER's kubeconfig."""
    return data_dir / "apiserver" / f"{user.replace(':', '_')}.kubeconfig"


@dataclass
class Layout:
    root: Path

    @property
    def apiserver(self) -> Path:
        return self.root / "apiserver"

    @property
    def node_state(self) -> Path:
        return self.root / "node"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pod_logs(self) -> Path:
        return self.root / "logs" / "pods"

    @property
    def local_path(self) -> Path:
        """The local-path provisioner's volumes (PVC data: it outlives the VMs)."""
        return self.root / "local-path"

    @property
    def procs(self) -> Path:
        return self.root / "procs"

    @property
    def node_access(self) -> Path:
        """The apiserver → node agent mutual-TLS files (console, VNC, port-forward, pause)."""
        return self.root / "node-access"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def record(self, role: str) -> Path:
        return self.procs / f"{role}.json"

    def log(self, role: str) -> Path:
        return self.logs / f"{role}.log"


@dataclass
class Child:
    role: str
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    record: procs.ProcessRecord | None = None
    log_offset: int = 0
    restarts: list[float] = field(default_factory=list)


class UpError(RuntimeError):
    pass


def _say(message: str) -> None:
    print(f"kubevisor up: {message}", flush=True)


def path_hint(python: str) -> str:
    """An `export PATH` line when this installation's virtctl is not the one a shell would find
    (the project's venv is not on PATH after `make demo`), else nothing."""
    bin_dir = Path(python).parent
    if shutil.which("virtctl") == str(bin_dir / "virtctl") or not (bin_dir / "virtctl").exists():
        return ""
    return f"\n  export PATH={bin_dir}:$PATH               # virtctl and kubevisor"


class Up:
    def __init__(
        self, layout: Layout, listen: str, node_name: str, log_level: str, python: str = sys.executable
    ) -> None:
        self.layout = layout
        self.listen = listen
        self.node_name = node_name
        self.log_level = log_level
        self.python = python
        self.stop = threading.Event()
        self.children: dict[str, Child] = {}
        self.server_url = ""

    # -- children -----------------------------------------------------------------------
    def _kubevisor(self, *args: str) -> list[str]:
        return [self.python, "-m", "kubevisor.cli", *args]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBEVISOR_RUN"] = str(self.layout.run)
        return env

    def plan(self) -> None:
        lay = self.layout
        env = self._child_env()
        access = NodeAccessPKI(lay.node_access)
        self.children = {
            "apiserver": Child(
                "apiserver",
                self._kubevisor(
                    "apiserver",
                    "--data-dir",
                    str(lay.apiserver),
                    "--listen",
                    self.listen,
                    "--pod-log-dir",
                    str(lay.pod_logs),
                    "--kubevirt",
                    "--node-access-dir",
                    str(lay.node_access),
                    "--kubeconfig-for",
                    CONTROLLER_USER,
                    "--kubeconfig-for",
                    node_user(self.node_name),
                    "--log-level",
                    self.log_level,
                ),
                env,
            ),
            "controller": Child(
                "controller",
                self._kubevisor(
                    "controller",
                    "--kubeconfig",
                    str(user_kubeconfig(lay.root, CONTROLLER_USER)),
                    "--no-leader-elect",
                    "--local-path-dir", str(lay.local_path),
                    "--log-level",
                    self.log_level,
                ),
                env,
            ),
            "node": Child(
                "node",
                self._kubevisor(
                    "node",
                    "--kubeconfig",
                    str(user_kubeconfig(lay.root, node_user(self.node_name))),
                    "--node-name",
                    self.node_name,
                    "--state-dir",
                    str(lay.node_state),
                    "--pod-log-dir",
                    str(lay.pod_logs),
                    "--stop-pods-on-exit",
                    "--access-port",
                    "0",
                    "--access-cert",
                    str(access.node_cert(self.node_name)),
                    "--access-key",
                    str(access.node_key(self.node_name)),
                    "--access-client-ca",
                    str(access.ca),
                    "--log-level",
                    self.log_level,
                ),
                env,
            ),
        }

    def start_child(self, child: Child) -> None:
        log_path = self.layout.log(child.role)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            child.log_offset = log.tell()
            # A session of its own: Ctrl-C reaches `up` only, which stops the children in order.
            child.popen = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child.env,
                start_new_session=True,
            )
        child.record = procs.ProcessRecord.of(child.popen.pid, child.argv, child.role)
        procs.write_record(self.layout.record(child.role), child.record)

    def log_since_start(self, child: Child) -> str:
        try:
            with open(self.layout.log(child.role), "rb") as f:
                f.seek(child.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _exited(self, child: Child) -> bool:
        return child.popen is None or child.popen.poll() is not None

    def _fail_exited(self, child: Child) -> None:
        if self._exited(child):
            tail = "\n".join(self.log_since_start(child).strip().splitlines()[-15:])
            raise UpError(f"the {child.role} exited ({self._exit_text(child)}):\n{tail}")

    @staticmethod
    def _exit_text(child: Child) -> str:
        code = child.popen.returncode if child.popen is not None else None
        if code is not None and code < 0:
            return f"signal {-code}"
        return f"exit code {code}"

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, child: Child) -> None:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            self._fail_exited(child)
            if check():
                return
            if time.monotonic() > deadline:
                raise UpError(f"timed out waiting for {what}; see {self.layout.log(child.role)}")
            self.stop.wait(0.2)
        raise UpError("interrupted")

    def _serving(self, child: Child) -> Callable[[], bool]:
        marker = "kubevisor apiserver: serving on "

        def serving() -> bool:
            text = self.log_since_start(child)
            if marker not in text:
                return False
            self.server_url = text.split(marker, 1)[1].split(";", 1)[0].strip()
            return True

        return serving

    def start_apiserver(self) -> None:
        child = self.children["apiserver"]
        self.start_child(child)
        self._wait("the apiserver", self._serving(child), READY_TIMEOUT, child)
        self.pin_listen_port(child)
        admin = self.layout.apiserver / "admin.kubeconfig"
        link = self.layout.kubeconfig
        if not (link.is_symlink() and os.readlink(link) == "apiserver/admin.kubeconfig"):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to("apiserver/admin.kubeconfig")
        if not admin.exists():
            raise UpError(f"the apiserver wrote no kubeconfig at {admin}")

    def pin_listen_port(self, child: Child) -> None:
        """A port chosen by the system (`--listen HOST:0`) is kept for restarts of the apiserver:
        the other children's kubeconfigs name it."""
        port = self.server_url.rsplit(":", 1)[-1]
        host, _, wanted = self.listen.rpartition(":")
        if wanted != "0" or not port.isdigit():
            return
        self.listen = f"{host}:{port}"
        flag = child.argv.index("--listen")
        child.argv[flag + 1] = self.listen

    def wait_node_ready(self) -> None:
        from kubevisor.controller.kube import NODES, ApiError, Kube

        kube = Kube.from_kubeconfig(str(self.layout.kubeconfig))
        try:

            def ready() -> bool:
                try:
                    node = kube.get(NODES, None, self.node_name)
                except ApiError:
                    return False
                return any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or []
                )

            self._wait(f"Node {self.node_name} to be Ready", ready, READY_TIMEOUT, self.children["node"])
        finally:
            kube.close()

    # -- leftovers of a previous run ----------------------------------------------------------
    def clean_leftovers(self) -> None:
        """Stop the control plane a killed `up` left behind; the VMs keep running (adopted later)."""
        for role in ("controller", "node", "apiserver"):
            path = self.layout.record(role)
            record = procs.read_record(path)
            if record is None or not procs.is_alive(record):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if role == "node":
                # SIGTERM would power its VMs down (--stop-pods-on-exit); the next agent adopts them.
                procs.signal_process(record, signal.SIGKILL)
                procs.wait_gone(record, 10.0)
                path.unlink(missing_ok=True)
            else:
                procs.clean(path, grace=STOP_TIMEOUTS[role])
            _say(f"stopped the {role} (pid {record.pid}) a previous `kubevisor up` left running")

    # -- run ------------------------------------------------------------------------------------
    def run(self) -> int:
        lay = self.layout
        for directory in (lay.root, lay.procs, lay.logs, lay.run):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        own = lay.record("up")
        previous = procs.read_record(own)
        if previous is not None and procs.is_alive(previous) and previous.pid != os.getpid():
            raise UpError(
                f"already running for {lay.root} (pid {previous.pid}); stop it with `kubevisor down`"
            )
        procs.write_record(own, procs.ProcessRecord.of(os.getpid(), sys.argv, "up"))
        try:
            self.clean_leftovers()
            ensure_node_access_pki(lay.node_access, {self.node_name: ["127.0.0.1"]})
            self.plan()
            self.prepare_images()
            _say(f"starting the apiserver (log: {lay.log('apiserver')})")
            self.start_apiserver()
            _say(f"apiserver serving on {self.server_url}")
            _say("starting the controllers and the node agent")
            self.start_child(self.children["controller"])
            self.start_child(self.children["node"])
            self.wait_node_ready()
            self.print_next_steps()
            self.supervise()
            return 0
        except UpError as exc:
            if not self.stop.is_set():
                print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
            return 0 if self.stop.is_set() else 1
        finally:
            self.shutdown()
            own.unlink(missing_ok=True)

    def prepare_images(self) -> None:
        """The legacy containerDisk that examples/ use (built once into the cache, then a lookup)."""
        try:
            from kubevisor.images.containerdisk import ensure_legacy_image

            ensure_legacy_image()
        except Exception as exc:  # the system still works for other images
            _say(f"warning: could not prepare kubevisor/legacy:latest: {str(exc).splitlines()[0]}")

    def print_next_steps(self) -> None:
        kubeconfig = self.layout.kubeconfig
        print(
            f"""
Kubevisor is up: apiserver {self.server_url}, node {self.node_name} Ready.
{path_hint(self.python)}
  export KUBECONFIG={kubeconfig}
  kubectl apply -f examples/vm-legacy.yaml      # a VirtualMachine (runStrategy: Always)
  kubectl get vms                               # STATUS turns Running
  kubectl get vmis -o wide
  virtctl console legacy                        # or: tail -f {self.layout.run}/vms/default_legacy/serial0.log

Logs: {self.layout.logs}/. Ctrl-C (or `kubevisor down --data-dir {self.layout.root}`) powers the VMs
down and stops everything; `kubevisor up` again brings them back.
""",
            flush=True,
        )

    def supervise(self) -> None:
        """Restart a child that died on its own (backing off), until asked to stop."""
        while not self.stop.wait(0.5):
            for role in ROLES:
                child = self.children[role]
                if not self._exited(child):
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 300] + [now]
                delay = min(RESTART_BACKOFF_MAX, 2.0 ** (len(child.restarts) - 1))
                _say(f"the {role} exited ({self._exit_text(child)}); restarting it in {delay:g}s")
                if self.stop.wait(delay):
                    return
                self.start_child(child)
                if role == "apiserver":
                    self._wait("the apiserver", self._serving(child), READY_TIMEOUT, child)

    def shutdown(self) -> None:
        """Controllers first, then the node agent (it powers the VMs down), then the apiserver."""
        if not self.children:
            return
        _say("stopping: powering the VMs down")
        for role in ("controller", "node", "apiserver"):
            child = self.children.get(role)
            if child is None or child.popen is None:
                continue
            timeout = NODE_STOP_TIMEOUT if role == "node" else STOP_TIMEOUTS[role]
            if child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)
                try:
                    child.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _say(f"the {role} did not stop within {timeout:g}s: killed")
                    child.popen.kill()
                    child.popen.wait()
            self.layout.record(role).unlink(missing_ok=True)
        self.clean_run_dirs()
        _say("stopped")

    def clean_run_dirs(self) -> None:
        """Whatever a launcher could not clean (it was killed): orphan QEMUs, overlays, seeds."""
        vms = self.layout.run / "vms"
        if not vms.is_dir():
            return
        from kubevisor.launcher import runner

        for run_dir in sorted(vms.iterdir()):
            if not run_dir.is_dir():
                continue
            with contextlib.suppress(runner.RunError):
                if runner.clean_stale(run_dir) is not None:
                    _say(f"cleaned up after {run_dir.name}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Start the whole embedded system on this machine.")
    p.add_argument("--data-dir", type=Path, default=None, help=f"default: {default_data_dir()}")
    p.add_argument("--listen", default="127.0.0.1:6443", help="HOST:PORT of the apiserver (port 0: any)")
    p.add_argument("--node-name", default=socket.gethostname().lower())
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from kubevisor.apiserver.cli import parse_listen
    from kubevisor.node.node_object import NodeError, check_node_name

    try:
        parse_listen(args.listen)
        check_node_name(args.node_name)
    except (ValueError, NodeError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    data_dir: Path = (args.data_dir or default_data_dir()).absolute()
    if data_dir.exists() and not data_dir.is_dir():
        print(f"{PROG}: --data-dir: {data_dir} is not a directory", file=sys.stderr)
        return 2
    up = Up(Layout(data_dir), args.listen, args.node_name, args.log_level)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        up.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        return up.run()
    except UpError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


def down_main(argv: Sequence[str] | None = None) -> int:
    """`kubevisor down [--data-dir DIR]`: ask a running `kubevisor up` to stop, wait until it has."""
    p = argparse.ArgumentParser(prog="kubevisor down", description="Stop a running `kubevisor up`.")
    p.add_argument("--data-dir", type=Path, default=None, help=f"default: {default_data_dir()}")
    p.add_argument("--timeout", type=float, default=NODE_STOP_TIMEOUT + 60)
    args = p.parse_args(list(argv) if argv is not None else None)
    layout = Layout((args.data_dir or default_data_dir()).absolute())
    record = procs.read_record(layout.record("up"))
    if record is None or not procs.is_alive(record):
        print(f"kubevisor down: nothing is running for {layout.root}")
        return 0
    procs.signal_process(record, signal.SIGTERM)
    if not procs.wait_gone(record, args.timeout):
        print(
            f"kubevisor down: `kubevisor up` (pid {record.pid}) did not stop in {args.timeout:g}s",
            file=sys.stderr,
        )
        return 1
    print("kubevisor down: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
