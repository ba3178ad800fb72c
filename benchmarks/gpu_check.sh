#!/usr/bin/env bash
# One-shot GPU check for the fdperf kernels (issue 3), for a session that has a GPU:
#   builds the CUDA extension, runs the CUDA tests, compute-sanitizer memcheck and racecheck
#   on the operator tests, and the benchmarks; everything lands in $OUT (default ./gpu_check_out).
# Usage: OUT=/some/dir bash benchmarks/gpu_check.sh
# Needs a CUDA build of torch in $PYTHON's environment (e.g. make venv TORCH_SPEC="torch==2.11.0
# --index-url https://download.pytorch.org/whl/cu130") and nvcc on PATH or in CUDA_HOME.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
status=0
step() {  # step NAME CMD...: run, log to $OUT/NAME.log, remember failures
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  if "$@" >"$OUT/$name.log" 2>&1; then echo "   ok" | tee -a "$OUT/summary.txt"
  else echo "   FAILED (rc=$?), see $name.log" | tee -a "$OUT/summary.txt"; status=1; fi
}
: > "$OUT/summary.txt"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } >> "$OUT/summary.txt" 2>&1
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/summary.txt" 2>&1

step build env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS=${MAX_JOBS:-16} \
  "$PYTHON" -m pip install -q --no-build-isolation --no-deps -e .
"$PYTHON" -c "import fdperf; assert fdperf._C.built_with_cuda(), 'extension built without CUDA'" \
  >> "$OUT/summary.txt" 2>&1 || status=1
TESTS="tests/test_ops_segment_resample.py tests/test_ops_step_attention.py tests/test_ops_window_argmax.py"
step pytest "$PYTHON" -m pytest -q -rs $TESTS
# The sanitizers run the CUDA cases only (the subprocess assert tests deliberately fault).
SAN_K="cuda and not device_assert and not trip"
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 --target-processes all \
  "$PYTHON" -m pytest -q -x -k "$SAN_K" $TESTS
step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 --racecheck-report all \
  "$PYTHON" -m pytest -q -x -k "$SAN_K" $TESTS
step bench "$PYTHON" -m pytest benchmarks/bench_ops.py --benchmark-only \
  --benchmark-json="$OUT/bench_ops.json" --benchmark-columns=median,iqr,rounds
cat "$OUT/bench.log" | tail -60 >> "$OUT/summary.txt"
exit $status
