import sys

from kubevisor.virtctl.main import main

sys.exit(main())
