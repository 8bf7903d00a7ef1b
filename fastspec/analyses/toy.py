"""The paper's toy model (§3.3, Appendix B, C.3): a linear bottleneck trained by gradient
descent on power-law next-token targets, whose RankMe and α go through the three phases
(warmup collapse, entropy-seeking, compression-seeking), and the three controls that do not
compress.

Model (Appendix B's setting, with a stochastic next token). There are ``contexts`` inputs
x_a = e_a, one-hot, so the inputs are orthonormal (XXᵀ = I, Appendix B) and the bottleneck
representation h_a = W x_a (``width`` = d dimensions) is the a-th row of H = Wᵀ (D × d).
Logits z_a = V h_a over ``classes`` = C classes (V is C × d), as an LLM's unembedding.

Data. Class frequencies follow a power law p_c ∝ c^(−exponent), c = 1..C
(``labels="powerlaw"``; the frequency of tokens in text is Zipfian, exponent ≈ 1), or are
uniform (``labels="uniform"``). Each context a has a preferred next class k_a, drawn from p
(``contexts`` = D of them, default 256) or, with ``instances`` = n, fixed: class c is the
preferred class of max(1, round(n·c^(−exponent))) contexts (n each for uniform labels), as
Appendix B's "number of instances belonging to class c". Its next token is k_a with
probability 1 − s, otherwise a draw from p (``smoothing`` = s; s = 0 gives hard,
deterministic labels): the target distribution is T_a = s·p + (1 − s)·onehot(k_a). The loss
is the exact expectation over that next token (no sampling noise), averaged over contexts:

* ``loss="ce"``:  L = −(1/D) Σ_a Σ_c T_ac log softmax(z_a)_c
* ``loss="mse"``: L = (1/D) Σ_a ½‖z_a − T_a‖²

Training: full-batch gradient descent on (W, V) in float64, with the gradients written out
(G = ∂L/∂Z = (softmax(Z) − T)/D or (Z − T)/D; ∂L/∂H = G V, ∂L/∂V = Gᵀ H, Appendix B eq. 12),
from ``init="gaussian"`` (i.i.d. N(0, init_scale²) weights) or ``init="balanced"``
(Theorem B.2's condition WWᵀ = VᵀV: H = s·A·R, V = s·B·R with orthonormal-column A, B and a
shared rotation R, so HᵀH = VᵀV = init_scale²·I; gradient flow conserves HᵀH − VᵀV, gradient
descent up to O(lr²) a step). ``log_steps`` records on a logarithmic step axis.

Settings: :class:`ToySettings`, one frozen dataclass whose fields carry each setting's default
and help text; :func:`train` and :func:`representation` take them as arguments.

Measured: fastspec's own :func:`fastspec.spectrum` of H (the centred, ddof=1 covariance of
the D context representations), :func:`fastspec.rankme` (eig convention) and
:func:`fastspec.alpha_req` (weighted fit) over ``fit_range``. fastspec's default range
(``fastspec.spectral.DEFAULT_FIT_RANGE``, ranks 12..100) needs 100 eigenvalues
and a bottleneck has d; the toy fits ranks 1..d, the whole spectrum of
the bottleneck (1..D−1 if d ≥ D), and :func:`run_conditions` uses the main run's window,
ranks 1..d, for every condition (the top d of the d = C control) so their α are comparable.

Why stochastic targets: with deterministic labels (s = 0) every class becomes linearly
separable in d ≥ 2 dimensions, the logits grow without bound and the representation keeps
expanding towards d. With T_a soft, cross-entropy has a finite optimum, the frequent classes
fill the d dimensions first (primacy bias) and the rarer ones are then packed into the
directions already learned (selection bias), so RankMe falls from its peak and α rises.

The paper's setting as written (issue 18; docs/toy.md has the sweep, 130 runs, and its table):
a balanced initialisation at scale 10⁻³, hard labels with fixed power-law class sizes
(``init="balanced", smoothing=0, instances=32``), full-batch GD on cross-entropy for 2·10⁴
steps on a log axis (``log_steps=80``). It goes through the warmup collapse (RankMe 1.01–1.07)
and the expansion, but does not compress: RankMe rises back towards d (4.00, 7.93–7.95,
15.0–15.9 and 26.0–31.3 at d = 4, 8, 16, 32; C = 64 and 256) and falls at most 0.4% after its
peak, mostly not at all (the peak is the last step), with a Gaussian init too, at any init
scale (10⁻⁵–10⁻¹), lr (0.5–8), exponent (0.5–2) or class size tried, and at 2·10⁵ steps (d = 8,
C = 64: 7.945, still rising). So Theorems B.2–B.3's mechanism does not by itself make this
model compress; soft targets do, with either init.

What reproduces, at the defaults (Gaussian init, d = 8, C = 128, D = 256, s = 0.2, lr 2, 4000
steps; seeds 0–3): RankMe collapses from ≈7.8 to 1.0–1.4 within 200 steps, rises to a peak of
7.8–7.9 (steps 750–1300) while α falls, then falls 6.0–7.0% to ≈7.35 while α rises by 18–115%
(0.15–0.26 → 0.31–0.33). Uniform labels and d = C rise to their end without a fall; MSE expands
to ≈7.5 and stays (a drift of at most 0.4%). The compression is real but modest: RankMe is
bounded by d and the peak is already near it; no run of the sweep reaches the issue's bar of a
10% fall (the largest is 8.7%, at d = 8, C = 64). It also depends on d: for C = 128 (seeds 0–2)
d = 6 compresses like d = 8 (6.1–6.9%); d = 4 falls only 2.4–3.7%; from d = 10 RankMe still
falls (d = 10: 4.7–6.7%, d = 12: 2.8–4.7%, d = 16: 1.6% on seed 0) but α no longer reliably
rises with it; with fixed class sizes (``instances=32``) at C = 64, d = 4 falls 3.5–4.4%, d = 8
7.5–8.4%, d = 16 3.9–4.5% and d = 32 0–0.4%, and at C = 256 every d falls under 4%. Hard labels
and a flatter power law (``exponent=0.5``) do not compress.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import numpy as np
import torch

from .._settings import setting
from ..models.phases import zigzag_runs
from ..spectral import alpha_req, rankme, spectrum
from ..spectral.metrics import check_fit_range

LABELS = ("powerlaw", "uniform")
LOSSES = ("ce", "mse")
INITS = ("gaussian", "balanced")
CONTEXTS = 256  # the number of contexts D when neither contexts nor instances is given
TOL = 0.03  # the default relative fall of RankMe that counts as compression (see compression())
# The settings train() and representation() take positionally; the others are keywords.
_POSITIONAL = ("labels", "loss", "width", "classes", "steps", "seed")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


@dataclass(frozen=True)
class ToySettings:
    """The settings of one toy run, each field with its default and a help text.

    The model, the data and the training are described in the module docstring
    (`fastspec.toy`). `fastspec.toy.train` and `fastspec.toy.representation` take these
    settings as arguments; `resolved` checks them. Every setting changes the results.

    {parameters}
    See Also
    --------
    fastspec.toy.train : Trains the run these settings describe.

    Examples
    --------
    >>> cfg = fastspec.toy.ToySettings(width=4, instances=8).resolved()
    >>> cfg["contexts"], cfg["fit_range"]  # the sum of the class sizes; the whole spectrum
    (142, (0, 4))
    """

    # every setting changes the results (affects=True): a run is its settings
    labels: str = setting("powerlaw", "class frequencies: 'powerlaw' (p_c ∝ c^(−exponent)) or 'uniform'",
                          affects=True)
    loss: str = setting("ce", "'ce' (expected cross-entropy) or 'mse' (squared error to the targets)", affects=True)
    width: int = setting(8, "bottleneck width d (at least 2, for α)", affects=True)
    classes: int = setting(128, "number of classes C", affects=True)
    steps: int = setting(4000, "full-batch gradient-descent steps", affects=True)
    seed: int = setting(0, "seed of the data (NumPy) and of the weights (torch)", affects=True)
    contexts: int | None = setting(None, f"number of contexts D, each with its class drawn from p (default {CONTEXTS})",
                                   affects=True)
    exponent: float = setting(1.0, "power-law exponent of the class frequencies", affects=True)
    smoothing: float = setting(0.2, "s: the next token is the context's class with probability 1 − s (0: hard labels)",
                               affects=True)
    lr: float = setting(2.0, "gradient-descent learning rate", affects=True)
    init_scale: float = setting(1e-3, "scale of the initial weights", affects=True)
    init: str = setting("gaussian", "'gaussian' (i.i.d. N(0, init_scale²)) or 'balanced' (HᵀH = VᵀV)", affects=True)
    instances: int | None = setting(None, "fixed class sizes max(1, round(instances · c^(−exponent))), instead of "
                                          "contexts", affects=True)
    record_every: int = setting(50, "measure every this many steps (and the last)", affects=True)
    log_steps: int | None = setting(None, "measure at this many log-spaced steps instead (and step 0)", affects=True)
    fit_range: tuple[int, int] | None = setting(None, "α fit range, 0-based [start, stop) (default: the whole "
                                                      "bottleneck spectrum, (0, min(width, contexts − 1)))", affects=True)

    def resolved(self) -> dict[str, Any]:
        """The run's settings, checked, with ``contexts`` and ``fit_range`` resolved.

        Returns
        -------
        dict
            Every setting as it goes into `fastspec.toy.train`'s ``df.attrs`` (``contexts``
            the number of contexts D, from ``instances`` when those are given; ``fit_range``
            (0, min(width, contexts − 1)) by default), and a description of the ``model``,
            ``optimizer``, ``dtype`` and ``metrics``.

        Raises
        ------
        ValueError
            Naming the setting that is out of range or conflicts with another.

        Examples
        --------
        >>> fastspec.toy.ToySettings(width=4).resolved()["fit_range"]
        (0, 4)
        >>> fastspec.toy.ToySettings(width=1).resolved()
        Traceback (most recent call last):
        ...
        ValueError: width must be an integer >= 2, got 1
        """
        labels, loss, init, seed, exponent, smoothing = (self.labels, self.loss, self.init, self.seed, self.exponent,
                                                         self.smoothing)
        width, classes, steps, contexts, instances = self.width, self.classes, self.steps, self.contexts, self.instances
        record_every, log_steps, lr, init_scale, fit_range = (self.record_every, self.log_steps, self.lr,
                                                             self.init_scale, self.fit_range)
        if labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        width = _positive_int("width", width, 2)  # α needs at least two eigenvalues
        classes = _positive_int("classes", classes, 2)
        steps = _positive_int("steps", steps)
        if not (isinstance(exponent, (int, float)) and np.isfinite(exponent) and exponent >= 0):
            raise ValueError(f"exponent must be a finite number >= 0, got {exponent!r}")
        if instances is None:
            contexts = _positive_int("contexts", CONTEXTS if contexts is None else contexts, 3)
        else:
            instances = _positive_int("instances", instances)
            if contexts is not None:
                raise ValueError(f"pass contexts or instances, not both: instances={instances} sets the number of "
                                 f"contexts to the sum of the class sizes, got contexts={contexts!r} too")
            contexts = int(_class_sizes(labels, classes, exponent, instances).sum())
            if contexts < 3:
                raise ValueError(f"instances={instances} gives {contexts} contexts; the spectrum needs at least 3")
        record_every = _positive_int("record_every", record_every)
        if log_steps is not None:
            log_steps = _positive_int("log_steps", log_steps, 2)
        if init == "balanced" and width > min(contexts, classes):
            raise ValueError(f"width={width} is above min(contexts, classes) = {min(contexts, classes)}: a balanced "
                             f"initialisation needs H (contexts × width) and V (classes × width) with orthonormal columns")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not (isinstance(smoothing, (int, float)) and 0 <= smoothing <= 1):
            raise ValueError(f"smoothing must be in [0, 1], got {smoothing!r}")
        lr = _positive_float("lr", lr)
        init_scale = _positive_float("init_scale", init_scale)
        rank = min(width, contexts - 1)  # a centred spectrum of D rows has rank <= D − 1
        if fit_range is None:
            fit_range = (0, rank)
        start, stop = check_fit_range(fit_range)
        if stop > rank:
            raise ValueError(f"fit_range {(start, stop)} needs {stop} eigenvalues, but the representation has at most "
                             f"min(width, contexts − 1) = {rank}")
        target = "deterministic next token" if smoothing == 0 else "stochastic next token"
        return {"model": f"linear bottleneck, one-hot contexts, {target} (fastspec.toy)",
                "labels": labels, "loss": loss, "width": width, "classes": classes, "steps": steps, "seed": int(seed),
                "contexts": contexts, "instances": instances, "exponent": float(exponent), "smoothing": float(smoothing),
                "lr": lr, "init": init, "init_scale": init_scale, "record_every": record_every, "log_steps": log_steps,
                "fit_range": (start, stop),
                "optimizer": "full-batch gradient descent", "dtype": "float64",
                "metrics": "centred ddof=1 covariance of H (contexts × width); rankme eig; alpha_req weighted"}


def _class_sizes(labels: str, classes: int, exponent: float, instances: int) -> np.ndarray:
    """n_c = max(1, round(instances · c^(−exponent))), c = 1..C, for power-law labels (the most
    frequent class has ``instances`` contexts, every class at least one); ``instances`` each
    for uniform labels."""
    if labels == "uniform":
        return np.full(classes, instances, dtype=np.int64)
    sizes = np.rint(instances * np.arange(1, classes + 1, dtype=np.float64) ** -float(exponent))
    return np.maximum(sizes, 1).astype(np.int64)


def _data(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Class frequencies p, preferred classes k_a and targets T (D × C, rows sum to 1)."""
    c = cfg["classes"]
    if cfg["instances"] is None:  # each context's class drawn from the power law
        p = np.arange(1, c + 1, dtype=np.float64) ** -cfg["exponent"] if cfg["labels"] == "powerlaw" else np.ones(c)
        p /= p.sum()
        pref = np.random.default_rng(cfg["seed"]).choice(c, size=cfg["contexts"], p=p)
    else:  # fixed class sizes n_c: class c is the preferred class of exactly n_c contexts
        sizes = _class_sizes(cfg["labels"], c, cfg["exponent"], cfg["instances"])
        p = sizes / sizes.sum()
        pref = np.repeat(np.arange(c), sizes)
    s = cfg["smoothing"]
    targets = s * np.tile(p, (cfg["contexts"], 1))
    targets[np.arange(cfg["contexts"]), pref] += 1.0 - s
    return p, pref, torch.from_numpy(targets)


def _trajectory(cfg: dict[str, Any], t: torch.Tensor, on_step: Callable[[int], None] | None = None):
    """Yield (step, H, V, logits, loss) at step 0 and after every update, up to cfg["steps"],
    for targets ``t`` (:func:`_data`)."""
    n = cfg["contexts"]
    h, v = _init(cfg)
    lr, ce = cfg["lr"], cfg["loss"] == "ce"
    for step in range(cfg["steps"] + 1):
        z = h @ v.T
        if ce:
            logp = torch.log_softmax(z, dim=1)
            loss = float(-(t * logp).sum() / n)
            g = (logp.exp() - t) / n
        else:
            r = z - t
            loss = float(0.5 * (r * r).sum() / n)
            g = r / n
        if not np.isfinite(loss):
            raise ValueError(f"lr={lr} diverged: the loss is {loss} at step {step}; pass a smaller lr")
        yield step, h, v, z, loss
        if step == cfg["steps"]:
            return
        h, v = h - lr * (g @ v), v - lr * (g.T @ h)
        if on_step is not None:
            on_step(1)


def _orthonormal_columns(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random rows × cols matrix with orthonormal columns (QR of a Gaussian matrix,
    the signs of R's diagonal moved into Q)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(torch.float64)


def _init(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The initial H = Wᵀ (contexts × width; the inputs are one-hot) and V (classes × width).

    ``gaussian``: i.i.d. N(0, init_scale²) entries. ``balanced`` (Theorem B.2's condition):
    H = s·A·R and V = s·B·R with A, B Haar-random with orthonormal columns and R a Haar-random
    d × d rotation shared by both, s = init_scale, so that HᵀH = VᵀV = s²·I_d, i.e. W Wᵀ = VᵀV
    (the d × d Gram matrices of the two factors agree; the quantity gradient flow conserves,
    WWᵀ − VᵀV = HᵀH − VᵀV, starts at 0). It needs d ≤ C and d ≤ D (:meth:`ToySettings.resolved` checks);
    the no-bottleneck control, d = C, meets both."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    n, d, c, s = cfg["contexts"], cfg["width"], cfg["classes"], cfg["init_scale"]
    if cfg["init"] == "gaussian":
        h = torch.randn(n, d, generator=gen, dtype=torch.float64) * s
        v = torch.randn(c, d, generator=gen, dtype=torch.float64) * s
        return h, v
    rot = _orthonormal_columns(d, d, gen)
    return s * (_orthonormal_columns(n, d, gen) @ rot), s * (_orthonormal_columns(c, d, gen) @ rot)


def record_steps(steps: int, record_every: int = 50, log_steps: int | None = None) -> list[int]:
    """The steps `fastspec.toy.train` measures.

    Parameters
    ----------
    steps : int
        The number of gradient-descent steps.
    record_every : int, default 50
        Measure every this many steps, and at the last.
    log_steps : int, optional
        Instead, step 0 and the distinct integers of ``log_steps`` log-spaced points from 1
        to ``steps`` (both included), for a logarithmic step axis.

    Returns
    -------
    list of int
        The steps, ascending, the last one included.

    Raises
    ------
    ValueError
        A count that is not a positive integer (``log_steps`` at least 2).

    Examples
    --------
    >>> fastspec.toy.record_steps(1000, 250)
    [0, 250, 500, 750, 1000]
    >>> fastspec.toy.record_steps(1000, log_steps=5)
    [0, 1, 6, 32, 178, 1000]
    """
    steps = _positive_int("steps", steps)
    if log_steps is None:
        grid = set(range(0, steps + 1, _positive_int("record_every", record_every)))
    else:
        points = np.geomspace(1, steps, _positive_int("log_steps", log_steps, 2))
        grid = {0, *np.rint(points).astype(np.int64).tolist()}
    return sorted(grid | {steps})


def _measure(h: torch.Tensor, fit_range: tuple[int, int]) -> dict[str, float]:
    s = spectrum(h)
    fit = alpha_req(s, fit_range=fit_range)
    return {"rankme": rankme(s), "alpha": fit.alpha, "alpha_r2": fit.r2, "lambda_1": float(s.eigenvalues[0])}


def train(labels: str = "powerlaw", loss: str = "ce", width: int = 8, classes: int = 128, steps: int = 4000,
          seed: int = 0, *, contexts: int | None = None, exponent: float = 1.0, smoothing: float = 0.2,
          lr: float = 2.0, init_scale: float = 1e-3, init: str = "gaussian", instances: int | None = None,
          record_every: int = 50, log_steps: int | None = None, fit_range: tuple[int, int] | None = None,
          on_step: Callable[[int], None] | None = None) -> Any:
    """Train the toy model and measure its bottleneck representation as it trains.

    The model, data and loss are the module docstring's (`fastspec.toy`). The bottleneck is
    measured every ``record_every`` steps and at the last step, or, with ``log_steps``, at
    step 0 and ``log_steps`` log-spaced steps (`fastspec.toy.record_steps`). Deterministic
    for a given seed (the data from NumPy's ``default_rng(seed)``, the weights from
    ``torch.Generator`` seeded with it).

    {parameters}    on_step : callable, optional
        Called with 1 after every update (e.g. a tqdm bar's ``update``).

    Returns
    -------
    pandas.DataFrame
        One row per recorded step: ``step``, ``loss``, ``accuracy`` (the fraction of
        contexts whose top logit is their preferred class), ``rankme``, ``alpha``,
        ``alpha_r2`` and ``lambda_1`` (the top eigenvalue) of the centred, ddof=1 covariance
        of the contexts' representations. ``df.attrs`` holds the settings as
        `fastspec.toy.ToySettings.resolved` gives them, the α ``fit_range`` included.

    Raises
    ------
    ValueError
        A setting out of range (naming it), or a ``lr`` under which the loss diverges.

    See Also
    --------
    fastspec.toy.run_conditions : The main run and its three controls.
    fastspec.toy.compression : Whether a run compresses.

    Notes
    -----
    Pass ``contexts`` or ``instances``, not both: ``instances`` fixes the class sizes,
    max(1, round(instances · c^(−exponent))) contexts of class c (``instances`` each with
    uniform labels), and D is their sum. ``smoothing=0`` makes the labels hard
    (deterministic). ``init="balanced"`` is Theorem B.2's condition, HᵀH = VᵀV =
    init_scale²·I.

    Examples
    --------
    The warmup collapse: RankMe falls from near d = 8 to about 1 within 200 steps.

    >>> frame = fastspec.toy.train(steps=300, record_every=100)
    >>> print(frame[["step", "loss", "accuracy", "rankme", "alpha"]].round(2).to_string(index=False))
     step  loss  accuracy  rankme  alpha
        0  4.85      0.01    7.83   0.28
      100  4.85      0.34    2.21   2.13
      200  4.20      0.18    1.05   5.05
      300  3.72      0.25    2.36   3.27
    >>> frame.attrs["contexts"], frame.attrs["fit_range"]
    (256, (0, 8))
    """
    import pandas as pd

    cfg = ToySettings(labels=labels, loss=loss, width=width, classes=classes, steps=steps, seed=seed, contexts=contexts,
                      exponent=exponent, smoothing=smoothing, lr=lr, init_scale=init_scale, init=init, instances=instances,
                      record_every=record_every, log_steps=log_steps, fit_range=fit_range).resolved()
    _, pref, targets = _data(cfg)
    pref_t = torch.from_numpy(pref)
    recorded = set(record_steps(cfg["steps"], cfg["record_every"], cfg["log_steps"]))
    rows = []
    for step, h, _, z, value in _trajectory(cfg, targets, on_step):
        if step in recorded:
            acc = float((z.argmax(dim=1) == pref_t).double().mean())
            rows.append({"step": step, "loss": value, "accuracy": acc, **_measure(h, cfg["fit_range"])})
    frame = pd.DataFrame(rows)
    frame.attrs.update(cfg)
    return frame


def representation(step: int, labels: str = "powerlaw", loss: str = "ce", width: int = 8, classes: int = 128,
                   seed: int = 0, **options: Any) -> np.ndarray:
    """The bottleneck representation H after ``step`` updates.

    The H of ``train(labels, loss, width, classes, steps, seed, **options)`` at that step, for
    any steps >= step (training is deterministic and plain gradient descent has no schedule),
    i.e. the H whose metrics are the frame's row at that step.

    Parameters
    ----------
    step : int
        Gradient-descent updates, at least 0.
    labels, loss, width, classes, seed
        As `fastspec.toy.train` takes them.
    **options
        The other settings of `fastspec.toy.ToySettings` but ``steps``, as keywords.

    Returns
    -------
    numpy.ndarray
        H, contexts × width, float64.

    Raises
    ------
    ValueError
        A setting out of range, or an unknown option.

    Examples
    --------
    >>> h = fastspec.toy.representation(300)
    >>> h.shape, round(fastspec.rankme(fastspec.spectrum(h)), 2)  # the frame's row at step 300
    ((256, 8), 2.36)
    """
    step = _positive_int("step", step, 0)
    known = [f.name for f in fields(ToySettings) if f.name not in _POSITIONAL]
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    cfg = ToySettings(labels, loss, width, classes, max(step, 1), seed, **options).resolved()
    for k, h, _, _, _ in _trajectory(cfg, _data(cfg)[2]):
        if k == step:
            return h.numpy().copy()
    raise AssertionError("unreachable: the trajectory runs to cfg['steps'] >= step")


def _parameters_section(header: bool = True) -> str:
    """The numpydoc Parameters entries of ToySettings' fields, from their ``setting`` help
    texts (so the help is written once), indented for a docstring's body."""
    lines = ["Parameters", "----------"] if header else []
    for f in fields(ToySettings):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"{f.name} : {kind}, default {f.default!r}")
        lines.append("    " + f.metadata["help"].rstrip(".") + ".")
    return "\n".join("    " + line for line in lines).lstrip() + "\n"


ToySettings.__doc__ = (ToySettings.__doc__ or "").replace("{parameters}", _parameters_section())
train.__doc__ = (train.__doc__ or "").replace("{parameters}", "Parameters\n    ----------\n    "
                                                + _parameters_section(header=False))


# The paper's condition (Figure 5) and its three controls (Figures 12 and 13), as overrides
# of the main run's settings. "no-bottleneck" sets width = classes (d ≥ C) in run_conditions.
CONDITIONS: dict[str, dict[str, Any]] = {
    "skewed+bottleneck+CE": {},
    "uniform labels": {"labels": "uniform"},
    "no bottleneck (d=C)": {"width": None},
    "MSE loss": {"loss": "mse"},
}


def run_conditions(steps: int = 4000, seed: int = 0, *, width: int = 8, classes: int = 128,
                   on_step: Callable[[int], None] | None = None, **options: Any) -> dict[str, Any]:
    """Train the paper's condition and its three controls with the same seed and steps.

    The runs of ``fastspec.toy.CONDITIONS``: power-law labels + bottleneck (d = ``width`` <
    C) + cross-entropy (the paper's Figure 5), and the controls uniform labels, d = C (no
    bottleneck) and MSE (Figures 12 and 13). α is fitted over the same window, (0, width),
    in all four, so that their α are comparable.

    Parameters
    ----------
    steps : int, default 4000
        Gradient-descent steps of each run.
    seed : int, default 0
        The seed of every run.
    width : int, default 8
        d of the runs with a bottleneck, below ``classes``.
    classes : int, default 128
        C, also the width of the no-bottleneck control.
    on_step : callable, optional
        Called with 1 after every update of every run.
    **options
        Other settings of `fastspec.toy.train` (``fit_range`` replaces the common window).

    Returns
    -------
    dict of str to pandas.DataFrame
        {condition name: `fastspec.toy.train`'s DataFrame}, in the order above.

    Raises
    ------
    ValueError
        ``width`` not below ``classes``, or a setting out of range.

    See Also
    --------
    fastspec.toy.summary_table, fastspec.toy.conditions_table : Tables of the runs.

    Examples
    --------
    >>> runs = fastspec.toy.run_conditions(steps=100, width=4, classes=16, record_every=50)
    >>> list(runs)
    ['skewed+bottleneck+CE', 'uniform labels', 'no bottleneck (d=C)', 'MSE loss']
    >>> [frame.attrs["width"] for frame in runs.values()]
    [4, 4, 16, 4]
    """
    if isinstance(width, (int, np.integer)) and isinstance(classes, (int, np.integer)) and width >= classes:
        raise ValueError(f"width must be below classes ({classes}) for the main run to have a bottleneck, got {width}")
    fit_range = options.pop("fit_range", None) or (0, width)
    out = {}
    for name, override in CONDITIONS.items():
        kw = {"labels": "powerlaw", "loss": "ce", "width": width, **override}
        if kw["width"] is None:
            kw["width"] = classes
        out[name] = train(kw["labels"], kw["loss"], kw["width"], classes, steps, seed, fit_range=fit_range,
                          on_step=on_step, **options)
    return out


@dataclass(frozen=True)
class Compression:
    """A run's RankMe landmarks and whether it compresses (what `fastspec.toy.compression`
    returns).

    Parameters
    ----------
    compresses : bool
        Whether RankMe falls from its peak by more than ``tol`` of the peak while α rises.
    tol : float
        The relative fall that counts.
    trough_step : int
        The end of the warmup collapse (0 when the run does not start by falling).
    rankme_trough : float
        RankMe there.
    peak_step : int
        The highest RankMe from the trough on (the end of entropy-seeking).
    rankme_peak : float
        RankMe there.
    after_step : int
        The lowest RankMe at or after the peak.
    rankme_after : float
        RankMe there.
    rankme_final : float
        RankMe at the last step.
    drop : float
        (rankme_peak − rankme_after) / rankme_peak.
    alpha_peak : float
        α at the peak.
    alpha_after : float
        α at ``after_step``.
    alpha_final : float
        α at the last step.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"step": [0, 100, 200, 400, 800, 1600],
    ...                       "rankme": [7.8, 1.2, 5.0, 7.9, 7.6, 7.4], "alpha": [0.3, 3.0, 0.8, 0.2, 0.25, 0.3]})
    >>> c = fastspec.toy.compression(frame)
    >>> c.compresses, c.peak_step, c.after_step, round(c.drop, 3)
    (True, 400, 1600, 0.063)
    """

    compresses: bool
    tol: float
    trough_step: int  # end of the warmup collapse (0 when the run does not start by falling)
    rankme_trough: float
    peak_step: int
    rankme_peak: float
    after_step: int  # lowest RankMe at or after the peak
    rankme_after: float
    rankme_final: float
    drop: float  # (rankme_peak − rankme_after) / rankme_peak
    alpha_peak: float
    alpha_after: float
    alpha_final: float

    def to_dict(self) -> dict[str, Any]:
        """The landmarks as a plain dict.

        Returns
        -------
        dict
            Every field, by name.
        """
        return asdict(self)


def compression(frame: Any, tol: float = TOL) -> Compression:
    """Does a run compress? The landmarks of its RankMe, and the rule's answer.

    The rule:

    1. Warmup trough: when RankMe starts by falling by more than ``tol`` (relative; the same
       zig-zag filter as :func:`fastspec.phases`), the lowest point of that first fall, else
       step 0.
    2. Peak: the highest RankMe from the trough on (the end of entropy-seeking).
    3. After: the lowest RankMe from the peak on.
    4. ``compresses`` when RankMe falls from the peak by more than ``tol`` of the peak,
       (peak − after) / peak > tol, and α at that point is above α at the peak (the
       spectrum steepens, as in the paper's compression-seeking phase).

    Parameters
    ----------
    frame : pandas.DataFrame
        `fastspec.toy.train`'s DataFrame (the columns ``step``, ``rankme`` and ``alpha``),
        at least 2 rows.
    tol : float, default 0.03
        The relative fall, in (0, 1). 3%: at the toy's defaults the main run falls 6–7% and
        the controls drift by less than 0.5% (module docstring).

    Returns
    -------
    fastspec.toy.Compression
        The landmarks and ``compresses``.

    Raises
    ------
    ValueError
        ``tol`` outside (0, 1), or fewer than 2 rows.

    Examples
    --------
    A run that collapses, expands to a peak at step 400, then falls 6% while α rises:

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"step": [0, 100, 200, 400, 800, 1600],
    ...                       "rankme": [7.8, 1.2, 5.0, 7.9, 7.6, 7.4], "alpha": [0.3, 3.0, 0.8, 0.2, 0.25, 0.3]})
    >>> c = fastspec.toy.compression(frame)
    >>> c.compresses, c.trough_step, c.peak_step, round(c.drop, 3), c.alpha_peak, c.alpha_after
    (True, 100, 400, 0.063, 0.2, 0.3)
    >>> fastspec.toy.compression(frame, tol=0.1).compresses
    False
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if len(frame) < 2:
        raise ValueError(f"frame needs at least 2 recorded steps, got {len(frame)}")
    r = frame["rankme"].to_numpy(dtype=np.float64)
    a = frame["alpha"].to_numpy(dtype=np.float64)
    steps = frame["step"].to_numpy()
    first = zigzag_runs(r, tol)[0]
    trough = first[1] if first[2] < 0 else 0
    peak = trough + int(np.argmax(r[trough:]))
    after = peak + int(np.argmin(r[peak:]))
    drop = float((r[peak] - r[after]) / r[peak])
    return Compression(bool(drop > tol and a[after] > a[peak]), float(tol), int(steps[trough]), float(r[trough]),
                       int(steps[peak]), float(r[peak]), int(steps[after]), float(r[after]), float(r[-1]), drop,
                       float(a[peak]), float(a[after]), float(a[-1]))


def summary_table(runs: dict[str, Any], tol: float = TOL) -> Any:
    """One row per run: its RankMe landmarks and whether it compresses.

    Parameters
    ----------
    runs : dict of str to pandas.DataFrame
        {condition name: `fastspec.toy.train`'s DataFrame}, as `fastspec.toy.run_conditions`
        returns it.
    tol : float, default 0.03
        The relative fall that counts, as `fastspec.toy.compression` takes it.

    Returns
    -------
    pandas.DataFrame
        ``condition``, ``width``, RankMe at the warmup trough (``rankme_min``), at the peak
        (``rankme_peak``, at ``peak_step``) and at the end (``rankme_final``), the relative
        ``fall`` after the peak, α at the peak and at the end (``alpha_peak``,
        ``alpha_final``), and ``compresses`` ("yes" or "no").

    Examples
    --------
    >>> runs = fastspec.toy.run_conditions(steps=200, width=4, classes=16, record_every=50)
    >>> table = fastspec.toy.summary_table(runs)
    >>> print(table[["condition", "width", "rankme_min", "rankme_final", "compresses"]].round(2).to_string(index=False))
               condition  width  rankme_min  rankme_final compresses
    skewed+bottleneck+CE      4        1.07          1.18         no
          uniform labels      4        3.26          3.26         no
     no bottleneck (d=C)     16        1.13          2.18         no
                MSE loss      4        1.09          1.74         no
    """
    import pandas as pd

    rows = []
    for name, frame in runs.items():
        c = compression(frame, tol)
        rows.append({"condition": name, "width": frame.attrs.get("width"), "rankme_min": c.rankme_trough,
                     "rankme_peak": c.rankme_peak, "peak_step": c.peak_step, "rankme_final": c.rankme_final,
                     "fall": c.drop, "alpha_peak": c.alpha_peak, "alpha_final": c.alpha_final,
                     "compresses": "yes" if c.compresses else "no"})
    return pd.DataFrame(rows)


def conditions_table(runs: dict[str, Any]) -> Any:
    """Every run's trajectory in one long DataFrame (what the demo writes as ``toy.csv``).

    Parameters
    ----------
    runs : dict of str to pandas.DataFrame
        {condition name: `fastspec.toy.train`'s DataFrame}, as `fastspec.toy.run_conditions`
        returns it.

    Returns
    -------
    pandas.DataFrame
        The frames' rows one after another, with their ``condition``, ``labels``,
        ``objective`` (the loss function), ``width`` and ``classes`` as columns.

    Examples
    --------
    >>> runs = fastspec.toy.run_conditions(steps=100, width=4, classes=16, record_every=50)
    >>> table = fastspec.toy.conditions_table(runs)
    >>> table.shape, list(table.columns[-5:])
    ((12, 12), ['condition', 'labels', 'objective', 'width', 'classes'])
    """
    import pandas as pd

    return pd.concat([f.assign(condition=name, labels=f.attrs["labels"], objective=f.attrs["loss"], width=f.attrs["width"],
                               classes=f.attrs["classes"]) for name, f in runs.items()], ignore_index=True)
