#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run (the project passes without one; these are
# the figures only a GPU gives): the `cuda` tests, then the GPU step and rho benchmarks.
#
# On a machine with CUDA, torch and pytest already installed (the lent device machines), from
# the repository root, with the mnist1d wheel in .whl/ (pure Python; on this side:
#   python3 -m pip download --no-deps mnist1d==0.0.2.post1 -d .whl):
#
#   bash scripts/device_checks.sh            # logs and benchmark JSON into $OUT (else ./device-out)
#
# Exit 0 when every step ran and passed; the first failing step's status otherwise.
# Each step has its own time limit, so a hung step cannot take the others' time.
set -uo pipefail
out=${OUT:-device-out}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

step() {  # step NAME SECONDS COMMAND...: run, log to $out/NAME.log, keep the first failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

if ! "$python" -c "import mnist1d" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps .whl/mnist1d-*.whl || exit 3
fi
"$python" -m pip install -q --no-deps --no-build-isolation -e . || exit 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || exit 3
"$python" -c "import torch; print(torch.__version__, torch.version.cuda)" >> "$out/gpu.csv"

step cuda-tests 240 "$python" -m pytest -m cuda -q -p no:cacheprovider -p no:randomly tests/
step gpu-step 200 "$python" -m pytest benchmarks/test_bench_step.py --device cuda -s -q \
    -p no:cacheprovider --benchmark-json "$out/bench-step.json" \
    --benchmark-columns=median,iqr,rounds
step gpu-rho 120 "$python" -m pytest benchmarks/test_bench_metrics.py -k "ratios and cuda" -s -q \
    -p no:cacheprovider --benchmark-json "$out/bench-rho.json"
exit "$status"
