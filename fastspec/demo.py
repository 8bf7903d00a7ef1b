"""``fastspec demo``: synthetic activations whose spectrum is known, measured and plotted.

Rows are x = μ + Q diag(√λ) z with z ~ N(0, I), a random rotation Q, a power-law spectrum
λ_i = i^(−α), and a mean μ that, like real LLM activations, has a few columns of very large
mean ("massive activations"). The construction implies the population values: RankMe of λ,
α itself, and Garrido's singular-value RankMe of the raw second moment Σ + μμᵀ. The sample
estimates differ from them only by finite-N noise; the naive one-pass float32 formula
Σxxᵀ/n − μμᵀ is shown too, to show why fastspec centres per chunk.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ._files import bar_off, write_csv, write_json
from .analyses.ablation import ablate, evaluate
from .analyses.correlation import correlate, correlation_table
from .analyses.memorization import memorization_trace
from .analyses.passk import pass_at_k_table
from .analyses.phase_scores import paper_comparison, phase_scores
from .analyses.toy import run_conditions, summary_table
from .models.data import stdlib_corpus
from .models.hf import quiet_transformers
from .models.phases import phases
from .models.scoring import load_causal_lm
from .models.tiny import TinyLMConfig, train_checkpoints
from .models.trace import trace
from .ngram.index import InfGramIndex
from .report import (
    plot_ablation,
    plot_pass_at_k,
    plot_spectrum,
    plot_trace,
    write_conditions,
    write_correlations,
    write_table,
)
from .spectral import CovarianceAccumulator, alpha_req, rankme, summarize
from .spectral.metrics import DEFAULT_FIT_RANGE


@dataclass(frozen=True)
class DemoConfig:
    n: int = 15000
    dim: int = 1024
    alpha: float = 1.0
    massive_columns: int = 3
    massive_mean: float = 1000.0
    seed: int = 0
    fit_range: tuple[int, int] = DEFAULT_FIT_RANGE


def synthetic_activations(cfg: DemoConfig) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """X (float32, n×d), the population covariance's eigenvalues λ, and those of the
    population raw second moment Σ + μμᵀ."""
    gen = torch.Generator().manual_seed(cfg.seed)
    lam = np.arange(1, cfg.dim + 1, dtype=np.float64) ** (-cfg.alpha)
    q, _ = torch.linalg.qr(torch.randn(cfg.dim, cfg.dim, generator=gen, dtype=torch.float64))
    mu = torch.randn(cfg.dim, generator=gen, dtype=torch.float64)
    mu[: cfg.massive_columns] = cfg.massive_mean
    z = torch.randn(cfg.n, cfg.dim, generator=gen, dtype=torch.float64)
    x = (z * torch.from_numpy(np.sqrt(lam))) @ q.T + mu
    raw = (q * torch.from_numpy(lam)) @ q.T + torch.outer(mu, mu)
    return x.float(), lam, torch.linalg.eigvalsh(raw).numpy()


def _naive_rankme(x: torch.Tensor) -> float:
    """The one-pass float32 formula that DESIGN.md forbids, for comparison only."""
    n = x.shape[0]
    mean = x.mean(0)
    cov = (x.T @ x - n * torch.outer(mean, mean)) / (n - 1)
    return rankme(torch.linalg.eigvalsh(cov.double()).numpy())


def _reference(x: torch.Tensor, fit_range: tuple[int, int]) -> dict[str, Any]:
    """The same metrics from a float64 ``np.cov`` of the same rows (and the float64 raw
    second moment): what fastspec's streamed float32 path must match."""
    x64 = x.double().numpy()
    lam = np.linalg.eigvalsh(np.cov(x64, rowvar=False))[::-1]
    raw = np.linalg.eigvalsh(x64.T @ x64 / (len(x64) - 1))[::-1]
    out: dict[str, Any] = {"rankme": rankme(lam), "rankme_sv": rankme(raw, convention="sv")}
    try:
        fit = alpha_req(lam, fit_range=fit_range)
        out.update(alpha=fit.alpha, alpha_r2=fit.r2)
    except ValueError:
        out.update(alpha=None, alpha_r2=None)
    return out


def run_demo(cfg: DemoConfig, out_dir: str) -> dict[str, Any]:
    x, lam, raw_population = synthetic_activations(cfg)
    acc = CovarianceAccumulator(cfg.dim)
    acc.update(x)
    measured = summarize(acc, fit_range=cfg.fit_range)
    implied = {
        "rankme": rankme(lam),
        "rankme_sv": rankme(raw_population, convention="sv"),
        "alpha": cfg.alpha,
        "alpha_r2": 1.0,
    }
    eigenvalues = np.asarray(measured["eigenvalues"])
    # A spectrum shorter than the fit range has no α (measured["alpha_error"] says why):
    # the plot then shows the spectrum alone.
    fit = alpha_req(eigenvalues, fit_range=cfg.fit_range) if measured["alpha"] is not None else None
    plot_path = os.path.join(out_dir, "spectrum.png")
    plot_spectrum(eigenvalues, fit, plot_path, population=lam, title=f"Synthetic power law, n={cfg.n}, d={cfg.dim}")
    result = {
        "config": {**cfg.__dict__, "fit_range": list(cfg.fit_range)},
        "measured": measured,
        "float64_reference": _reference(x, cfg.fit_range),
        "implied": implied,
        "naive_fp32_one_pass_rankme": _naive_rankme(x),
        "plot": plot_path,
    }
    write_json(os.path.join(out_dir, "metrics.json"), result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """Measured beside a float64 np.cov of the same rows (the exactness check: sampling
    noise is the same for both) and beside what the construction implies (the population)."""
    m, ref, imp, cfg = result["measured"], result["float64_reference"], result["implied"], result["config"]

    def cell(v: Any, width: int) -> str:
        return f"{v:>{width}.4f}" if v is not None else f"{'–':>{width}}"

    def diff(got: Any, want: Any) -> str:
        return f"{(got - want) / want:>+13.2e}" if got is not None and want else f"{'–':>13}"

    rows = [
        ("RankMe (eig, centred)", m["rankme"], ref["rankme"], imp["rankme"]),
        ("RankMe (sv, raw; Garrido)", m["rankme_sv"], ref["rankme_sv"], imp["rankme_sv"]),
        (f"alpha (fit ranks {cfg['fit_range'][0] + 1}..{cfg['fit_range'][1]})", m["alpha"], ref["alpha"], imp["alpha"]),
        ("alpha fit R^2", m["alpha_r2"], ref["alpha_r2"], imp["alpha_r2"]),
    ]
    lines = [f"{'metric':<34}{'measured':>11}{'float64 ref':>13}{'vs ref':>13}{'construction':>14}{'vs constr.':>12}"]
    for name, got, want, pop in rows:
        vs_pop = f"{(got - pop) / pop:>+12.2%}" if got is not None else f"{'–':>12}"
        lines.append(f"{name:<34}{cell(got, 11)}{cell(want, 13)}{diff(got, want)}{cell(pop, 14)}{vs_pop}")
    naive = result["naive_fp32_one_pass_rankme"]
    lines.append(f"{'naive fp32 one-pass RankMe':<34}{naive:>11.4f}{ref['rankme']:>13.4f}{diff(naive, ref['rankme'])}"
                 f"{imp['rankme']:>14.4f}{(naive - imp['rankme']) / imp['rankme']:>+12.2%}"
                 "   <- why fastspec centres per chunk")
    if m["alpha"] is None:
        lines.append(f"alpha: none ({m['alpha_error']})")
    else:
        lines.append(f"alpha intercept {m['alpha_intercept']:.4f}")
    lines.append(f"n={m['n_samples']}, d={m['dim']}, {cfg['massive_columns']} columns of mean {cfg['massive_mean']:g}; "
                 "'vs ref' is fastspec's exactness (the same rows in float64), 'vs constr.' includes sampling noise")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The main job on an embedded default: a tiny LM trained here, its checkpoints traced.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceDemoConfig:
    """A tiny GPT-NeoX (Pythia's architecture) trained on the source of Python's standard
    library, then traced on held-out docstrings. The recipe (narrow, 10k steps on ~2.7M
    tokens of barely repeated text, cosine to zero) is the one that shows all three phases;
    docs/explanation/demo-recipe.md has every recipe tried and their numbers."""

    steps: int = 10000
    hidden: int = 32
    layers: int = 4
    vocab_size: int = 2048
    lr: float = 3e-3
    warmup: int = 100
    every: int = 500            # checkpoint spacing after the log-spaced start (0, 1, 2, 4, … 128)
    n_trace: int = 1500
    max_length: int = 64
    fit_range: tuple[int, int] = (0, 24)  # ranks 1..24: a width-32 model has no ranks 12..100
    seed: int = 0
    held_out: int = 5           # one standard-library file in this many is held out
    n_items: int = 200          # cloze questions for accuracy and the ablation
    n_problems: int = 64        # next-word problems for pass@k
    n_samples: int = 16         # samples per problem (pass@16 at most)
    pass_ks: tuple[int, ...] = (1, 4, 16)
    n_memorization: int = 300   # held-out prompt → continuation items for distributional memorization
    threads: int = 2            # torch threads while training: 2 is fastest on two idle cores, 1 when they are shared

    def lm(self) -> TinyLMConfig:
        """The training configuration of the model."""
        return TinyLMConfig(hidden=self.hidden, layers=self.layers, vocab_size=self.vocab_size, steps=self.steps,
                            lr=self.lr, warmup=self.warmup, final_lr=0.0, weight_decay=0.01, seed=self.seed,
                            save_steps=log_spaced_steps(self.steps, self.every, min(self.every, 250)))


def log_spaced_steps(steps: int, every: int, log_below: int | None = None) -> tuple[int, ...]:
    """Pythia's checkpoint pattern: 0, 1, 2, 4, … (powers of two below ``log_below``,
    default ``every``) then every ``every`` steps, and the last."""
    below = every if log_below is None else log_below
    powers = [0] + [2**k for k in range(0, max(steps, 1).bit_length()) if 2**k < below and 2**k <= steps]
    return tuple(sorted(set(powers + list(range(every, steps, every)) + [steps])))


def run_trace_demo(cfg: TraceDemoConfig, out_dir: str, *, progress: bool = True) -> dict[str, Any]:
    """Train, save checkpoints, trace them, label the phases and plot; return what was
    written. Training is skipped when ``out_dir`` already holds the same run, and the trace
    resumes where it stopped."""
    corpus = stdlib_corpus(held_out=cfg.held_out)
    held = corpus.held_paragraphs
    if len(held) < cfg.n_trace:
        raise ValueError(f"n_trace={cfg.n_trace} but the held-out standard-library files give only {len(held)} "
                         "docstring paragraphs")
    lm = cfg.lm()
    if progress:
        n_chars = sum(len(t) for t in corpus.train)
        print(f"training a {cfg.layers}-layer, width-{cfg.hidden} GPT-NeoX for {cfg.steps} steps on the source of "
              f"{len(corpus.train)} files of Python's standard library ({n_chars / 1e6:.1f}M characters, SHA-256 "
              f"{corpus.sha256[:12]}…; {len(corpus.held_files)} more files held out) …", flush=True)
    dirs = train_checkpoints(corpus.train, os.path.join(out_dir, "model"), lm, progress=progress, threads=cfg.threads)
    if progress:
        print(f"tracing {len(dirs)} checkpoints on {cfg.n_trace} held-out docstring paragraphs …", flush=True)
    frame = trace(dirs, held[:cfg.n_trace], os.path.join(out_dir, "trace"), max_length=cfg.max_length,
                  batch_size=32, fit_range=cfg.fit_range, progress=progress)
    labelled = phases(frame, warmup_steps=lm.warmup)
    write_csv(labelled, os.path.join(out_dir, "phases.csv"))
    plots = plot_trace(frame, out_dir, warmup_steps=lm.warmup)
    with open(os.path.join(out_dir, "model", "training.json")) as fh:
        losses = {int(k): v for k, v in json.load(fh)["train_loss"].items()}
    return {"trace": frame, "phases": labelled, "plots": plots, "train_loss": losses, "warmup": lm.warmup,
            "train_texts": corpus.train, "train_paragraphs": corpus.train_paragraphs, "held_texts": held,
            "corpus_sha256": corpus.sha256}


def format_trace_table(result: dict[str, Any]) -> str:
    """Per checkpoint, at the last layer: step, training loss, RankMe (both), α, phase."""
    frame, labelled, losses = result["trace"], result["phases"], result["train_loss"]
    last = labelled["layer"].iloc[0]
    sub = frame[frame["layer"] == last].reset_index(drop=True)
    lines = [f"layer {last} (the last block after the final norm, as hidden_states[-1]), "
             f"learning-rate warmup: steps 0..{result['warmup']}",
             f"{'step':>6}{'train loss':>12}{'RankMe':>10}{'RankMe_sv':>11}{'alpha':>9}{'R^2':>8}  phase"]
    for i, row in sub.iterrows():
        loss = losses.get(int(row["step"]))
        lines.append(f"{int(row['step']):>6}{'' if loss is None else f'{loss:.3f}':>12}{row['rankme']:>10.2f}"
                     f"{row['rankme_sv']:>11.2f}{row['alpha']:>9.3f}{row['alpha_r2']:>8.3f}  {labelled['phase'][i]}")
    lines.append("phases: " + "; ".join(phase_spans(phase_scores(labelled))))
    return "\n".join(lines)


def phase_spans(table: pd.DataFrame) -> list[str]:
    """"warmup: steps 0–64", "entropy-seeking: steps 64–2500 (RankMe 1.6 → 14.8, α …)", …:
    each phase of :func:`~fastspec.analyses.phase_scores.phase_scores`' table with how RankMe
    and α moved over it (a compression phase also with its fall as a share of its peak)."""
    out = []
    for row in table.itertuples(index=False):
        text = (f"{row.phase}: steps {row.first_step}–{row.last_step} (RankMe {row.rankme_start:.1f} → "
                f"{row.rankme_end:.1f}, α {row.alpha_start:.2f} → {row.alpha_end:.2f}")
        if row.phase == "compression-seeking":
            text += f"; {1 - row.rankme_end / row.rankme_start:.0%} below the peak"
        out.append(text + ")")
    return out


# ---------------------------------------------------------------------------------------
# The paper's other analyses on the same run: scores per checkpoint, their correlation with
# the geometry, pass@k, the eigenvector ablation; then the report.
# ---------------------------------------------------------------------------------------


def cloze_items(paragraphs: list[str], n: int, *, seed: int, prompt_words: int = 8, answer_words: int = 2,
                n_choices: int = 4) -> list[dict[str, Any]]:
    """Multiple-choice cloze questions: the first ``prompt_words`` words of a paragraph, and
    as choices its next ``answer_words`` words beside those of other paragraphs."""
    rng = np.random.default_rng(seed)
    words = [p.split() for p in paragraphs]
    words = [w for w in words if len(w) >= prompt_words + answer_words]
    if len(words) < max(n, n_choices):
        raise ValueError(f"only {len(words)} paragraphs have {prompt_words + answer_words} words; {n} items asked for")
    answers = [" ".join(w[prompt_words:prompt_words + answer_words]) for w in words]
    items = []
    for i in rng.choice(len(words), size=n, replace=False):
        choices = [answers[i]]
        while len(choices) < n_choices:
            other = answers[int(rng.integers(len(answers)))]
            if other not in choices:
                choices.append(other)
        order = rng.permutation(n_choices)
        items.append({"question": " ".join(words[i][:prompt_words]), "choices": [choices[j] for j in order],
                      "answer": int(np.flatnonzero(order == 0)[0])})
    return items


def next_word_counts(model: Any, tokenizer: Any, items: list[dict[str, Any]], n_samples: int, *, seed: int,
                     batch: int = 512) -> list[int]:
    """For each item, how many of ``n_samples`` sampled continuations (temperature 1, no
    truncation) begin with the item's true next word."""
    import torch

    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    counts = []
    per_call = max(batch // n_samples, 1)
    for start in range(0, len(items), per_call):
        chunk = items[start:start + per_call]
        enc = [tokenizer(item["question"])["input_ids"] for item in chunk]
        width = max(len(e) for e in enc)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])  # left padding for generation
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        with torch.inference_mode():
            out = model.generate(input_ids=ids.repeat_interleave(n_samples, 0),
                                 attention_mask=mask.repeat_interleave(n_samples, 0), do_sample=True, top_k=0,
                                 top_p=1.0, temperature=1.0, max_new_tokens=4, pad_token_id=pad)
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for j, item in enumerate(chunk):
            truth = item["choices"][item["answer"]].split()[0]
            got = texts[j * n_samples:(j + 1) * n_samples]
            counts.append(sum(1 for t in got if t.split()[:1] == [truth]))
    return counts


def memorization_items(paragraphs: list[str], n: int, *, prompt_words: int = 8, output_words: int = 4
                       ) -> list[dict[str, str]]:
    """Prompt → continuation items: the first ``prompt_words`` words of each paragraph and
    the next ``output_words``, from the first ``n`` paragraphs long enough."""
    items = []
    for text in paragraphs:
        words = text.split()
        if len(words) >= prompt_words + output_words:
            items.append({"prompt": " ".join(words[:prompt_words]),
                          "output": " " + " ".join(words[prompt_words:prompt_words + output_words])})
        if len(items) == n:
            break
    return items


def run_memorization(cfg: TraceDemoConfig, out_dir: str, result: dict[str, Any], *, progress: bool = True) -> Any:
    """Index the training corpus with the model's own tokenizer (an ∞-gram of the
    pretraining corpus), and score distributional memorization of held-out continuations at
    every traced checkpoint (:func:`fastspec.memorization_trace`, resumable)."""
    from transformers import AutoTokenizer

    ckpts = result["trace"].drop_duplicates("checkpoint")["checkpoint"].tolist()
    tok = AutoTokenizer.from_pretrained(ckpts[0])
    index_dir = os.path.join(out_dir, "index")
    if os.path.isdir(index_dir):
        index = InfGramIndex(index_dir)
    else:
        if progress:
            print("indexing the training corpus (∞-gram) …", flush=True)
        ids = tok(result["train_texts"], add_special_tokens=False)["input_ids"]
        index = InfGramIndex.build([np.asarray(x) for x in ids if x], index_dir, vocab_size=len(tok), progress=False)
    # items whose prompt and continuation fit the traced length (docstrings quoting code can be long)
    fits = [it for it in memorization_items(result["held_texts"], 4 * cfg.n_memorization)
            if len(tok(it["prompt"] + it["output"], add_special_tokens=False)["input_ids"]) <= cfg.max_length]
    items = fits[:cfg.n_memorization]
    return memorization_trace(ckpts, items, index, out_dir, progress=progress)


def run_analyses(cfg: TraceDemoConfig, out_dir: str, result: dict[str, Any], *, progress: bool = True
                 ) -> dict[str, Any]:
    """Score every checkpoint (cloze accuracy, pass@k of the next word, distributional
    memorization), correlate the scores with the last layer's RankMe and α, ablate the final
    checkpoint's top-k eigenvectors, and write everything beside the trace."""
    items = cloze_items(result["train_paragraphs"], cfg.n_items, seed=cfg.seed)
    problems = items[:cfg.n_problems]
    frame = result["trace"]
    ckpts = frame[["checkpoint", "step"]].drop_duplicates().itertuples(index=False)
    scores, counts = [], []
    for ckpt in tqdm(list(ckpts), desc="scoring checkpoints", unit="ckpt", disable=bar_off(progress), leave=False):
        with quiet_transformers():
            model, tok = load_causal_lm(ckpt.checkpoint)
        acc = evaluate(model, items, tok, prompt="{question}", batch_size=64)
        c = next_word_counts(model, tok, problems, cfg.n_samples, seed=cfg.seed)
        counts += [{"step": ckpt.step, "problem": i, "n": cfg.n_samples, "c": ci} for i, ci in enumerate(c)]
        p = acc["accuracy"]
        scores.append({"step": ckpt.step, "cloze_accuracy": p, "cloze_acc_norm": acc["acc_norm"],
                       "cloze_accuracy_se": math.sqrt(p * (1 - p) / len(items))})  # binomial
    counts_frame = pd.DataFrame(counts)
    write_csv(counts_frame, os.path.join(out_dir, "pass_at_k_counts.csv"))
    passk = pass_at_k_table(counts_frame, cfg.pass_ks, by="step")
    write_table(passk, out_dir, "pass_at_k", title="pass@k of the next word")
    plot_pass_at_k(passk, "step", os.path.join(out_dir, "pass_at_k.png"))
    memo = run_memorization(cfg, out_dir, result, progress=progress)
    # pass@1's standard error: of the mean over problems of each problem's c/n
    pass1_se = (counts_frame["c"] / counts_frame["n"]).groupby(counts_frame["step"]).sem().rename("pass@1_se")
    score_frame = (pd.DataFrame(scores).merge(passk.drop(columns=["n_problems", "n"]), on="step")
                   .merge(pass1_se.reset_index(), on="step")
                   .merge(memo[["step", "rho"]].rename(columns={"rho": "memorization"}), on="step"))
    score_frame["train_loss"] = score_frame["step"].map(result["train_loss"])
    write_csv(score_frame, os.path.join(out_dir, "scores.csv"))
    correlations = correlate(frame, score_frame)
    write_correlations(correlations, out_dir)
    by_phase = phase_scores(result["phases"], score_frame)
    write_table(by_phase, out_dir, "phase_scores", title="Geometry and scores at the start and end of each phase")

    final = frame["checkpoint"].iloc[-1]
    with quiet_transformers():
        model, tok = load_causal_lm(final)
    basis = result["held_texts"][:cfg.n_trace]
    # k up to what the basis can give: d eigenvectors, or N − 1 when there are fewer texts
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if k <= min(cfg.hidden, len(basis) - 1)]
    if progress:
        print(f"ablating the top-k eigenvectors of the last layer of {os.path.basename(final)} …", flush=True)
    ablation = ablate(model, items, basis, tok, layer=-1, final_norm=True, ks=ks,
                      prompt="{question}", batch_size=64, max_length=cfg.max_length, progress=False)
    write_table(ablation, out_dir, "ablation", title=f"Top-k eigenvector ablation, layer {ablation.attrs['layer']}")
    plot_ablation(ablation, os.path.join(out_dir, "ablation.png"),
                  title=f"Top-k eigenvector ablation, last layer (after the final norm), step {frame['step'].max()}")
    if progress:
        print("training the toy model and its three controls …", flush=True)
    toy_runs = run_conditions(seed=cfg.seed)
    write_conditions(toy_runs, out_dir)
    return {"scores": score_frame, "correlations": correlations, "pass_at_k": passk, "ablation": ablation,
            "toy": summary_table(toy_runs), "phase_scores": by_phase}


def format_analyses(analyses: dict[str, Any]) -> str:
    """Scores per checkpoint, their correlations with the geometry, and the ablation."""
    scores, ablation = analyses["scores"], analyses["ablation"]
    lines = ["scores per checkpoint (cloze: 4-way multiple choice on training paragraphs; pass@k: next word, "
             f"{analyses['pass_at_k']['n'].iloc[0]} samples per problem):",
             scores.drop(columns=[c for c in scores.columns if c.endswith("_se")])
             .to_string(index=False, float_format=lambda v: f"{v:.3f}"), "",
             f"correlations with the last layer's geometry across checkpoints (layer {analyses['correlations'].attrs['layer']}):",
             correlation_table(analyses["correlations"]).to_string(index=False), "",
             "against the paper (computed from this run's numbers):", paper_comparison(analyses["phase_scores"]), ""]
    base = float(ablation.loc[ablation["mode"] == "none", "accuracy"].iloc[0])
    lines.append(f"top-k eigenvector ablation, final checkpoint (unablated cloze accuracy {base:.3f}, "
                 f"chance {ablation.attrs['chance']:.3f}):")
    for mode in ("retain", "remove"):
        sub = ablation[ablation["mode"] == mode]
        lines.append(f"  {mode:<7}" + "  ".join(f"k={int(k)}: {a:.3f}" for k, a in zip(sub["k"], sub["accuracy"])))
    lines += ["", "toy model (the paper's §3.3): a linear bottleneck on power-law next tokens, and its controls:",
              analyses["toy"].to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    return "\n".join(lines)
