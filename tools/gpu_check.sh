#!/usr/bin/env bash
# On a machine with a CUDA GPU: the GPU tests (tests/test_cuda.py), then the GPU benchmarks (benchmarks/gpu.py), printed
# as one table and written to benchmarks/results/gpu.md with the device named. About 5 minutes on an H100.
#   tools/gpu_check.sh             from the repository root, with fastaug[dev] installed (`make gpu-check` installs it)
#   GPU_CHECK_OUT=file.md          write the table elsewhere;  PYTHON=...  the interpreter to use
# Exits non-zero when a test fails or a benchmark cannot run; the table is written either way.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu.md}
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'tools/gpu_check.sh: no CUDA device here')" || exit 2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$log"
tests=${PIPESTATUS[0]}
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)' "$log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
"$PY" benchmarks/gpu.py --out "$OUT" --tests "${summary:-no summary (see the log above)}"
bench=$?
[ "$tests" = 0 ] && [ "$bench" = 0 ]
