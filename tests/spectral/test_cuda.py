"""fastspec on CUDA: its own kernels (fastspec._C_cuda) and the torch path, against the CPU
float64 references.

Two kinds of tests:
- unmarked ones run everywhere: what the build reports, the binding's argument checks (made
  before any CUDA call), and the errors a machine without a usable GPU gives;
- ``cuda``-marked ones need a GPU (the marker's hook skips them without one); those of the
  kernels also skip, with the reason, where the kernels are not available, unless
  FASTSPEC_REQUIRE_CUDA_KERNELS=1 (benchmarks/gpu.sh sets it) turns that skip into a failure.

Tolerances (float32 products of centred chunks, float64 merges and eigensolver, the contract
of both paths): top-10 eigenvalues to 1e-5 relative, every eigenvalue to 1e-5·λ₁ absolute,
RankMe to 1e-6 relative, α to 1e-5 relative; and the kernels' error may not exceed 4× the
torch path's on the same GPU, or a floor that float32 rounding alone cannot cross (a tenth of
the eigenvalue contract, half of RankMe's: two errors that are both rounding can differ by
more than 4×).
"""

from __future__ import annotations

import ast
import inspect
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import make_activations, ref_alpha, ref_eigenvalues, ref_rankme, rel

import fastspec
from fastspec import _C
from fastspec.spectral import kernels as cuda_kernels

D = 512
LAM = np.arange(1, D + 1, dtype=np.float64) ** -1.0
MEAN = np.r_[np.full(3, 1e3), np.zeros(D - 3)]

BUILT = bool(_C.build_info()["cuda_kernels"]["built"])
USABLE, WHY = cuda_kernels.status()
REQUIRE = os.environ.get("FASTSPEC_REQUIRE_CUDA_KERNELS", "") == "1"
REQUIRE_BUILD = os.environ.get("FASTSPEC_REQUIRE_CUDA_BUILD", "") == "1"


@pytest.fixture
def _fail_unbuilt():
    pytest.fail(f"FASTSPEC_REQUIRE_CUDA_BUILD/KERNELS=1, but fastspec was installed without its CUDA kernels: {WHY}")


@pytest.fixture
def _fail_unusable():
    pytest.fail(f"FASTSPEC_REQUIRE_CUDA_KERNELS=1, but fastspec's CUDA kernels are not available: {WHY}")


def _needs(ok: bool, required: bool, reason: str, failing_fixture: str):
    """Nothing when ok; else skip with the reason, or fail where the environment requires it."""
    if ok:
        return lambda test: test
    if required:
        return pytest.mark.usefixtures(failing_fixture)
    return pytest.mark.skip(reason=reason)


built = _needs(BUILT, REQUIRE_BUILD or REQUIRE, f"fastspec was installed without its CUDA kernels: {WHY}",
               "_fail_unbuilt")
needs_kernels = _needs(USABLE, REQUIRE, f"fastspec's CUDA kernels are not available: {WHY}", "_fail_unusable")


def kernels(test):
    """needs_kernels, and the ``cuda_kernels`` marker: the tests of the kernels' own device
    work, which benchmarks/gpu.sh runs again under compute-sanitizer (``-m cuda_kernels``).
    A test that needs the kernels for something else (NCCL) takes needs_kernels alone."""
    return pytest.mark.cuda_kernels(needs_kernels(test))


gpu = pytest.mark.cuda


def _spectrum_errors(values: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    top = float(np.max(np.abs(values[:10] - want[:10]) / want[:10]))
    tail = float(np.max(np.abs(values - want)) / want[0])
    return top, tail


def _assert_close_to_reference(s, want: np.ndarray) -> None:
    top, tail = _spectrum_errors(s.eigenvalues, want)
    assert top < 1e-5, f"top-10 eigenvalues off by {top:.2e} relative"
    assert tail < 1e-5, f"eigenvalues off by {tail:.2e}·λ₁"
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    assert rel(s.alpha, ref_alpha(want)[0]) < 1e-5


# ---------------------------------------------------------------------------------------
# Everywhere: the build report, argument checks, errors without a usable GPU
# ---------------------------------------------------------------------------------------


def test_build_report_is_consistent_with_the_backends_report():
    entry = fastspec.backends()["cuda_kernels"]
    assert entry["available"] == USABLE
    text = entry.get("detail") if USABLE else entry.get("reason")
    assert text == WHY and text
    if not BUILT:
        # Not built says why: switched off, or what the build could not find.
        assert "FASTSPEC_CUDA=OFF" in WHY or "missing" in WHY, WHY


@built
def test_cuda_module_reports_versions_without_a_device():
    from fastspec import _C_cuda

    info = _C_cuda.build_info()
    for key in ("cuda_runtime_compiled", "cublas_compiled", "cusolver_compiled", "architectures", "cuda_driver"):
        assert info[key], key
    # The loaded cuBLAS/cuSOLVER answer too (no device needed), with the major version built for.
    assert info["cublas"].split(".")[0] == info["cublas_compiled"].split(".")[0]
    assert info["cusolver"].split(".")[0] == info["cusolver_compiled"].split(".")[0]
    assert "detail" in _C.build_info()["cuda_kernels"]


@built
def test_device_count_without_a_usable_driver_is_a_runtime_error_naming_the_call():
    from fastspec import _C_cuda

    try:
        count = _C_cuda.device_count()
    except RuntimeError as err:
        assert "cudaGetDeviceCount failed: cudaError" in str(err)
        assert isinstance(err, _C_cuda.CudaError)
        assert not USABLE
    else:
        assert count >= 0


@built
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=0), "x is a null pointer"),
        (dict(gram=0), "a workspace pointer"),
        (dict(dtype=3), "input dtype must be float32, float16 or bfloat16, got float64"),
        (dict(dtype=7), "unknown dtype code 7"),
        (dict(rows=0), "rows must be >= 1"),
        (dict(cols=0), "cols must be >= 1"),
        (dict(row_stride=100), r"row_stride \(100\) must be >= cols \(128\)"),
        (dict(rows=1 << 31), "below 2\\^31"),
        (dict(blas_workspace_bytes=0), "must be given together"),
        (dict(products=2), r"products must be 0 \(float32 SSYRK\) or 1 \(3xTF32\), got 2"),
    ],
)
def test_centre_and_gram_checks_arguments_before_any_cuda_call(change, message):
    from fastspec import _C_cuda

    args = dict(x=0x1000, dtype=0, rows=64, cols=128, row_stride=128, products=0, y=0x2000, gram=0x3000, col_sum=0x4000,
                resid=0x5000, blas_workspace=0x6000, blas_workspace_bytes=1 << 20, device=0, stream=0)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        _C_cuda.centre_and_gram(**args)


@built
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(mean=0), "mean or m2 is a null pointer"),
        (dict(delta=0), "a chunk pointer"),
        (dict(n_before=-1), "n_before must be >= 0"),
        (dict(m2_ld=10), r"m2_ld \(10\) must be >= cols \(128\)"),
    ],
)
def test_chan_merge_checks_arguments(change, message):
    from fastspec import _C_cuda

    args = dict(gram=0x1000, col_sum=0x2000, resid=0x3000, rows=64, cols=128, n_before=0, mean=0x4000,
                m2=0x5000, m2_ld=128, delta=0x6000, device=0, stream=0)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        _C_cuda.chan_merge(**args)


@built
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(dtype=2), "cusolverDnXsyevd: dtype must be float32 or float64, got bfloat16"),
        (dict(n=0), "n must be >= 1"),
        (dict(lda=4), r"lda \(4\) must be >= n \(8\)"),
        (dict(top_k=9), r"cusolverDnXsyevd: top_k must be in \[0, n = 8\]"),
        (dict(info=0), "info is a null pointer"),
        (dict(work=0), "work is null but work_bytes is 64"),
    ],
)
def test_eig_checks_arguments(change, message):
    from fastspec import _C_cuda

    args = dict(a=0x1000, n=8, lda=8, dtype=3, w=0x2000, top_k=0, work=0x3000, work_bytes=64, host_work=0,
                host_work_bytes=0, info=0x4000, device=0, stream=0)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        _C_cuda.eig(**args)
    size_args = {k: args[k] for k in ("a", "n", "lda", "dtype", "w", "top_k", "device")}
    if set(change) <= set(size_args):  # the size query checks the same arguments
        with pytest.raises(ValueError, match=message):
            _C_cuda.eig_workspace_size(**size_args)


@pytest.mark.skipif(USABLE, reason="the CUDA kernels are available here")
def test_backend_cuda_without_usable_kernels_says_why():
    x = torch.randn(50, 4)
    with pytest.raises(NotImplementedError, match="backend='cuda': fastspec's CUDA kernels are not available") as err:
        fastspec.spectrum(x, backend="cuda")
    assert WHY in str(err.value) and "backend='torch'" in str(err.value)
    with pytest.raises(NotImplementedError, match="not available"):
        fastspec.CovarianceAccumulator(4, backend="cuda")


def test_bad_backend_names_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastspec.CovarianceAccumulator(4, backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        fastspec.spectrum(torch.randn(10, 3), backend="triton")


def test_cpu_tensors_never_reach_the_kernels(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the CUDA kernels were called for a CPU tensor")

    monkeypatch.setattr(cuda_kernels, "add_chunk", boom)
    monkeypatch.setattr(cuda_kernels, "eigh", boom)
    x = make_activations(3000, LAM[:64] / LAM[0], seed=3)
    acc = fastspec.CovarianceAccumulator(64)
    acc.update(x)
    assert not acc.uses_kernels
    np.testing.assert_allclose(acc.spectrum().eigenvalues, fastspec.spectrum(x).eigenvalues, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# GPU: the torch path on a CUDA device (backend="torch")
# ---------------------------------------------------------------------------------------


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_torch_path_on_cuda_matches_cpu_reference(dtype):
    x = make_activations(6000, LAM, mean=MEAN, seed=50, dtype=dtype)
    s = fastspec.spectrum(x.cuda(), backend="torch")
    # TF32 is off for torch matmul by default; the products are true float32.
    _assert_close_to_reference(s, ref_eigenvalues(x.double()))


@gpu
def test_torch_path_wide_features_use_the_block_path_and_upper_triangle():
    d = 1100
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.0
    x = make_activations(3000, lam, mean=np.full(d, 100.0), seed=52, dtype=torch.float32)
    s = fastspec.spectrum(x.cuda(), top_k_eigenvectors=3, backend="torch")
    want = ref_eigenvalues(x)
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    assert s.eigenvectors.shape == (d, 3)


@gpu
def test_torch_path_accumulator_streams_and_keeps_state_on_the_device():
    x = make_activations(5000, LAM, mean=MEAN, seed=51, dtype=torch.float32)
    acc = fastspec.CovarianceAccumulator(D, device="cuda", backend="torch")
    for i in range(0, 5000, 16):
        acc.update(x[i : i + 16])  # CPU batches are moved to the accumulator's device
    assert acc.mean.device.type == "cuda" and not acc.uses_kernels
    assert rel(acc.spectrum().rankme, ref_rankme(ref_eigenvalues(x))) < 1e-6


# ---------------------------------------------------------------------------------------
# GPU: fastspec's kernels
# ---------------------------------------------------------------------------------------


@pytest.fixture
def count_kernel_calls(monkeypatch):
    """Counts of the kernels' two entry points, so a test can prove which path ran."""
    calls = {"add_chunk": 0, "eigh": 0}
    add_chunk, eigh = cuda_kernels.add_chunk, cuda_kernels.eigh

    def counted_add(*args, **kwargs):
        calls["add_chunk"] += 1
        return add_chunk(*args, **kwargs)

    def counted_eigh(*args, **kwargs):
        calls["eigh"] += 1
        return eigh(*args, **kwargs)

    monkeypatch.setattr(cuda_kernels, "add_chunk", counted_add)
    monkeypatch.setattr(cuda_kernels, "eigh", counted_eigh)
    return calls


@gpu
@kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernels_match_cpu_float64_reference_and_the_torch_path(dtype, count_kernel_calls):
    x = make_activations(6000, LAM, mean=MEAN, seed=60, dtype=dtype)
    want = ref_eigenvalues(x.double())
    s = fastspec.spectrum(x.cuda())  # backend="auto": the kernels
    assert count_kernel_calls["add_chunk"] >= 1 and count_kernel_calls["eigh"] == 1
    _assert_close_to_reference(s, want)
    t = fastspec.spectrum(x.cuda(), backend="torch")
    assert count_kernel_calls["eigh"] == 1  # backend="torch" did not use them
    for ours, theirs in zip(_spectrum_errors(s.eigenvalues, want), _spectrum_errors(t.eigenvalues, want)):
        assert ours <= max(4 * theirs, 1e-6)
    assert rel(s.rankme, ref_rankme(want)) <= max(4 * rel(t.rankme, ref_rankme(want)), 5e-7)


@gpu
@kernels
@pytest.mark.parametrize("center", [True, False])
def test_kernels_raw_second_moment_and_rankme_sv(center):
    x = make_activations(4000, LAM, mean=np.linspace(0, 3, D), seed=61, dtype=torch.float32)
    s = fastspec.spectrum(x.cuda(), center=center)
    want = ref_eigenvalues(x, center=center)
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]
    convention = "eig" if center else "sv"
    assert rel(fastspec.rankme(s, convention=convention), ref_rankme(want, sv=not center)) < 1e-6


@gpu
@kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_streaming_in_many_batches_equals_one_shot(dtype):
    x = make_activations(9000, LAM, mean=MEAN, seed=62, dtype=dtype).cuda()
    one = fastspec.CovarianceAccumulator(D).update(x)
    many = fastspec.CovarianceAccumulator(D, device="cuda")
    sizes = [16, 1, 1000, 4096, 7, 3000]  # buffered, tiny, chunked, a final remainder
    start = 0
    for size in sizes:
        many.update(x[start : start + size])
        start += size
    many.update(x[start:])
    assert one.uses_kernels and many.uses_kernels
    a, b = one.state_dict(), many.state_dict()
    assert a["n_samples"] == b["n_samples"] == 9000
    torch.testing.assert_close(b["mean"], a["mean"], rtol=0, atol=1e-9 * float(a["mean"].abs().max()))
    # Different chunkings round differently: float32 accumulation over up to 9000 rows is good
    # to ~1e-6 of the largest entry; a wrong merge would be off by O(1).
    torch.testing.assert_close(b["m2"], a["m2"], rtol=0, atol=1e-5 * float(a["m2"].diagonal().max()))
    want = ref_eigenvalues(x.cpu().double())
    _assert_close_to_reference(many.spectrum(), want)


@gpu
@kernels
def test_kernels_large_mean_columns_do_not_cancel():
    """Columns of mean 1e4 next to unit variance: the one-pass Σxxᵀ − nμμᵀ in float32 would
    lose everything; per-chunk shifting and Chan's merge keep RankMe to 1e-6."""
    d = 256
    lam = np.arange(1, d + 1, dtype=np.float64) ** -0.8
    mean = np.r_[np.full(8, 1e4), np.full(d - 8, -50.0)]
    x = make_activations(20000, lam, mean=mean, seed=63, dtype=torch.float32)
    acc = fastspec.CovarianceAccumulator(d, device="cuda")
    for batch in x.split(3000):
        acc.update(batch.cuda())
    want = ref_eigenvalues(x)
    s = acc.spectrum()
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]
    np.testing.assert_allclose(acc.mean.cpu().numpy(), x.double().mean(0).numpy(), rtol=1e-9, atol=1e-9)


@gpu
@kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [D, 1100])  # one block column of the 3×TF32 GEMMs, and three (a ragged last)
def test_kernels_3xtf32_products_keep_the_float32_contract(dtype, d, count_kernel_calls):
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.0
    x = make_activations(6000, lam, mean=np.r_[np.full(3, 1e3), np.zeros(d - 3)], seed=69, dtype=dtype)
    acc = fastspec.CovarianceAccumulator(d, device="cuda", products="tf32x3")
    for batch in x.split(2500):  # the first chunk and two merges
        acc.update(batch.cuda())
    assert count_kernel_calls["add_chunk"] == 3
    want = ref_eigenvalues(x.double())
    _assert_close_to_reference(acc.spectrum(), want)


@gpu
@kernels
def test_kernels_pass_their_canary_on_this_device():
    assert cuda_kernels.canary(torch.device("cuda", torch.cuda.current_device())) is None
    assert fastspec.backends()["cuda_kernels"]["devices"][torch.cuda.current_device()] == "ok"


@gpu
@kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_read_a_row_stride_without_a_copy(dtype):
    wide = make_activations(5000, np.r_[LAM, LAM[:100]], mean=np.r_[MEAN, np.zeros(100)], seed=64, dtype=dtype).cuda()
    x = wide[:, :D]  # row stride D + 100: the kernels read it in place
    assert not x.is_contiguous() and x.stride() == (D + 100, 1)
    s = fastspec.spectrum(x)
    np.testing.assert_allclose(s.eigenvalues, fastspec.spectrum(x.contiguous()).eigenvalues, rtol=1e-6,
                               atol=1e-7 * s.eigenvalues[0])
    _assert_close_to_reference(s, ref_eigenvalues(x.cpu().double()))
    every_other = wide[::2, 50 : 50 + D]  # row stride 2·(D + 100), an offset start
    _assert_close_to_reference(fastspec.spectrum(every_other), ref_eigenvalues(every_other.cpu().double()))


@gpu
@kernels
def test_kernels_top_k_eigenvectors_match_the_reference():
    lam = np.r_[10.0, 7.0, 5.0, 3.0, np.arange(5, D + 1, dtype=np.float64) ** -1.0]  # separated top 4
    x = make_activations(8000, lam, seed=65, dtype=torch.float32)
    s = fastspec.spectrum(x.cuda(), top_k_eigenvectors=4)
    xc = x.double().numpy() - x.double().numpy().mean(0)
    values, vectors = np.linalg.eigh(xc.T @ xc / (len(xc) - 1))
    want = vectors[:, ::-1][:, :4]
    assert s.eigenvectors.shape == (D, 4)
    overlap = np.abs(np.sum(s.eigenvectors * want, axis=0))
    assert np.all(overlap > 1 - 1e-8), overlap
    np.testing.assert_allclose(np.linalg.norm(s.eigenvectors, axis=0), 1.0, rtol=1e-10)
    top, tail = _spectrum_errors(s.eigenvalues, values[::-1])
    assert top < 1e-5 and tail < 1e-5


@gpu
@kernels
def test_kernels_gram_path_when_fewer_rows_than_features(count_kernel_calls):
    lam = np.arange(1, 701, dtype=np.float64) ** -1.0
    x = make_activations(400, lam, mean=np.full(700, 30.0), seed=66, dtype=torch.float32)
    s = fastspec.spectrum(x.cuda(), top_k_eigenvectors=2)
    assert count_kernel_calls["eigh"] == 1
    want = ref_eigenvalues(x)
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]
    assert rel(s.rankme, ref_rankme(want)) < 1e-6


@gpu
@kernels
def test_float32_eigensolver_and_workspace_reuse():
    x = make_activations(4000, LAM, seed=67, dtype=torch.float32).cuda()
    acc = fastspec.CovarianceAccumulator(D).update(x)
    m2 = acc._scatter(center=True)
    v64, _ = cuda_kernels.eigh(m2, 0, torch.float64)
    key = (m2.device.index, cuda_kernels._stream(m2.device))
    work = cuda_kernels._solver_workspaces[key][0]
    v64_again, _ = cuda_kernels.eigh(m2, 0, torch.float64)
    assert cuda_kernels._solver_workspaces[key][0] is work  # same size, same device and stream: reused
    np.testing.assert_allclose(v64_again, v64, rtol=1e-12, atol=1e-14 * v64[0])
    v32, _ = cuda_kernels.eigh(m2, 0, torch.float32)
    # A float32 solver: as close as torch's float32 eigvalsh on the same matrix (4×), ~1e-6·λ₁.
    sym32 = (torch.triu(m2) + torch.triu(m2, 1).T).float()
    torch32 = torch.linalg.eigvalsh(sym32).flip(0).double().cpu().numpy()
    assert np.max(np.abs(v32 - v64)) <= max(4 * np.max(np.abs(torch32 - v64)), 1e-6 * v64[0])
    assert np.max(np.abs(v32 - v64)) < 1e-4 * v64[0]


@gpu
@kernels
def test_kernels_nan_policy(count_kernel_calls):
    x = make_activations(3000, LAM, seed=68, dtype=torch.float32)
    x[1234, 7] = float("nan")
    x[2000, 3] = float("inf")
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\).*row 1234, column 7"):
        fastspec.spectrum(x.cuda())
    with pytest.warns(UserWarning, match="dropped 2 row"):
        s = fastspec.spectrum(x.cuda(), nan_policy="omit")
    assert count_kernel_calls["add_chunk"] >= 2
    keep = torch.isfinite(x).all(1)
    _assert_close_to_reference(s, ref_eigenvalues(x[keep].double()))


@gpu
@kernels
def test_kernels_float32_overflow_is_redone_in_float64():
    x = make_activations(3000, LAM[:64] / LAM[0], seed=69, dtype=torch.float64) * 1e20  # squares overflow float32
    s = fastspec.spectrum(x.to(torch.float32).cuda())
    want = ref_eigenvalues(x.to(torch.float32).double())
    assert np.all(np.isfinite(s.eigenvalues))
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]


@gpu
@kernels
def test_backend_cuda_moves_cpu_input_and_agrees():
    x = make_activations(3000, LAM, mean=MEAN, seed=70, dtype=torch.bfloat16)
    s = fastspec.spectrum(x, backend="cuda")
    t = fastspec.spectrum(x.cuda())
    np.testing.assert_allclose(s.eigenvalues, t.eigenvalues, rtol=1e-6, atol=1e-7 * t.eigenvalues[0])
    acc = fastspec.CovarianceAccumulator(D, backend="cuda")
    assert acc.device.type == "cuda" and acc.uses_kernels
    with pytest.raises(ValueError, match="backend='cuda' keeps the state on a CUDA device"):
        fastspec.CovarianceAccumulator(D, backend="cuda", device="cpu")


@gpu
@kernels
def test_kernels_state_round_trips_and_merges_with_the_cpu_path():
    x = make_activations(6000, LAM, mean=MEAN, seed=71, dtype=torch.float32)
    gpu_acc = fastspec.CovarianceAccumulator(D, device="cuda").update(x[:4000].cuda())
    cpu_acc = fastspec.CovarianceAccumulator(D).update(x[4000:])
    gpu_acc.merge(cpu_acc)
    restored = fastspec.CovarianceAccumulator(D, device="cuda")
    restored.load_state_dict(gpu_acc.state_dict())
    restored.update(x[:10].cuda())  # kernels after a load: the state is contiguous float64 on the GPU
    whole = torch.cat([x, x[:10]])
    _assert_close_to_reference(restored.spectrum(), ref_eigenvalues(whole.double()))


@gpu
@kernels
def test_kernel_errors_are_python_exceptions():
    from fastspec import _C_cuda

    x = torch.randn(64, 32, device="cuda")
    y = torch.empty(64, 32, device="cuda")
    gram = torch.empty(32, 32, device="cuda")
    vecs = torch.empty(2, 32, dtype=torch.float64, device="cuda")
    bad_device = torch.cuda.device_count() + 3
    with pytest.raises(RuntimeError, match="cudaSetDevice failed: cudaErrorInvalidDevice"):
        _C_cuda.centre_and_gram(x.data_ptr(), 0, 64, 32, 32, 0, y.data_ptr(), gram.data_ptr(), vecs[0].data_ptr(),
                                vecs[1].data_ptr(), 0, 0, bad_device, 0)
    a = torch.eye(32, dtype=torch.float64, device="cuda")
    w = torch.empty(32, dtype=torch.float64, device="cuda")
    info = torch.empty(1, dtype=torch.int32, device="cuda")
    work = torch.empty(8, dtype=torch.uint8, device="cuda")
    with pytest.raises(ValueError, match="cusolverDnXsyevd: workspace too small: 8 device bytes"):
        _C_cuda.eig(a.data_ptr(), 32, 32, 3, w.data_ptr(), 0, work.data_ptr(), 8, 0, 0, info.data_ptr(), 0, 0)
    with pytest.raises(torch.OutOfMemoryError, match="no room for the test buffer"):
        cuda_kernels._empty(1 << 60, torch.uint8, torch.device("cuda", 0), "test buffer")


@gpu
@needs_kernels  # not cuda_kernels: NCCL's own device work is no business of the sanitizer step
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch.distributed's own notes on NCCL setup
def test_all_reduce_over_nccl_keeps_kernels_and_state_on_the_gpu(tmp_path):
    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    x = make_activations(3000, LAM, mean=MEAN, seed=72, dtype=torch.float32)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1,
                            device_id=torch.device("cuda", torch.cuda.current_device()))
    try:
        acc = fastspec.CovarianceAccumulator(D, device="cuda").update(x.cuda())
        before = acc.state_dict()
        acc.all_reduce()
        after = acc.state_dict()
    finally:
        dist.destroy_process_group()
    assert acc.mean.device.type == "cuda"
    torch.testing.assert_close(after["m2"], before["m2"], rtol=1e-12, atol=0)
    assert after["n_samples"] == 3000


# ---------------------------------------------------------------------------------------
# Everywhere: fastspec/cuda_kernels.py's wiring, against a NumPy stand-in of the binding
# ---------------------------------------------------------------------------------------


class _FakeBinding:
    """fastspec._C_cuda re-stated in NumPy from csrc/spectral/spectral.h, working on CPU
    memory by address: it checks that cuda_kernels.py passes the right buffers, sizes, strides and
    dtype codes, and reads the results the right way round (row-major upper triangles,
    cuSOLVER's column-major eigenvectors). It cannot check the CUDA code itself: the GPU
    tests above do."""

    _NP = {0: np.float32, 1: np.float16, 2: np.int16, 3: np.float64}

    class EigensolverError(RuntimeError):
        pass

    def __init__(self):
        self.calls: list[str] = []
        self.fail_eig: set[int] = set()  # dtype codes whose solves fail, as cuSOLVER's can

    @staticmethod
    def _array(address: int, count: int, dtype) -> np.ndarray:
        import ctypes

        nbytes = count * np.dtype(dtype).itemsize
        return np.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype=dtype)

    def _input(self, x: int, code: int, rows: int, cols: int, stride: int) -> np.ndarray:
        flat = self._array(x, (rows - 1) * stride + cols, self._NP[code])
        m = np.lib.stride_tricks.as_strided(flat, (rows, cols), (stride * flat.itemsize, flat.itemsize))
        if code == 2:  # bfloat16: the top half of a float32
            return (m.astype(np.int32) << 16).view(np.float32)
        return m.astype(np.float32)

    def centre_and_gram(self, x, dtype, rows, cols, row_stride, products, y, gram, col_sum, resid, blas_workspace,
                        blas_workspace_bytes, device, stream):
        self.calls.append("centre_and_gram" + ("(tf32x3)" if products == 1 else ""))
        assert dtype in (0, 1, 2) and products in (0, 1) and row_stride >= cols and blas_workspace and blas_workspace_bytes
        xf = self._input(x, dtype, rows, cols, row_stride)
        sums = xf.astype(np.float64).sum(0)
        shift = (sums / rows).astype(np.float32)
        yc = xf - shift
        self._array(col_sum, cols, np.float64)[:] = sums
        self._array(resid, cols, np.float64)[:] = yc.astype(np.float64).sum(0)
        g = self._array(gram, cols * cols, np.float32).reshape(cols, cols)
        if products == 1:  # 3×TF32: TF32 operands (cvt.rna), float32 accumulation
            hi = tf32(yc)
            lo = tf32(yc - hi)
            self._array(y, 2 * rows * cols, np.float32)[:] = np.concatenate([hi.ravel(), lo.ravel()])
            full = float32_gram(hi, hi) + float32_gram(hi, lo) + float32_gram(lo, hi)
        else:
            self._array(y, rows * cols, np.float32)[:] = yc.ravel()
            with np.errstate(over="ignore"):  # float32 overflow is reported as inf, as by cuBLAS
                full = (yc.T.astype(np.float64) @ yc.astype(np.float64)).astype(np.float32)
        upper = np.triu_indices(cols)
        g[upper] = full[upper]  # the strict lower triangle is not read

    def chan_merge(self, gram, col_sum, resid, rows, cols, n_before, mean, m2, m2_ld, delta, device, stream):
        self.calls.append("chan_merge")
        # Only the upper triangle is read: the lower one was never written (it may hold NaN).
        g = np.triu(self._array(gram, cols * cols, np.float32).reshape(cols, cols)).astype(np.float64)
        s = self._array(resid, cols, np.float64)
        shift = (self._array(col_sum, cols, np.float64) / rows).astype(np.float32).astype(np.float64)
        mu = self._array(mean, cols, np.float64)
        chunk_mean = shift + s / rows
        dl = self._array(delta, cols, np.float64)
        dl[:] = 0.0 if n_before == 0 else chunk_mean - mu
        coef = 0.0 if n_before == 0 else n_before * rows / (n_before + rows)
        mu[:] = chunk_mean if n_before == 0 else mu + dl * (rows / (n_before + rows))
        m = self._array(m2, (cols - 1) * m2_ld + cols, np.float64)
        view = np.lib.stride_tricks.as_strided(m, (cols, cols), (m2_ld * 8, 8))
        upper = np.triu_indices(cols)
        update = g - np.outer(s, s) / rows + coef * np.outer(dl, dl)
        view[upper] = update[upper] if n_before == 0 else view[upper] + update[upper]

    def eig_workspace_size(self, a, n, lda, dtype, w, top_k, device):
        return 64 + 8 * n, 0

    def eig(self, a, n, lda, dtype, w, top_k, work, work_bytes, host_work, host_work_bytes, info, device, stream):
        self.calls.append(f"eig({'vectors' if top_k else 'values'}, {self._NP[dtype].__name__})")
        assert work_bytes >= 64 + 8 * n and info and top_k in (0, n)
        if dtype in self.fail_eig:
            raise self.EigensolverError("cusolverDnXsyevd did not converge: info = 17")
        typ = self._NP[dtype]
        flat = self._array(a, n * lda, typ)
        rows = flat.reshape(n, lda)[:, :n].astype(np.float64)
        sym = np.triu(rows) + np.triu(rows, 1).T  # the row-major upper triangle defines it
        values, vectors = np.linalg.eigh(sym)
        flat[:] = np.nan  # destroyed, as cuSOLVER leaves it
        self._array(w, n, typ)[:] = values
        if top_k:  # column-major: eigenvector m is column m, i.e. row m of the row-major buffer
            flat.reshape(n, lda)[:, :n] = vectors.T
        return n


def tf32(v: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32 as cvt.rna.tf32.f32 does (10 mantissa bits, to nearest,
    ties away from zero: the magnitude's bits plus half an ulp, truncated)."""
    bits = np.ascontiguousarray(v, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def float32_gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """aᵀb with float32 accumulation (the tensor cores' FP32 accumulate): torch's CPU float32 GEMM."""
    from fastspec.spectral.moments import exact_fp32_matmul

    with exact_fp32_matmul():
        return (torch.from_numpy(a).T @ torch.from_numpy(b)).numpy()


@pytest.fixture
def fake_binding(monkeypatch):
    import sys

    import fastspec as package

    fake = _FakeBinding()
    monkeypatch.setitem(sys.modules, "fastspec._C_cuda", fake)
    monkeypatch.setattr(package, "_C_cuda", fake, raising=False)
    monkeypatch.setattr(cuda_kernels, "_stream", lambda device: 0)
    monkeypatch.setattr(cuda_kernels, "_blas_workspaces", {})
    monkeypatch.setattr(cuda_kernels, "_solver_workspaces", {})
    return fake


REPO = Path(__file__).resolve().parents[2]


def _cpp_calls(source: str, opener: str) -> list[str]:
    """The text inside every ``opener(...)`` call of C++ ``source``, its string literals
    skipped when matching parentheses (the docstrings hold some)."""
    found = []
    for start in (m.end() for m in re.finditer(re.escape(opener), source)):
        depth, i, quote = 1, start, None
        while depth:
            c = source[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            i += 1
        found.append(source[start : i - 1])
    return found


def bound_signatures() -> dict[str, list[str]]:
    """``{function: [argument names in order]}`` of fastspec._C_cuda, as csrc/bindings_cuda.cpp
    declares them with ``m.def("name", &fn, py::arg("a"), ...)`` (pybind11 checks at compile
    time that the py::arg list matches the C++ function)."""
    source = (REPO / "csrc" / "bindings_cuda.cpp").read_text()
    bound = {}
    for call in _cpp_calls(source, "m.def("):
        name = re.match(r'\s*"(\w+)"', call).group(1)
        bound[name] = re.findall(r'py::arg\("(\w+)"\)', call)
    return bound


def _python_files() -> list[Path]:
    return sorted(p for folder in ("fastspec", "tests", "benchmarks") for p in (REPO / folder).rglob("*.py"))


def test_every_call_of_the_cuda_binding_matches_its_declared_signature():
    """The CUDA tests and kernels.py call fastspec._C_cuda, which no CPU machine can import;
    a wrong argument count there shows only on a GPU (issue 24: a 13-argument call of the
    14-argument centre_and_gram). So every ``_C_cuda.f(...)`` call in fastspec/, tests/ and
    benchmarks/, the NumPy stand-in above and the ``.pyi`` stub are held here to the
    signatures that csrc/bindings_cuda.cpp declares."""
    bound = bound_signatures()
    # The parse itself: the module's entry points, with the argument the old call missed.
    assert {"build_info", "device_count", "centre_and_gram", "chan_merge", "eig_workspace_size", "eig"} <= set(bound)
    assert len(bound["centre_and_gram"]) == 14 and bound["centre_and_gram"][5] == "products"

    stub = ast.parse((REPO / "fastspec" / "_C_cuda.pyi").read_text())
    stubbed = {f.name: [a.arg for a in f.args.args] for f in stub.body if isinstance(f, ast.FunctionDef)}
    assert stubbed == bound, "fastspec/_C_cuda.pyi differs from csrc/bindings_cuda.cpp"

    for name, args in bound.items():
        if args:  # every entry point that works on buffers has a stand-in, with the same arguments
            assert hasattr(_FakeBinding, name), f"_FakeBinding has no {name}"
            params = list(inspect.signature(getattr(_FakeBinding, name)).parameters)[1:]  # less self
            assert params == args, f"_FakeBinding.{name}{tuple(params)} differs from the binding's {tuple(args)}"

    problems, checked = [], 0
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            func = getattr(node, "func", None)
            if not (isinstance(node, ast.Call) and isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Name) and func.value.id == "_C_cuda" and func.attr in bound):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}: _C_cuda.{func.attr}"
            args = bound[func.attr]
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                # *args/**kwargs: the dict's keys are checked where they are a literal dict(...) in
                # the same function (the argument-check tests), by name.
                continue
            names = args[: len(node.args)] + [k.arg for k in node.keywords]
            if len(node.args) > len(args) or sorted(names) != sorted(args):
                problems.append(f"{where} passes {len(node.args)} positional argument(s) and keywords "
                                f"{[k.arg for k in node.keywords]}; the binding takes {len(args)}: {args}")
            checked += 1
    assert checked >= 6, "the scan found too few calls: was kernels.py renamed?"
    assert not problems, "\n".join(problems)


def test_argument_check_tests_name_every_argument_of_the_binding():
    """The tests above that call the binding with ``**args`` build args as a literal dict:
    its keys must be the binding's arguments, or a GPU-less CI would skip a TypeError."""
    bound = bound_signatures()
    tree = ast.parse(Path(__file__).read_text())
    seen = set()
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        literal = {}
        for node in ast.walk(func):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) == "dict" and isinstance(node.targets[0], ast.Name)):
                literal[node.targets[0].id] = [k.arg for k in node.value.keywords]
        for node in ast.walk(func):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and getattr(node.func.value, "id", None) == "_C_cuda"):
                for k in node.keywords:
                    if k.arg is None and isinstance(k.value, ast.Name) and k.value.id in literal:
                        assert sorted(literal[k.value.id]) == sorted(bound[node.func.attr]), (
                            f"{func.name}: {k.value.id} = dict(...) does not name {node.func.attr}'s arguments")
                        seen.add(node.func.attr)
    assert seen == {"centre_and_gram", "chan_merge", "eig"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_wiring_of_the_chunk_calls_gives_the_torch_paths_state(fake_binding, dtype):
    from fastspec.spectral.moments import Moments

    d = 48
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.0
    x = make_activations(2500, lam, mean=np.r_[np.full(3, 1e3), np.zeros(d - 3)], seed=80, dtype=dtype)
    wide = torch.cat([x, x[:, :5]], dim=1)
    ours, theirs = Moments(d, torch.device("cpu"), cuda_kernels.CudaOps()), Moments(d, torch.device("cpu"))
    for chunk in (wide[:700, :d], wide[700:701, :d], wide[701:, :d]):  # a row stride, a single row
        assert ours.add_chunk(chunk) and theirs.add_chunk(chunk)
    assert fake_binding.calls == ["centre_and_gram", "chan_merge"] * 3
    assert ours.n == theirs.n == 2500
    # Means to float32 rounding of the shifted rows (the torch path sums the residue in float32).
    exact = x.double().mean(0).numpy()
    for m in (ours, theirs):
        np.testing.assert_allclose(m.mean.numpy(), exact, rtol=1e-9, atol=1e-7)
    upper = torch.triu(torch.ones(d, d, dtype=torch.bool))
    scale = float(theirs.m2.diagonal().max())
    # Both within float32 accumulation error (~sqrt(rows)·2⁻²⁴ relative) of each other.
    np.testing.assert_allclose(ours.m2[upper].numpy(), theirs.m2[upper].numpy(), rtol=0, atol=1e-5 * scale)
    want = ref_eigenvalues(x.double())
    got = np.linalg.eigvalsh(torch.triu(ours.m2).numpy() + torch.triu(ours.m2, 1).T.numpy())[::-1] / 2499
    assert np.max(np.abs(got - want)) < 1e-5 * want[0]


def test_wiring_of_a_failed_chunk_leaves_the_state_alone_and_overflow_is_redone(fake_binding):
    from fastspec.spectral.moments import Moments

    x = make_activations(1200, LAM[:32] / LAM[0], seed=81, dtype=torch.float32)
    m = Moments(32, torch.device("cpu"), cuda_kernels.CudaOps())
    assert m.add_chunk(x[:600])
    mean, m2 = m.mean.clone(), m.m2.clone()
    bad = x[600:].clone()
    bad[10, 4] = float("nan")
    assert not m.add_chunk(bad)  # a non-finite input: nothing merged
    assert m.n == 600 and torch.equal(m.mean, mean) and torch.equal(m.m2, m2)
    assert fake_binding.calls.count("chan_merge") == 1
    huge = x[600:] * 1e20  # finite, but its squares overflow float32: redone in float64
    assert m.add_chunk(huge)
    assert m.n == 1200 and bool(torch.isfinite(m.m2).all())
    want = ref_eigenvalues(torch.cat([x[:600], huge]).double())
    got = np.linalg.eigvalsh(torch.triu(m.m2).numpy() + torch.triu(m.m2, 1).T.numpy())[::-1] / 1199
    assert np.max(np.abs(got - want)) < 1e-5 * want[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_wiring_of_the_eigensolver_reads_values_and_vectors_the_right_way_round(fake_binding, dtype):
    g = torch.Generator().manual_seed(82)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    values = torch.cat([torch.tensor([9.0, 5.0, 2.0]), torch.linspace(1.0, 0.01, 37, dtype=torch.float64)])
    sym = (q * values) @ q.T
    upper_only = torch.triu(sym) + torch.tril(torch.full_like(sym, 7.0), -1)  # the lower is not read
    before = upper_only.clone()
    got, vectors = cuda_kernels.eigh(upper_only, 3, dtype)
    assert torch.equal(upper_only, before)  # the caller's matrix is not touched
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got, np.sort(values.numpy())[::-1], rtol=0, atol=tol * 9)
    assert vectors.shape == (40, 3)
    overlap = np.abs(np.sum(vectors * q[:, :3].numpy(), axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=tol)
    assert fake_binding.calls == [f"eig(vectors, {np.dtype(str(dtype).removeprefix('torch.')).name})"]  # one solve


def test_wiring_of_the_dispatch_points_sends_chunks_and_eigensolves_to_the_kernels(fake_binding, monkeypatch):
    """The accumulator's one decision (spectral.backend.ops_for) reaches both places the work
    is done, its chunks (Moments.add_chunk) and its eigensolves, and their answer is the torch
    path's."""
    from fastspec.spectral import accumulator
    from fastspec.spectral.moments import TORCH

    monkeypatch.setattr(accumulator, "ops_for",
                        lambda backend, device, products: cuda_kernels.CudaOps(products) if backend != "torch" else TORCH)
    x = make_activations(1500, LAM[:24] / LAM[0], seed=83, dtype=torch.float32)
    ours = fastspec.CovarianceAccumulator(24).update(x)
    s = ours.spectrum(top_k_eigenvectors=2)
    assert fake_binding.calls == ["centre_and_gram", "chan_merge", "eig(vectors, float64)"]
    t = fastspec.CovarianceAccumulator(24, backend="torch").update(x).spectrum(top_k_eigenvectors=2)
    assert fake_binding.calls[3:] == []  # backend="torch" never reaches the kernels
    np.testing.assert_allclose(s.eigenvalues, t.eigenvalues, rtol=1e-5, atol=1e-6 * t.eigenvalues[0])
    np.testing.assert_allclose(np.abs(np.sum(s.eigenvectors * t.eigenvectors, axis=0)), 1.0, atol=1e-4)




@pytest.mark.parametrize("large_mean", [False, True])
def test_wiring_of_3xtf32_products_keeps_float32_accuracy(fake_binding, monkeypatch, large_mean):
    """products="tf32x3" through the kernels' calls, its arithmetic emulated (operands
    rounded to TF32 as the centring kernel rounds them, float32 accumulation): RankMe within
    1e-6 of the float64 reference, large-mean columns included; 1×TF32 (hi·hiᵀ alone) would
    not be."""
    from fastspec.spectral import accumulator

    monkeypatch.setattr(accumulator, "ops_for", lambda backend, device, products: cuda_kernels.CudaOps(products))
    x = make_activations(3000, LAM[:64], mean=np.r_[np.full(3, 1e3), np.zeros(61)] if large_mean else None, seed=84,
                         dtype=torch.float32)
    want = ref_eigenvalues(x.double())
    acc = fastspec.CovarianceAccumulator(64, products="tf32x3")
    for part in (x[:1100], x[1100:]):
        acc.update(part)
    s = acc.spectrum()
    assert fake_binding.calls[:2] == ["centre_and_gram(tf32x3)", "chan_merge"]
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]
    # 1×TF32 on the same rows (the products of TF32-rounded operands alone) misses the
    # contract: 2.3e-6 and 2.9e-6 here, against 1.7e-7 and 1.8e-7 for 3×TF32
    y = (x - x.mean(0)).numpy().astype(np.float32)
    hi = tf32(y)
    one = np.linalg.eigvalsh(float32_gram(hi, hi).astype(np.float64))[::-1] / (len(y) - 1)
    assert rel(ref_rankme(one), ref_rankme(want)) > 1e-6


def test_tf32_rounding_matches_round_to_nearest_ties_away():
    """The emulation's rounding: ties go away from zero (1 + 2⁻¹¹ → 1 + 2⁻¹⁰), below half an
    ulp goes down, and the split y = hi + lo leaves |lo| ≤ 2⁻¹¹ |hi|."""
    v = np.array([1.0, 1 + 2**-11, 1 + 2**-10 + 2**-11, -(1 + 2**-11), 1 + 2**-12], dtype=np.float32)
    np.testing.assert_array_equal(tf32(v), np.array([1.0, 1 + 2**-10, 1 + 2**-9, -(1 + 2**-10), 1.0], np.float32))
    y = np.random.default_rng(88).standard_normal(1000).astype(np.float32)
    hi = tf32(y)
    assert np.all(np.abs(y - hi) <= 2.0**-11 * np.abs(hi))


def test_products_other_than_fp32_need_the_kernels():
    with pytest.raises(NotImplementedError, match=r"products='tf32x3' is formed by fastspec's CUDA kernels only"):
        fastspec.CovarianceAccumulator(8, device="cpu", products="tf32x3")
    acc = fastspec.CovarianceAccumulator(8, products="tf32x3")
    for _ in range(2):  # refused each time: the first refusal did not settle the device
        with pytest.raises(NotImplementedError, match="kernels only"):
            acc.update(torch.randn(10, 8))
    assert acc.n_samples == 0
    with pytest.raises(ValueError, match=r"products must be one of \('fp32', 'tf32x3'\)"):
        fastspec.CovarianceAccumulator(8, products="tf32")


def test_wiring_of_a_failed_eigensolve_retries_in_float64_then_on_the_cpu(fake_binding):
    g = torch.Generator().manual_seed(86)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    sym = (q * torch.linspace(5.0, 0.1, 30, dtype=torch.float64)) @ q.T
    want = np.linalg.eigvalsh(sym.numpy())[::-1]
    fake_binding.fail_eig = {0}  # float32 fails (pytorch issues 94772, 105359): float64 on the device
    with pytest.warns(RuntimeWarning, match=r"cuSOLVER failed on a 30×30 matrix \(in float32: .*info = 17\); solved again in float64"):
        values, _ = cuda_kernels.eigh(sym, 0, torch.float32)
    np.testing.assert_allclose(values, want, rtol=1e-12)
    assert fake_binding.calls == ["eig(values, float32)", "eig(values, float64)"]
    fake_binding.fail_eig = {0, 3}  # float64 fails too: the CPU
    with pytest.raises(cuda_kernels.EigensolverFailed, match="in float32: .*; in float64: "):
        cuda_kernels.eigh(sym, 0, torch.float32)
    with pytest.warns(RuntimeWarning, match=r"in float64: .*info = 17.*solving it on the CPU \(torch.linalg, float64\)"):
        values, vectors = cuda_kernels.CudaOps().eigh(sym, 2)
    np.testing.assert_allclose(values, want, rtol=1e-12)
    np.testing.assert_allclose(np.abs(vectors.T @ q[:, :2].numpy()).diagonal(), 1.0, atol=1e-10)


def test_wiring_keeps_workspaces_per_stream(fake_binding, monkeypatch):
    """Two streams of one device never share a cuBLAS or cuSOLVER workspace."""
    from fastspec.spectral.moments import Moments

    x = make_activations(600, LAM[:16] / LAM[0], seed=87, dtype=torch.float32)
    for stream in (11, 22, 11):
        monkeypatch.setattr(cuda_kernels, "_stream", lambda device, s=stream: s)
        assert Moments(16, torch.device("cpu"), cuda_kernels.CudaOps()).add_chunk(x)
        cuda_kernels.eigh(torch.eye(16, dtype=torch.float64), 0)
    assert sorted(cuda_kernels._blas_workspaces) == sorted(cuda_kernels._solver_workspaces) == [(None, 11), (None, 22)]
    a, b = (cuda_kernels._blas_workspaces[(None, s)] for s in (11, 22))
    assert a.data_ptr() != b.data_ptr()


def test_wiring_of_the_canary_passes_right_kernels_and_names_a_wrong_one(fake_binding, monkeypatch):
    assert cuda_kernels.canary(torch.device("cpu")) is None
    runs = len(cuda_kernels.CANARY_DTYPES) * len(cuda_kernels.CANARY_CHUNKS)
    assert fake_binding.calls.count("centre_and_gram(tf32x3)") == runs and "eig(vectors, float64)" in fake_binding.calls
    real = fake_binding.centre_and_gram

    def off_by_1e4(x, dtype, rows, cols, row_stride, products, y, gram, *rest):
        real(x, dtype, rows, cols, row_stride, products, y, gram, *rest)
        if products == 1:  # a 3×TF32 product path that loses accuracy (in the upper triangle it writes;
            # the lower one is uninitialised memory, which may hold anything)
            g = fake_binding._array(gram, cols * cols, np.float32).reshape(cols, cols)
            g[np.triu_indices(cols)] *= np.float32(1 + 1e-4)

    monkeypatch.setattr(fake_binding, "centre_and_gram", off_by_1e4)
    problem = cuda_kernels.canary(torch.device("cpu"))
    assert problem.startswith("products='tf32x3', float32 input: M2[") and "] off by" in problem


def test_wiring_of_the_canary_feeds_bf16_an_odd_width_a_single_row_and_a_low_variance_column(fake_binding,
                                                                                           monkeypatch):
    seen = []
    real = fake_binding.centre_and_gram

    def record(x, dtype, rows, cols, row_stride, products, *rest):
        seen.append((dtype, products, rows, cols))
        real(x, dtype, rows, cols, row_stride, products, *rest)

    monkeypatch.setattr(fake_binding, "centre_and_gram", record)
    assert cuda_kernels.canary(torch.device("cpu")) is None
    assert {(dtype, products) for dtype, products, _, _ in seen} == {(0, 0), (0, 1), (2, 0), (2, 1)}  # float32, bf16
    assert all(cols % 4 for *_, cols in seen) and 1 in {rows for _, _, rows, _ in seen}
    x = cuda_kernels._canary_matrix()
    low = x[:, cuda_kernels.CANARY_LOW_COLUMN]
    # A large mean and a variance 1e-6 of the largest: invisible to an error relative to the largest entry.
    assert float(low.mean()) > 100 and 0 < float(low.var()) < 1e-5 * float(x.var(0).max())


@pytest.mark.parametrize("fault", ["mean", "low-variance M2"])
def test_wiring_of_the_canary_catches_an_error_that_a_tolerance_on_the_largest_entry_misses(fake_binding,
                                                                                          monkeypatch, fault):
    """Errors far beyond float32 rounding where they land, but small beside the largest
    entries: a mean off by 1e-5 (the old tolerance was 1e-3), and the low-variance column's
    M2 off by 1e-7 of the chunk's largest product (the old tolerance: 1e-5 of the largest)."""
    low = cuda_kernels.CANARY_LOW_COLUMN
    if fault == "mean":
        real = fake_binding.chan_merge

        def faulty(gram, col_sum, resid, rows, cols, n_before, mean, m2, *rest):
            real(gram, col_sum, resid, rows, cols, n_before, mean, m2, *rest)
            if n_before + rows == cuda_kernels.CANARY_ROWS:  # the last merge
                fake_binding._array(mean, cols, np.float64)[10] += 1e-5

        monkeypatch.setattr(fake_binding, "chan_merge", faulty)
    else:
        real = fake_binding.centre_and_gram

        def faulty(x, dtype, rows, cols, row_stride, products, y, gram, *rest):
            real(x, dtype, rows, cols, row_stride, products, y, gram, *rest)
            g = fake_binding._array(gram, cols * cols, np.float32).reshape(cols, cols)
            g[low, low] += np.float32(1e-7) * np.triu(g).diagonal().max()

        monkeypatch.setattr(fake_binding, "centre_and_gram", faulty)
    problem = cuda_kernels.canary(torch.device("cpu"))
    assert problem is not None
    want = "mean of column 10 off by" if fault == "mean" else f"M2[{low}, {low}] off by"
    assert problem.startswith("products='fp32', float32 input: ") and want in problem, problem


def test_canary_tolerances_are_float32_rounding_bounds_and_the_canary_data_meets_them():
    """The bounds scale as derived (γ_b for the accumulation, twice that on the tensor cores;
    u32 of the mean absolute deviation for the mean), and float32 arithmetic done here on the
    canary's data, chunk by chunk, stays within them."""
    x = cuda_kernels._canary_matrix().to(torch.float32).double()
    mean_tol, fp32_tol = cuda_kernels.canary_tolerances(x, "fp32")
    _, tf32_tol = cuda_kernels.canary_tolerances(x, "tf32x3")
    b, u = max(cuda_kernels.CANARY_CHUNKS), 2.0**-24
    ratio = (fp32_tol.diagonal() / ((x - x.mean(0)) ** 2).sum(0)).numpy()
    np.testing.assert_allclose(np.median(ratio), b * u / (1 - b * u) + 2 * u, rtol=1e-3)
    assert torch.all(tf32_tol > 1.9 * fp32_tol)
    mad = (x - x.mean(0)).abs().mean(0)
    assert torch.all(mean_tol[5:] < 3 * u * mad[5:])  # no column allowed more than ~u32 of its spread
    # float32 one chunk at a time, as the fp32 path does it (shift, products, float64 merge)
    n, mean, m2, start = 0, torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(2 * (x.shape[1],),
                                                                                       dtype=torch.float64), 0
    from fastspec.spectral.moments import exact_fp32_matmul

    for rows in cuda_kernels.CANARY_CHUNKS:
        part = x[start:start + rows].float()
        start += rows
        shift = part.double().mean(0).float()
        y = part - shift
        with exact_fp32_matmul():
            g = (y.T @ y).double()
        s = y.double().sum(0)
        chunk_mean = shift.double() + s / rows
        delta = chunk_mean - mean
        m2 += g - torch.outer(s, s) / rows + (n * rows / (n + rows)) * torch.outer(delta, delta)
        mean += delta * rows / (n + rows)
        n += rows
    want_mean = x.mean(0)
    want_m2 = (x - want_mean).T @ (x - want_mean)
    assert torch.all((mean - want_mean).abs() <= mean_tol)
    assert torch.all((m2 - want_m2).abs() <= fp32_tol)


def test_a_device_that_fails_the_canary_goes_to_the_torch_path_and_backends_say_so(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "status", lambda: (True, "built for the test"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Stand-in GPU")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda_kernels, "canary", lambda device: None if device.index == 0 else "M2 off by 0.01")
    cuda_kernels._device_status.cache_clear()
    try:
        assert cuda_kernels.available(torch.device("cuda", 0))
        with pytest.warns(RuntimeWarning, match=r"disagree with the torch path on device 1 \(Stand-in GPU\): M2 off"):
            assert not cuda_kernels.available(torch.device("cuda", 1))
        assert not cuda_kernels.available(torch.device("cuda", 1))  # once per device: no second warning
        with pytest.raises(NotImplementedError, match="device 1 .* failed the kernels' canary"):
            cuda_kernels.require("backend='cuda'", torch.device("cuda", 1))
        report = fastspec.backends()["cuda_kernels"]
        assert report["available"] and report["devices"][0] == "ok"
        assert "failed the kernels' canary, so its work uses the torch path: M2 off by 0.01" in report["devices"][1]
    finally:
        cuda_kernels._device_status.cache_clear()
