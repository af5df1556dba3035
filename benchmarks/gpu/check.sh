#!/usr/bin/env bash
# The GPU check in one run, for a short GPU lease (issue 17): on a machine with a CUDA GPU and a PyTorch with
# CUDA (any version), from this source tree:
#
#   build       the extension from source for sm_90 only (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS = all cores), in a
#               temporary copy of the tree (the tree itself is not touched); ptxas's register/spill report
#   test_cuda   tests/test_cuda.py and tests/test_cuda_state_precision.py (pytest-xdist over the cores when
#               installed)
#   graphs      tests/test_cuda_graphs.py: CUDA-graph capture/replay of every optimizer against eager
#   memcheck    compute-sanitizer --tool memcheck over benchmarks/gpu/sanitize_steps.py
#   big_tensor  benchmarks/gpu/big_tensor.py: one bf16 param of 2^31 + 1024 elements, every element checked
#   bench       benchmarks/gpu/step_bench.py: the CUDA step benchmark
#
# and writes OUTDIR/report.md (device, torch, date, each part's status, time and tables), OUTDIR/logs.txt (every
# part's log) and OUTDIR/bench.json. Each part runs under its own time limit and a failed part does not stop
# the others (parts that need the extension are not run when the build fails). Exit status 0 only if every part
# passed. test_cuda, memcheck and graphs + big_tensor run side by side after the build; the benchmark runs alone
# at the end, with what is left of DEADLINE_S. Worst case: build 210 + lanes 160 + bench (the rest) < 480 s.
#
# usage: benchmarks/gpu/check.sh [--cpu-smoke] OUTDIR
#   --cpu-smoke  no GPU needed: reuses the extension already built in the tree (no build) and runs every part's
#                CPU form (small sizes, no sanitizer) to check this script itself
# environment: PYTHON (default python3), DEADLINE_S (default 465), PARTS (the parts to run after the build,
#              comma-separated; default all: test_cuda,graphs,memcheck,big_tensor,bench; the others are
#              reported as skipped and do not count as failed)
set -uo pipefail

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then
  SMOKE=1
  shift
fi
if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
  usage >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUTDIR=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-465}
PARTS=",${PARTS:-test_cuda,graphs,memcheck,big_tensor,bench},"
CORES=$(nproc)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerlr-gpu-check.XXXXXX")
SRC=$WORK/src
REPORT=$SRC/benchmarks/gpu/report.py
START=$SECONDS
# nvcc and compute-sanitizer where the CUDA toolkit puts them, after whatever PATH already finds
for dir in "${CUDA_HOME:-/usr/local/cuda}/bin" "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer"; do
  if [ -d "$dir" ]; then PATH=$PATH:$dir; fi
done
export PATH

# time limits in seconds (the benchmark gets what is left of DEADLINE_S, at most T_BENCH)
T_BUILD=200 T_TESTS=150 T_MEMCHECK=150 T_GRAPHS=60 T_BIG=60 T_BENCH=150

log() { printf '[%4ds] %s\n' "$((SECONDS - START))" "$*"; }

# record NAME STATUS SECONDS LIMIT NOTE: one line of WORK/parts.tsv (appends are atomic: lanes write side by side)
record() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$WORK/parts.tsv"
  log "$1: $2${5:+ ($5)}"
}

# timed NAME LIMIT CMD...: runs CMD in SRC under `timeout`, output to WORK/NAME.log; sets RC and ELAPSED
timed() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  log "$name: start (limit ${limit} s)"
  (cd "$SRC" && timeout --kill-after=10 "$limit" "$@") >"$WORK/$name.log" 2>&1
  RC=$?
  ELAPSED=$((SECONDS - t0))
}

# wanted NAME: whether PARTS asks for the part; records it as skipped if not
wanted() {
  case $PARTS in
    *",$1,"*) return 0 ;;
  esac
  record "$1" skipped 0 0 "not in PARTS"
  return 1
}

# status_of RC: pass, TIMEOUT or FAIL
status_of() {
  case $1 in
    0) echo pass ;;
    124 | 137) echo TIMEOUT ;;
    *) echo FAIL ;;
  esac
}

# ---- environment and the copy of the tree ------------------------------------------------------------------
environment() {
  {
    "$PY" - <<'EOF' 2>&1
import platform, sys
try:
    import torch
except Exception as exc:
    print(f"device: ? (torch does not import: {exc})")
    raise SystemExit(0)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {torch.cuda.get_device_name(0)} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.0f} GiB)")
else:
    print(f"device: no CUDA device seen by torch (CPU: {platform.processor() or platform.machine()})")
print(f"torch: {torch.__version__}, CUDA {torch.version.cuda}; Python {sys.version.split()[0]}")
EOF
    echo "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')"
    echo "compute-sanitizer: $(command -v compute-sanitizer || echo 'not on PATH')"
    echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || echo '?')"
    echo "cores: $CORES; source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git') \
$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -qv '^??' && echo '(with uncommitted changes)')"
    echo "mode: $([ $SMOKE = 1 ] && echo 'cpu smoke (no build, CPU forms of every part)' || echo gpu)"
  } >"$WORK/env.txt"
  cat "$WORK/env.txt"
}

copy_tree() {
  mkdir -p "$SRC"
  tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./install --exclude=./out \
    --exclude='*.so' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis -cf - . |
    tar -C "$SRC" -xf -
}

# ---- parts ---------------------------------------------------------------------------------------------------
# run in SRC: the package imported must be the copy's (a stale one elsewhere on sys.path would fake a result)
IMPORT_CHECK="import os, torch, torch_layerlr
print('torch_layerlr from', torch_layerlr.__file__)
assert torch_layerlr.__file__.startswith(os.getcwd()), 'torch_layerlr is not imported from the copy'"

part_build() {
  if [ $SMOKE = 1 ]; then
    local built=("$ROOT"/torch_layerlr/_C*.so)
    if [ ! -e "${built[0]}" ]; then
      record build FAIL 0 0 "smoke: no built extension in the tree (make build)"
      return 1
    fi
    cp "${built[0]}" "$SRC/torch_layerlr/"
    timed build 60 "$PY" -c "$IMPORT_CHECK"
    record build "$(status_of $RC)" "$ELAPSED" 60 "smoke: the tree's prebuilt extension, not built here"
    return $RC
  fi
  local why
  why=$("$PY" -c "
import torch
from torch.utils.cpp_extension import CUDA_HOME, is_ninja_available
if torch.version.cuda is None: print('this torch has no CUDA')
elif CUDA_HOME is None: print('no CUDA toolkit (nvcc) found')
elif not torch.cuda.is_available(): print('torch sees no CUDA device')
elif not is_ninja_available(): print('no ninja: the build would run on one core')
" 2>&1)
  if [ -n "$why" ]; then
    record build FAIL 0 "$T_BUILD" "not built: $why"
    return 1
  fi
  timed build "$T_BUILD" env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$CORES" NVCC_APPEND_FLAGS="-Xptxas -v" \
    "$PY" setup.py build_ext --inplace
  local status note
  status=$(status_of $RC)
  note="exit $RC"
  if [ "$status" = pass ]; then
    if (cd "$SRC" && "$PY" -c "$IMPORT_CHECK
assert torch._C._dispatch_has_kernel_for_dispatch_key('layerlr::fused_step_', 'CUDA'), 'no CUDA kernels'") \
      >>"$WORK/build.log" 2>&1; then
      note="CUDA kernels registered"
    else
      status=FAIL
      note="built, but the extension has no CUDA kernels (see the log)"
    fi
  fi
  "$PY" "$REPORT" ptxas "$WORK/build.log" >"$WORK/build.md" 2>&1
  record build "$status" "$ELAPSED" "$T_BUILD" "$note"
  [ "$status" = pass ]
}

# pytest_part NAME LIMIT TESTFILES EXTRA...: a pytest run with a JUnit file, summarized by report.py junit;
# TESTFILES is one or more paths separated by spaces
pytest_part() {
  local name=$1 limit=$2 files=$3
  shift 3
  local opts=(-q -p no:cacheprovider -rfE --durations=10 --junitxml="$WORK/$name.xml")
  if "$PY" -c "import pytest_timeout" 2>/dev/null; then
    opts+=(--timeout=$((limit - 20)))
  fi
  # shellcheck disable=SC2086 # TESTFILES splits into its paths
  timed "$name" "$limit" env OMP_NUM_THREADS=2 "$PY" -m pytest "${opts[@]}" "$@" $files
  local status note allow=()
  status=$(status_of $RC)
  [ $SMOKE = 1 ] && allow=(--allow-all-skipped)
  "$PY" "$REPORT" junit "$WORK/$name.xml" "${allow[@]}" >"$WORK/$name.md" 2>&1
  case $? in
    0) note=$(head -1 "$WORK/$name.md") ;;
    3)
      status=FAIL
      note="nothing passed: $(head -1 "$WORK/$name.md")"
      ;;
    *)
      [ "$status" = pass ] && status=FAIL
      note=$(head -1 "$WORK/$name.md")
      ;;
  esac
  record "$name" "$status" "$ELAPSED" "$limit" "$note"
}

part_test_cuda() {
  local xdist=()
  if [ $SMOKE = 0 ] && "$PY" -c "import xdist" 2>/dev/null; then
    xdist=(-n "$((CORES / 2 > 1 ? CORES / 2 : 1))")
  fi
  pytest_part test_cuda "$T_TESTS" "tests/test_cuda.py tests/test_cuda_state_precision.py" "${xdist[@]}"
}

part_graphs() {
  pytest_part graphs "$T_GRAPHS" tests/test_cuda_graphs.py
}

part_memcheck() {
  local budget=$((T_MEMCHECK - 40))
  if [ $SMOKE = 1 ]; then
    timed memcheck "$T_MEMCHECK" "$PY" benchmarks/gpu/sanitize_steps.py --device cpu --budget-s "$budget"
    record memcheck "$(status_of $RC)" "$ELAPSED" "$T_MEMCHECK" "smoke: the workload on the CPU, no sanitizer; \
$(tail -1 "$WORK/memcheck.log")"
    return
  fi
  if ! command -v compute-sanitizer >/dev/null 2>&1; then
    record memcheck FAIL 0 "$T_MEMCHECK" "compute-sanitizer not on PATH"
    return
  fi
  timed memcheck "$T_MEMCHECK" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \
    --error-exitcode 86 --report-api-errors no --print-limit 30 "$PY" benchmarks/gpu/sanitize_steps.py \
    --budget-s "$budget"
  local status summary ran
  status=$(status_of $RC)
  summary=$(grep -o 'ERROR SUMMARY: [0-9]* error[s]*' "$WORK/memcheck.log" | tail -1)
  ran=$(grep '^sanitize_steps:' "$WORK/memcheck.log" | tail -1)
  if [ $RC = 86 ]; then
    record memcheck FAIL "$ELAPSED" "$T_MEMCHECK" "memcheck found errors: ${summary:-?}"
  elif [ "$status" = pass ] && [ "$summary" = "ERROR SUMMARY: 0 errors" ]; then
    record memcheck pass "$ELAPSED" "$T_MEMCHECK" "clean (${summary}); ${ran}"
  else
    [ "$status" = pass ] && status=FAIL
    record memcheck "$status" "$ELAPSED" "$T_MEMCHECK" "exit $RC; ${summary:-no ERROR SUMMARY}; ${ran:-workload did not finish}"
  fi
}

part_big_tensor() {
  local args=(--markdown "$WORK/big_tensor.md")
  [ $SMOKE = 1 ] && args+=(--device cpu --rows 1025)
  timed big_tensor "$T_BIG" "$PY" benchmarks/gpu/big_tensor.py "${args[@]}"
  record big_tensor "$(status_of $RC)" "$ELAPSED" "$T_BIG" "exit $RC"
}

part_bench() {
  local left=$((DEADLINE_S - (SECONDS - START) - 10))
  local limit=$((left < T_BENCH ? left : T_BENCH))
  if [ "$limit" -lt 30 ]; then
    record bench "not run" 0 "$limit" "no time left before the deadline of ${DEADLINE_S} s"
    return
  fi
  local args=(--markdown "$WORK/bench.md" --json "$OUTDIR/bench.json" --budget-s "$((limit - 45))")
  [ $SMOKE = 1 ] && args+=(--device cpu --quick)
  timed bench "$limit" "$PY" benchmarks/gpu/step_bench.py "${args[@]}"
  record bench "$(status_of $RC)" "$ELAPSED" "$limit" "exit $RC; $(grep '^acceptance:' "$WORK/bench.log" | tail -1)"
}

# snapshot: OUTDIR/report.md and OUTDIR/logs.txt from what has run so far (also mid-run: a run stopped from
# outside still leaves the parts it finished)
snapshot() {
  if ! "$PY" "$REPORT" assemble "$WORK" "$OUTDIR/report.md"; then
    { echo "# GPU check (report.py failed: the parts as recorded)"; echo; cat "$WORK/env.txt" "$WORK/parts.tsv"; } \
      >"$OUTDIR/report.md"
  fi
  for name in build test_cuda graphs memcheck big_tensor bench; do
    if [ -f "$WORK/$name.log" ]; then
      printf '\n===== %s =====\n' "$name"
      tail -n 3000 "$WORK/$name.log"
    fi
  done >"$OUTDIR/logs.txt"
}

# ---- the run ---------------------------------------------------------------------------------------------------
log "work directory $WORK, report into $OUTDIR"
environment
copy_tree
: >"$WORK/parts.tsv"

if part_build; then
  snapshot
  wanted test_cuda && part_test_cuda &
  wanted memcheck && part_memcheck &
  (wanted graphs && part_graphs; wanted big_tensor && part_big_tensor) &
  wait
  snapshot
  wanted bench && part_bench
else
  for name in test_cuda graphs memcheck big_tensor bench; do
    record "$name" "not run" 0 0 "no extension: the build failed"
  done
fi
snapshot

failed=$(awk -F'\t' '$2 != "pass" && $2 != "skipped"' "$WORK/parts.tsv" | wc -l)
# the summary tables last, where a reader of the output looks first
awk '/^\| part /{p=1} p&&/^$/{p=0} p' "$OUTDIR/report.md"
awk '/^\*\*Acceptance/{a=1} a{print; if (/^$/ && ++b == 2) exit}' "$OUTDIR/report.md"
log "done in $((SECONDS - START)) s: $failed part(s) did not pass; $OUTDIR/report.md"
rm -rf "$WORK"
[ "$failed" -eq 0 ]
