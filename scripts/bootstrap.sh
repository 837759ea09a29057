#!/usr/bin/env bash
# Idempotent setup: host packages, the project's venv, the guest assets.
# On a machine where everything is present this takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${KUBEVISOR_CACHE:-/var/cache/kubevisor}"
mkdir -p "$CACHE/pip"

# 1. Debian packages: install only what is missing.
mapfile -t wanted < <(grep -v '^\s*#' scripts/apt-packages.txt | grep -v '^\s*$')
missing=()
for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The venv, rebuilt when pyproject.toml changes.
stamp=".venv/.pyproject.sha256"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -x .venv/bin/python || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "bootstrap: creating .venv"
    python3 -m venv .venv
    # The machine's pip config names local mirrors that may be absent; their warnings are noise.
    PIP_CACHE_DIR="$CACHE/pip" .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
    echo "$want" > "$stamp"
fi

# 3. Guest assets (cached under $CACHE, rebuilt when an input changes).
.venv/bin/kubevisor assets build
