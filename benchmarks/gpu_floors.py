"""What the card's own libraries do alone, with no fastspec build: the floors under the GPU
benchmarks (benchmarks/gpu.sh runs this first, before it builds anything).

    python benchmarks/gpu_floors.py OUT.jsonl [--n 15000] [--dims 4096,8192] [--device cuda]
    python benchmarks/gpu_floors.py --versions OUT.json     # what the numbers depend on

One JSON line per measurement, printed, appended to OUT.jsonl and flushed as each completes,
so a run that is cut off keeps what it finished. Per d (products first, at every d, then the
eigensolves, smallest d first):

- ``gemm_fp32``: torch ``x.T @ x``, float32 in IEEE arithmetic (TF32 off)
- ``gemm_tf32``: the same with TF32 tensor cores allowed (CUDA only)
- ``gemm_bf16``: bf16 ``x.T @ x`` (tensor cores, float32 accumulation)
- ``ssyrk_fp32``, ``ssyrk_fp32_pedantic``: a bare ``cublasSsyrk_v2`` on torch's tensors and
  current stream, through ctypes on the libcublas that torch loaded (else the nvidia-cublas
  wheel's, else the system's): the column-major view of the row-major N×d x is the d×N
  matrix Xᵀ, so no-trans SYRK of it with the lower fill writes XᵀX's lower (row-major:
  upper) triangle; checked against ``gemm_fp32``'s product. Once in each cuBLAS math mode:
  ``CUBLAS_DEFAULT_MATH`` and ``CUBLAS_PEDANTIC_MATH``, the mode fastspec's kernels use (it
  rules out every reduced-precision shortcut), so that the kernels' accumulation is compared
  with the SSYRK it actually calls (report.py takes the pedantic floor for that ratio)
- ``eigvalsh_fp32``, ``eigvalsh_fp64``: ``torch.linalg.eigvalsh`` of the d×d covariance of x
  (symmetric positive definite: N > d)

Fields: name, what, n, d, dtype, median_s, min_s, rounds, flops and tflops (products: 2·N·d²
for a GEMM, N·d·(d+1) for one triangle), device, torch; ``skipped`` or ``error`` (with the
reason) instead of the times where a measurement could not run. x is N×d with variance r⁻¹
along axis r and four columns of mean 20 (test_bench_gpu.py's recipe). Timing: CUDA events
around each call (perf_counter on the CPU), one warm-up call, then rounds for about a second
(at least one, at most 10); the median. Standard library and torch only.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import json
import os
import platform
import re
import shutil
import site
import statistics
import subprocess
import sys
import sysconfig
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

ROUND_SECONDS = 1.0  # each measurement's rounds take about this long after the warm-up
MAX_ROUNDS = 10
PACKAGES = ("numpy", "scipy", "transformers", "pybind11", "scikit-build-core", "pytest", "pytest-benchmark", "cmake",
            "ninja", "nvidia-cublas", "nvidia-cublas-cu12", "nvidia-cusolver", "nvidia-cusolver-cu12")


def activations(n: int, d: int, device: str) -> torch.Tensor:
    """N×d float32: variance r⁻¹ along axis r (α ≈ 1), small column means, four of mean 20."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, d, generator=g, device=device, dtype=torch.float32)
    x.mul_(torch.arange(1, d + 1, device=device, dtype=torch.float64).pow(-0.5).float())
    mean = 0.5 * torch.randn(d, generator=g, device=device, dtype=torch.float32)
    mean[:4] = 20.0
    return x.add_(mean)


@contextmanager
def fp32_matmul(tf32: bool) -> Iterator[str]:
    """TF32 on or off for CUDA float32 matmuls; yields the setting's name and value. torch >=
    2.9 spells it ``fp32_precision`` (the old ``allow_tf32`` then warns, and mixing the two
    raises)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        attr, value = "fp32_precision", ("tf32" if tf32 else "ieee")
    else:
        attr, value = "allow_tf32", tf32
    saved = getattr(matmul, attr)
    setattr(matmul, attr, value)
    try:
        yield f"torch.backends.cuda.matmul.{attr}={value!r}"
    finally:
        setattr(matmul, attr, saved)


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Seconds of one call, ending when the device is done."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, out
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(fn: Callable[[], Any], device: str) -> tuple[list[float], Any]:
    first, out = timed(fn, device)  # warm-up: handles, workspaces, kernels' first launch
    rounds = max(1, min(MAX_ROUNDS, int(ROUND_SECONDS / max(first, 1e-9))))
    times = []
    for _ in range(rounds):
        t, out = timed(fn, device)
        times.append(t)
    return times, out


# ---------------------------------------------------------------------------------------
# cuBLAS SSYRK through ctypes
# ---------------------------------------------------------------------------------------

CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N = 0, 0
#: cublasMath_t (cublas_api.h): the two modes the SSYRK floor is timed in.
CUBLAS_MATH_MODES = {"default": 0, "pedantic": 2}  # CUBLAS_DEFAULT_MATH, CUBLAS_PEDANTIC_MATH


def cublas_candidates() -> list[str]:
    """libcublas paths, best first: the one torch has loaded (it loads cuBLAS at its first
    matmul), the nvidia-cublas wheel's (CUDA 12: nvidia/cublas/lib; CUDA 13: nvidia/cu13/lib),
    the CUDA toolkit's, the system's."""
    found: list[str] = []
    try:
        with open("/proc/self/maps") as f:
            found += [line.split()[-1] for line in f if re.search(r"/libcublas\.so[.\d]*$", line.strip())]
    except OSError:
        pass
    sites = [sysconfig.get_paths()[k] for k in ("purelib", "platlib")] + list(sys.path)
    try:
        sites += site.getsitepackages()
    except AttributeError:  # some virtualenvs
        pass
    for root in dict.fromkeys(sites):
        for sub in ("cublas/lib", "cu13/lib", "cu12/lib"):
            found += sorted(glob.glob(os.path.join(root, "nvidia", sub, "libcublas.so*")), reverse=True)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            found += sorted(glob.glob(os.path.join(home, "lib64", "libcublas.so*")), reverse=True)
    system = ctypes.util.find_library("cublas")
    if system:
        found.append(system)
    return list(dict.fromkeys(found))


class Cublas:
    def __init__(self) -> None:
        errors = []
        for path in cublas_candidates():
            try:
                self.lib, self.path = ctypes.CDLL(path), path
                break
            except OSError as err:
                errors.append(f"{path}: {err}")
        else:
            raise RuntimeError("no libcublas found (" + ("; ".join(errors) or "looked in /proc/self/maps, the "
                               "nvidia-cublas wheel, CUDA_HOME and the system") + ")")
        lib = self.lib
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cublasSetStream_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.cublasSetMathMode.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.cublasGetVersion_v2.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        lib.cublasDestroy_v2.argtypes = [ctypes.c_void_p]
        lib.cublasSsyrk_v2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int]
        self.handle = ctypes.c_void_p()
        self.check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate_v2")
        # IEEE float32 (no TF32 unless NVIDIA_TF32_OVERRIDE says so: see the line's env field).
        self.set_math_mode("default")
        version = ctypes.c_int()
        self.check(lib.cublasGetVersion_v2(self.handle, ctypes.byref(version)), "cublasGetVersion_v2")
        self.version = version.value

    def set_math_mode(self, mode: str) -> None:
        """``mode``: a key of :data:`CUBLAS_MATH_MODES`, for this handle's later calls."""
        self.check(self.lib.cublasSetMathMode(self.handle, CUBLAS_MATH_MODES[mode]), "cublasSetMathMode")

    @staticmethod
    def check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed: cublasStatus_t {status}")

    def ssyrk(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """c's upper triangle (row-major) = xᵀx, for a contiguous row-major float32 x (N×d)."""
        n, d = x.shape
        self.check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)),
                   "cublasSetStream_v2")
        one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
        self.check(self.lib.cublasSsyrk_v2(self.handle, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, d, n, ctypes.byref(one),
                                           ctypes.c_void_p(x.data_ptr()), d, ctypes.byref(zero),
                                           ctypes.c_void_p(c.data_ptr()), d), "cublasSsyrk_v2")
        return c

    def close(self) -> None:
        self.lib.cublasDestroy_v2(self.handle)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


class Sink:
    def __init__(self, path: Path, common: dict[str, Any]):
        self.path, self.common = path, common

    def write(self, line: dict[str, Any]) -> None:
        line = {**line, **self.common}
        text = json.dumps(line, default=str)
        print(text, flush=True)
        with open(self.path, "a") as f:
            f.write(text + "\n")
            f.flush()

    def run(self, name: str, what: str, n: int, d: int, dtype: str, fn: Callable[[], Any], flops: float | None = None,
            device: str = "cuda", check: Callable[[Any], dict[str, Any]] | None = None, **extra: Any) -> Any:
        base = {"name": name, "what": what, "n": n, "d": d, "dtype": dtype, **extra}
        try:
            times, out = measure(fn, device)
        except Exception as err:  # noqa: BLE001  (one measurement's failure must not lose the others)
            self.write({**base, "error": f"{type(err).__name__}: {err}"[:500]})
            return None
        med = statistics.median(times)
        line = {**base, "median_s": med, "min_s": min(times), "rounds": len(times)}
        if flops is not None:
            line.update(flops=flops, tflops=flops / med / 1e12)
        if check is not None:
            line.update(check(out))
        self.write(line)
        return out


def floors(out: Path, n: int, dims: list[int], device: str) -> None:
    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine() or "cpu")
    sink = Sink(out, {"device": name, "torch": torch.__version__,
                      "env": {k: os.environ[k] for k in ("NVIDIA_TF32_OVERRIDE",) if k in os.environ}})
    if device == "cuda":
        # Clocks ramp up under load: a second of bf16 products first, so the first floor is not
        # measured at idle clocks.
        w = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
        t = time.perf_counter()
        while time.perf_counter() - t < 1.0:
            for _ in range(20):
                w @ w
            torch.cuda.synchronize()
        del w
    blas = None
    try:
        blas = Cublas() if device == "cuda" else None
        blas_why = "" if device == "cuda" else "no CUDA device: cuBLAS needs one"
    except Exception as err:  # noqa: BLE001
        blas_why = f"{type(err).__name__}: {err}"
    if blas is not None:
        print(f"cuBLAS {blas.version} from {blas.path}", flush=True)

    # Products at every d first (milliseconds each), then the eigensolves (seconds at d = 8192).
    for d in dims:
        products(sink, n, d, device, blas, blas_why)
        if device == "cuda":
            torch.cuda.empty_cache()
    for d in dims:
        eigensolves(sink, n, d, device)
        if device == "cuda":
            torch.cuda.empty_cache()
    if blas is not None:
        blas.close()


#: The SSYRK floor's lines, by cuBLAS math mode.
SSYRK_FLOORS = {"default": "ssyrk_fp32", "pedantic": "ssyrk_fp32_pedantic"}


def products(sink: Sink, n: int, d: int, device: str, blas: Cublas | None, blas_why: str) -> None:
    x = activations(n, d, device)
    flops = 2.0 * n * d * d
    with fp32_matmul(tf32=False) as setting:
        ref = sink.run("gemm_fp32", "torch x.T @ x, float32 IEEE", n, d, "fp32", lambda: x.T @ x, flops, device,
                       setting=setting)
    if device == "cuda":
        with fp32_matmul(tf32=True) as setting:
            sink.run("gemm_tf32", "torch x.T @ x, float32 input, TF32 tensor cores", n, d, "fp32", lambda: x.T @ x,
                     flops, device, setting=setting)
    else:
        sink.write({"name": "gemm_tf32", "n": n, "d": d, "dtype": "fp32", "skipped": "TF32 is a CUDA matmul setting"})
    xb = x.to(torch.bfloat16)
    sink.run("gemm_bf16", "torch x.T @ x, bf16 (float32 accumulation)", n, d, "bf16", lambda: xb.T @ xb, flops, device)
    if blas is None:
        for name in SSYRK_FLOORS.values():
            sink.write({"name": name, "n": n, "d": d, "dtype": "fp32", "skipped": blas_why})
        return
    c = torch.empty(d, d, device=device, dtype=torch.float32)

    def agrees(c: torch.Tensor) -> dict[str, Any]:
        if ref is None:
            return {}
        err = float((torch.triu(c) - torch.triu(ref)).abs().max() / ref.abs().max())
        return {"max_rel_err_vs_gemm_fp32": err, "check": "ok" if err <= 1e-4 else "FAILED"}

    for mode, name in SSYRK_FLOORS.items():
        blas.set_math_mode(mode)
        try:
            sink.run(name, f"bare cublasSsyrk_v2 (lower, no-trans on the column-major view), IEEE fp32, "
                     f"CUBLAS_{mode.upper()}_MATH", n, d, "fp32", lambda: blas.ssyrk(x, c), float(n) * d * (d + 1),
                     device, check=agrees, library=blas.path, cublas_version=blas.version, math_mode=mode)
        finally:
            blas.set_math_mode("default")


def eigensolves(sink: Sink, n: int, d: int, device: str) -> None:
    x = activations(n, d, device).double()
    x -= x.mean(0)
    cov = (x.T @ x) / (n - 1)
    del x
    for dtype, t in (("fp32", torch.float32), ("fp64", torch.float64)):
        a = cov.to(t)
        sink.run(f"eigvalsh_{dtype}", f"torch.linalg.eigvalsh, {dtype}, d×d covariance (SPD)", n, d, dtype,
                 lambda: torch.linalg.eigvalsh(a), None, device)  # noqa: B023  (called at once, in this iteration)


def _run(cmd: list[str], quiet: bool = False) -> str | None:
    """The command's output (its error output where it failed; None with ``quiet``)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return None if quiet else f"failed: {err}"
    if p.returncode != 0 and quiet:
        return None
    return (p.stdout or p.stderr).strip()


def tree_digest(root: Path) -> str:
    """sha256 over the paths and bytes of what the build and the benchmarks are made of (csrc/,
    fastspec/, benchmarks/*.py, CMakeLists.txt, pyproject.toml): the device machine's copy has
    no .git, and this names the tree all the same (compute it on the checkout to compare)."""
    import hashlib

    h = hashlib.sha256()
    files = [p for top in ("csrc", "fastspec") for p in (root / top).rglob("*") if p.is_file()]
    files += list((root / "benchmarks").glob("*.py")) + [root / "CMakeLists.txt", root / "pyproject.toml"]
    for p in sorted(f for f in files if "__pycache__" not in f.parts and f.exists()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def versions() -> dict[str, Any]:
    """What the numbers depend on: interpreter, torch and its CUDA, the card, the packages the
    build and the benchmarks use, nvcc and the driver."""
    v: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                    "memory_gib": round(p.total_memory / 2**30, 1)}
    for name in PACKAGES:
        try:
            v[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    nvcc = _run(["nvcc", "--version"])
    v["nvcc"] = next((line for line in nvcc.splitlines() if "release" in line), nvcc) if nvcc else None
    v["nvidia_smi"] = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                            "--format=csv,noheader"])
    root = Path(__file__).resolve().parent.parent
    v["fastspec_source"] = {"commit": _run(["git", "-C", str(root), "rev-parse", "HEAD"], quiet=True),
                            "tree_sha256": tree_digest(root)}
    m = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
    v["fastspec_source"]["version"] = m.group(1) if m else None
    return v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="append the JSON lines here (with --versions: write the JSON here)")
    parser.add_argument("--n", type=int, default=15000, help="rows of x (default 15000)")
    parser.add_argument("--dims", default="4096,8192", help="comma-separated d (default 4096,8192)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--versions", action="store_true", help="write the versions instead of measuring")
    args = parser.parse_args(argv)
    if args.versions:
        text = json.dumps(versions(), indent=1, default=str)
        args.out.write_text(text + "\n")
        print(text)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    floors(args.out, args.n, [int(d) for d in args.dims.split(",")], args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
