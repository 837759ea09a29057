"""kubevisor-runtime's CLI plumbing that runs on every verb: verb detection and the import budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubevisor.oci.main import build_parser, verb_of

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["state", "x"], "state"),
        (["--root", "/run/r", "--log", "l.json", "--log-format", "json", "kill", "x", "9"], "kill"),
        (["--systemd-cgroup", "--debug", "create", "--bundle", "b", "x"], "create"),
        (["--rootless", "false", "delete", "x"], "delete"),
        (["--root=/r", "start", "x"], "start"),
        (["--version"], None),
        (["bogus", "x"], None),
        ([], None),
    ],
)
def test_verb_of(argv: list[str], verb: str | None) -> None:
    assert verb_of(argv) == verb


def test_a_verb_parser_parses_like_the_full_one() -> None:
    argv = ["--root", "/r", "exec", "--detach", "--pid-file", "p", "--process", "proc.json", "c1"]
    assert vars(build_parser("exec").parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_state_imports_nothing_heavy(tmp_path: Path) -> None:
    """`state` runs on every poll of CRI-O and podman: it must not pull in the sandbox library or
    modules that cost milliseconds to import (measured with python -X importtime)."""
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "from kubevisor.oci.main import main\n"
        f"code = main(['--root', {str(tmp_path)!r}, 'state', 'nosuch'])\n"
        "print(json.dumps({'code': code, 'new': sorted(set(sys.modules) - before)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO)},
    )
    result = json.loads(out.stdout)
    assert result["code"] == 1 and "does not exist" in out.stderr
    heavy = {"dataclasses", "inspect", "typing", "shutil", "subprocess", "threading", "socket"}
    heavy |= {
        m for m in result["new"] if m.startswith(("kubevisor.sandbox.sandbox", "kubevisor.oci.runtime"))
    }
    assert heavy & set(result["new"]) == set()
