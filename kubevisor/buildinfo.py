"""This build's version in KubeVirt's `version.Info` shape (virtctl prints it; virt-api serves it)."""

from __future__ import annotations

import platform

from kubevisor import __version__


def version_info() -> dict[str, str]:
    return {
        "gitVersion": f"v{__version__}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation(),
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }
