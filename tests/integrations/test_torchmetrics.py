"""fastspec.integrations.torchmetrics.SpectralMetrics: a real torchmetrics Metric, against the
float64 reference in one process, and two gloo processes against one."""

import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from reference import ref_alpha, ref_eigenvalues, ref_rankme, rel

pytest.importorskip("torchmetrics", reason="torchmetrics is not installed (pip install 'fastspec[torchmetrics]')")

from fastspec.integrations.torchmetrics import SpectralMetrics  # noqa: E402

from dist_worker import METRIC_D as D  # noqa: E402  (spawned processes import their worker from there)
from dist_worker import metric_data, metric_worker  # noqa: E402


def test_streamed_batches_give_the_float64_reference():
    x = metric_data()
    metric = SpectralMetrics(D, fit_range=(2, 30))
    for batch in x.split(300):
        metric.update(batch)
    got = metric.compute()
    want = ref_eigenvalues(x.double())
    assert got["n_samples"] == len(x)
    assert rel(got["rankme"], ref_rankme(want)) < 1e-9
    assert rel(got["rankme_sv"], ref_rankme(ref_eigenvalues(x.double(), center=False), sv=True)) < 1e-9
    assert rel(got["alpha"], ref_alpha(want, 2, 30)[0]) < 1e-9
    metric.reset()
    metric.update(x[:1])
    with pytest.raises(ValueError, match="at least 2 rows"):
        metric.compute()
    bad = x[:5].clone()
    bad[2, 7] = float("nan")
    with pytest.raises(ValueError, match=r"1 non-finite value.*row 2, column 7"):
        metric.update(bad)
    with pytest.raises(ValueError, match="this metric was made for dim=48"):
        metric.update(x[:, :10])


def test_two_gloo_processes_equal_one(tmp_path):
    mp.spawn(metric_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    one = SpectralMetrics(D, fit_range=(2, 30))
    one.update(metric_data())
    want = one.compute()
    for rank in range(2):
        got = torch.load(tmp_path / f"metric{rank}.pt", weights_only=False)
        assert got["n_samples"] == want["n_samples"] == 2401
        for key in ("rankme", "rankme_sv", "alpha"):
            assert got[key] == pytest.approx(want[key], rel=1e-10), key


def test_import_fastspec_imports_none_of_the_tools_it_integrates_with():
    tools = ("torchmetrics", "lightning", "pytorch_lightning", "lm_eval", "accelerate", "ray")
    code = f"import sys, fastspec; print([t for t in {tools!r} if t in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.stdout.strip() == "[]", out.stderr


def test_nan_policy_omit_leaves_the_bad_rows_out():
    """Issue 24 item 13: the NaN error advised nan_policy='omit', which SpectralMetrics took not."""
    x = metric_data()
    bad = x.clone()
    bad[[3, 50], 7] = float("nan")
    metric = SpectralMetrics(D, fit_range=(2, 30), nan_policy="omit")
    for batch in bad.split(300):
        metric.update(batch)
    got = metric.compute()
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[[3, 50]] = False
    assert got["n_samples"] == len(x) - 2
    assert rel(got["rankme"], ref_rankme(ref_eigenvalues(x[keep].double()))) < 1e-9
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        SpectralMetrics(D, nan_policy="drop")
