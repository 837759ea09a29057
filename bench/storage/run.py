"""Benchmark: what preparing a VMI's volumes costs (part of every VM start), and admission.

Measures, median of --runs:
- prepare_volumes for the legacy example (containerDisk overlay over the real image from the
  local store when present, else a 512 MiB qcow2 base; emptyDisk; NoCloud seed) and cleanup;
- each piece alone: qcow2 overlay (`qemu-img create -b`), `qemu-img info` probe, emptyDisk,
  NoCloud ISO, ConfigDrive ISO;
- admission (presets + default_vmi + validate_vmi) of the legacy VMI, per object.
Prints one JSON document with the machine's facts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import machine  # noqa: E402
from kubevisor.api.admission import admit  # noqa: E402
from kubevisor.storage.cloudinit import CloudInitData, write_configdrive_iso, write_nocloud_iso  # noqa: E402
from kubevisor.storage.volumes import cleanup_volumes, create_overlay, detect_format, prepare_volumes  # noqa: E402

LEGACY_IMAGE = "kubevisor/legacy:latest"
USER_DATA = b"#cloud-config\nhostname: legacy\nruncmd:\n  - echo hello\n"


def median_ms(fn: Callable[[int], None], runs: int) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def base_image(tmp: Path) -> tuple[Path, str]:
    try:
        from kubevisor.images.store import ImageStore

        return ImageStore().resolve_disk(LEGACY_IMAGE), LEGACY_IMAGE
    except Exception:
        base = tmp / "base.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "512M"], check=True)
        return base, "synthetic 512M qcow2"


def legacy_vmi() -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "legacy", "namespace": "default"},
        "spec": {
            "domain": {"memory": {"guest": "256Mi"}, "devices": {"disks": [{"name": "root"}]}},
            "volumes": [
                {"name": "root", "containerDisk": {"image": LEGACY_IMAGE}},
                {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": USER_DATA.decode()}},
            ],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base, base_desc = base_image(tmp)
        vmi = legacy_vmi()

        def full(i: int) -> None:
            work = tmp / f"vmi-{i}"
            prepare_volumes(vmi, work, image_resolver=lambda _ref: base)
            cleanup_volumes(work)

        def overlay(i: int) -> None:
            create_overlay(tmp / f"o-{i}.qcow2", base, "qcow2" if base.suffix == ".qcow2" else "raw", "bench")

        def probe(_i: int) -> None:
            detect_format(base, "bench")

        def empty(i: int) -> None:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp / f"e-{i}.qcow2"), "1G"], check=True
            )

        data = CloudInitData(user_data=USER_DATA, network_data=b"version: 2\n")

        def nocloud(i: int) -> None:
            write_nocloud_iso(tmp / f"n-{i}.iso", data, instance_id="legacy.default", hostname="legacy")

        def configdrive(i: int) -> None:
            write_configdrive_iso(tmp / f"c-{i}.iso", data, uuid="0" * 36, hostname="legacy", name="legacy")

        def admission(_i: int) -> None:
            admit("CREATE", vmi)

        result = {
            "benchmark": "storage",
            "machine": machine(),
            "base_image": base_desc,
            "runs": args.runs,
            "median_ms": {
                "prepare_volumes_legacy_and_cleanup": median_ms(full, args.runs),
                "qcow2_overlay": median_ms(overlay, args.runs),
                "qemu_img_info_probe": median_ms(probe, args.runs),
                "empty_disk_1g": median_ms(empty, args.runs),
                "nocloud_iso": median_ms(nocloud, args.runs),
                "configdrive_iso": median_ms(configdrive, args.runs),
                "admission_vmi": median_ms(admission, args.runs * 10),
            },
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
