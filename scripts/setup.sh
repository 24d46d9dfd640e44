#!/usr/bin/env bash
# Install fa-checks and its test tools into ./.venv. Safe to run again: it installs only what is
# missing. torch is pinned to the release this project is developed and tested with; set
# FA_CHECKS_TORCH to install another (e.g. FA_CHECKS_TORCH="torch torchvision").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_spec=${FA_CHECKS_TORCH:-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x .venv/bin/python ]; then
    echo "fa-checks: creating .venv with $($python --version)" >&2
    "$python" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    echo "fa-checks: installing $torch_spec" >&2
    # shellcheck disable=SC2086  # the spec is a list of requirements
    .venv/bin/python -m pip install --quiet $torch_spec
fi
if ! .venv/bin/python -c "import fa_checks, pytest_fa_checks, hypothesis, pytest_benchmark" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.fa-checks-installed ]; then
    echo "fa-checks: installing fa-checks (editable) with the dev extra" >&2
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch .venv/.fa-checks-installed
fi
