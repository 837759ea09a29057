"""`python -m kubevisor ...` runs the `kubevisor` command (what tests and scripts use to run the
code of their own checkout rather than whatever `kubevisor` is on PATH)."""

import sys

from kubevisor.cli import main

sys.exit(main())
