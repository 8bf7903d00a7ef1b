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
    cfg = toy.ToySettings(loss=loss, width=4, classes=10, steps=3, seed=7, contexts=12, lr=0.5, init_scale=0.3,
                          record_every=1).resolved()
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
        ({"init": "orthogonal"}, "init"),
        ({"instances": 0}, "instances"),
        ({"instances": 2.5}, "instances"),
        ({"instances": 4, "contexts": 100}, "contexts or instances"),
        ({"log_steps": 1}, "log_steps"),
        ({"init": "balanced", "width": 200, "classes": 128, "fit_range": (0, 8)}, "width=200"),
        ({"init": "balanced", "width": 12, "classes": 16, "contexts": 10}, "width=12"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        toy.train(**{"steps": 10, **kwargs})


def test_the_settings_are_defined_once_and_keep_the_signatures():
    """ToySettings carries every setting with its default and help text; train()'s and
    representation()'s parameters are its fields with the same defaults (a new setting is a
    field first), and the resolved settings are what a run records in df.attrs."""
    import dataclasses
    import inspect

    fields = {f.name: f for f in dataclasses.fields(toy.ToySettings)}
    assert len(fields) == 16 and all(f.metadata["help"].strip() and f.metadata["affects"] for f in fields.values())
    params = {k: p for k, p in inspect.signature(toy.train).parameters.items() if k != "on_step"}
    assert list(params) == list(fields)  # the same settings, in the same order
    assert {k: p.default for k, p in params.items()} == {k: f.default for k, f in fields.items()}
    rep = inspect.signature(toy.representation).parameters
    assert {k: rep[k].default for k in ("labels", "loss", "width", "classes", "seed")} == {
        k: fields[k].default for k in ("labels", "loss", "width", "classes", "seed")}
    settings = toy.ToySettings(steps=20, width=4, classes=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.width = 5
    attrs = toy.train(steps=20, width=4, classes=16).attrs
    assert attrs == settings.resolved()
    assert attrs["contexts"] == toy.CONTEXTS and attrs["fit_range"] == (0, 4)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['widht'\]; known: \[.*'contexts'"):
        toy.representation(3, widht=4)


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


def _states(steps, lr, **options):
    """Every (step, H, V, Z, loss) of a small run with the given options."""
    kw = {"smoothing": 0.0, "init_scale": 0.3, "record_every": 1, "init": "balanced", "instances": 8, "width": 8,
          "classes": 32, **options}
    cfg = toy.ToySettings(steps=steps, seed=3, lr=lr, **kw).resolved()
    return cfg, list(toy._trajectory(cfg, toy._data(cfg)[2]))


@pytest.mark.parametrize("width, classes", [(8, 32), (4, 256), (32, 32)])
def test_balanced_initialisation_has_equal_gram_matrices(width, classes):
    """Theorem B.2's condition: WWᵀ = VᵀV (H = Wᵀ, so HᵀH = VᵀV), here both init_scale²·I."""
    cfg, states = _states(1, 0.1, width=width, classes=classes)
    _, h, v, _, _ = states[0]
    assert h.shape == (cfg["contexts"], width) and v.shape == (classes, width) and h.dtype == torch.float64
    eye = 0.09 * torch.eye(width, dtype=torch.float64)
    torch.testing.assert_close(h.T @ h, v.T @ v, rtol=0, atol=1e-12)
    torch.testing.assert_close(h.T @ h, eye, rtol=0, atol=1e-12)
    # random, not a fixed basis: another seed gives another H
    other = toy._init({**cfg, "seed": 4})[0]
    assert not torch.allclose(h, other)


def test_gradient_descent_conserves_the_balance_up_to_its_discretisation():
    """Gradient flow conserves WWᵀ − VᵀV = HᵀH − VᵀV (Appendix B, eqs. 15-16); gradient
    descent changes it by O(lr²) a step, so over the same time lr·steps its drift halves with
    lr, while HᵀH itself grows by far more (the balanced run stays balanced)."""
    drifts = []
    for lr, steps in ((0.5, 400), (0.25, 800)):
        _, states = _states(steps, lr)
        (_, h0, v0, _, loss0), (_, h, v, _, loss) = states[0], states[-1]
        q0, q = h0.T @ h0 - v0.T @ v0, h.T @ h - v.T @ v
        grown = float(torch.linalg.norm(h.T @ h - h0.T @ h0))
        assert loss < 0.5 * loss0 and grown > 100 * float(torch.linalg.norm(h0.T @ h0))
        drifts.append(float(torch.linalg.norm(q - q0)) / grown)
    assert drifts[1] < 2e-4  # measured 1.1e-4
    assert drifts[0] / drifts[1] == pytest.approx(2.0, rel=0.1)  # first order in lr


def test_fixed_class_sizes_give_hard_power_law_labels():
    frame = toy.train(steps=5, instances=16, smoothing=0.0, classes=20, width=4, log_steps=3)
    sizes = np.maximum(np.rint(16 * np.arange(1, 21) ** -1.0), 1).astype(int)
    assert frame.attrs["contexts"] == sizes.sum() == 57 and frame.attrs["instances"] == 16
    cfg = toy.ToySettings(width=4, classes=20, steps=5, smoothing=0.0, lr=1.0, record_every=1, instances=16).resolved()
    p, pref, t = toy._data(cfg)
    assert np.bincount(pref, minlength=20).tolist() == sizes.tolist()
    assert p == pytest.approx(sizes / sizes.sum())
    assert set(np.unique(t.numpy())) == {0.0, 1.0} and (t.argmax(1).numpy() == pref).all()  # one-hot: hard labels
    uniform = toy.ToySettings("uniform", width=4, classes=20, steps=5, smoothing=0.0, lr=1.0, record_every=1,
                              instances=3).resolved()
    assert uniform["contexts"] == 60 and np.bincount(toy._data(uniform)[1]).tolist() == [3] * 20


@pytest.mark.parametrize("options", [{"smoothing": 0.0, "instances": 3}, {"smoothing": 0.2, "init": "balanced"},
                                     {"smoothing": 0.0, "instances": 2, "init": "balanced", "labels": "uniform"}])
def test_gradients_of_the_new_settings_match_autograd(options):
    labels = options.pop("labels", "powerlaw")
    cfg = toy.ToySettings(labels, width=4, classes=10, steps=2, seed=7, lr=0.5, init_scale=0.3, record_every=1,
                          **options).resolved()
    t = toy._data(cfg)[2]
    (_, h0, v0, _, loss0), (_, h1, v1, _, _) = list(toy._trajectory(cfg, t))[:2]
    h, v = h0.clone().requires_grad_(), v0.clone().requires_grad_()
    value = -(t * torch.log_softmax(h @ v.T, 1)).sum(1).mean()
    value.backward()
    assert value.item() == pytest.approx(loss0, rel=1e-12)
    torch.testing.assert_close(h1, h0 - 0.5 * h.grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(v1, v0 - 0.5 * v.grad, rtol=1e-12, atol=1e-15)


def test_log_spaced_recording():
    assert toy.record_steps(1000, log_steps=4) == [0, 1, 10, 100, 1000]
    assert toy.record_steps(5, log_steps=20) == [0, 1, 2, 3, 4, 5]  # rounded points that coincide count once
    assert toy.record_steps(120, record_every=50) == [0, 50, 100, 120]
    frame = toy.train(steps=1000, log_steps=4, init="balanced", width=4, classes=16, instances=4, smoothing=0.0)
    assert frame["step"].tolist() == [0, 1, 10, 100, 1000]
    assert frame.attrs["log_steps"] == 4 and frame.attrs["init"] == "balanced"
    assert frame["rankme"].iloc[0] > 3.8  # balanced: HᵀH = s²I, nearly isotropic after centring


def test_representation_follows_the_new_options():
    options = {"init": "balanced", "instances": 4, "smoothing": 0.0, "log_steps": 5}
    frame = toy.train(steps=100, width=4, classes=16, seed=2, **options)
    h = toy.representation(100, width=4, classes=16, seed=2, **options)
    assert h.shape == (frame.attrs["contexts"], 4)
    centred = h - h.mean(axis=0)
    lam = np.linalg.eigvalsh(centred.T @ centred / (h.shape[0] - 1))[::-1]
    p = lam / lam.sum() + 1e-7
    assert frame["rankme"].iloc[-1] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-9)


def test_cli_trains_the_papers_setting_on_request(tmp_path, capsys):
    out = tmp_path / "toy-balanced"
    argv = ["toy", "--out", str(out), "--steps", "60", "--width", "4", "--classes", "16", "--init", "balanced",
            "--smoothing", "0", "--instances", "4", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "balanced init, smoothing 0;" in text
    frame = pd.read_csv(out / "toy.csv")
    # instances=4 over 16 power-law classes: 4, 2, 1, 1, ... contexts, so the main run has 20 of them
    main_run = frame[frame["condition"] == MAIN]
    expected = toy.train(steps=60, width=4, classes=16, init="balanced", smoothing=0.0, instances=4, fit_range=(0, 4))
    np.testing.assert_allclose(main_run["rankme"].to_numpy(), expected["rankme"].to_numpy(), rtol=1e-12)
    assert expected.attrs["contexts"] == 20


_PAPER: dict[tuple[float, int], pd.DataFrame] = {}


def papers_setting(smoothing: float, seed: int) -> pd.DataFrame:
    """Appendix B as written (issue 18): balanced init at scale 1e-3, power-law class sizes
    (32 for the first class), d = 8, C = 64, 2·10⁴ steps on a log axis: benchmarks/toy_sweep.py's
    core runs, whose numbers docs/toy.md tabulates."""
    if (smoothing, seed) not in _PAPER:
        _PAPER[smoothing, seed] = toy.train(width=8, classes=64, steps=20_000, seed=seed, init="balanced", instances=32,
                                            smoothing=smoothing, log_steps=80)
    return _PAPER[smoothing, seed]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_papers_setting_with_hard_labels_collapses_and_expands_but_does_not_compress(seed):
    frame = papers_setting(0.0, seed)
    c = toy.compression(frame)
    assert frame.attrs["contexts"] == 161 and frame["step"].iloc[-1] == 20_000
    assert c.rankme_trough < 1.1 and c.trough_step < 200  # warmup: the first class's direction alone
    assert c.rankme_peak > 7.9  # then expands to fill the bottleneck ...
    assert c.peak_step == 20_000 and c.drop < 1e-3  # ... and is still at its highest at the last step
    assert not c.compresses


@pytest.mark.parametrize("seed", [0])
def test_the_papers_setting_with_soft_labels_compresses_but_less_than_ten_percent(seed):
    frame = papers_setting(0.2, seed)
    c = toy.compression(frame)
    assert c.rankme_trough < 1.1 and c.rankme_peak > 7.85
    assert 0.07 < c.drop < 0.09 and c.alpha_after > 1.5 * c.alpha_peak  # sweep: 7.5-8.1%, α +65-136%
    assert c.compresses and not toy.compression(frame, tol=0.10).compresses  # under the 10% bar
