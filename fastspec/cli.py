"""The ``fastspec`` command line: ``demo``, ``spectrum FILE``, ``backends``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from tqdm import tqdm


def _fit_range(values: Sequence[int]) -> tuple[int, int]:
    return (int(values[0]), int(values[1]))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, format_table, run_demo

    cfg = DemoConfig(n=args.n, dim=args.dim, alpha=args.alpha, seed=args.seed, fit_range=_fit_range(args.fit_range))
    print(f"fastspec demo: {cfg.n} synthetic activations of dimension {cfg.dim}, power law alpha={cfg.alpha}, "
          f"{cfg.massive_columns} massive-mean columns (seed {cfg.seed})")
    result = run_demo(cfg, args.out)
    print(format_table(result))
    print(f"wrote {os.path.join(args.out, 'metrics.json')} and {result['plot']}")
    return 0


def file_metrics(path: str, *, key: str | None = None, fit_range: tuple[int, int] = (11, 100),
                 nan_policy: str = "raise", progress: bool = True) -> dict[str, Any]:
    """Metrics of the activations stored in ``path``, streamed block by block."""
    from .io import open_activations

    src = open_activations(path, key)
    try:
        out = _source_metrics(src, fit_range, nan_policy, progress)
    except (ValueError, OverflowError) as err:  # name the file the fault is in
        raise type(err)(f"{src.name}: {err}") from err
    return {"file": path, "key": src.key, **out}


def _source_metrics(src: Any, fit_range: tuple[int, int], nan_policy: str, progress: bool) -> dict[str, Any]:
    from .accumulator import CovarianceAccumulator, chunk_rows
    from .metrics import rankme
    from .spectrum import spectrum, summarize

    n, d = src.shape
    if n < d:  # the Gram path needs all rows at once; N < d keeps that within O(d²)
        x = src.read(0, n)
        centred = spectrum(x, nan_policy=nan_policy)
        out = centred.to_dict(fit_range=fit_range)
        out["rankme_sv"] = rankme(spectrum(x, center=False, nan_policy=nan_policy), convention="sv")
    else:
        acc = CovarianceAccumulator(d, nan_policy=nan_policy)
        rows = chunk_rows(d)
        with tqdm(total=n, unit="row", desc=os.path.basename(src.path), disable=not progress) as bar:
            for block in src.blocks(rows):
                acc.update(block)
                bar.update(block.shape[0])
        out = summarize(acc, fit_range=fit_range)
    return out


def cmd_spectrum(args: argparse.Namespace) -> int:
    fit_range = _fit_range(args.fit_range or (11, 100))
    out = file_metrics(args.file, key=args.key, fit_range=fit_range, nan_policy=args.nan_policy, progress=not args.quiet)
    if args.fit_range and out["alpha"] is None:  # asked for explicitly: not a result but an error
        raise ValueError(f"{args.file}: {out['alpha_error']}")
    if not args.eigenvalues:
        out.pop("eigenvalues")
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
        if not args.quiet:
            print(f"wrote {args.out}", file=sys.stderr)
    print(text)
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from .backends import backends

    for name, info in backends().items():
        mark = "yes" if info["available"] else "no "
        print(f"{name:<13} {mark}  {info.get('detail') or info.get('reason')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastspec", description="Eigenspectra, RankMe and alpha of representations.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="measure synthetic activations with a known power-law spectrum")
    demo.add_argument("--out", default="fastspec-demo", help="directory for metrics.json and spectrum.png")
    demo.add_argument("--n", type=int, default=15000, help="number of samples (rows)")
    demo.add_argument("--dim", type=int, default=1024, help="feature dimension")
    demo.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the construction")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--fit-range", type=int, nargs=2, default=(11, 100), metavar=("START", "STOP"))
    demo.set_defaults(func=cmd_demo)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, OSError, OverflowError, NotImplementedError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"fastspec {args.command}: error: {msg}", file=sys.stderr)
        return 2
