"""Show a guest's serial console log as it grows, until its login prompt and cloud-init's
"finished" line have appeared (the markers `kubevisor vm run --demo` waits for).

    python scripts/demo_console.py SERIAL_LOG [--timeout SECONDS]

Exit 0 when both appeared, 1 on timeout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kubevisor.launcher.run_cli import CLOUD_INIT_FINISHED, LOGIN_PROMPT


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("log", type=Path)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    deadline = time.monotonic() + args.timeout
    shown = 0
    data = b""
    while time.monotonic() < deadline:
        try:
            data = args.log.read_bytes()
        except FileNotFoundError:
            data = b""
        if len(data) < shown:  # a new boot started a new log
            shown = 0
        if len(data) > shown:
            sys.stdout.buffer.write(data[shown:])
            sys.stdout.buffer.flush()
            shown = len(data)
        if LOGIN_PROMPT.search(data) and CLOUD_INIT_FINISHED.search(data):
            sys.stdout.write("\n")
            return 0
        time.sleep(0.2)
    missing = [n for n, r in (("login prompt", LOGIN_PROMPT), ("cloud-init", CLOUD_INIT_FINISHED))
               if not r.search(data)]
    print(f"\ndemo: timed out waiting for: {', '.join(missing)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
