"""`virtctl unpause vm|vmi NAME`: PUT .../virtualmachineinstances/NAME/unpause."""

from __future__ import annotations

import argparse
from typing import Any

from kubevisor.virtctl.pause import register_action


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    register_action(sub, parents, "unpause", "Unpause a virtual machine (vm) or instance (vmi).")
