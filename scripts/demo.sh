#!/usr/bin/env bash
# Boots the first example VM and attaches its serial console.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/kubevisor vm run -f examples/vmi-legacy.yaml --console --demo
