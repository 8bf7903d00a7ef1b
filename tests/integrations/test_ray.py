"""fastspec.integrations.ray.CovarianceAggregate: its three steps by hand (any split, any
order of merges), and on a local Ray instance (``ray.init(num_cpus=2)``, datasets of several
blocks, tensor and list columns), against the float64 reference and ``fastspec.spectrum`` of
the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from localray import local_ray
from reference import ref_alpha, ref_eigenvalues, ref_rankme, rel

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'fastspec[ray]')")

import ray  # noqa: E402

import fastspec  # noqa: E402
from fastspec.integrations.ray import CovarianceAggregate  # noqa: E402

D = 24
FIT = (2, 20)


def data(n: int = 900, seed: int = 0) -> np.ndarray:
    """Rows with a power-law spectrum and a few columns of large mean (as LLM activations
    have): the case where a one-pass Σxxᵀ − nμμᵀ in float32 goes wrong."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)) * np.arange(1, D + 1) ** -0.8
    x[:, :3] += [40.0, -25.0, 12.0]
    return x


def fsl(x: np.ndarray) -> pa.Table:
    """A block with a fixed-size-list column "e"."""
    return pa.table({"e": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])})


def reference(x: np.ndarray) -> dict:
    """What the record of ``x`` must hold, from the float64 LAPACK reference and from
    fastspec.spectrum of all the rows at once."""
    want = ref_eigenvalues(x)
    return {"n": len(x), "eigenvalues": want, "rankme": ref_rankme(want),
            "rankme_sv": ref_rankme(ref_eigenvalues(x, center=False), sv=True), "alpha": ref_alpha(want, *FIT)[0],
            "one": fastspec.spectrum(x).rankme}


def check_against_reference(record, want: dict) -> None:
    """Float64 state, float64 rows: the merged record agrees with the float64 reference to
    ~1e-12 relative (the tolerances below leave two orders of margin)."""
    got = record.spectra[0].eigenvalues
    assert np.abs(got - want["eigenvalues"]).max() < 1e-10 * want["eigenvalues"][0]
    assert record.n_samples == want["n"] and record.dim == D
    assert rel(record.rankme, want["rankme"]) < 1e-10
    assert rel(record.rankme, want["one"]) < 1e-10
    assert rel(record.rankme_sv, want["rankme_sv"]) < 1e-10
    assert rel(record.alpha, want["alpha"]) < 1e-9


# -- the steps Ray runs, by hand (no cluster) ----------------------------------------------
def test_any_split_and_merge_order_gives_the_reference():
    x = data()
    agg = CovarianceAggregate("e", D, fit_range=FIT)
    parts = [x[:1], x[1:250], x[250:251], x[251:700], x[700:]]  # single-row blocks included
    want = reference(x)
    states = [agg.aggregate_block(fsl(p)) for p in parts]
    for order in ((0, 1, 2, 3, 4), (4, 2, 0, 3, 1), (3, 4, 1, 2, 0)):
        state = states[order[0]]
        for i in order[1:]:
            state = agg.combine(state, states[i])
        check_against_reference(agg.finalize(state), want)
    # a tree of merges, as Ray's partial combines make
    tree = agg.combine(agg.combine(states[0], states[1]), agg.combine(states[2], agg.combine(states[3], states[4])))
    check_against_reference(agg.finalize(tree), want)


def test_block_kinds_read_the_same_rows():
    x = data(60)
    agg = CovarianceAggregate("e", D, result="accumulator")
    lists = pa.table({"e": pa.array([list(r) for r in x], type=pa.list_(pa.float64()))})
    frame = pd.DataFrame({"e": list(x), "other": np.arange(len(x))})
    for block in (fsl(x), lists, frame):
        np.testing.assert_array_equal(agg.rows(block), x)
    x32 = x.astype(np.float32)
    assert agg.rows(pd.DataFrame({"e": list(x32)})).dtype == np.float32
    scalar = CovarianceAggregate("s", 1)
    np.testing.assert_array_equal(scalar.rows(pa.table({"s": x[:, 0]})), x[:, :1])


def test_results_and_what_they_hold():
    x = data(300)
    state = CovarianceAggregate("e", D).aggregate_block(fsl(x))
    spec = CovarianceAggregate("e", D, result="spectrum").finalize(state)
    assert isinstance(spec, fastspec.Spectrum) and spec.centered
    np.testing.assert_allclose(spec.eigenvalues, fastspec.spectrum(x).eigenvalues, rtol=1e-10, atol=1e-12)
    acc = CovarianceAggregate("e", D, result="accumulator").finalize(state)
    assert isinstance(acc, fastspec.CovarianceAccumulator) and acc.n_samples == 300
    record = CovarianceAggregate("e", D).finalize(state)
    assert record.alpha_fit_range == (11, 100) and record.alpha is None and "eigenvalues" in record.alpha_error


def test_faulty_rows_are_named():
    x = data(40)
    agg = CovarianceAggregate("e", D)
    with pytest.raises(ValueError, match=r"no column 'e' \(its columns: 'emb'\)"):
        agg.aggregate_block(pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), D)}))
    with pytest.raises(ValueError, match=r"column 'e' holds values of shape \(12,\) per row \(a block of shape "
                                         r"\(80, 12\)\).*dim=24"):
        agg.aggregate_block(fsl(x.reshape(80, 12)))
    ragged = pa.table({"e": pa.array([list(r) for r in x[:5]] + [list(x[5, :7])])})
    with pytest.raises(ValueError, match=r"column 'e': row 5 of a block of 6 rows has shape \(7,\).*dim=24"):
        agg.aggregate_block(ragged)
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"column 'e': 1 non-finite value.*row 7, column 3.*nan_policy='omit'"):
        agg.aggregate_block(fsl(bad))
    nulls = pa.table({"e": pa.array([list(r) for r in x[:3]] + [None] + [list(r) for r in x[3:]])})
    with pytest.raises(ValueError, match=r"column 'e': row 3 of a block of 41 rows is null"):
        agg.aggregate_block(nulls)
    with pytest.raises(TypeError, match=r"column 'e' holds int64 values"):
        agg.aggregate_block(pa.table({"e": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(2 * D)), D)}))
    with pytest.raises(ValueError, match="at least 2 rows, the dataset has 1"):
        agg.finalize(agg.aggregate_block(fsl(x[:1])))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        CovarianceAggregate("e", 0)
    with pytest.raises(ValueError, match="result must be one of"):
        CovarianceAggregate("e", D, result="eigenvalues")
    # omit: NaN rows and null rows are left out and counted
    omit = CovarianceAggregate("e", D, nan_policy="omit", fit_range=FIT)
    state = omit.combine(omit.aggregate_block(fsl(bad)), omit.aggregate_block(nulls))
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\)"):
        record = omit.finalize(state)
    assert record.n_dropped == 2 and record.n_samples == 79
    check_against_reference(record, reference(np.concatenate([np.delete(x, 7, axis=0), x])))


# -- on a local Ray instance ---------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    # One map task per block (Ray otherwise coalesces small blocks into one task), so the
    # per-block states really are merged by combine.
    with local_ray(tmp_path_factory.mktemp("ray"), shuffle_input_batch_bytes=0):
        yield


def test_on_ray_tensor_and_list_columns(ray_instance):
    x = data()
    parts = [x[:200], x[200:450], x[450:451], x[451:]]
    ds = ray.data.from_numpy(parts)  # a tensor column "data", one block per array
    got = ds.aggregate(CovarianceAggregate("data", D, fit_range=FIT))
    check_against_reference(got["covariance(data)"], reference(x))
    # a list column (from_items), several blocks, grouped; the other aggregation beside it
    items = [{"g": i % 2, "e": list(map(float, r))} for i, r in enumerate(x)]
    ds = ray.data.from_items(items, override_num_blocks=3)
    rows = ds.groupby("g", num_partitions=2).aggregate(CovarianceAggregate("e", D, fit_range=FIT, alias_name="geom"),
                                     ray.data.aggregate.Count()).take_all()
    assert sorted(r["g"] for r in rows) == [0, 1]
    for r in rows:
        assert r["count()"] == len(x[r["g"]::2])
        check_against_reference(r["geom"], reference(x[r["g"]::2]))


def test_on_ray_errors_name_the_column(ray_instance):
    x = data(300)
    ds = ray.data.from_numpy([x[:, :10], x[:, :10]])
    with pytest.raises(ValueError, match=r"column 'data' holds values of shape \(10,\) per row.*dim=24"):
        ds.aggregate(CovarianceAggregate("data", D))
    with pytest.raises(ValueError, match=r"no column 'embedding' \(its columns: 'data'\)"):
        ds.aggregate(CovarianceAggregate("embedding", 10))
