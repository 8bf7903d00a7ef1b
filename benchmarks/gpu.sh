#!/usr/bin/env bash
# Build fastspec with its CUDA kernels, run the GPU tests and the GPU benchmarks, and write
# what they produce, in one command on a machine with an NVIDIA GPU and a CUDA build of torch:
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default: $OUT if set (the device tool), else benchmarks/gpu-results
#
# Needs: python3 with a CUDA build of torch, its nvidia-cublas/nvidia-cusolver wheels,
# scikit-build-core, pybind11, pytest, pytest-benchmark, scipy, scikit-learn (the GPU image
# this workplace lends has them all); nvcc on PATH. Nothing is downloaded: fastspec is built
# without build isolation into a fresh venv (FASTSPEC_GPU_VENV) whose .pth file adds the
# interpreter's own site-packages (torch, the nvidia-* wheels), so the install, its console
# script and the tests run as a user's would.
#
# Environment: FASTSPEC_BENCH_DIMS=2048,4096 picks dims (default 2048,4096,8192);
# GPU_SH_STEPS="build tests bench" picks steps (add "sanitize" to run the GPU tests of the
# kernels under compute-sanitizer memcheck: worth it on the first run of new kernels); PYTHON picks the interpreter (3.11+: pytest
# runs with -P so that the source tree, which has no compiled module, does not shadow the install).
# Writes into OUT_DIR (at most 8 files, for the device tool): log.txt (everything),
# backends.json, tests.xml (junit), bench-gpu-<dims>.json (pytest-benchmark), bench-gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/gpu-results}}
mkdir -p "$out"
log="$out/log.txt"
py=${PYTHON:-python3}
steps=${GPU_SH_STEPS:-build tests bench}
dims=${FASTSPEC_BENCH_DIMS:-2048,4096,8192}
venv=${FASTSPEC_GPU_VENV:-/tmp/fastspec-gpu-venv}
status=0
exec > >(tee -a "$log") 2>&1

echo "== $(date -u +%FT%TZ) fastspec GPU run: steps '$steps', dims $dims, into $out"
nvidia-smi || echo "nvidia-smi: not available"
"$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU', torch.cuda.is_available() and torch.cuda.get_device_name())"
command -v nvcc && nvcc --version | tail -2

if [[ " $steps " == *" build "* ]]; then
  echo "== build (FASTSPEC_CUDA=ON)"
  start=$SECONDS
  "$py" -m venv "$venv" || exit 1
  # The interpreter may itself be a venv (then --system-site-packages would not see its torch).
  "$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib']); print(sysconfig.get_paths()['platlib'])" \
    > "$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_fastspec_gpu_host.pth"
  "$venv/bin/python" -m pip install --no-build-isolation --no-deps --force-reinstall \
    -C cmake.define.FASTSPEC_CUDA=ON -C build-dir=/tmp/fastspec-gpu-build . || exit 1
  echo "build: $((SECONDS - start)) s"
fi
pybin="$venv/bin/python"
(cd /tmp && "$pybin" -c "import fastspec, json; print(json.dumps(fastspec.backends(), indent=1))") | tee "$out/backends.json"

if [[ " $steps " == *" tests "* ]]; then
  echo "== tests (all of tests/, the cuda-marked ones on the GPU; kernels required)"
  FASTSPEC_REQUIRE_CUDA_KERNELS=1 timeout 900 "$pybin" -P -m pytest -q -p no:cacheprovider tests \
    --junitxml="$out/tests.xml" || status=1
fi

if [[ " $steps " == *" sanitize "* ]]; then
  echo "== compute-sanitizer memcheck over the kernels' GPU tests"
  FASTSPEC_REQUIRE_CUDA_KERNELS=1 timeout 900 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$pybin" -P -m pytest -q -p no:cacheprovider tests/spectral/test_cuda.py -m cuda -k kernels || status=1
fi

if [[ " $steps " == *" bench "* ]]; then
  echo "== GPU benchmarks (full size), one pytest run per dim so that a slow one loses only itself"
  IFS=',' read -ra dim_list <<< "$dims"
  jsons=()
  for d in "${dim_list[@]}"; do
    json="$out/bench-gpu-$d.json"
    FASTSPEC_REQUIRE_CUDA_KERNELS=1 FASTSPEC_BENCH_FULL=1 FASTSPEC_BENCH_DIMS=$d timeout 1500 \
      "$pybin" -P -m pytest -q -p no:cacheprovider benchmarks/test_bench_gpu.py --benchmark-json="$json" \
      --benchmark-columns=median,rounds || status=1
    [ -s "$json" ] && jsons+=("$json")
  done
  if [ ${#jsons[@]} -gt 0 ]; then
    "$pybin" benchmarks/report.py "${jsons[@]}" -o "$out/bench-gpu.md" && cat "$out/bench-gpu.md" || status=1
  fi
fi
echo "== done: exit $status"
exit $status
