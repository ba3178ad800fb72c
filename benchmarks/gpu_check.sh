#!/usr/bin/env bash
# The one command to run on a GPU machine (issue 12): proves every GPU path of fdperf and
# measures the GPU goals in under 10 minutes on an H100/H200.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh [--dali-parts DIR]     # on the GPU machine
#   OUT=/some/dir bash benchmarks/gpu_check.sh --cpu-dry-run          # the same steps on a CPU
#
# Steps (see --list): environment; DALI from wheel parts (--dali-parts); CUDA build; the CUDA
# tests of the operators, of the TSA model and CUDA-graph training step, and of extraction
# (DALI mixed / NVDEC); compute-sanitizer memcheck and racecheck on an operator subset;
# bench_ops, bench_tsa and bench_extract at full size (--benchmark-json into $OUT); a goals
# table (goals.md / goals.json) read from those JSON files, ready for benchmarks/RESULTS.md.
#
# Every step runs under `timeout` (its own limit, and never past the whole run's --budget), logs
# to $OUT/<step>.log, and $OUT/summary.txt and $OUT/summary.json (each step's name, status, rc,
# seconds, log file) are rewritten after every step, so they exist even when a step fails or the
# run is killed. Status: ok, failed, timeout (its limit), no_time (the budget ran out before it),
# skipped (not selected, or no GPU for a sanitizer in the dry run). The exit status is 0 when
# no step failed, timed out or ran out of time.
#
# Options:
#   --cpu-dry-run      CPU paths and tiny sizes: CPU build in place (no FORCE_CUDA, never into an
#                      environment's site-packages), no compute-sanitizer (marked skipped),
#                      benchmarks with minimal rounds (FDPERF_BENCH_SMALL=1 and the benches' size
#                      knobs). Must pass on the project's CPU machine in under 5 minutes.
#   --dali-parts DIR   install DALI from wheel parts (a tar of the wheels cut with split; DIR
#                      holds p_* or parts/p_*): cat | tar xf into a temp dir, pip install
#                      --no-index --no-deps --target SITE, then PYTHONPATH=SITE and
#                      LD_LIBRARY_PATH=SITE/nvidia/nvjpeg/lib:SITE/nvidia/nvimgcodec.
#   --no-build         do not build; the build step only checks that fdperf._C imports.
#   --inplace-build    build with `setup.py build_ext --inplace` instead of `pip install -e .`
#                      (the default with --cpu-dry-run).
#   --steps A,B,...    run only these steps (the others are listed as skipped: not selected).
#   --budget SECONDS   wall-clock budget of the whole run (default 570 on a GPU, 290 dry run).
#   --out DIR          output folder (default $OUT, else ./gpu_check_out).
#   --list             print the steps and their time limits, and exit.
# Environment: PYTHON (default .venv/bin/python when it exists, else python3: the GPU machine's
# own CUDA torch), OUT, MAX_JOBS (default nproc), TORCH_CUDA_ARCH_LIST (default 9.0),
# BUILD_LOCK (a file: the build runs under `flock BUILD_LOCK`), GPU_CHECK_TIMEOUT_<STEP> (seconds,
# overrides one step's limit, e.g. GPU_CHECK_TIMEOUT_BENCH_TSA=200).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

STEPS=(env dali build test_ops test_tsa test_extract memcheck racecheck bench_ops bench_tsa
       bench_extract bench_tsa_reference goals)
declare -A LIMIT=([env]=60 [dali]=150 [build]=330 [test_ops]=150 [test_tsa]=120
                  [test_extract]=150 [memcheck]=150 [racecheck]=150 [bench_ops]=150
                  [bench_tsa]=150 [bench_extract]=200 [bench_tsa_reference]=90 [goals]=30)
declare -A ABOUT=(
  [env]="nvidia-smi, nvcc, compute-sanitizer, Python, torch and CUDA versions"
  [dali]="DALI from wheel parts (--dali-parts DIR); else report the installed DALI"
  [build]="CUDA build: FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=nproc, pip install -e ."
  [test_ops]="tests/test_ops_*.py: the operators on CPU and CUDA against their oracles"
  [test_tsa]="tests/test_tsa_model.py, tests/test_train_cuda.py: TSA model, CUDA-graph step"
  [test_extract]="tests/test_video_decode.py and the GPU-path cases of tests/test_extract.py"
  [memcheck]="compute-sanitizer memcheck on a CUDA operator subset"
  [racecheck]="compute-sanitizer racecheck on the same subset"
  [bench_ops]="benchmarks/bench_ops.py -> bench_ops.json"
  [bench_tsa]="benchmarks/bench_tsa.py, fdperf side -> bench_tsa.json"
  [bench_extract]="benchmarks/bench_extract.py (JPEG folders, 720p H.264 via NVDEC) -> bench_extract.json"
  [bench_tsa_reference]="benchmarks/bench_tsa.py, reference side at 1/10 of the voting size"
  [goals]="goals.md / goals.json: each GPU goal against the measured figure")

DRY=0 BUILD_MODE=pip DALI_PARTS="" SELECT="" BUDGET="" LIST=0
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-dry-run) DRY=1 ;;
    --dali-parts) DALI_PARTS=${2:?--dali-parts needs a folder}; shift ;;
    --dali-parts=*) DALI_PARTS=${1#*=} ;;
    --no-build) BUILD_MODE=none ;;
    --inplace-build) BUILD_MODE=inplace ;;
    --steps) SELECT=${2:?--steps needs a list}; shift ;;
    --steps=*) SELECT=${1#*=} ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    --budget=*) BUDGET=${1#*=} ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    --out=*) OUT=${1#*=} ;;
    --list) LIST=1 ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$DRY" = 1 ] && [ "$BUILD_MODE" = pip ]; then BUILD_MODE=inplace; fi

limit_of() {  # a step's own limit in seconds (GPU_CHECK_TIMEOUT_<STEP> overrides it)
  local var="GPU_CHECK_TIMEOUT_${1^^}"
  echo "${!var:-${LIMIT[$1]}}"
}

if [ "$LIST" = 1 ]; then
  for s in "${STEPS[@]}"; do printf '%-20s %4ss  %s\n' "$s" "$(limit_of "$s")" "${ABOUT[$s]}"; done
  exit 0
fi
declare -A SELECTED=()
if [ -n "$SELECT" ]; then
  IFS=, read -r -a wanted <<< "$SELECT"
  for s in "${wanted[@]}"; do
    [ -n "${LIMIT[$s]+x}" ] || { echo "gpu_check.sh: unknown step '$s' (see --list)" >&2; exit 2; }
    SELECTED[$s]=1
  done
fi

OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
BUDGET=${BUDGET:-$([ "$DRY" = 1 ] && echo 290 || echo 570)}
MODE=$([ "$DRY" = 1 ] && echo cpu-dry-run || echo gpu)
export OUT PYTHON DRY MODE ROOT BUILD_MODE DALI_PARTS
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export PYTHONUNBUFFERED=1

# pytest options shared by the test steps (-rs lists each skip with its reason) and the benches.
PYTEST=("$PYTHON" -m pytest -q -rs -p no:cacheprovider)
BENCH_OPTS=(--benchmark-only --benchmark-columns=median,iqr,rounds)
if [ "$DRY" = 1 ]; then
  BENCH_OPTS+=(--benchmark-min-rounds=1 --benchmark-max-time=0.01)
  export FDPERF_BENCH_SMALL=1
  # One intra-op thread: on a shared, oversubscribed CPU, OpenMP's spinning barrier otherwise
  # stalls whenever a peer thread is descheduled (see benchmarks/conftest.py).
  export FDPERF_BENCH_THREADS=${FDPERF_BENCH_THREADS:-1}
fi
# The sanitizers run CUDA cases only: not the subprocess device-assert tests (they fault on
# purpose), not the grid-limit cases (no launch), not the slow low-precision comparisons.
SAN_K="cuda and not device_assert and not trip and not grid_size and not low_precision and not deterministic and not mismatch"
OPS_TESTS=(tests/test_ops_segment_resample.py tests/test_ops_step_attention.py
           tests/test_ops_window_argmax.py)
# Extraction: the decoder tests whole, and the cases of test_extract.py on the GPU paths (the
# GPU defaults' code paths, and any case named cuda/gpu/nvdec). The full file runs in `make test`.
EXTRACT_K="test_video_decode or bf16_autocast or cuda or gpu or nvdec"

# ---------------------------------------------------------------------------------- summary
START=$(date +%s)
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
NAMES=() STATUS=() RCS=() SECS=() LOGS=() NOTES=() CMDS=()
json_str() {  # a JSON string literal
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/ }
  s=${s//$'\n'/ }
  printf '"%s"' "$s"
}
write_summary() {  # rewrites summary.json and summary.txt from what has run so far
  local i ok=true done=${1:-false} now
  now=$(date +%s)
  for i in "${!NAMES[@]}"; do
    case ${STATUS[$i]} in failed|timeout|no_time) ok=false ;; esac
  done
  {
    printf '{\n  "mode": %s,\n  "started": %s,\n  "seconds": %s,\n  "finished": %s,\n' \
      "$(json_str "$MODE")" "$(json_str "$STARTED_AT")" "$((now - START))" "$done"
    printf '  "ok": %s,\n  "budget_seconds": %s,\n  "out": %s,\n  "python": %s,\n  "steps": [' \
      "$ok" "$BUDGET" "$(json_str "$OUT")" "$(json_str "$PYTHON")"
    for i in "${!NAMES[@]}"; do
      [ "$i" -gt 0 ] && printf ','
      printf '\n    {"name": %s, "status": %s, "rc": %s, "seconds": %s, "log": %s, "note": %s, "command": %s}' \
        "$(json_str "${NAMES[$i]}")" "$(json_str "${STATUS[$i]}")" "${RCS[$i]}" "${SECS[$i]}" \
        "$(json_str "${LOGS[$i]}")" "$(json_str "${NOTES[$i]}")" "$(json_str "${CMDS[$i]}")"
    done
    printf '\n  ]\n}\n'
  } > "$OUT/summary.json.tmp" && mv "$OUT/summary.json.tmp" "$OUT/summary.json"
  {
    echo "gpu_check.sh ($MODE) started $STARTED_AT, $((now - START)) s so far, budget $BUDGET s"
    printf '%-20s %-8s %5s %6s  %s\n' step status rc seconds "log / note"
    for i in "${!NAMES[@]}"; do
      printf '%-20s %-8s %5s %6s  %s%s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${RCS[$i]}" \
        "${SECS[$i]}" "${LOGS[$i]}" "${NOTES[$i]:+  (${NOTES[$i]})}"
    done
    [ -f "$OUT/goals.md" ] && { echo; cat "$OUT/goals.md"; }
    [ "$done" = true ] && echo "overall: $([ "$ok" = true ] && echo ok || echo FAILED)"
  } > "$OUT/summary.txt"
}
record() {  # record NAME STATUS RC SECONDS LOG NOTE COMMAND
  NAMES+=("$1") STATUS+=("$2") RCS+=("$3") SECS+=("$4") LOGS+=("$5") NOTES+=("$6") CMDS+=("$7")
  write_summary
  printf '== %-20s %-8s rc=%-4s %ss %s\n' "$1" "$2" "$3" "$4" "${6:+($6)}"
}
skip() { record "$1" skipped null 0 "" "$2" ""; }
selected() { [ -z "$SELECT" ] || [ -n "${SELECTED[$1]+x}" ]; }

# run_step NAME CMD...: runs CMD under timeout (the step's limit, cut to what is left of the
# budget), logs to $OUT/NAME.log; NOTE (a variable) is recorded with it.
NOTE=""
run_step() {
  local name=$1; shift
  local left=$((BUDGET - ($(date +%s) - START) - 5)) limit
  limit=$(limit_of "$name")
  if [ "$left" -lt 5 ]; then
    record "$name" no_time null 0 "" "budget of $BUDGET s used up before this step" ""
    NOTE=""
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  local t0 rc status
  t0=$(date +%s)
  local cmd
  cmd=$(printf '%q ' "$@")
  { echo "\$ $cmd"; echo "(limit ${limit}s, $(date -u +%H:%M:%SZ))"; } > "$OUT/$name.log"
  timeout -k 10 "$limit" "$@" >> "$OUT/$name.log" 2>&1 < /dev/null
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  [ "$status" = timeout ] && NOTE="${NOTE:+$NOTE; }killed after ${limit}s"
  record "$name" "$status" "$rc" "$(($(date +%s) - t0))" "$name.log" "$NOTE" "${cmd% }"
  NOTE=""
}

# ------------------------------------------------------------------------------------ steps
step_env() {
  date -u
  echo "host $(hostname), $(nproc) cores, mode $MODE"
  free -g 2>/dev/null | head -2
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    nvidia-smi
  else
    echo "nvidia-smi: not found"
  fi
  for tool in nvcc compute-sanitizer; do
    if command -v "$tool" >/dev/null; then "$tool" --version | tail -2; else echo "$tool: not found"; fi
  done
  "$PYTHON" - <<'EOF'
import os, sys
import torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        print("device", i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
# What the later steps import (reported, not fatal here: the dali step installs every wheel
# in the parts, so missing packages can travel with DALI's).
import importlib
for mod in ("nvidia.dali", "pytest", "pytest_benchmark", "numpy", "h5py", "av", "PIL", "yaml",
            "pip", "setuptools", "ninja"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod} {getattr(m, '__version__', '?')}")
    except Exception as e:
        print(f"{mod}: not importable: {e}")
if os.environ["MODE"] == "gpu" and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (run with --cpu-dry-run on a CPU machine)")
EOF
}

step_dali_install() {  # step_dali_install PARTS_DIR WORK_DIR SITE
  local parts=$1 work=$2 site=$3
  [ -d "$parts/parts" ] && parts=$parts/parts
  ls "$parts"/p_* >/dev/null || { echo "no wheel parts p_* in $parts"; return 1; }
  mkdir -p "$work/whl" "$site"
  cat "$parts"/p_* | tar xf - -C "$work/whl" || return 1
  ls -l "$work/whl"
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$site" "$work"/whl/*.whl || return 1
  else  # no pip on the machine: a wheel is a zip laid out for site-packages
    echo "no pip for $PYTHON: unpacking the wheels into $site"
    "$PYTHON" - "$site" "$work"/whl/*.whl <<'PYEOF' || return 1
import glob, os, shutil, sys, zipfile
site = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
        for info in z.infolist():  # keep the executable bits of bundled binaries
            mode = info.external_attr >> 16
            if mode:
                os.chmod(os.path.join(site, info.filename), mode)
for data in glob.glob(os.path.join(site, "*.data")):
    for scheme in ("purelib", "platlib"):
        src = os.path.join(data, scheme)
        if os.path.isdir(src):
            shutil.copytree(src, site, dirs_exist_ok=True)
PYEOF
  fi
  rm -rf "$work/whl"
  PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} \
    LD_LIBRARY_PATH=$site/nvidia/nvjpeg/lib:$site/nvidia/nvimgcodec${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    "$PYTHON" -c "import sys, nvidia.dali as d; print('dali', d.__version__, d.__file__)
sys.exit(0 if d.__file__.startswith(sys.argv[1]) else 'gpu_check: another DALI shadows ' + sys.argv[1])" "$site"
}

step_dali_report() {
  "$PYTHON" -c "import nvidia.dali as d; print('dali', d.__version__, d.__file__)"
}

step_build() {
  local lock=()
  [ -n "${BUILD_LOCK:-}" ] && lock=(flock "$BUILD_LOCK")
  if [ "$BUILD_MODE" = pip ]; then
    echo "pip install -e . (FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS)"
    FORCE_CUDA=1 "${lock[@]}" "$PYTHON" -m pip install --no-build-isolation --no-deps -e . || {
      echo "pip install -e . failed; building in place instead"
      FORCE_CUDA=1 "${lock[@]}" "$PYTHON" setup.py build_ext --inplace || return 1
    }
  elif [ "$BUILD_MODE" = inplace ]; then
    local force=1
    [ "$DRY" = 1 ] && force=0
    echo "setup.py build_ext --inplace (FORCE_CUDA=$force MAX_JOBS=$MAX_JOBS)"
    FORCE_CUDA=$force "${lock[@]}" "$PYTHON" setup.py build_ext --inplace || return 1
  else
    echo "--no-build: checking that the extension already imports"
  fi
  "$PYTHON" - <<'EOF'
import os, sys
import fdperf
cuda = fdperf._C.built_with_cuda()
print("fdperf", fdperf.__file__, "built_with_cuda", cuda)
if os.environ["MODE"] == "gpu" and not cuda:
    sys.exit("gpu_check: the extension was built without CUDA")
EOF
}

step_goals() {
  "$PYTHON" - "$OUT" "$MODE" <<'EOF'
"""Reads bench_*.json under OUT and writes goals.json and goals.md (RESULTS.md's GPU table)."""
import datetime, json, os, sys

out, mode = sys.argv[1], sys.argv[2]
benches, machine = [], {}
for name in ("bench_ops", "bench_tsa", "bench_extract", "bench_tsa_reference"):
    path = os.path.join(out, name + ".json")
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        machine = machine or data.get("machine_info", {})
        for b in data.get("benchmarks", []):
            b["file"] = name
            benches.append(b)


def find(test, **params):
    for b in benches:
        if b["name"].split("[")[0] == test and all(
                (b.get("params") or {}).get(k) == v for k, v in params.items()):
            return b
    return None


def median(test, **params):
    b = find(test, **params)
    return None if b is None else b["stats"]["median"]


def ratio(base, fused):
    return None if base is None or fused is None else base / fused


def best_stock(test, shape, impls):
    got = [median(test, shape=shape, impl=i) for i in impls]
    got = [g for g in got if g is not None]
    return min(got) if got else None


def extract_rate():
    b = find("test_gpu_e2e_jpeg_folders")
    if b is not None:
        return b["extra_info"].get("videos_per_s")
    b = find("test_e2e_fdperf")  # the CPU benchmark (dry run)
    return None if b is None else b["extra_info"]["videos"] / b["stats"]["median"]


def nvdec_rate():
    rates = [b["extra_info"].get("frames_per_s") for b in benches
             if b["name"].startswith("test_gpu_h264_720p_parallel_readers")]
    rates = [r for r in rates if r is not None]
    return max(rates) if rates else None


resample = ratio(median("test_segment_resample_forward_backward", impl="batched_torch"),
                 median("test_segment_resample_forward_backward", impl="fused"))
attention = ratio(best_stock("test_step_attention_forward_backward", "training",
                             ("eager_gathered", "sdpa_gathered")),
                  median("test_step_attention_forward_backward", shape="training", impl="fused"))
ms = lambda s: None if s is None else s * 1e3
goals = [  # (goal, target text, measured, unit, met)
    ("voting attention, 7,490 pairs (forward)", "< 1 ms",
     ms(median("test_step_attention_forward", shape="voting", impl="fused")), "ms", lambda x: x < 1),
    ("segment_resample fwd+bwd, training shapes, vs batched stock", ">= 3x",
     resample, "x", lambda x: x >= 3),
    ("step_attention fwd+bwd, training shapes, vs best batched stock", ">= 3x",
     attention, "x", lambda x: x >= 3),
    ("TSA training step (8 pairs)", "<= 2 ms", ms(median("test_train_step_fdperf")), "ms",
     lambda x: x <= 2),
    ("TSA epoch (2,251 pairs)", "<= 0.6 s", median("test_epoch_fdperf"), "s", lambda x: x <= 0.6),
    ("voting 749 x 10", "<= 50 ms", ms(median("test_voting_fdperf")), "ms", lambda x: x <= 50),
    ("extraction, 455x256 JPEG folders", ">= 200 videos/s", extract_rate(), "videos/s",
     lambda x: x >= 200),
    ("720p H.264 through parallel NVDEC readers", ">= 4,000 frames/s", nvdec_rate(), "frames/s",
     lambda x: x >= 4000),
]
card = machine.get("cuda_device") or f"CPU: {machine.get('cpu', {}).get('brand_raw') or machine.get('cpu_model', '?')}"
date = datetime.date.today().isoformat()
rows = []
for goal, target, value, unit, met in goals:
    # A dry run measures tiny sizes on a CPU: its figures say nothing about the goals.
    judged = value is not None and mode == "gpu"
    rows.append({"goal": goal, "target": target, "measured": value, "unit": unit,
                 "met": bool(met(value)) if judged else None, "card": card, "date": date,
                 "mode": mode})
with open(os.path.join(out, "goals.json"), "w") as f:
    json.dump({"mode": mode, "card": card, "date": date, "torch": machine.get("torch"),
               "goals": rows}, f, indent=2)
lines = ["| Goal | Target | Measured | Met | Card | Date |", "|---|---|---|---|---|---|"]
for r in rows:
    v = "not measured" if r["measured"] is None else f"{r['measured']:.3g} {r['unit']}"
    met = "-" if r["met"] is None else ("yes" if r["met"] else "no")
    lines.append(f"| {r['goal']} | {r['target']} | {v} | {met} | {card} | {date} |")
if mode != "gpu":
    lines.append("")
    lines.append("(CPU dry run at tiny sizes: these figures test the pipeline, not the goals.)")
text = "\n".join(lines) + "\n"
with open(os.path.join(out, "goals.md"), "w") as f:
    f.write(text)
print(text)
EOF
}
export -f step_env step_dali_install step_dali_report step_build step_goals

# -------------------------------------------------------------------------------------- run
echo "gpu_check.sh: mode $MODE, out $OUT, python $PYTHON, budget ${BUDGET}s"
write_summary
for s in "${STEPS[@]}"; do
  if ! selected "$s"; then skip "$s" "not selected (--steps)"; continue; fi
  case $s in
    env) run_step env bash -c step_env ;;
    dali)
      if [ -n "$DALI_PARTS" ]; then
        work=$(mktemp -d "${TMPDIR:-/tmp}/fdperf-dali.XXXXXX")
        site=$work/site
        run_step dali bash -c 'step_dali_install "$@"' _ "$DALI_PARTS" "$work" "$site"
        if [ "${STATUS[-1]}" = ok ]; then  # every later step sees the installed DALI
          export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
          export LD_LIBRARY_PATH=$site/nvidia/nvjpeg/lib:$site/nvidia/nvimgcodec${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        fi
      else
        NOTE="no --dali-parts: the installed DALI, if any"
        run_step dali bash -c step_dali_report
      fi ;;
    build)
      [ "$BUILD_MODE" = none ] && NOTE="--no-build: import check only"
      run_step build bash -c step_build ;;
    test_ops)
      if [ "$DRY" = 1 ]; then  # the CPU float64 gradchecks take a minute on 2 cores
        NOTE="dry run: without the CPU gradchecks and the baseline-ISA subprocess"
        run_step test_ops "${PYTEST[@]}" "${OPS_TESTS[@]}" -k "not gradcheck and not baseline_isa"
      else
        run_step test_ops "${PYTEST[@]}" "${OPS_TESTS[@]}"
      fi ;;
    test_tsa) run_step test_tsa "${PYTEST[@]}" tests/test_tsa_model.py tests/test_train_cuda.py ;;
    test_extract)
      run_step test_extract "${PYTEST[@]}" tests/test_video_decode.py tests/test_extract.py \
        -k "$EXTRACT_K" ;;
    memcheck|racecheck)
      if [ "$DRY" = 1 ]; then skip "$s" "--cpu-dry-run: compute-sanitizer needs a GPU"
      elif [ "$s" = memcheck ]; then
        run_step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 \
          --target-processes all "${PYTEST[@]}" -x -k "$SAN_K" "${OPS_TESTS[@]}"
      else
        run_step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 \
          --racecheck-report all "${PYTEST[@]}" -x -k "$SAN_K" "${OPS_TESTS[@]}"
      fi ;;
    bench_ops)
      run_step bench_ops "${PYTEST[@]}" benchmarks/bench_ops.py "${BENCH_OPTS[@]}" \
        --benchmark-json="$OUT/bench_ops.json" ;;
    bench_tsa)
      if [ "$DRY" = 1 ]; then
        NOTE="FDPERF_BENCH_QUERIES=1 FDPERF_BENCH_EPOCH_PAIRS=8 FDPERF_BENCH_ROUNDS=1"
        run_step bench_tsa env FDPERF_BENCH_QUERIES=1 FDPERF_BENCH_EPOCH_PAIRS=8 \
          FDPERF_BENCH_ROUNDS=1 "${PYTEST[@]}" benchmarks/bench_tsa.py "${BENCH_OPTS[@]}" \
          -k "not reference" --benchmark-json="$OUT/bench_tsa.json"
      else
        run_step bench_tsa "${PYTEST[@]}" benchmarks/bench_tsa.py "${BENCH_OPTS[@]}" \
          -k "not reference" --benchmark-json="$OUT/bench_tsa.json"
      fi ;;
    bench_extract)
      if [ "$DRY" = 1 ]; then
        # fdperf's side only (the CPU I3D passes of the reference side would take minutes)
        NOTE="FDPERF_BENCH_VIDEOS=1 FDPERF_BENCH_ROUNDS=1, fdperf side"
        run_step bench_extract env FDPERF_BENCH_VIDEOS=1 FDPERF_BENCH_ROUNDS=1 \
          FDPERF_BENCH_GPU_VIDEOS=8 "${PYTEST[@]}" benchmarks/bench_extract.py \
          "${BENCH_OPTS[@]}" -k "e2e_fdperf or fdperf_decode or gpu" \
          --benchmark-json="$OUT/bench_extract.json"
      else
        run_step bench_extract "${PYTEST[@]}" benchmarks/bench_extract.py "${BENCH_OPTS[@]}" \
          --benchmark-json="$OUT/bench_extract.json"
      fi ;;
    bench_tsa_reference)
      # The reference side, for the speed-ups (the goals are the fdperf side's): 1/10 of the
      # voting queries. The dry run leaves out its training step (4 slow CPU steps).
      if [ "$DRY" = 1 ]; then q=1 p=8 k="reference and not agrees and not train_step"
      else q=75 p=2251 k="reference and not agrees"; fi
      NOTE="FDPERF_BENCH_QUERIES=$q FDPERF_BENCH_EPOCH_PAIRS=$p FDPERF_BENCH_ROUNDS=1, -k $k"
      run_step bench_tsa_reference env FDPERF_BENCH_QUERIES=$q FDPERF_BENCH_EPOCH_PAIRS=$p \
        FDPERF_BENCH_ROUNDS=1 "${PYTEST[@]}" benchmarks/bench_tsa.py "${BENCH_OPTS[@]}" \
        -k "$k" --benchmark-json="$OUT/bench_tsa_reference.json" ;;
    goals) run_step goals bash -c step_goals ;;
  esac
done
write_summary true
cat "$OUT/summary.txt"
grep -q '"ok": true' "$OUT/summary.json"
