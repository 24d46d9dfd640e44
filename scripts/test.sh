#!/usr/bin/env bash
# Run the project's own tests (installs what is missing first). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the reproduction tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 "$@"
