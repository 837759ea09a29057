"""`virtctl reset VMI`: PUT .../virtualmachineinstances/VMI/reset (a hard reset of the guest)."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.common import name_arg, run
from kubevisor.virtctl.softreboot import vmi_action


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reset", parents=parents, help="Reset a virtual machine instance.")
    p.add_argument("vmi", type=name_arg, metavar="VMI")
    p.set_defaults(func=lambda args: run(args, lambda a, c: vmi_action(a, c, "reset", "reset")))
