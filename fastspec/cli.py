"""The ``fastspec`` command line: ``demo``, ``trace``, ``status``, ``plot``, ``spectrum FILE``, ``backends``,
``index build|combine|count|prob``, ``memorization``, ``ablate``, ``correlate``, ``pass-at-k``,
``report``, ``toy``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from tqdm import tqdm

from ._files import bar_off, json_text, write_csv, write_text
from ._settings import SettingError, flags_of
from ._version import __version__
from .analyses.ablation import AblateSettings, ablate
from .analyses.correlation import correlate, correlation_table
from .analyses.memorization import memorization, memorization_trace
from .analyses.passk import pass_at_k_table
from .analyses.toy import CONDITIONS, run_conditions, summary_table
from .backends import backends
from .demo import (
    DemoConfig,
    TraceDemoConfig,
    format_analyses,
    format_table,
    format_trace_table,
    run_analyses,
    run_demo,
    run_trace_demo,
)
from .models.data import load_texts
from .models.hub import grid, is_pattern, list_revisions
from .models.phases import phases
from .models.runs import status
from .models.scoring import load_causal_lm
from .models.settings import MemorizationSettings, TraceSettings
from .models.trace import trace
from .ngram.index import InfGramIndex, load_tokenizer
from .report import (
    plot_ablation,
    plot_pass_at_k,
    plot_trace,
    write_conditions,
    write_correlations,
    write_report,
    write_table,
)
from .spectral.files import file_metrics
from .spectral.metrics import DEFAULT_FIT_RANGE


def cmd_demo(args: argparse.Namespace) -> int:
    if args.synthetic:
        return _synthetic_demo(args)
    cfg = TraceDemoConfig(steps=args.steps, every=args.every, n_trace=args.n_trace, seed=args.seed,
                          threads=args.threads)
    result = run_trace_demo(cfg, args.out, progress=not args.quiet)
    print(format_trace_table(result))
    print(f"wrote {os.path.join(args.out, 'trace', 'trace.csv')}, {os.path.join(args.out, 'phases.csv')}, "
          + ", ".join(result["plots"]), flush=True)
    print(format_analyses(run_analyses(cfg, args.out, result, progress=not args.quiet)))
    md, page = write_report(args.out)
    print(f"report: {md} and {page} (open the HTML in a browser)")
    return 0


def _synthetic_demo(args: argparse.Namespace) -> int:
    cfg = DemoConfig(n=args.n, dim=args.dim, alpha=args.alpha, seed=args.seed, fit_range=tuple(args.fit_range))
    print(f"fastspec demo: {cfg.n} synthetic activations of dimension {cfg.dim}, power law alpha={cfg.alpha}, "
          f"{cfg.massive_columns} massive-mean columns (seed {cfg.seed})")
    result = run_demo(cfg, args.out)
    print(format_table(result))
    print(f"wrote {os.path.join(args.out, 'metrics.json')} and {result['plot']}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    checkpoints: list = args.checkpoints
    if args.revisions:
        if len(checkpoints) != 1:
            raise ValueError("--revisions takes exactly one model (a hub id or directory) before it")
        revisions = pool = args.revisions
        if len(revisions) == 1 and is_pattern(revisions[0]):
            revisions = pool = list_revisions(checkpoints[0], revisions[0])
        if args.grid is not None:  # --grid 0 is refused by grid(), not read as "no grid"
            revisions = grid(revisions, args.grid)
        candidates = [(checkpoints[0], r) for r in pool]
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"fastspec trace: {len(revisions)} revisions of {checkpoints[0]}: {' '.join(revisions)}", flush=True)
        checkpoints = [(checkpoints[0], r) for r in revisions]
    elif args.grid is not None or getattr(args, "refine", 0):
        raise ValueError("--grid and --refine pick among revisions: give one hub id with --revisions all (or a glob)")
    else:
        candidates = None
    frame = trace(checkpoints, args.data, args.out, settings=TraceSettings.from_args(args), candidates=candidates,
                  chosen_by="grid" if args.grid is not None else "given", progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(frame.drop(columns=["index", "alpha_error"]).to_string(index=False))
        for _, row in frame[frame["alpha_error"].notna()].iterrows():
            print(f"alpha is NaN for {row['checkpoint']} layer {row['layer']}: {row['alpha_error']}")
        for name, why in frame.attrs.get("left_to_other_jobs", {}).items():
            print(f"fastspec trace: {name}: {why}", file=sys.stderr)
        if frame.attrs.get("not_refined"):
            print(f"fastspec trace: not refining: {frame.attrs['not_refined']}", file=sys.stderr)
        if len(frame):
            print(f"wrote {os.path.join(args.out, 'trace.csv')}")
    return 0


#: ``fastspec status``'s exit status while the sweep is not complete (0 once it is; 2: an error).
STATUS_INCOMPLETE = 3


def cmd_status(args: argparse.Namespace) -> int:
    state = status(args.results)
    print(state.format())
    return 0 if state.complete else STATUS_INCOMPLETE


def cmd_plot(args: argparse.Namespace) -> int:
    layer = args.layer if args.layer == "last" else int(args.layer)
    out = args.out or args.results
    labelled = phases(args.results, layer=layer, warmup_steps=args.warmup_steps, tol=args.tol,
                      se_multiple=args.se_multiple)
    paths = plot_trace(args.results, out, phase_layer=layer, warmup_steps=args.warmup_steps, tol=args.tol,
                       se_multiple=args.se_multiple)
    csv = write_csv(labelled, os.path.join(out, "phases.csv"))
    print(labelled.to_string(index=False))
    print("wrote " + ", ".join([*paths, csv]))
    return 0


def cmd_spectrum(args: argparse.Namespace) -> int:
    fit_range = tuple(args.fit_range or DEFAULT_FIT_RANGE)
    out = file_metrics(args.file, key=args.key, fit_range=fit_range, nan_policy=args.nan_policy, progress=not args.quiet)
    if args.fit_range and out["alpha"] is None:  # asked for explicitly: not a result but an error
        raise ValueError(f"{args.file}: {out['alpha_error']}")
    if out.get("rank_limited"):
        print(f"fastspec spectrum: warning: {args.file}: {out['n_samples']} samples of dimension {out['dim']}: the "
              f"rank is at most {out['rank_bound']}, and so is RankMe; use more samples than dimensions",
              file=sys.stderr)
    if not args.eigenvalues:
        out.pop("eigenvalues")
    text = json_text(out)
    if args.out:
        write_text(args.out, text)
        if not args.quiet:
            print(f"wrote {args.out}", file=sys.stderr)
    print(text, end="")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    for name, info in backends().items():
        mark = "yes" if info["available"] else "no "
        print(f"{name:<13} {mark}  {info.get('detail') or info.get('reason')}")
    return 0


def _query_ids(args: argparse.Namespace, ids: Sequence[int] | None, text: str | None, flag: str) -> list[int]:
    if text is not None:
        if not args.tokenizer:
            raise ValueError(f"{flag} needs --tokenizer DIR")
        return list(load_tokenizer(args.tokenizer)(text, add_special_tokens=False)["input_ids"])
    return list(ids or [])


def _index(args: argparse.Namespace) -> Any:
    return InfGramIndex(args.index, token_width=args.token_width, vocab_size=args.vocab_size)


def cmd_index_build(args: argparse.Namespace) -> int:
    doc_lengths = None
    if args.doc_lengths:
        import numpy as np

        try:
            doc_lengths = np.load(args.doc_lengths, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise type(err)(f"{args.doc_lengths}: {err}") from err
    idx = InfGramIndex.build(args.corpus, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size, doc_lengths=doc_lengths,
                             token_width=args.token_width, memory_budget=args.memory_budget, threads=args.threads,
                             text_split=args.text_split, progress=not args.quiet, overwrite=args.overwrite,
                             shard=args.shard)
    print(json.dumps(idx.info, indent=1))
    return 0


def cmd_index_combine(args: argparse.Namespace) -> int:
    idx = InfGramIndex.combine(args.out, args.shard_dirs, copy=args.copy, overwrite=args.overwrite)
    print(json.dumps(idx.info, indent=1))
    return 0


def cmd_index_verify(args: argparse.Namespace) -> int:
    checked = _index(args).verify()
    # a fastspec index without its checksums is an error raised by verify(); only infini-gram's have none
    how = (f"{checked['checksums']} files match their build-time checksums" if checked["checksums"] is not None
           else "an infini-gram index (it has no checksums to check)")
    print(f"{args.index}: ok: {how}; structure verified")
    return 0


def cmd_index_count(args: argparse.Namespace) -> int:
    ids = _query_ids(args, args.ids, args.text, "--text")
    idx = _index(args)
    print(json.dumps({"ids": ids, "count": idx.count(ids)}))
    return 0


def cmd_index_prob(args: argparse.Namespace) -> int:
    context = _query_ids(args, args.context, args.context_text, "--context-text")
    idx = _index(args)
    ngram = idx.prob(context, args.token)
    inf = idx.infgram_prob(context, args.token)
    nan_to_none = lambda v: None if v != v else v  # noqa: E731  (JSON has no NaN)
    print(json.dumps({"context": context, "token": args.token,
                      "prob": nan_to_none(ngram.prob), "context_count": ngram.context_count, "count": ngram.count,
                      "infgram_prob": inf.prob, "effective_n": inf.effective_n,
                      "infgram_context_count": inf.context_count, "infgram_count": inf.count}, indent=1))
    return 0


def cmd_memorization(args: argparse.Namespace) -> int:
    settings = MemorizationSettings.from_args(args)
    if args.checkpoints:
        if not args.out:
            raise ValueError("--checkpoints needs --out RESULTS_DIR (memorization.csv and the per-checkpoint files)")
        frame = memorization_trace(args.checkpoints, args.items, args.index, args.out, settings=settings,
                                   progress=not args.quiet)
        print(frame.to_string(index=False))
        print(f"wrote {os.path.join(args.out, 'memorization.csv')}, {os.path.join(args.out, 'suffix_lengths.csv')}")
        return 0
    # the items as their file: errors name its lines
    res = memorization(args.items, args.index, args.model, args.tokenizer, settings=settings)
    text = json_text(res.to_dict())  # strict JSON: a −∞ score (rule "all") is null
    if args.out:
        write_text(args.out, text)
    print(text, end="")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    settings = AblateSettings.from_args(args)  # checked before the model loads
    sample = TraceSettings.from_args(args)  # the basis texts: --n-texts, --seed, --text-field
    model, tok = load_causal_lm(args.model, args.tokenizer)
    if args.device:
        model = model.to(args.device)
    texts = load_texts(args.basis_data, n=sample.n, seed=sample.seed, text_field=sample.text_field)
    frame = ablate(model, args.items, texts, tok, settings=settings, progress=not args.quiet)
    csv, md = write_table(frame, args.out, "ablation", title=f"Top-k eigenvector ablation, layer {frame.attrs['layer']}")
    png = plot_ablation(frame, os.path.join(args.out, "ablation.png"))
    print(frame.to_string(index=False))
    print(f"chance {frame.attrs['chance']:.3f}; basis: {frame.attrs['basis_samples']} texts, d={frame.attrs['dim']}")
    print(f"wrote {csv}, {md}, {png}")
    return 0


def cmd_correlate(args: argparse.Namespace) -> int:
    layer = args.layer if args.layer == "last" else int(args.layer)
    frame = correlate(args.geometry, args.scores, metrics=args.metrics, on=args.on, layer=layer,
                      score_columns=args.columns)
    for side in ("only_in_geometry", "only_in_scores"):
        if frame.attrs[side]:
            print(f"note: {args.on} {frame.attrs[side]} appear {side.replace('_', ' ')} and are left out", file=sys.stderr)
    print(correlation_table(frame).to_string(index=False))
    print("wrote " + ", ".join(write_correlations(frame, args.out)))
    return 0


def cmd_pass_at_k(args: argparse.Namespace) -> int:
    frame = pass_at_k_table(args.table, args.k, by=args.by, problem=args.problem)
    print(frame.to_string(index=False))
    paths = list(write_table(frame, args.out, "pass_at_k", title="pass@k"))
    if args.by:
        paths.append(plot_pass_at_k(frame, args.by, os.path.join(args.out, "pass_at_k.png")))
    print("wrote " + ", ".join(paths))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print("wrote " + ", ".join(write_report(args.results)))
    return 0


def cmd_toy(args: argparse.Namespace) -> int:
    with tqdm(total=len(CONDITIONS) * args.steps, unit="step", desc="toy", disable=bar_off(not args.quiet)) as bar:
        options = {k: getattr(args, k) for k in ("init", "smoothing", "instances") if getattr(args, k) is not None}
        runs = run_conditions(steps=args.steps, seed=args.seed, width=args.width, classes=args.classes,
                              on_step=bar.update, **options)
    csv, png = write_conditions(runs, args.out, tol=args.tol)
    attrs = next(iter(runs.values())).attrs
    print(f"fastspec toy: d={args.width}, C={args.classes}, {args.steps} steps, seed {args.seed}, {attrs['init']} init, "
          f"smoothing {attrs['smoothing']:g}; compression = RankMe falls > {args.tol:.0%} from its peak while α rises")
    print(summary_table(runs, tol=args.tol).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {csv}, {png}")
    return 0


def _add_demo(sub: Any) -> None:
    """The subcommands of the demo."""
    demo = sub.add_parser("demo", help="train a tiny LM here, trace its checkpoints, label the phases and plot")
    demo.add_argument("--out", default="fastspec-demo", help="directory for the model, the trace and the figures")
    defaults = TraceDemoConfig()
    demo.add_argument("--steps", type=int, default=defaults.steps, help="training steps of the tiny LM")
    demo.add_argument("--every", type=int, default=defaults.every,
                      help="checkpoint spacing after the log-spaced start (0, 1, 2, 4, …)")
    demo.add_argument("--n-trace", type=int, default=defaults.n_trace, help="held-out sequences traced per checkpoint")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=defaults.threads,
                      help="torch threads while training (1 is faster when another job shares the cores)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--synthetic", action="store_true",
                      help="instead: synthetic activations with a known power-law spectrum (options below)")
    demo.add_argument("--n", type=int, default=15000, help="--synthetic: number of samples (rows)")
    demo.add_argument("--dim", type=int, default=1024, help="--synthetic: feature dimension")
    demo.add_argument("--alpha", type=float, default=1.0, help="--synthetic: power-law exponent of the construction")
    demo.add_argument("--fit-range", type=int, nargs=2, default=DEFAULT_FIT_RANGE, metavar=("START", "STOP"))
    demo.set_defaults(func=cmd_demo)


def _add_trace(sub: Any) -> None:
    """The subcommands of trace and plot."""
    tr = sub.add_parser("trace", help="RankMe and alpha of every layer of every checkpoint (Hugging Face models)")
    tr.add_argument("checkpoints", nargs="+", help="local directories or hub ids (id@revision), in training order")
    tr.add_argument("--revisions", nargs="+",
                    help="revisions of the one model given (e.g. step1000 step2000); 'all' lists the hub "
                         "repository's branches that name a step, ordered by it; a glob ('step*000') filters them")
    tr.add_argument("--grid", type=int, metavar="N",
                    help="of the revisions listed, keep N evenly spaced in step (first and last included); with "
                         "--refine M, refinements pick among all of those listed")
    tr.add_argument("--data", required=True, help=".txt (one document per line), .jsonl or .parquet")
    tr.add_argument("--out", required=True, help="results directory (an interrupted run resumes there)")
    TraceSettings.add_arguments(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=cmd_trace)

    st = sub.add_parser("status", help="where a trace's sweep stands: per checkpoint done, running (host, pid, since), "
                                       "failed (the error) or pending; tokens/s and the time left. Exit status 0 "
                                       "when complete, 3 when not")
    st.add_argument("results", help="a results directory of fastspec trace (jobs may be writing into it)")
    st.set_defaults(func=cmd_status)

    pl = sub.add_parser("plot", help="figures and phase labels of a trace results directory")
    pl.add_argument("results", help="a directory written by fastspec trace")
    pl.add_argument("--out", help="where the PNGs and phases.csv go (default: the results directory)")
    pl.add_argument("--layer", default="last", help="layer whose trajectory sets the phases (default: last)")
    pl.add_argument("--warmup-steps", type=int, help="learning-rate warmup steps (label them warmup)")
    pl.add_argument("--tol", type=float, default=0.1, help="relative RankMe move that starts a new phase")
    pl.add_argument("--se-multiple", type=float,
                    help="a new phase also needs a move beyond this many jackknife SEs (a trace made with --folds)")
    pl.set_defaults(func=cmd_plot)


def _add_spectrum(sub: Any) -> None:
    """The subcommands of spectrum and backends."""
    spec = sub.add_parser("spectrum", help="metrics of activations stored in a .npy, .pt or .safetensors file")
    spec.add_argument("file")
    spec.add_argument("--key", help="tensor name, when the file holds several")
    spec.add_argument("--out", help="also write the JSON to this file")
    spec.add_argument("--fit-range", type=int, nargs=2, metavar=("START", "STOP"),
                      help="0-based [start, stop) of the alpha fit (default 11 100, reported as null with "
                           "the reason when the spectrum is shorter; Reptrix: 10 100)")
    spec.add_argument("--nan-policy", choices=("raise", "omit"), default="raise")
    spec.add_argument("--eigenvalues", action="store_true", help="include the eigenvalues in the JSON")
    spec.add_argument("--quiet", action="store_true", help="no progress bar")
    spec.set_defaults(func=cmd_spectrum)

    be = sub.add_parser("backends", help="what this install can do, and why not where it cannot")
    be.set_defaults(func=cmd_backends)


def _add_index(sub: Any) -> None:
    """The subcommands of the ∞-gram index."""
    index = sub.add_parser("index", help="∞-gram suffix-array index: build one, count n-grams, n-gram and ∞-gram probabilities")
    isub = index.add_subparsers(dest="index_command", required=True)
    ib = isub.add_parser("build", help="index a corpus: .npy token ids, or text files with --tokenizer")
    ib.add_argument("corpus", help=".npy file of token ids, or a text/.jsonl file or directory")
    ib.add_argument("out", help="index directory to write")
    ib.add_argument("--tokenizer", help="local Hugging Face tokenizer directory (text corpora)")
    ib.add_argument("--doc-lengths", help=".npy of document lengths splitting a 1-D token .npy (default: one document, "
                                          "or one per row of a 2-D array)")
    ib.add_argument("--vocab-size", type=int)
    ib.add_argument("--token-width", type=int, choices=(2, 4))
    ib.add_argument("--memory-budget", help="bytes for building, e.g. 4G (default: half of physical memory)")
    ib.add_argument("--threads", type=int, default=2, help="shards built at once")
    ib.add_argument("--text-split", choices=("line", "file"), default="line", help="a document per line or per file")
    ib.add_argument("--overwrite", action="store_true")
    ib.add_argument("--quiet", action="store_true", help="no progress bar")
    ib.add_argument("--shard", metavar="I/N", help="index only shard I of N of the corpus split by document (document "
                                                  "d in shard d mod N), for `fastspec index combine`")
    ib.set_defaults(func=cmd_index_build)
    ic = isub.add_parser("combine", help="one index of the shard directories built with --shard I/N (files moved, "
                                         "not rebuilt)")
    ic.add_argument("out", help="index directory to write")
    ic.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR", help="every shard directory of the split")
    ic.add_argument("--copy", action="store_true", help="copy the files (the shard directories stay) instead of "
                                                         "moving them")
    ic.add_argument("--overwrite", action="store_true")
    ic.set_defaults(func=cmd_index_combine)
    iv = isub.add_parser("verify", help="check every file of an index against its build-time checksums, and its "
                                        "structure (exit 2 naming a damaged file)")
    iv.add_argument("index", help="index directory (fastspec's or infini-gram's)")
    iv.add_argument("--token-width", type=int, choices=(2, 4), help="infini-gram indexes: token width in bytes")
    iv.add_argument("--vocab-size", type=int, help="infini-gram indexes: ids allowed below this")
    iv.set_defaults(func=cmd_index_verify)
    for name, helptext in (("count", "occurrences of an n-gram"), ("prob", "n-gram and ∞-gram probability of a token")):
        q = isub.add_parser(name, help=helptext)
        q.add_argument("index", help="index directory (fastspec's or infini-gram's)")
        q.add_argument("--tokenizer", help="local Hugging Face tokenizer directory, for text queries")
        q.add_argument("--token-width", type=int, choices=(2, 4), help="infini-gram indexes: token width in bytes")
        q.add_argument("--vocab-size", type=int, help="infini-gram indexes: ids allowed below this")
        if name == "count":
            q.add_argument("ids", type=int, nargs="*", help="token ids of the n-gram")
            q.add_argument("--text", help="the n-gram as text (needs --tokenizer)")
            q.set_defaults(func=cmd_index_count)
        else:
            q.add_argument("--context", type=int, nargs="*", default=[], help="token ids of the context")
            q.add_argument("--context-text", help="the context as text (needs --tokenizer)")
            q.add_argument("--token", type=int, required=True, help="the next token's id")
            q.set_defaults(func=cmd_index_prob)


def _add_memorization(sub: Any) -> None:
    """The subcommands of memorization and ablation."""
    mem = sub.add_parser("memorization", help="distributional memorization (Wang et al.): Spearman of ∞-gram vs model scores")
    mem.add_argument("--index", required=True, help="∞-gram index directory of the pretraining corpus")
    who = mem.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="local Hugging Face causal LM directory")
    who.add_argument("--checkpoints", nargs="+", help="checkpoints to score in turn (directories or hub/id@revision); "
                                                       "--out is then a results directory, resumable")
    mem.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    mem.add_argument("--items", required=True, help='.jsonl of {"prompt": ..., "output": ...}')
    MemorizationSettings.add_arguments(mem)
    mem.add_argument("--out", help="also write the JSON to this file (--checkpoints: the results directory)")
    mem.add_argument("--quiet", action="store_true", help="no progress bar")
    mem.set_defaults(func=cmd_memorization)

    ab = sub.add_parser("ablate", help="multiple-choice accuracy with the top-k eigenvectors of a layer retained or removed")
    ab.add_argument("model", help="local Hugging Face causal LM directory")
    ab.add_argument("--items", required=True, help='.jsonl of {"question": ..., "choices": [...], "answer": index}')
    ab.add_argument("--basis-data", required=True, help="texts whose last-token covariance gives the eigenvectors "
                                                        "(.txt, .jsonl or .parquet)")
    TraceSettings.add_arguments(ab, only=("n", "seed", "text_field"),
                                help={"n": "basis texts sampled from --basis-data (default: all)"})
    ab.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    AblateSettings.add_arguments(ab)
    ab.add_argument("--device", help="torch device (default: where the model loads)")
    ab.add_argument("--out", default="fastspec-ablation", help="directory for ablation.csv/.md/.png")
    ab.add_argument("--quiet", action="store_true", help="no progress bars")
    ab.set_defaults(func=cmd_ablate)


def _add_analyses(sub: Any) -> None:
    """The subcommands of the other analyses."""
    co = sub.add_parser("correlate", help="Pearson/Spearman (with p-values) of RankMe/alpha with per-checkpoint scores")
    co.add_argument("geometry", help="trace results directory, or a CSV with a step column")
    co.add_argument("scores", help="CSV with a step column and one column per score")
    co.add_argument("--metrics", nargs="+", default=["rankme", "alpha"], help="geometry columns")
    co.add_argument("--columns", nargs="+", help="score columns (default: every numeric one)")
    co.add_argument("--layer", default="last", help="layer index or 'last'")
    co.add_argument("--on", default="step", help="the column that matches checkpoints")
    co.add_argument("--out", default=".", help="directory for correlations.csv and correlations.md")
    co.set_defaults(func=cmd_correlate)

    pk = sub.add_parser("pass-at-k", help="unbiased pass@k (Chen et al.) from per-problem counts or per-sample results")
    pk.add_argument("table", help="CSV with columns n, c (per problem) or problem, correct (per sample)")
    pk.add_argument("--k", type=int, nargs="+", default=[1, 16, 256])
    pk.add_argument("--by", nargs="+", help="columns to group by (e.g. step); with one, pass@k is plotted against it")
    pk.add_argument("--problem", default="problem", help="the problem column of a per-sample table")
    pk.add_argument("--out", default=".", help="directory for pass_at_k.csv/.md (and .png)")
    pk.set_defaults(func=cmd_pass_at_k)

    rp = sub.add_parser("report", help="one Markdown + HTML page of a results directory's figures and tables")
    rp.add_argument("results", help="results directory (a trace, and what correlate/ablate/toy/pass-at-k wrote there)")
    rp.set_defaults(func=cmd_report)

    sub.add_parser("lm-eval", add_help=False,
                   help="lm-eval-harness's command line with the fastspec-ablate model type (top-k eigenvector "
                        "ablation) registered: fastspec lm-eval --model fastspec-ablate --model_args "
                        "pretrained=DIR,layer=-1,k=10,mode=retain,basis=FILE --tasks ...")

    toy = sub.add_parser("toy", help="the paper's toy model: a linear bottleneck on power-law classes, and its controls")
    toy.add_argument("--out", default="fastspec-toy", help="directory for toy.csv and toy.png")
    toy.add_argument("--steps", type=int, default=4000, help="gradient-descent steps of each of the four runs")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--width", type=int, default=8, help="bottleneck width d of the main run (the d=C control uses C)")
    toy.add_argument("--classes", type=int, default=128, help="number of classes C")
    toy.add_argument("--tol", type=float, default=0.03, help="relative RankMe fall from the peak that counts as compression")
    toy.add_argument("--init", choices=["gaussian", "balanced"], default=None,
                     help="initial weights: i.i.d. Gaussian (default) or balanced, WWᵀ = VᵀV (Appendix B)")
    toy.add_argument("--smoothing", type=float, default=None,
                     help="weight s of the class prior in each context's target (default 0.2; 0: hard labels)")
    toy.add_argument("--instances", type=int, default=None,
                     help="fixed class sizes max(1, round(instances·c^-1)) instead of 256 contexts drawn at random")
    toy.add_argument("--quiet", action="store_true", help="no progress bar")
    toy.set_defaults(func=cmd_toy)


def build_parser() -> argparse.ArgumentParser:
    """The ``fastspec`` command line; trace's and memorization's options are generated from
    their settings (:mod:`fastspec.models.settings`)."""
    parser = argparse.ArgumentParser(prog="fastspec", description="Eigenspectra, RankMe and alpha of representations.")
    parser.add_argument("--version", action="version", version=f"fastspec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_trace, _add_spectrum, _add_index, _add_memorization, _add_analyses):
        add(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    # `index count IDX --token-width 2 1`: argparse ends the ids at the option, so ids after
    # it come back unparsed; they are ids all the same.
    if extra and getattr(args, "func", None) is cmd_index_count and all(_is_int(e) for e in extra):
        args.ids = [*(args.ids or []), *(int(e) for e in extra)]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def cmd_lm_eval(argv: Sequence[str]) -> int:
    """lm-eval-harness's own command line with fastspec's ``fastspec-ablate`` model type registered.

    A bad argument that gets past lm-eval's parser (an ill-formed or unknown ``--model_args``
    entry, a basis file that is missing or of the wrong kind, a model that does not load) is
    one ``error:`` line and exit status 2, as for fastspec's other commands, not a traceback;
    lm-eval's own parser errors exit 2 already."""
    try:
        from .integrations.lm_eval import main as lm_eval_main
    except ImportError as err:
        print(f"fastspec lm-eval: error: {err}", file=sys.stderr)
        return 2
    try:
        lm_eval_main(list(argv))
    except (ValueError, TypeError, KeyError, OSError, NotImplementedError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        # One line: some of lm-eval's and transformers' messages span several.
        text = " ".join(line.strip() for line in str(msg).splitlines() if line.strip())
        print(f"fastspec lm-eval: error: {text or type(err).__name__}", file=sys.stderr)
        return 2
    return 0


#: The commands that pick up where an interrupted run of them stopped.
RESUMABLE = ("demo", "trace", "memorization")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lm-eval"]:  # every argument after it is lm-eval's, parsed by lm-eval
        return cmd_lm_eval(argv[1:])
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, OSError, OverflowError, NotImplementedError) as err:
        # A fault in a setting names its flag (SettingError); others say what they say.
        msg = err.render(flags_of(parser, args.command)) if isinstance(err, SettingError) else \
            err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"fastspec {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "; run the same command again to resume where it stopped" if args.command in RESUMABLE else ""
        print(f"\nfastspec {args.command}: interrupted (what was finished is kept{again})", file=sys.stderr)
        return 130  # the shell's status for a process ended by SIGINT
    except MemoryError as err:
        print(f"fastspec {args.command}: error: out of memory{': ' + str(err) if str(err) else ''} "
              "(a smaller --batch-size, --memory-budget or input helps)", file=sys.stderr)
        return 2
