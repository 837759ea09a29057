"""Pod runner (embedded mode): runs the launcher pods bound to this node as host processes.

For each virt-launcher pod on this node: fetch its VMI, mount its claims (node.claims) and
project its Secrets/ConfigMaps (node.objects), write it to the pod's state dir and start the
launcher (`kubevisor vm run -f vmi.yaml`, the hypervisor layer's launcher) with stdout/stderr in
kubelet's log layout (`<log-dir>/<ns>_<pod>_<uid>/compute/0.log`, what `kubectl logs` reads).
The process is recorded (pid + start time) in the pod's state dir; a restarted agent adopts the
launchers that still run and cleans the rest.

Pod status follows the process: Running/Ready once started, Succeeded on exit 0 (the guest
powered off), Failed otherwise. A pod being deleted gets SIGTERM (the launcher powers the
guest down) and SIGKILL after its grace period, then its deletion is completed (grace 0).
When the launcher's QEMU runs, the VMI is moved from Scheduled to Running (the
handler's part of KubeVirt's phase machine).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubevisor import procs
from kubevisor.controller.base import Controller, timestamp
from kubevisor.controller.informer import Informer
from kubevisor.controller.kube import PODS, VMIS, ApiError, Kube, Obj, key_of
from kubevisor.controller.launcher_pod import APP_LABEL, APP_LAUNCHER, VM_NAME_LABEL
from kubevisor.controller.vmi_status import being_deleted, pod_phase
from kubevisor.node.claims import NotReady, mount_claims
from kubevisor.node.objects import mount_objects
from kubevisor.node.pod_status import CONTAINER, rejected_status, running_status, terminated_status

log = logging.getLogger(__name__)

LAUNCHER_RECORD = "launcher.json"
STARTED_FILE = "started"
VMI_FILE = "vmi.yaml"
MAX_GRACE = 300.0
ADOPTED_POLL = 2.0
QEMU_POLL = 1.0
CLAIM_POLL = 2.0
NODE_SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."

QemuAlive = Callable[[str, str], bool]
"""(namespace, vmi name) -> does the launcher's QEMU run?"""


def default_launcher_argv(vmi_file: Path) -> list[str]:
    return [sys.executable, "-m", "kubevisor.cli", "vm", "run", "-f", str(vmi_file)]


def launcher_qemu_alive(namespace: str, name: str) -> bool:
    """The hypervisor layer's launcher records its QEMU in its run dir."""
    try:
        runner = importlib.import_module("kubevisor.launcher.runner")
    except ImportError:
        return False
    record = procs.read_record(Path(runner.run_dir_for(namespace, name)) / "qemu.json")
    return record is not None and procs.is_alive(record)


def pod_grace(pod: Obj) -> float:
    """Seconds from SIGTERM to SIGKILL of a pod's launcher: the deletion's grace, else the pod's."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds")
    if grace is None:
        grace = 30
    return min(float(grace), MAX_GRACE)


def clean_launcher_leftovers(namespace: str, name: str) -> None:
    """After a launcher was killed: its orphan QEMU, overlays and seeds (unless a launcher owns them)."""
    try:
        runner = importlib.import_module("kubevisor.launcher.runner")
    except ImportError:
        return
    with contextlib.suppress(Exception):
        runner.clean_after_launcher(runner.run_dir_for(namespace, name))


@dataclass
class Run:
    record: procs.ProcessRecord
    started_at: str
    popen: subprocess.Popen[bytes] | None = None  # None when adopted after a restart
    exit_code: int | None = None
    vmi_running_reported: bool = False


class PodRunner(Controller):
    name = "pod-runner"
    workers = 4

    def __init__(
        self,
        kube: Kube,
        pods: Informer,
        node_name: str,
        host_ip: str,
        state_dir: Path,
        log_dir: Path,
        launcher_argv: Callable[[Path], list[str]] = default_launcher_argv,
        qemu_alive: QemuAlive = launcher_qemu_alive,
    ) -> None:
        super().__init__()
        self.kube = kube
        self.pods = pods
        self.node_name = node_name
        self.host_ip = host_ip
        self.state_dir = state_dir / "pods"
        self.log_dir = log_dir
        self.launcher_argv = launcher_argv
        self.qemu_alive = qemu_alive
        self.runs: dict[str, Run] = {}
        self.finished: set[str] = set()  # restartPolicy Never: a pod's launcher runs once
        self._lock = threading.Lock()
        pods.add_handler(self._on_pod)

    # -- bookkeeping -----------------------------------------------------------------
    def _pod_dir(self, uid: str) -> Path:
        if not uid or "/" in uid or uid.startswith("."):
            raise ValueError(f"metadata.uid: {uid!r} cannot name a directory")
        return self.state_dir / uid

    def _log_file(self, pod: Obj) -> Path:
        meta = pod["metadata"]
        directory = self.log_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / CONTAINER
        directory.mkdir(parents=True, exist_ok=True)
        return directory / "0.log"

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        pod = new if new is not None else old
        if pod is None:
            return
        if new is None:
            threading.Thread(target=self._pod_gone, args=(pod,), daemon=True).start()
            return
        self.enqueue(key_of(pod))

    def _pod_gone(self, pod: Obj) -> None:
        """The pod object is deleted: stop what may still run and remove its logs (as kubelet does)."""
        uid = str(pod["metadata"].get("uid") or "")
        self._stop_and_forget(uid, pod_grace(pod))
        meta = pod["metadata"]
        if uid and "/" not in uid and not uid.startswith("."):
            shutil.rmtree(
                self.log_dir / f"{meta.get('namespace')}_{meta.get('name')}_{uid}", ignore_errors=True
            )

    def adopt_all(self) -> None:
        """After a restart: keep the launchers that still run, clean up after dead ones."""
        if not self.state_dir.exists():
            return
        for pod_dir in sorted(self.state_dir.iterdir()):
            record = procs.adopt(pod_dir / LAUNCHER_RECORD)
            if record is None:
                continue
            started = (
                (pod_dir / STARTED_FILE).read_text().strip()
                if (pod_dir / STARTED_FILE).exists()
                else timestamp()
            )
            with self._lock:
                self.runs[pod_dir.name] = Run(record, started)
            log.info("adopted launcher pid %d of pod uid %s", record.pid, pod_dir.name)

    def clean_orphans(self) -> None:
        """Stop and remove what belongs to pods that no longer exist (call after the cache synced)."""
        live = {str(p["metadata"].get("uid")) for p in self.pods.store.objects()}
        if not self.state_dir.exists():
            return
        for pod_dir in sorted(self.state_dir.iterdir()):
            if pod_dir.name not in live:
                self._stop_and_forget(pod_dir.name, 30.0)

    # -- reconcile -----------------------------------------------------------------------
    def reconcile(self, key: str) -> float | None:
        pod = self.pods.store.get(key)
        if pod is None or (pod.get("spec") or {}).get("nodeName") != self.node_name:
            return None
        uid = str(pod["metadata"].get("uid") or "")
        if being_deleted(pod):
            self._stop_and_forget(uid, pod_grace(pod))
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                self.kube.delete(PODS, meta["namespace"], meta["name"], uid=uid, grace_period_seconds=0)
            return None
        with self._lock:
            run = self.runs.get(uid)
        if pod_phase(pod) in ("Succeeded", "Failed"):
            if run is not None and run.exit_code is None:
                self._stop_and_forget(uid, 30.0, keep_state=True)
            return None
        if run is None:
            if uid in self.finished:
                return None  # our Succeeded/Failed report has not reached the cache yet
            return self._start(pod)
        if run.popen is None and run.exit_code is None and not procs.is_alive(run.record):
            run.exit_code = 255  # an adopted launcher ended while we could not wait for it
        if run.exit_code is not None:
            self._report_exit(pod, run)
            return None
        return self._report_vmi_running(pod, run)

    def _start(self, pod: Obj) -> float | None:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if labels.get(APP_LABEL) != APP_LAUNCHER or not labels.get(VM_NAME_LABEL):
            self._patch_status(
                pod, rejected_status("UnsupportedPod", "the embedded node agent runs only virt-launcher pods")
            )
            return None
        uid = str(meta["uid"])
        pod_dir = self._pod_dir(uid)
        if (pod_dir / STARTED_FILE).exists():
            # Started before, and its launcher is gone: it ended while this agent was down.
            started = (pod_dir / STARTED_FILE).read_text().strip()
            message = "the launcher ended while the node agent was not running"
            self._patch_status(pod, terminated_status(pod, self.host_ip, started, 255, timestamp(), message))
            self.finished.add(uid)
            self._forget(uid, keep_state=False)
            return None
        try:
            vmi = self.kube.get(VMIS, meta["namespace"], labels[VM_NAME_LABEL])
        except ApiError as exc:
            if not exc.not_found:
                raise
            now = timestamp()
            self._patch_status(
                pod, terminated_status(pod, self.host_ip, None, 1, now, "the VMI does not exist")
            )
            return None
        pod_dir.mkdir(parents=True, exist_ok=True)
        try:
            mount_claims(self.kube, pod, pod_dir)
            mount_objects(self.kube, pod, pod_dir)
        except NotReady as exc:
            if not exc.permanent:
                log.info("pod %s waits: %s", key_of(pod), exc)
                return CLAIM_POLL
            self._patch_status(pod, terminated_status(pod, self.host_ip, None, 1, timestamp(), str(exc)))
            return None
        vmi_file = pod_dir / VMI_FILE
        for field in ("resourceVersion", "managedFields", "generation", "creationTimestamp", "finalizers"):
            vmi["metadata"].pop(field, None)
        vmi.pop("status", None)
        vmi_file.write_text(yaml.safe_dump(vmi, sort_keys=False))
        argv = self.launcher_argv(vmi_file)
        log_file = self._log_file(pod)
        with open(log_file, "ab") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        record = procs.ProcessRecord.of(popen.pid, argv, "launcher")
        procs.write_record(pod_dir / LAUNCHER_RECORD, record)
        started = timestamp()
        (pod_dir / STARTED_FILE).write_text(started)
        run = Run(record, started, popen)
        with self._lock:
            self.runs[uid] = run
        threading.Thread(
            target=self._wait, args=(key_of(pod), run), daemon=True, name=f"wait-{popen.pid}"
        ).start()
        log.info("started launcher pid %d for pod %s", popen.pid, key_of(pod))
        self._patch_status(pod, running_status(pod, self.host_ip, started, timestamp()))
        return QEMU_POLL

    def _wait(self, key: str, run: Run) -> None:
        assert run.popen is not None
        run.exit_code = run.popen.wait()
        self.enqueue(key)

    def _report_exit(self, pod: Obj, run: Run) -> None:
        assert run.exit_code is not None
        code = run.exit_code
        self._patch_status(pod, terminated_status(pod, self.host_ip, run.started_at, code, timestamp()))
        self.finished.add(str(pod["metadata"]["uid"]))
        self._forget(str(pod["metadata"]["uid"]), keep_state=False)

    def _report_vmi_running(self, pod: Obj, run: Run) -> float | None:
        if run.vmi_running_reported:
            return None if run.popen is not None else ADOPTED_POLL
        labels = pod["metadata"].get("labels") or {}
        ns, name = pod["metadata"]["namespace"], labels.get(VM_NAME_LABEL, "")
        if not self.qemu_alive(ns, name):
            return QEMU_POLL
        try:
            vmi = self.kube.get(VMIS, ns, name)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        phase = (vmi.get("status") or {}).get("phase")
        if phase == "Running":
            run.vmi_running_reported = True
            return None if run.popen is not None else ADOPTED_POLL
        if phase != "Scheduled":
            return QEMU_POLL  # the controller has not handed the VMI over yet
        status = vmi.setdefault("status", {})
        status["phase"] = "Running"
        stamps = list(status.get("phaseTransitionTimestamps") or [])
        stamps.append({"phase": "Running", "phaseTransitionTimestamp": timestamp()})
        status["phaseTransitionTimestamps"] = stamps
        self.kube.replace(VMIS, vmi)  # a conflict retries with the fresh VMI
        run.vmi_running_reported = True
        return None if run.popen is not None else ADOPTED_POLL

    def _patch_status(self, pod: Obj, status: Obj) -> None:
        meta = pod["metadata"]
        try:
            self.kube.patch(PODS, meta["namespace"], meta["name"], {"status": status}, subresource="status")
        except ApiError as exc:
            if not exc.not_found:
                raise

    def _stop_and_forget(self, uid: str, grace: float, keep_state: bool = False) -> None:
        with self._lock:
            run = self.runs.get(uid)
        record = run.record if run is not None else None
        if record is None:
            with contextlib.suppress(ValueError):
                record = procs.read_record(self._pod_dir(uid) / LAUNCHER_RECORD)
        killed = False
        if record is not None and procs.is_alive(record):
            killed = procs.kill_with_grace(record, grace)
        if run is not None and run.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.popen.wait(timeout=10)
        if killed:
            vmi_key = self._vmi_of(uid)
            if vmi_key is not None:
                clean_launcher_leftovers(*vmi_key)
        self._forget(uid, keep_state)

    def _vmi_of(self, uid: str) -> tuple[str, str] | None:
        """(namespace, VMI name) of a pod of ours, from the VMI file written when it started."""
        with contextlib.suppress(OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
            meta = yaml.safe_load((self._pod_dir(uid) / VMI_FILE).read_text())["metadata"]
            return str(meta.get("namespace") or "default"), str(meta["name"])
        return None

    def _forget(self, uid: str, keep_state: bool) -> None:
        with self._lock:
            self.runs.pop(uid, None)
        if not keep_state:
            with contextlib.suppress(ValueError):
                shutil.rmtree(self._pod_dir(uid), ignore_errors=True)

    def stop_all(self, grace: float | None = None) -> None:
        """A node shutdown (embedded mode): power every VM down, in parallel, each within its pod's
        grace period (capped at `grace` if given), and report the pods terminated as kubelet's
        graceful node shutdown does. A restart of the agent alone keeps launchers running."""
        with self._lock:
            uids = list(self.runs)
        pods = {str(p["metadata"].get("uid")): p for p in self.pods.store.objects()}

        def stop_one(uid: str) -> None:
            pod = pods.get(uid)
            with self._lock:
                run = self.runs.get(uid)
            limit = pod_grace(pod) if pod is not None else 30.0
            self._stop_and_forget(uid, min(limit, grace) if grace is not None else limit)
            if pod is not None and not being_deleted(pod):
                started = run.started_at if run is not None else None
                code = run.exit_code if run is not None and run.exit_code is not None else 143
                status = terminated_status(
                    pod, self.host_ip, started, code, timestamp(), NODE_SHUTDOWN_MESSAGE
                )
                # kubelet's graceful node shutdown: the pod fails, whatever its container's exit code.
                status.update(phase="Failed", reason="Terminated", message=NODE_SHUTDOWN_MESSAGE)
                with contextlib.suppress(Exception):
                    self._patch_status(pod, status)

        threads = [threading.Thread(target=stop_one, args=(uid,), daemon=True) for uid in uids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
