"""`kubevisor down [--data-dir DIR]`: stop a running `kubevisor up` (see kubevisor/up.py)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from kubevisor.up import down_main

    return down_main(argv)
