"""The toy model (fastspec/toy.py): the paper's qualitative outcome on three seeds, the model
it claims to train, its metrics against NumPy, determinism, argument errors and the CLI."""

import numpy as np
import pandas as pd
import pytest
import torch

from fastspec import toy
from fastspec.cli import main

SEEDS = (0, 1, 2)
MAIN = "skewed+bottleneck+CE"
CONTROLS = ("uniform labels", "no bottleneck (d=C)", "MSE loss")
_RUNS: dict[int, dict[str, pd.DataFrame]] = {}


@pytest.fixture(autouse=True)
def one_thread():
    """The runs are small matrix products: one thread is as fast and leaves the machine free."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def runs(seed: int) -> dict[str, pd.DataFrame]:
    """The four default runs (4000 steps each) for a seed, trained once per session."""
    if seed not in _RUNS:
        _RUNS[seed] = toy.run_conditions(seed=seed)
    return _RUNS[seed]


@pytest.mark.parametrize("seed", SEEDS)
def test_skewed_bottleneck_cross_entropy_goes_through_the_three_phases(seed):
    frame = runs(seed)[MAIN]
    c = toy.compression(frame)
    width = frame.attrs["width"]
    assert c.rankme_trough < 0.25 * width  # warmup: a collapse onto one or two directions
    assert c.trough_step < c.peak_step < frame["step"].iloc[-1]
    assert c.rankme_peak > 0.95 * width  # entropy-seeking: expands to fill the bottleneck
    assert frame.loc[frame["step"] == c.peak_step, "alpha"].item() < frame.loc[frame["step"] == c.trough_step, "alpha"].item()
    assert c.compresses  # compression-seeking: RankMe falls by more than tol, α rises
    assert c.drop > 0.05 and c.alpha_after > 1.1 * c.alpha_peak  # seeds 0-3: 6.0-7.0% and +18-115%
    assert c.rankme_final < (1 - toy.TOL) * c.rankme_peak  # and stays down to the end of the budget


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("control", CONTROLS)
def test_controls_do_not_compress(seed, control):
    frame = runs(seed)[control]
    c = toy.compression(frame)
    assert not c.compresses
    assert c.drop < 0.01  # not merely under tol: RankMe stays within 1% of its peak
    assert c.rankme_final > 0.99 * c.rankme_peak


@pytest.mark.parametrize("seed", SEEDS)
def test_the_conditions_share_data_and_budget_and_differ_only_in_their_override(seed):
    got = runs(seed)
    assert list(got) == list(toy.CONDITIONS)
    attrs = {name: f.attrs for name, f in got.items()}
    assert attrs["uniform labels"]["labels"] == "uniform" and attrs[MAIN]["labels"] == "powerlaw"
    assert attrs["no bottleneck (d=C)"]["width"] == attrs[MAIN]["classes"] > attrs[MAIN]["width"]
    assert attrs["MSE loss"]["loss"] == "mse" and attrs[MAIN]["loss"] == "ce"
    for a in attrs.values():
        assert (a["steps"], a["seed"], a["fit_range"]) == (4000, seed, (0, 8))
    for f in got.values():
        assert f["step"].tolist() == list(range(0, 4001, 50))
        assert f["loss"].iloc[-1] < f["loss"].iloc[0]


def test_frame_metrics_match_numpy_on_the_representation():
    frame = runs(0)[MAIN]
    for step in (0, 1000, 4000):
        h = toy.representation(step, seed=0)
        assert h.shape == (256, 8) and h.dtype == np.float64
        centred = h - h.mean(axis=0)
        lam = np.linalg.eigvalsh(centred.T @ centred / (h.shape[0] - 1))[::-1]
        p = lam / lam.sum() + 1e-7  # fastspec's (Reptrix's) eig convention, ε = 1e-7
        rank = np.exp(-np.sum(p * np.log(p)))
        r = np.arange(1.0, 9.0)
        slope, _ = np.polyfit(np.log(r), np.log(lam[:8]), 1, w=np.sqrt(1.0 / r))  # weights 1/r on squares
        row = frame[frame["step"] == step].iloc[0]
        assert row["rankme"] == pytest.approx(rank, rel=1e-9)
        assert row["alpha"] == pytest.approx(-slope, rel=1e-8, abs=1e-10)
        assert row["lambda_1"] == pytest.approx(lam[0], rel=1e-9)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_one_update_is_gradient_descent_on_the_documented_loss(loss):
    cfg = toy._settings("powerlaw", loss, 4, 10, 3, 7, 12, 1.0, 0.2, 0.5, 0.3, 1, None)
    _, pref, t = toy._data(cfg)
    assert np.allclose(t.sum(1).numpy(), 1.0) and (t.argmax(1).numpy() == pref).all()
    states = list(toy._trajectory(cfg, t))
    (_, h0, v0, _, loss0), (_, h1, v1, _, _) = states[0], states[1]
    h, v = h0.clone().requires_grad_(), v0.clone().requires_grad_()
    z = h @ v.T
    value = -(t * torch.log_softmax(z, 1)).sum(1).mean() if loss == "ce" else 0.5 * ((z - t) ** 2).sum(1).mean()
    value.backward()
    assert value.item() == pytest.approx(loss0, rel=1e-12)
    torch.testing.assert_close(h1, h0 - 0.5 * h.grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(v1, v0 - 0.5 * v.grad, rtol=1e-12, atol=1e-15)


def test_same_seed_same_frame_and_another_seed_another():
    a = toy.train(steps=300, seed=5)
    b = toy.train(steps=300, seed=5)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a.attrs == b.attrs
    c = toy.train(steps=300, seed=6)
    assert not np.allclose(a["rankme"], c["rankme"])
    assert set(a.columns) >= {"step", "loss", "accuracy", "rankme", "alpha", "alpha_r2"}
    assert a["step"].tolist() == [0, 50, 100, 150, 200, 250, 300]


def test_the_last_step_is_recorded_off_the_grid():
    assert toy.train(steps=120, record_every=50)["step"].tolist() == [0, 50, 100, 120]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"labels": "zipf"}, "labels"),
        ({"loss": "hinge"}, "loss"),
        ({"width": 0}, "width"),
        ({"width": -3}, "width"),
        ({"width": 1}, "width"),
        ({"width": 2.5}, "width"),
        ({"classes": 0}, "classes"),
        ({"steps": 0}, "steps"),
        ({"steps": -1}, "steps"),
        ({"seed": -1}, "seed"),
        ({"contexts": 2}, "contexts"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"exponent": -1.0}, "exponent"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"init_scale": -1e-3}, "init_scale"),
        ({"record_every": 0}, "record_every"),
        ({"fit_range": (0, 9)}, "fit_range"),
        ({"fit_range": (3, 4)}, "fit_range"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        toy.train(**{"steps": 10, **kwargs})


def test_run_conditions_needs_a_bottleneck():
    with pytest.raises(ValueError, match="width"):
        toy.run_conditions(steps=10, width=128, classes=128)


def test_divergence_is_an_error_naming_lr():
    with pytest.raises(ValueError, match="lr=.*diverged"):
        toy.train(steps=200, lr=1e6)


def test_compression_rule_on_made_up_trajectories():
    def frame(rank, alpha):
        return pd.DataFrame({"step": np.arange(len(rank)) * 10, "rankme": rank, "alpha": alpha})

    collapse_rise_fall = frame([8, 2, 6, 8, 7.5, 7.4], [0.3, 3, 1, 0.2, 0.4, 0.5])
    c = toy.compression(collapse_rise_fall)
    assert (c.compresses, c.trough_step, c.peak_step, c.after_step) == (True, 10, 30, 50)
    assert c.drop == pytest.approx(0.075)
    assert not toy.compression(collapse_rise_fall, tol=0.1).compresses  # a 7.5% fall is under 10%
    assert not toy.compression(frame([8, 2, 6, 8, 7.5, 7.4], [0.3, 3, 1, 0.5, 0.4, 0.3])).compresses  # α falls
    assert not toy.compression(frame([8, 2, 6, 8, 8, 8.1], [0.3, 3, 1, 0.2, 0.2, 0.2])).compresses  # no fall
    # the warmup collapse is not compression, even though RankMe falls from its first value
    assert not toy.compression(frame([8, 2, 4, 6, 7, 7], [0.3, 3, 1, 0.5, 0.4, 0.4])).compresses
    with pytest.raises(ValueError, match="tol"):
        toy.compression(collapse_rise_fall, tol=0)


def test_cli_writes_csv_png_and_a_table(tmp_path, capsys):
    out = tmp_path / "toy-out"
    assert main(["toy", "--out", str(out), "--steps", "400", "--seed", "1", "--quiet"]) == 0
    frame = pd.read_csv(out / "toy.csv")
    assert frame.groupby("condition").size().to_dict() == {name: 9 for name in toy.CONDITIONS}
    assert {"step", "loss", "rankme", "alpha", "condition"} <= set(frame.columns)
    assert (out / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    for name in toy.CONDITIONS:
        assert name in text
    assert "compresses" in text and str(out / "toy.csv") in text


def test_cli_reports_a_bad_argument(tmp_path, capsys):
    assert main(["toy", "--out", str(tmp_path), "--steps", "0", "--quiet"]) == 2
    assert "steps must be an integer >= 1" in capsys.readouterr().err
