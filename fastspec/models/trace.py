"""Trace RankMe and α across a model's checkpoints and layers, written as it goes.

A results directory holds:

- ``config.json``: the run's settings, the data sample's SHA-256, fastspec's, torch's and
  transformers' versions. A second run into the same directory must agree with it on every
  setting that changes a number, or it is refused (start a new directory instead).
- ``checkpoints/<name>.npz``: per layer, the centred spectrum and the raw (uncentred) one.
- ``checkpoints/<name>.json``: per layer, RankMe (both conventions), α with its fit, n, d;
  and the checkpoint's step, timings and tokens/s. Written last and atomically: its presence
  means the checkpoint is done, so an interrupted run started again skips it and continues.
- ``trace.csv``: one row per (checkpoint, layer), rewritten after every checkpoint.
- ``checkpoints/<name>.partial.pt`` (while a checkpoint is being traced): every ``save_every``
  batches, the layers' accumulator states and the position in the data. A run killed there
  resumes from it, with results identical to an uninterrupted run's; it is deleted once the
  checkpoint's results are written.

Under ``torchrun --nproc-per-node K``, every rank takes every K-th batch, the accumulators
are all-reduced (exact: Chan's merge), and rank 0 writes.

Hub checkpoints (``"org/name@revision"``) are fetched by :class:`fastspec.models.hub.Downloads`:
the next ``prefetch`` download while the current one is traced, and with ``evict`` a traced
checkpoint's files leave the Hugging Face cache (rank 0 downloads and evicts; the other ranks
wait for it). Each record holds the commit its revision resolved to; a resumed run whose
revision now resolves to another commit is refused rather than mixed.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .._files import remove_stale, replacing, write_csv, write_json
from .._version import __version__
from ..spectral.eigen import metrics_of
from ..spectral.metrics import check_fit_range
from .checkpoints import DTYPES, Checkpoint, as_checkpoint, load_checkpoint
from .data import load_texts, sample_texts, texts_digest
from .extract import DEFAULT_MAX_LENGTH, extract
from .hub import Downloads, list_revisions, resolve

CONFIG_FILE = "config.json"
CKPT_DIR = "checkpoints"
TABLE_FILE = "trace.csv"
#: Settings that change the numbers: a resumed run must match them.
RESULT_SETTINGS = ("data_sha256", "n_texts", "layers", "pooling", "max_length", "batch_size", "final_norm",
                   "dtype", "fit_range", "padding_side", "folds")
#: Every this many batches, a checkpoint's partial state is saved (a few minutes of work on a
#: GPU: 8000 texts at the default batch size).
DEFAULT_SAVE_EVERY = 500
PARTIAL_FORMAT = "fastspec.trace.partial/1"
#: What a setting added later meant for results written before it existed.
SETTING_DEFAULTS = {"folds": 1}


def _distributed() -> tuple[int, int]:
    """(rank, world) under torchrun (initialising the process group if needed), else (0, 1)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_config(out_dir: str, config: dict[str, Any]) -> None:
    path = os.path.join(out_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as fh:
            old = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the existing run's configuration: {err}") from err
    diff = {k: (old.get(k, SETTING_DEFAULTS.get(k)), config[k]) for k in RESULT_SETTINGS
            if old.get(k, SETTING_DEFAULTS.get(k)) != config[k]}
    if diff:
        details = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"{out_dir} holds a trace made with other settings ({details}); "
                         f"resume with the same settings or use a new directory")


def trace(
    checkpoints: Sequence[Any],
    data: str | os.PathLike | Sequence[str],
    out_dir: str | os.PathLike,
    *,
    n: int | None = None,
    seed: int = 0,
    text_field: str = "text",
    layers: str | Sequence[int] = "all",
    pooling: str | int = "last",
    max_length: int | str | None = "auto",
    batch_size: int = 16,
    final_norm: bool | None = None,
    padding_side: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
    fit_range: tuple[int, int] = (11, 100),
    trust_remote_code: bool = False,
    progress: bool = True,
    folds: int = 1,
    prefetch: int | None = None,
    evict: bool = False,
    labels: Sequence[str] | None = None,
    save_every: int | None = DEFAULT_SAVE_EVERY,
    refine: int = 0,
    candidates: Sequence[Any] | None = None,
    chosen_by: str = "given",
) -> Any:
    """Trace every checkpoint's per-layer spectrum, RankMe (both conventions) and α into
    ``out_dir`` (layout in this module's docstring) and return :func:`load_trace` of it.

    ``checkpoints``: local directories, ``"hub/id@revision"`` strings or (id, revision)
    pairs, in training order. ``data``: a ``.txt``/``.jsonl``/``.parquet`` file (``n``
    documents sampled with ``seed``; all when None) or a list of texts. The remaining
    arguments are :func:`fastspec.extract`'s. Done checkpoints are skipped, so an
    interrupted run continues where it stopped and gives identical results. ``prefetch``
    (default 1) hub checkpoints download ahead of the one being traced; ``evict`` deletes
    each one's downloaded files from the Hugging Face cache once its results are written.
    ``labels``: one name per checkpoint (``base``, ``sft``, ``dpo``, ``rlvr`` for stages that
    have no training step), kept in ``load_trace``'s ``label`` column and on the plots' axes.
    ``save_every``: every this many batches the layers' accumulator states and the position
    in the data are saved beside the results (``checkpoints/<name>.partial.pt``), so that a
    run killed inside a checkpoint resumes there with results identical to an uninterrupted
    run's (None: never; the state is L·d² float64 per layer and fold).
    ``refine=M``: then up to M more checkpoints from ``candidates`` (default: every branch of
    the one hub repository traced that names a step), one at a time, each bisecting the
    interval between traced checkpoints where the last traced layer's RankMe or α is least
    resolved (one with a change of direction across it first, then the largest change,
    relative to the metric's range), at the candidate nearest its middle step. ``chosen_by``
    records how the given checkpoints were chosen (``"given"``, ``"grid"``); refinements are
    ``"refine"`` (``load_trace``'s ``chosen_by`` column).
    """
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be a non-negative number of checkpoints, got {refine!r}")
    if save_every is not None and (isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1):
        raise ValueError(f"save_every must be a positive number of batches or None, got {save_every!r}")
    ckpts = [as_checkpoint(c) for c in checkpoints]
    if not ckpts:
        raise ValueError("no checkpoints to trace")
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != len(ckpts) or len(set(labels)) != len(labels):
            raise ValueError(f"labels: one distinct label per checkpoint, got {len(labels)} label(s) "
                             f"({', '.join(labels)}) for {len(ckpts)} checkpoint(s)")
    seen: dict[str, str] = {}
    for c in ckpts:
        if c.identity in seen:
            same = "" if seen[c.identity] == c.label else f" (as {seen[c.identity]} and {c.label})"
            raise ValueError(f"checkpoint {c.identity} is listed twice{same}")
        seen[c.identity] = c.label
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    fit_range = check_fit_range(fit_range)
    if isinstance(data, (str, os.PathLike)):
        texts, data_name = load_texts(data, n, seed=seed, text_field=text_field), os.fspath(data)
    else:
        texts, data_name = sample_texts(list(data), n, seed=seed, source="the texts given"), "<texts>"
    rank, world = _distributed()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    out_dir = os.fspath(out_dir)
    config = {
        "data": data_name, "data_sha256": texts_digest(texts), "n_texts": len(texts), "n": n, "seed": seed,
        "layers": layers if isinstance(layers, str) else list(layers), "pooling": pooling, "max_length": max_length,
        "batch_size": batch_size, "final_norm": final_norm, "padding_side": padding_side, "dtype": dtype,
        "fit_range": list(fit_range), "device": str(device), "world_size": world, "folds": int(folds),
        "save_every": save_every,
        "fastspec": __version__, "torch": torch.__version__, "transformers": _transformers_version(),
    }
    ckpt_dir = os.path.join(out_dir, CKPT_DIR)
    records = _records(out_dir) if os.path.isdir(ckpt_dir) else []
    # The settings bind once a checkpoint's results exist; a run that failed before that
    # (a bad max_length, say) leaves nothing to be consistent with.
    if records:
        check_config(out_dir, config)
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        for stale in (ckpt_dir, out_dir):  # what a killed run was writing
            remove_stale(stale)
        if not records:
            write_json(os.path.join(out_dir, CONFIG_FILE), config)
    # Done by identity, not by the name given: ck/step2/ after ck/step2 is the same checkpoint.
    done = {_record_identity(r): r for r in records}
    moved = _shared(_moved_commits([c for c in ckpts if c.identity in done and c.on_hub], done, out_dir)
                    if rank == 0 else None, world)
    if moved:  # every rank stops, not rank 0 alone
        raise ValueError(moved)
    todo = [(i, c) for i, c in enumerate(ckpts) if c.identity not in done]
    show = progress and rank == 0
    if show and len(todo) < len(ckpts):
        tqdm.write(f"fastspec trace: {len(ckpts) - len(todo)} of {len(ckpts)} checkpoints already in {out_dir}, skipped")
    # rank 0 downloads (and evicts); the others wait for the files (its threads start on first use)
    downloads = Downloads(prefetch=1 if prefetch is None else prefetch, evict=evict) if rank == 0 else None
    try:
        for pos, (index, ckpt) in enumerate(tqdm(todo, desc="checkpoints", unit="ckpt", disable=not show)):
            fetched, waited = None, time.perf_counter()
            if ckpt.on_hub:
                upcoming = [c for _, c in todo[pos + 1:] if c.on_hub]
                fetched = _shared(downloads.fetch(ckpt, upcoming) if downloads is not None else None, world)
            waited = time.perf_counter() - waited
            _trace_one(index, ckpt, texts, ckpt_dir, config, rank, world, device, trust_remote_code, show, fetched,
                       waited, labels[index] if labels is not None else None, chosen_by)
            if rank == 0:
                write_table(out_dir)
                if downloads is not None and downloads.release(ckpt) and show:
                    tqdm.write(f"fastspec trace: {ckpt.label}: traced, its files evicted from the Hugging Face cache")
        if refine:
            pool = _candidates(ckpts, candidates)
            left = refine - (int((load_trace(out_dir).drop_duplicates("checkpoint")["chosen_by"] == "refine").sum())
                             if rank == 0 else 0)
            for extra in range(max(_shared(left, world), 0)):
                nxt = _shared(next_refinement(load_trace(out_dir), pool) if rank == 0 else None, world)
                if nxt is None:
                    break
                if show:
                    tqdm.write(f"fastspec trace: refining with {nxt.label}")
                fetched = _shared(downloads.fetch(nxt) if downloads is not None and nxt.on_hub else None, world)
                _trace_one(len(ckpts) + extra, nxt, texts, ckpt_dir, config, rank, world, device, trust_remote_code,
                           show, fetched, 0.0, None, "refine")
                if rank == 0:
                    write_table(out_dir)
                    if downloads is not None:
                        downloads.release(nxt)
    finally:
        if downloads is not None:
            downloads.close()
    return load_trace(out_dir)


def _candidates(ckpts: Sequence[Checkpoint], candidates: Sequence[Any] | None) -> list[Checkpoint]:
    if candidates is not None:
        return [as_checkpoint(c) for c in candidates]
    repos = {c.source for c in ckpts}
    if len(repos) != 1 or not all(c.on_hub for c in ckpts):
        raise ValueError("refine picks among candidate checkpoints: pass candidates=[...] (the default, every "
                         "stepped branch of the repository, needs the checkpoints to be revisions of one hub id)")
    repo = repos.pop()
    return [Checkpoint(repo, r) for r in list_revisions(repo, "all")]


def next_refinement(frame: Any, candidates: Sequence[Checkpoint]) -> Checkpoint | None:
    """The candidate that best resolves the last traced layer's trajectory (see :func:`trace`'s
    ``refine``), or None when no interval between traced checkpoints has one inside."""
    last = frame[frame["layer"] == frame["layer"].max()].dropna(subset=["step"]).sort_values("step")
    steps = last["step"].to_numpy(dtype=np.float64)
    traced = set(frame["checkpoint"])
    free = [c for c in candidates if c.step is not None and c.label not in traced]
    best: tuple[tuple[bool, float], Checkpoint] | None = None
    for i in range(len(steps) - 1):
        inside = [c for c in free if steps[i] < c.step < steps[i + 1]]
        if not inside:
            continue
        turn, size = False, 0.0
        for metric in ("rankme", "alpha"):
            y = last[metric].to_numpy(dtype=np.float64)
            if not np.isfinite(y).all() or np.ptp(y) == 0:
                continue
            d = np.diff(y)
            # the slopes on either side point opposite ways: the trajectory turns across this interval
            turn |= bool(0 < i < len(d) - 1 and d[i - 1] * d[i + 1] < 0)
            size = max(size, abs(d[i]) / np.ptp(y))
        mid = (steps[i] + steps[i + 1]) / 2
        pick = min(inside, key=lambda c: (abs(c.step - mid), c.step))
        if best is None or (turn, size) > best[0]:
            best = ((turn, size), pick)
    return best[1] if best else None


def _shared(value: Any, world: int) -> Any:
    """Rank 0's ``value`` on every rank (torch.distributed's object broadcast)."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _moved_commits(ckpts: Sequence[Checkpoint], done: dict[str, dict[str, Any]], out_dir: str) -> str | None:
    """Why a trace whose hub checkpoints' revisions now point at other commits cannot be
    extended, or None."""
    for ckpt in ckpts:
        then = done[ckpt.identity].get("commit")
        if then is None:
            continue
        now, _ = resolve(ckpt)
        if now != then:
            return (f"{out_dir}: checkpoint {ckpt.label} was traced at commit {then}, but its revision now resolves "
                    f"to {now} (the branch moved); a trace does not mix the two: trace into a new directory, or name "
                    f"the commit as the revision ({ckpt.source}@{then})")
    return None


def _trace_one(index: int, ckpt: Checkpoint, texts: list[str], ckpt_dir: str, config: dict[str, Any], rank: int,
               world: int, device: str, trust_remote_code: bool, progress: bool,
               fetched: tuple[str, str] | None = None, waited: float = 0.0, label: str | None = None,
               chosen_by: str = "given") -> None:
    t0 = time.perf_counter()
    path, commit = fetched if fetched is not None else (None, None)
    model, tokenizer = load_checkpoint(ckpt, dtype=config["dtype"], device=device, trust_remote_code=trust_remote_code,
                                       path=path)
    t1 = time.perf_counter()
    partial = os.path.join(ckpt_dir, ckpt.slug + (f".partial.rank{rank}" if world > 1 else ".partial") + ".pt")
    accs, start = _load_partial(partial, ckpt, config, device, progress)
    every = config["save_every"]

    def save(done: int, state: dict[int, Any]) -> None:
        if every and done % every == 0:
            with replacing(partial) as tmp:
                torch.save({"format": PARTIAL_FORMAT, "identity": ckpt.identity, "batch": done, "world": world,
                            "settings": {k: config[k] for k in RESULT_SETTINGS},
                            "states": {layer: acc.state_dict() for layer, acc in state.items()}}, tmp)

    stats: dict[str, Any] = {}
    accs = extract(model, tokenizer, texts, layers=config["layers"], pooling=config["pooling"],
                   max_length=config["max_length"], batch_size=config["batch_size"], final_norm=config["final_norm"],
                   padding_side=config["padding_side"], shard=(rank, world) if world > 1 else None,
                   folds=config["folds"], accumulators=accs, start_batch=start, on_batch=save,
                   progress=os.path.basename(ckpt.source) if progress else False, stats=stats)
    n_tokens = stats["n_tokens"]
    if progress and config["max_length"] == "auto" and stats["max_length"] < DEFAULT_MAX_LENGTH:
        tqdm.write(f"fastspec trace: {ckpt.label}: max_length auto = {stats['max_length']}, the model's context")
    del model
    if world > 1:
        for acc in accs.values():
            acc.all_reduce()
    t2 = time.perf_counter()
    if rank == 0:
        layers, arrays = layer_results(accs, tuple(config["fit_range"]), config["folds"])
        write_result(ckpt_dir, ckpt, layers, arrays, {
            "commit": commit, "label": label, "chosen_by": chosen_by,
            "index": index, "n_tokens": n_tokens, "max_length": stats["max_length"],
            "tokens_read": stats["tokens_read"], "resumed_from_batch": start,
            "seconds": {"download_wait": waited, "load": t1 - t0, "extract": t2 - t1,
                        "spectra": time.perf_counter() - t2},
            "tokens_per_second": n_tokens / max(t2 - t1, 1e-9),
        })
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if os.path.exists(partial):  # the results are final: the partial state has served
        os.remove(partial)


def layer_results(accs: dict[int, Any], fit_range: tuple[int, int], folds: int = 1
                  ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Each layer's record (:func:`~fastspec.spectral.eigen.metrics_of` of its centred and raw
    spectra, and jackknife standard errors with ``folds`` > 1) and the spectra themselves
    (``centered_<layer>``, ``raw_<layer>``), from its accumulator."""
    records, arrays = [], {}
    for layer, acc in accs.items():
        centred, raw = acc.spectrum(), acc.spectrum(center=False)
        rec = {"layer": layer, **metrics_of(centred, raw, fit_range=fit_range, eigenvalues=False)}
        if folds > 1:
            jk = acc.jackknife(fit_range=fit_range, spectra=(centred, raw))
            rec.update(rankme_se=jk.rankme_se, rankme_sv_se=jk.rankme_sv_se, alpha_se=jk.alpha_se)
        records.append(rec)
        arrays[f"centered_{layer}"], arrays[f"raw_{layer}"] = centred.eigenvalues, raw.eigenvalues
    return records, arrays


def write_result(ckpt_dir: str, ckpt: Checkpoint, layers: list[dict[str, Any]], arrays: dict[str, np.ndarray],
                 record: dict[str, Any]) -> None:
    """``ckpt``'s spectra (``.npz``) and then its ``.json``: ``record``'s fields beside the
    checkpoint's identity and the ``layers``' records of :func:`layer_results`. The JSON is
    written last, atomically: its presence means the checkpoint is done. Shared by
    :func:`trace` and the training callbacks (:mod:`fastspec.integrations`)."""
    with replacing(os.path.join(ckpt_dir, ckpt.slug + ".npz")) as tmp:
        _save_npz(tmp, arrays)
    write_json(os.path.join(ckpt_dir, ckpt.slug + ".json"), {
        "checkpoint": ckpt.label, "source": ckpt.source, "revision": ckpt.revision, "step": ckpt.step,
        "identity": ckpt.identity, **record, "layers": layers})


def _load_partial(path: str, ckpt: Checkpoint, config: dict[str, Any], device: str,
                  progress: bool) -> tuple[dict[int, Any] | None, int]:
    """The accumulators and the batch a killed run saved for ``ckpt``, or (None, 0) when
    there is none, or it was made with other settings or another world size (then it is
    discarded, saying why: the checkpoint starts again)."""
    from ..spectral.accumulator import CovarianceAccumulator

    if not os.path.exists(path):
        return None, 0
    why = None
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
        if not (isinstance(saved, dict) and saved.get("format") == PARTIAL_FORMAT and saved.get("identity") == ckpt.identity):
            why = "it is not a partial state of this checkpoint"
        elif saved["settings"] != {k: config[k] for k in RESULT_SETTINGS} or saved["world"] != config["world_size"]:
            why = "it was made with other settings or another number of processes"
    except Exception as err:  # truncated, corrupt: start the checkpoint again
        why = f"it cannot be read ({type(err).__name__}: {err})"
    if why is None:
        accs = {}
        for layer, state in saved["states"].items():
            acc = CovarianceAccumulator(int(state["dim"]), device=device, precision="float64", folds=config["folds"])
            acc.load_state_dict(state)
            accs[int(layer)] = acc
        if progress:
            tqdm.write(f"fastspec trace: {ckpt.label}: resuming inside the checkpoint, from batch {saved['batch']} "
                       f"(state saved in {path})")
        return accs, int(saved["batch"])
    os.remove(path)
    if progress:
        tqdm.write(f"fastspec trace: {ckpt.label}: not resuming from {path}: {why}; it is discarded and the "
                   "checkpoint starts again")
    return None, 0


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temporary name
        np.savez(fh, **arrays)


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:  # pragma: no cover - a runtime dependency
        return None
    return transformers.__version__


def _record_identity(rec: dict[str, Any]) -> str:
    """A stored checkpoint's identity (:attr:`Checkpoint.identity`); results written before
    identities were recorded are resolved from their source as given."""
    if rec.get("identity"):
        return rec["identity"]
    return Checkpoint(rec["source"], rec.get("revision")).identity


def _records(out_dir: str) -> list[dict[str, Any]]:
    ckpt_dir = os.path.join(os.fspath(out_dir), CKPT_DIR)
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"{out_dir}: not a trace results directory (no {CKPT_DIR}/ inside)")
    out = []
    for name in sorted(os.listdir(ckpt_dir)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(ckpt_dir, name)
        try:
            with open(path) as fh:
                out.append({**json.load(fh), "_path": path})
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable checkpoint result ({err}); delete it to trace that checkpoint again") from err
    return out


def load_trace(out_dir: str | os.PathLike, *, eigenvalues: bool = False) -> Any:
    """The traced results as a pandas DataFrame, one row per (checkpoint, layer), in training
    order (step, then the order given): ``checkpoint``, ``label`` (the one given, else
    empty), ``step``, ``layer``, ``rankme``,
    ``rankme_sv``, ``alpha``, ``alpha_r2``, ``alpha_intercept``, ``n_samples``, ``dim``,
    ``n_dropped``, and ``alpha_error``: why α is NaN where it is (e.g. a spectrum with fewer
    non-zero eigenvalues than the fit range), and ``rankme_se``, ``rankme_sv_se``, ``alpha_se``:
    jackknife standard errors of a trace made with ``folds=K`` (NaN otherwise).
    ``eigenvalues=True`` adds the centred spectrum of each row."""
    import pandas as pd

    rows = []
    seen: dict[str, str] = {}
    for rec in _records(out_dir):
        key = _record_identity(rec)
        if key in seen:
            raise ValueError(f"{out_dir}: {seen[key]} and {rec['_path']} hold the same checkpoint {key} (an older "
                             "fastspec traced it under two spellings); delete one of them")
        seen[key] = rec["_path"]
        spectra = None
        if eigenvalues:
            npz = rec["_path"][:-5] + ".npz"
            try:
                with np.load(npz) as z:
                    spectra = {k: z[k] for k in z.files}
            except (OSError, ValueError) as err:
                raise ValueError(f"{npz}: unreadable spectra ({err})") from err
        for layer in rec["layers"]:
            row = {"checkpoint": rec["checkpoint"], "label": rec.get("label"), "chosen_by": rec.get("chosen_by", "given"),
                   "step": rec["step"],
                   "index": rec["index"], "layer": layer["layer"],
                   "rankme": layer["rankme"], "rankme_sv": layer["rankme_sv"], "alpha": layer["alpha"],
                   "alpha_r2": layer["alpha_r2"], "alpha_intercept": layer["alpha_intercept"],
                   "n_samples": layer["n_samples"], "dim": layer["dim"], "n_dropped": layer["n_dropped"],
                   "alpha_error": layer.get("alpha_error"),
                   **{k: layer.get(k) for k in ("rankme_se", "rankme_sv_se", "alpha_se")}}
            if spectra is not None:
                row["eigenvalues"] = spectra[f"centered_{layer['layer']}"]
            rows.append(row)
    if not rows:
        raise ValueError(f"{out_dir}: no traced checkpoints yet")
    frame = pd.DataFrame(rows)
    frame["step"] = frame["step"].astype("Int64")
    frame["alpha"] = frame["alpha"].astype(float)
    frame["alpha_r2"] = frame["alpha_r2"].astype(float)
    frame["alpha_intercept"] = frame["alpha_intercept"].astype(float)
    for se in ("rankme_se", "rankme_sv_se", "alpha_se"):
        frame[se] = frame[se].astype(float)
    return frame.sort_values(["step", "index", "layer"], na_position="last", kind="stable").reset_index(drop=True)


def write_table(out_dir: str) -> str:
    path = os.path.join(out_dir, TABLE_FILE)
    frame = load_trace(out_dir)
    return write_csv(frame, path)
