"""`python -m kubevisor.oci` runs kubevisor-runtime (what test wrappers exec)."""

import sys

from kubevisor.oci.main import main

sys.exit(main())
