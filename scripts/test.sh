#!/usr/bin/env bash
# The whole suite: lint, types, then pytest. pytest's "no tests" (exit 5) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
set -e
ruff check kubevisor tests bench
mypy
set +e
pytest -p no:cacheprovider -q -ra "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    echo "test: pytest collected no tests; failing" >&2
    exit 1
fi
exit $rc
