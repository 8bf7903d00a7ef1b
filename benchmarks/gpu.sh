#!/usr/bin/env bash
# Everything a lent GPU should answer, in one budgeted command: the floors of the card's own
# libraries, the build with the CUDA kernels, their correctness tests, the GPU benchmarks (most
# valuable first) and a Markdown summary, on a machine with an NVIDIA GPU and a CUDA build of torch:
#
#   bash benchmarks/gpu.sh [OUT_DIR]     # default: $OUT if set (the device tool), else benchmarks/gpu-results
#   GPU_SH_DRY=1 bash benchmarks/gpu.sh /tmp/dry   # the same steps on the CPU at tiny sizes (CI runs this)
#
# Steps, in this order, each its own short process under its own `timeout`, each writing its
# results into OUT_DIR before the next starts (so a run cut off keeps what it finished):
#   versions  python, torch and its CUDA, the card, transformers, pybind11, scikit-build-core,
#             nvcc, nvidia-smi -> versions.json
#   floors    benchmarks/gpu_floors.py, no build needed: torch x.T @ x in IEEE fp32, TF32 and bf16,
#             a bare cuBLAS SSYRK in the default and the pedantic math mode (the kernels'), torch
#             eigvalsh fp32/fp64, N = 15000, d in {4096, 8192} -> floors.jsonl
#   build     pip install --no-build-isolation --no-deps --no-index --target GPU_SH_TARGET . with
#             FASTSPEC_CUDA=ON for sm_90 (no venv: the image's python may lack ensurepip); that
#             folder goes first on PYTHONPATH and pytest runs with -P, so the source tree, which
#             has no compiled module, does not shadow it. If it fails, a FASTSPEC_CUDA=OFF build
#             is tried so that the torch paths can still be benchmarked; fastspec.backends() is
#             added to versions.json
#   tests     tests/spectral/test_cuda.py and tests/test_backends.py, kernels required
#             (FASTSPEC_REQUIRE_CUDA_KERNELS=1) when they were built -> tests.xml (junit); -v, so
#             that each test's name and outcome reach log.txt as it ends (the junit file is written
#             only at the end: a test step cut off by its timeout still shows which tests ran)
#   sanitize  (GPU_SH_SANITIZE=1) the tests marked cuda_kernels (the kernels' own GPU tests, not
#             the NCCL one) under compute-sanitizer memcheck; in dry mode, their selection only
#   bench-*   benchmarks/test_bench_gpu.py, one pytest process per shape, each result appended
#             to bench.jsonl as it completes (benchmarks/conftest.py): d=4096 spectrum at
#             N=15000 in fp32, then bf16; d=8192 streamed over 10^6 rows (bf16); d=8192 spectrum
#             (bf16); d=2048 (fp32 and bf16); svdvals last, at d=4096 fp32 only
#   hub-prefetch  benchmarks/_hub_bench.py --full: the 6-checkpoint loopback-Hub sweep with and
#             without prefetch (issue 14), the trace on the GPU -> hub.json, written after every
#             sweep (not in dry mode)
#   report    benchmarks/report.py --gpu-run: bench.md from versions.json, steps.jsonl,
#             floors.jsonl and bench.jsonl (card, versions, ratios to each baseline and floor)
# The budget: GPU_SH_BUDGET seconds (default 420) for the whole run. Before each step the
# script compares the time left (less 20 s kept for the report) with what the step needs on an
# H200 and skips it, saying so, if it would not fit; a step that runs gets the time left (at most
# its own cap) as its timeout. So the run ends within the budget plus a few seconds.
#
# Writes into OUT_DIR, at most 8 files (for the device tool): log.txt (everything, the build's
# output too), versions.json, floors.jsonl, steps.jsonl (per step: status ok/failed/timeout/
# skipped, seconds, why), tests.xml, bench.jsonl, bench.md.
#
# Environment: PYTHON (default python3; 3.11+ for -P) picks the interpreter; GPU_SH_BUDGET (s);
# GPU_SH_SANITIZE=1 adds, after the tests, the kernels' GPU tests under compute-sanitizer memcheck
# (worth it on the first run of new kernels; it takes a minute or more of the budget; in dry mode
# it lists the tests it would run);
# GPU_SH_DRY=1: CPU, N=512 and d in {128, 160, 192} (8192 rows of d=256 streamed), no build (the environment's fastspec),
# the tests' CPU parts, the benchmarks' torch paths (FASTSPEC_BENCH_DEVICE=cpu), the floors
# without SSYRK; GPU_SH_TARGET (default /tmp/fastspec-gpu-install) and GPU_SH_BUILD_DIR (default
# /tmp/fastspec-gpu-build). Needs python3 with torch, pytest, pytest-benchmark, scikit-build-core,
# pybind11, cmake; nvcc on PATH. Nothing is downloaded. Exit status: 0 when every step that
# ran succeeded (a step skipped for the budget is not a failure; in dry mode, failing tests are
# not either: the dry run checks the script, CI runs the tests themselves).
set -uo pipefail
cd "$(dirname "$0")/.."
src=$PWD
out=${1:-${OUT:-benchmarks/gpu-results}}
mkdir -p "$out" && out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
budget=${GPU_SH_BUDGET:-420}
dry=${GPU_SH_DRY:-0}
target=${GPU_SH_TARGET:-/tmp/fastspec-gpu-install}
build_dir=${GPU_SH_BUILD_DIR:-/tmp/fastspec-gpu-build}
reserve=20   # seconds kept for the report
t0=$SECONDS
status=0
rm -f "$out"/{log.txt,versions.json,floors.jsonl,steps.jsonl,tests.xml,bench.jsonl,bench.md}
exec 3>&1 4>&2
exec > >(tee -a "$out/log.txt") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Benchmark processes load only pytest-benchmark: the image's other plugins (hypothesis, cov,
# xdist...) cost seconds of start-up each.
bench_pytest=(env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$py" -P -m pytest -q -p no:cacheprovider -p pytest_benchmark.plugin
              benchmarks/test_bench_gpu.py --benchmark-columns=median,rounds --benchmark-sort=name)

if [ "$dry" = 1 ]; then
  n=512; d2048=128; d4096=160; d8192=192; stream_n=8192; dstream=256
  bench_env=(FASTSPEC_BENCH_DEVICE=cpu)
  floor_args=(--n "$n" --dims "$d4096,$d8192" --device cpu)
else
  n=15000; d2048=2048; d4096=4096; d8192=8192; stream_n=1000000; dstream=8192
  bench_env=(FASTSPEC_BENCH_FULL=1)
  floor_args=(--n "$n" --dims "$d4096,$d8192")
fi

elapsed() { echo $((SECONDS - t0)); }
note() { echo "== [$(elapsed) s] $*"; }
record() {  # step status seconds limit reason
  printf '{"step": "%s", "status": "%s", "seconds": %s, "limit_s": %s, "reason": "%s"}\n' "$1" "$2" "$3" "$4" \
    "${5//\"/\'}" >> "$out/steps.jsonl"
}
# step NAME NEED CAP CMD...: run CMD under `timeout` if NEED seconds are left of the budget
# (after the report's reserve), for at most CAP seconds; record how it went in steps.jsonl.
step() {
  local name=$1 need=$2 cap=$3
  shift 3
  local left=$((budget - $(elapsed) - reserve))
  [ "$left" -lt 0 ] && left=0
  last_status=skipped
  if [ "$left" -lt "$need" ]; then
    note "skip $name: it needs about $need s, $left s are left of the budget ($budget s)"
    record "$name" skipped 0 0 "budget: needs about $need s, $left s left"
    return 0
  fi
  local limit=$((cap < left ? cap : left)) start=$SECONDS rc
  note "$name (timeout $limit s)"
  timeout -k 10 "$limit" "$@"
  rc=$?
  local took=$((SECONDS - start))
  last_status=ok
  [ "$rc" -eq 0 ] || last_status=failed
  { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && last_status=timeout
  if [ "$rc" -eq 0 ]; then
    record "$name" ok "$took" "$limit" ""
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    note "$name: timed out after $took s (limit $limit s); what it wrote before stays"
    record "$name" timeout "$took" "$limit" "killed at its time limit"
  else
    note "$name: failed (exit $rc) after $took s"
    record "$name" failed "$took" "$limit" "exit $rc"
  fi
  return "$rc"
}

note "fastspec GPU run into $out: budget $budget s$([ "$dry" = 1 ] && echo ', DRY (CPU, tiny sizes)')"
command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not available"
step versions 0 60 "$py" benchmarks/gpu_floors.py --versions "$out/versions.json" || status=1

step floors 25 120 "$py" benchmarks/gpu_floors.py "$out/floors.jsonl" "${floor_args[@]}" || status=1
[ "$last_status" != skipped ] && [ ! -s "$out/floors.jsonl" ] && { note "floors: wrote nothing"; status=1; }

kernels=0
have_fastspec=1
if [ "$dry" = 1 ]; then
  note "dry: build skipped (the environment's fastspec is used)"
  record build skipped 0 0 "dry mode"
else
  nvcc_path=$(command -v nvcc || true)
  [ -z "$nvcc_path" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_path=/usr/local/cuda/bin/nvcc
  pip_install=(env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)")
  [ -n "$nvcc_path" ] && pip_install+=(CUDACXX="$nvcc_path")
  pip_install+=("$py" -m pip install -v --no-build-isolation --no-deps --no-index --no-cache-dir
                --disable-pip-version-check --target "$target" -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90)
  rm -rf "$target"
  step build 45 240 "${pip_install[@]}" -C cmake.define.FASTSPEC_CUDA=ON -C build-dir="$build_dir" .
  if [ "$last_status" = ok ]; then
    kernels=1
  elif [ "$last_status" = skipped ]; then
    have_fastspec=0
  else
    note "build with the CUDA kernels FAILED (see above); trying FASTSPEC_CUDA=OFF so that the torch paths still run"
    status=1
    rm -rf "$target"
    step build-cpu-only 30 150 "${pip_install[@]}" -C cmake.define.FASTSPEC_CUDA=OFF -C build-dir="$build_dir-cpu" .
    [ "$last_status" = ok ] || have_fastspec=0
  fi
  # Only this build is tested and benchmarked, never a fastspec that happens to be installed.
  export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$have_fastspec" = 1 ]; then
  # Which fastspec the later steps import, and what it has (into versions.json).
  (cd /tmp && timeout 60 "$py" -P - "$out/versions.json" "$src" "$dry" "$target" <<'EOF'
import json, os, sys
import fastspec
path, src, dry, target = sys.argv[1:]
v = json.load(open(path))
v["fastspec"] = {"file": fastspec.__file__, "version": fastspec.__version__, "backends": fastspec.backends()}
json.dump(v, open(path, "w"), indent=1, default=str)
print(json.dumps(v["fastspec"], indent=1, default=str))
where = os.path.dirname(os.path.abspath(fastspec.__file__))
if where == os.path.join(src, "fastspec"):
    sys.exit(f"fastspec was imported from the source tree {src}, which has no compiled module")
if dry != "1" and where != os.path.join(target, "fastspec"):
    sys.exit(f"fastspec was imported from {where}, not from this run's build in {target}")
EOF
  ) || { note "fastspec does not import from this run's build: the tests and benchmarks cannot run"; have_fastspec=0; status=1; }
fi

if [ "$have_fastspec" = 1 ]; then
  req=()
  [ "$kernels" = 1 ] && req=(FASTSPEC_REQUIRE_CUDA_KERNELS=1)
  step tests 25 150 env "${req[@]}" "$py" -P -m pytest -v -p no:cacheprovider -rfE \
    tests/spectral/test_cuda.py tests/test_backends.py --junitxml="$out/tests.xml"
  rc=$?
  # Test failures (exit 1) fail a real run; in dry mode only a broken invocation does.
  if [ "$rc" -ne 0 ] && { [ "$dry" != 1 ] || [ "$rc" -ne 1 ]; }; then status=1; fi
  [ "$last_status" != skipped ] && [ ! -s "$out/tests.xml" ] && { note "tests: no tests.xml"; status=1; }
  # The kernels' own GPU tests, by their marker (a -k on names also caught the NCCL test, and
  # missed kernel tests whose names do not say "kernels").
  sanitize_tests=(tests/spectral/test_cuda.py -m "cuda and cuda_kernels")
  if [ "${GPU_SH_SANITIZE:-0}" = 1 ] && [ "$kernels" = 1 ]; then
    step sanitize 60 240 env FASTSPEC_REQUIRE_CUDA_KERNELS=1 compute-sanitizer --tool memcheck --error-exitcode 9 \
      "$py" -P -m pytest -v -p no:cacheprovider "${sanitize_tests[@]}" || status=1
  elif [ "${GPU_SH_SANITIZE:-0}" = 1 ] && [ "$dry" = 1 ]; then
    # dry: which tests the sanitizer would run, one node id a line, into log.txt
    step sanitize 10 60 "$py" -P -m pytest --collect-only -q -p no:cacheprovider "${sanitize_tests[@]}" || status=1
  fi

  # bench NAME NEED CAP CASES [METHODS]: one pytest process; its results land in bench.jsonl.
  bench() {
    local name=$1 need=$2 cap=$3 cases=$4 methods=${5:-} before after
    before=$(cat "$out/bench.jsonl" 2>/dev/null | wc -l)
    step "$name" "$need" "$cap" env "${bench_env[@]}" "${req[@]}" FASTSPEC_BENCH_JSONL="$out/bench.jsonl" \
      FASTSPEC_BENCH_STEP="$name" FASTSPEC_BENCH_CASES="$cases" FASTSPEC_BENCH_METHODS="$methods" "${bench_pytest[@]}"
    local rc=$?
    [ "$rc" -ne 0 ] && status=1
    after=$(cat "$out/bench.jsonl" 2>/dev/null | wc -l)
    if [ "$last_status" != skipped ] && [ "$after" -le "$before" ]; then
      note "$name: wrote nothing to bench.jsonl"
      status=1
    fi
  }
  bench bench-4096-fp32 20 90 "spectrum:$n:$d4096:fp32" -gpu_torch_svdvals
  bench bench-4096-bf16 20 90 "spectrum:$n:$d4096:bf16" -gpu_torch_svdvals
  bench bench-stream-8192-bf16 30 150 "stream:$stream_n:$dstream:bf16"
  bench bench-8192-bf16 45 150 "spectrum:$n:$d8192:bf16" -gpu_torch_svdvals
  bench bench-2048 15 60 "spectrum:$n:$d2048:fp32,spectrum:$n:$d2048:bf16" -gpu_torch_svdvals
  bench bench-svdvals 15 60 "spectrum:$n:$d4096:fp32" gpu_torch_svdvals
  # Issue 14's prefetch goal, where the trace runs on the GPU and the download on a core of its
  # own (on the 2-core CPU machine they compete): the loopback-Hub sweep, last, if time is left.
  if [ "$dry" = 1 ]; then
    record hub-prefetch skipped 0 0 "dry mode: the hub sweep runs on the device only"
  else
    step hub-prefetch 45 150 "$py" -P benchmarks/_hub_bench.py "$out/hub.json" --full || status=1
  fi
else
  for s in tests bench-4096-fp32 bench-4096-bf16 bench-stream-8192-bf16 bench-8192-bf16 bench-2048 bench-svdvals \
      hub-prefetch; do
    record "$s" skipped 0 0 "no fastspec build to test"
  done
fi

note "report"
timeout 60 "$py" benchmarks/report.py --gpu-run "$out" -o "$out/bench.md" && cat "$out/bench.md" || status=1
note "done in $(elapsed) s of the $budget s budget: exit $status; files: $(cd "$out" && ls | tr '\n' ' ')"
exec 1>&3 2>&4 3>&- 4>&-
wait "$tee_pid" 2>/dev/null
exit $status
