"""`kubevisor up` as a user runs it, with real guests: the real command, the real kubectl, the node
agent's launchers booting the legacy image under QEMU (TCG).

The first test is the whole story from a fresh data dir, with a `kubevisor up` of its own. The
others share one `kubevisor up` (each in its own namespace): run strategies after a guest powers
itself off or its QEMU is killed, kill -9 of the node agent, instancetypes and presets as QEMU
and the guest see them, PVC data across a VM's deletion, cloud-init and disks from Secrets and
ConfigMaps, the termination grace period, and the errors a user sees. What a test reads from the
guest it reads from the serial console log that the launcher keeps in its run dir.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_controller_e2e import KUBECTL, holds, wait_for
from up_fixture import BOOT, Up

from kubevisor import procs
from kubevisor.controller.kube import PVCS, PVS, VMIS
from kubevisor.launcher.run_cli import CLOUD_INIT_FINISHED, LOGIN_PROMPT

pytestmark = [pytest.mark.e2e, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VM = REPO / "examples" / "vm-legacy.yaml"
IMAGE = "kubevisor/legacy:latest"

Obj = dict[str, Any]


def user_data(*runcmd: str, **config: Any) -> str:
    body = {**config, "runcmd": list(runcmd)} if runcmd else config
    return "#cloud-config\n" + yaml.safe_dump(body, default_flow_style=False, width=10_000)


def legacy_vm(
    name: str,
    strategy: str = "Always",
    *,
    runcmd: tuple[str, ...] = (),
    memory: str | None = "256Mi",
    grace: int = 5,
    disks: tuple[tuple[str, Obj], ...] = (),
    cloud_init: Obj | None = None,
) -> Obj:
    """A VM of the legacy image: containerDisk (vda), cloud-init (vdb), then `disks` (vdc, ...)."""
    seed = cloud_init or {"userData": user_data(*runcmd)}
    volumes: list[Obj] = [
        {"name": "containerdisk", "containerDisk": {"image": IMAGE}},
        {"name": "cloudinit", "cloudInitNoCloud": seed},
    ]
    volumes += [{"name": disk_name, **source} for disk_name, source in disks]
    domain: Obj = {"devices": {"disks": [{"name": v["name"], "disk": {"bus": "virtio"}} for v in volumes]}}
    if memory is not None:
        domain["memory"] = {"guest": memory}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": strategy,
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {"terminationGracePeriodSeconds": grace, "domain": domain, "volumes": volumes},
            },
        },
    }


def vm_status_column(up: Up, ns: str, name: str) -> str:
    """STATUS of `kubectl get vms`, as a user reads it (the table's column, empty while unset)."""
    header, row = up.kubectl("get", "vms", "-n", ns, name).splitlines()[:2]
    start = header.index("STATUS")
    end = header.index("READY", start)
    return row[start:end].strip()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    cluster = Up(tmp_path_factory.mktemp("up"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    assert cluster.proc is not None and cluster.proc.returncode == 0, cluster.text()


# -- the story --------------------------------------------------------------------------------------


def test_story_up_apply_running_console_delete_stop(tmp_path: Path) -> None:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    story = Up(tmp_path)
    assert not story.layout.root.exists()  # a fresh data dir
    try:
        story.start()
        assert f"export KUBECONFIG={story.kubeconfig}" in story.text()
        story.kubectl("apply", "-f", str(EXAMPLE_VM))
        wait_for(
            "kubectl get vms: Running",
            lambda: vm_status_column(story, "default", "legacy") == "Running",
            timeout=BOOT,
        )
        assert story.kubectl("get", "vmi", "legacy", "-o", "jsonpath={.status.phase}") == "Running"
        qemu = story.qemu("default", "legacy")
        assert qemu is not None and procs.is_alive(qemu)

        # The guest's console: login prompt, runcmd's line, cloud-init finished.
        story.wait_console("default", "legacy", LOGIN_PROMPT)
        story.wait_console("default", "legacy", CLOUD_INIT_FINISHED)
        assert re.search(rb"hello from runcmd on legacy, kernel \S+", story.console("default", "legacy"))
        pod = story.launcher_pods("default")[0]
        assert "started (QEMU pid" in story.kubectl("logs", pod["metadata"]["name"])

        # Kept open: both files are removed with the run, their last lines are still readable here.
        with (
            open(story.run_dir("default", "legacy") / "serial0.log", "rb") as serial,
            open(story.pod_log_path(pod), "rb") as pod_log,
        ):
            story.kubectl("delete", "-f", str(EXAMPLE_VM), "--wait=true", "--timeout=300s", timeout=330)
            wait_for("VMI gone", lambda: story.vmi("default", "legacy") is None, timeout=BOOT)
            wait_for("pod gone", lambda: not story.launcher_pods("default"), timeout=BOOT)
            wait_for("QEMU gone", lambda: not procs.is_alive(qemu), timeout=BOOT)
            console, launcher = serial.read(), pod_log.read().decode(errors="replace")
        assert b"power button pressed, powering off" in console and b"shutting down" in console
        assert "powering down (ACPI), grace period 30s" in launcher and "guest powered off after" in launcher
        assert not story.kubectl("get", "vms,vmis,pods", "-A", "-o", "name").strip()
        assert story.leftovers() == []
        records = [procs.read_record(story.layout.record(r)) for r in ("apiserver", "controller", "node")]
    finally:
        code = story.interrupt() if story.proc is not None else None
        story.stop()
    assert code == 0, story.text()
    assert "kubevisor up: stopped" in story.text()
    assert all(r is not None and not procs.is_alive(r) for r in records)
    assert not list(story.layout.procs.iterdir())
    assert story.leftovers() == []


# -- run strategies with real guests --------------------------------------------------------------


def test_run_strategies_after_guest_power_off_and_qemu_kill(up: Up) -> None:
    ns = up.namespace()
    poweroff = ("echo guest-powers-off > /dev/console", "poweroff")
    up.apply(
        ns,
        legacy_vm("always-off", "Always", runcmd=poweroff),
        legacy_vm("rerun-off", "RerunOnFailure", runcmd=poweroff),
        legacy_vm("rerun-kill", "RerunOnFailure"),
        legacy_vm("once-kill", "Once"),
    )
    names = ("always-off", "rerun-off", "rerun-kill", "once-kill")
    uid = {name: wait_for(f"VMI {name}", lambda n=name: up.vmi(ns, n))["metadata"]["uid"] for name in names}

    # QEMU killed: RerunOnFailure starts a new VMI, Once keeps its Failed one.
    killed = {}
    for name in ("rerun-kill", "once-kill"):
        assert up.running_vmi(ns, name)["metadata"]["uid"] == uid[name]
        record = up.qemu(ns, name)
        assert record is not None
        procs.signal_process(record, signal.SIGKILL)
        killed[name] = record
    up.running_vmi(ns, "rerun-kill", other_than=uid["rerun-kill"])
    assert "Failed" in up.event_reasons(ns, uid["rerun-kill"])
    new_qemu = up.qemu(ns, "rerun-kill")
    assert new_qemu is not None and new_qemu.pid != killed["rerun-kill"].pid
    wait_for(
        "Once: VMI Failed", lambda: (up.vmi(ns, "once-kill") or {}).get("status", {}).get("phase") == "Failed"
    )
    wait_for("Once: Stopped", lambda: up.printable(ns, "once-kill") == "Stopped")

    # The guest powers itself off: Always boots a new VMI, RerunOnFailure stays down.
    up.running_vmi(ns, "always-off", other_than=uid["always-off"])
    assert "Succeeded" in up.event_reasons(ns, uid["always-off"])
    wait_for(
        "RerunOnFailure: VMI removed after the power-off",
        lambda: up.vmi(ns, "rerun-off") is None,
        timeout=BOOT,
    )
    assert "Succeeded" in up.event_reasons(ns, uid["rerun-off"])
    wait_for("RerunOnFailure: Stopped", lambda: up.printable(ns, "rerun-off") == "Stopped")
    holds(
        "no new VMI after a clean power-off; Once keeps its failed VMI",
        lambda: (
            up.vmi(ns, "rerun-off") is None
            and (up.vmi(ns, "once-kill") or {}).get("metadata", {}).get("uid") == uid["once-kill"]
        ),
        5,
    )
    assert up.qemu(ns, "rerun-off") is None and up.qemu(ns, "once-kill") is None
    for name in names:
        up.delete_vm(ns, name)
    assert up.leftovers(ns) == []


# -- kill -9 of the node agent ------------------------------------------------------------------------


def test_kill_9_of_the_node_agent_adopts_both_running_vms(up: Up) -> None:
    ns = up.namespace()
    up.apply(ns, legacy_vm("adopt-a"), legacy_vm("adopt-b"))
    names = ("adopt-a", "adopt-b")
    vmis = {name: up.running_vmi(ns, name) for name in names}
    qemus = {name: up.qemu(ns, name) for name in names}
    assert all(q is not None and procs.is_alive(q) for q in qemus.values())
    agent = procs.read_record(up.layout.record("node"))
    assert agent is not None and procs.is_alive(agent)

    adopted_before = up.layout.log("node").read_text().count("adopted launcher pid")
    procs.signal_process(agent, signal.SIGKILL)
    restarted = wait_for(
        "kubevisor up restarts the node agent",
        lambda: (
            (r := procs.read_record(up.layout.record("node"))) and r.pid != agent.pid and procs.is_alive(r)
        ),
    )
    assert restarted
    wait_for(
        "the new agent adopted both launchers",
        lambda: up.layout.log("node").read_text().count("adopted launcher pid") >= adopted_before + 2,
    )

    def unchanged() -> bool:
        return all(
            (q := up.qemu(ns, name)) == qemus[name]
            and q is not None
            and procs.is_alive(q)
            and (v := up.vmi(ns, name)) is not None
            and v["metadata"]["uid"] == vmis[name]["metadata"]["uid"]
            and v["status"]["phase"] == "Running"
            for name in names
        ) and all(p["status"]["phase"] == "Running" for p in up.launcher_pods(ns))

    holds("same QEMU processes, VMIs and pods still Running", unchanged, 5)
    for name in names:  # the guests kept booting undisturbed
        up.wait_console(ns, name, LOGIN_PROMPT)
    assert unchanged()
    # The new agent acts on what it adopted: deleting powers them down.
    for name in names:
        up.delete_vm(ns, name)
    assert all(q is not None and not procs.is_alive(q) for q in qemus.values())
    assert up.leftovers(ns) == []


# -- instancetypes and presets, as QEMU and the guest see them ------------------------------------


def test_instancetype_sets_cpu_and_memory_of_qemu_and_guest(up: Up) -> None:
    ns = up.namespace()
    instancetype = {
        "apiVersion": "instancetype.kubevirt.io/v1beta1",
        "kind": "VirtualMachineInstancetype",
        "metadata": {"name": "two-by-320"},
        "spec": {"cpu": {"guest": 2}, "memory": {"guest": "320Mi"}},
    }
    report = "echo \"guest-sees cpus=$(nproc) memtotal_kib=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)\""
    vm = legacy_vm("sized", memory=None, runcmd=(report + " > /dev/console",))
    vm["spec"]["instancetype"] = {"kind": "VirtualMachineInstancetype", "name": "two-by-320"}
    up.apply(ns, instancetype, vm)
    vmi = up.running_vmi(ns, "sized")
    assert vmi["spec"]["domain"]["memory"]["guest"] == "320Mi"
    assert vmi["metadata"]["annotations"]["kubevirt.io/instancetype-name"] == "two-by-320"
    argv = up.qemu_argv(ns, "sized")
    assert argv[argv.index("-m") + 1] == "320M"
    assert argv[argv.index("-smp") + 1].split(",")[0] == "2"
    seen = up.wait_console(ns, "sized", re.compile(rb"guest-sees cpus=(\d+) memtotal_kib=(\d+)"))
    assert int(seen[1]) == 2
    assert 256 * 1024 < int(seen[2]) <= 320 * 1024  # RAM less what the kernel reserves
    up.delete_vm(ns, "sized")


def test_replica_set_with_a_preset_scales_0_2_0(up: Up) -> None:
    ns = up.namespace()
    preset = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstancePreset",
        "metadata": {"name": "two-cores"},
        "spec": {"selector": {"matchLabels": {"e2e/size": "two-cores"}}, "domain": {"cpu": {"cores": 2}}},
    }
    template = legacy_vm("unused", grace=0)["spec"]["template"]
    template["metadata"]["labels"] = {"app": "rs", "e2e/size": "two-cores"}
    rs = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "rs"}}, "template": template},
    }
    up.apply(ns, preset, rs)
    holds("no VMIs at 0", lambda: not up.kube.list(VMIS, ns)["items"], 2)
    up.kubectl("scale", "vmirs", "rs", "-n", ns, "--replicas=2")
    vmis = wait_for(
        "2 VMIs Running",
        lambda: (
            (
                items := [
                    v
                    for v in up.kube.list(VMIS, ns)["items"]
                    if v.get("status", {}).get("phase") == "Running"
                ]
            )
            and len(items) == 2
            and items
        ),
        timeout=BOOT,
    )
    for vmi in vmis:
        name = vmi["metadata"]["name"]
        assert (
            vmi["metadata"]["annotations"]["virtualmachinepreset.kubevirt.io/two-cores"] == "kubevirt.io/v1"
        )
        assert vmi["spec"]["domain"]["cpu"]["cores"] == 2
        argv = up.qemu_argv(ns, name)
        assert "cores=2" in argv[argv.index("-smp") + 1].split(",")
    qemus = [up.qemu(ns, v["metadata"]["name"]) for v in vmis]
    assert len(up.kube.list(VMIS, ns)["items"]) == 2
    up.kubectl("scale", "vmirs", "rs", "-n", ns, "--replicas=0")
    wait_for("0 VMIs", lambda: not up.kube.list(VMIS, ns)["items"], timeout=BOOT)
    wait_for("0 pods", lambda: not up.launcher_pods(ns), timeout=BOOT)
    wait_for("QEMUs gone", lambda: all(q is not None and not procs.is_alive(q) for q in qemus), timeout=BOOT)
    assert up.leftovers(ns) == []


# -- storage ---------------------------------------------------------------------------------------------


def test_pvc_data_written_by_the_guest_survives_deleting_the_vm(up: Up) -> None:
    ns = up.namespace()
    token = f"kubevisor-pvc-{uuid.uuid4().hex}"
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    }
    data_disk = (("data", {"persistentVolumeClaim": {"claimName": "data"}}),)  # /dev/vdc
    writer = legacy_vm(
        "pvc",
        disks=data_disk,
        runcmd=(f"echo -n {token} > /dev/vdc", "sync", "echo pvc-written > /dev/console"),
    )
    up.apply(ns, pvc, writer)
    up.running_vmi(ns, "pvc")
    up.wait_console(ns, "pvc", re.compile(rb"pvc-written"))
    qemu = up.qemu(ns, "pvc")
    up.delete_vm(ns, "pvc")

    # Deleting the VM removed its QEMU, overlays, seeds, pod state and logs; the claim's data stays.
    assert qemu is not None and not procs.is_alive(qemu)
    assert up.leftovers(ns) == []
    volume = up.kube.get(PVS, None, up.kube.get(PVCS, ns, "data")["spec"]["volumeName"])
    disk = Path(volume["spec"]["hostPath"]["path"]) / "disk.img"
    assert disk.read_bytes()[: len(token)] == token.encode()
    assert sorted(p.name for p in disk.parent.iterdir()) == ["disk.img"]

    reader = legacy_vm(
        "pvc",
        disks=data_disk,
        runcmd=("echo \"pvc-read: $(head -c 64 /dev/vdc | tr -d '\\000')\" > /dev/console",),
    )
    up.apply(ns, reader)
    up.running_vmi(ns, "pvc")
    seen = up.wait_console(ns, "pvc", re.compile(rb"pvc-read: (\S*)"))
    assert seen[1].decode() == token
    up.delete_vm(ns, "pvc")
    assert disk.exists() and up.leftovers(ns) == []


def test_cloud_init_from_a_secret_and_disks_from_a_configmap_and_a_secret(up: Up) -> None:
    ns = up.namespace()
    token = uuid.uuid4().hex
    config = user_data(
        "mkdir -p /mnt/cm /mnt/sec",
        "mount -t iso9660 -o ro /dev/vdc /mnt/cm",
        "mount -t iso9660 -o ro /dev/vdd /mnt/sec",
        'echo "cm-greeting: $(cat /mnt/cm/greeting)" > /dev/console',
        'echo "secret-token: $(cat /mnt/sec/token)" > /dev/console',
        hostname="from-secret",
    )
    objects = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "userdata"},
            "stringData": {"userdata": config},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app"},
            "data": {"greeting": "hello-cm"},
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": token}},
    ]
    vm = legacy_vm(
        "refs",
        cloud_init={"secretRef": {"name": "userdata"}},
        disks=(("app", {"configMap": {"name": "app"}}), ("creds", {"secret": {"secretName": "creds"}})),
    )
    up.apply(ns, *objects, vm)
    up.running_vmi(ns, "refs")
    up.wait_console(ns, "refs", re.compile(rb"from-secret login: "))  # the hostname came from the Secret
    assert up.wait_console(ns, "refs", re.compile(rb"cm-greeting: (\S+)"))[1] == b"hello-cm"
    assert up.wait_console(ns, "refs", re.compile(rb"secret-token: (\S+)"))[1] == token.encode()
    up.delete_vm(ns, "refs")
    assert up.leftovers(ns) == []  # nothing of the Secrets is left on the node


def test_delete_honours_termination_grace_period_of_a_guest_ignoring_acpi(up: Up) -> None:
    ns = up.namespace()
    up.apply(ns, legacy_vm("deaf", grace=3, runcmd=("killall acpid", "echo acpi-ignored > /dev/console")))
    up.running_vmi(ns, "deaf")
    up.wait_console(ns, "deaf", re.compile(rb"acpi-ignored"))
    qemu = up.qemu(ns, "deaf")
    pod = up.launcher_pods(ns)[0]
    with open(up.pod_log_path(pod), "rb") as pod_log:  # readable after the pod's logs are removed
        up.delete_vm(ns, "deaf")
        launcher = pod_log.read().decode(errors="replace")
    assert "powering down (ACPI), grace period 3s" in launcher
    assert "guest did not power off within 3s: QEMU killed" in launcher
    assert qemu is not None and not procs.is_alive(qemu)
    assert up.leftovers(ns) == []


# -- what a user is told ---------------------------------------------------------------------------------


def test_errors_unschedulable_missing_pvc_and_invalid_manifest(up: Up) -> None:
    ns = up.namespace()
    up.apply(
        ns,
        legacy_vm("huge", memory="4Ti"),
        legacy_vm("nopvc", disks=(("data", {"persistentVolumeClaim": {"claimName": "missing"}}),)),
    )
    wait_for("ErrorUnschedulable", lambda: vm_status_column(up, ns, "huge") == "ErrorUnschedulable")
    wait_for("ErrorPvcNotFound", lambda: vm_status_column(up, ns, "nopvc") == "ErrorPvcNotFound")
    events = up.kubectl("get", "events", "-n", ns, "--field-selector", "reason=FailedScheduling")
    assert "Insufficient memory" in events
    assert not up.pods_of(ns, "nopvc")

    bad = legacy_vm("bad")
    bad["spec"]["running"] = True  # together with runStrategy
    bad["spec"]["template"]["spec"]["domain"]["devices"]["disks"].append({"name": "nosuchvolume", "disk": {}})
    result = up.kubectl_run("apply", "-n", ns, "-f", "-", "-v=6", stdin=yaml.safe_dump(bad))
    assert result.returncode != 0
    assert re.search(r"POST https://\S+/virtualmachines\?\S* 422 Unprocessable Entity", result.stderr)
    assert 'The VirtualMachine "bad" is invalid' in result.stderr
    assert "spec.running" in result.stderr
    assert "spec.template.spec.domain.devices.disks[2].name" in result.stderr
    for name in ("huge", "nopvc"):
        up.delete_vm(ns, name)
    assert os.path.isdir(up.layout.run)
