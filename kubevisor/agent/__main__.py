"""`python3 -m kvagent` in the guest (or `python -m kubevisor.agent` on the host for tests)."""

import sys

from .server import main

sys.exit(main())
