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

Under ``torchrun --nproc-per-node K`` (and across nodes: ``--nnodes N`` with a c10d
rendezvous), every rank takes every W-th batch (W processes in all), the accumulators are
all-reduced (exact: Chan's merge), and global rank 0 writes.

With ``device_map`` a checkpoint is loaded through accelerate's big-model path, spread over
the GPUs, the CPU and disk (one process per node under torchrun); each layer's accumulator
lives on the device of that layer's output.

With ``shard=(I, N)`` (``--shard I/N``, or ``--shard slurm`` in a Slurm job array) a job
traces the checkpoints at positions I, I + N, … of the list, and N such jobs, on any machines
sharing the filesystem, write into one results directory at once: the settings and the list
bind once (the first job wins; another with other settings is refused), every checkpoint is
claimed before it is traced (``checkpoints/<name>.claim``: no two jobs trace one), a failure
leaves ``checkpoints/<name>.failed``, and ``fastspec status DIR`` (:func:`fastspec.models.runs.status`)
says where the sweep stands. ``refine`` waits until every checkpoint given is done: the job
that finds them all done refines (one job: it claims ``refine.claim``); the others say why
they do not. The records are the same as one job's. :func:`trace`'s frame says what this job
left to others in ``attrs["left_to_other_jobs"]`` (name → why: another job holds it, or did
it meanwhile) and, with ``refine``, ``attrs["not_refined"]`` (why it did not refine; None
when it did); a job left nothing to do returns an empty frame.

Hub checkpoints (``"org/name@revision"``) are fetched by :class:`fastspec.models.hub.Downloads`:
the next ``prefetch`` download while the current one is traced, and with ``evict`` a traced
checkpoint's files leave the Hugging Face cache (rank 0 downloads and evicts; the other ranks
wait for it; ``downloads.json`` records what the run downloaded, so a killed run leaks
nothing). With ``node_local_downloads`` (nodes that share no filesystem), each node's local
rank 0 does so in its own cache, recording it beside that cache. Each record holds the commit its revision resolved to; a resumed run whose
revision now resolves to another commit is refused rather than mixed.

The directory, the settings' binding, the loop over checkpoints, the partial saves and the
torchrun broadcast are :mod:`fastspec.models.runs`', shared with the training callbacks and
:func:`fastspec.memorization_trace`; the settings are :class:`~fastspec.models.settings.TraceSettings`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .._files import write_csv
from .._settings import SettingError
from .._version import __version__
from .checkpoints import Checkpoint, as_checkpoint, load_checkpoint
from .data import load_texts, sample_texts, texts_digest
from .extract import extract
from .hub import list_revisions
from .layout import layer_device, model_layout, resolve_final_norm
from .runs import CKPT_DIR, Claim, PartialState, ResultsDir, Sweep, barrier, broadcast, check_distinct, \
    distributed, read_records, record_identity
from .settings import DEFAULT_MAX_LENGTH, DEFAULT_SAVE_EVERY, TraceSettings

TABLE_FILE = "trace.csv"
#: load_trace's columns (without ``eigenvalues``).
COLUMNS = ("checkpoint", "label", "chosen_by", "step", "index", "layer", "rankme", "rankme_sv", "alpha", "alpha_r2",
           "alpha_intercept", "n_samples", "dim", "n_dropped", "alpha_error", "rankme_se", "rankme_sv_se", "alpha_se")
#: Settings that change the numbers: a resumed run must match them (the texts by their digest).
RESULT_SETTINGS = ("data_sha256", "n_texts", *TraceSettings.affecting_names())

__all__ = ["DEFAULT_SAVE_EVERY", "RESULT_SETTINGS", "TraceSettings", "load_trace", "next_refinement", "trace",
           "write_table"]


def trace(checkpoints: Sequence[Any], data: str | os.PathLike | Sequence[str], out_dir: str | os.PathLike, *,
          settings: TraceSettings | None = None, candidates: Sequence[Any] | None = None, chosen_by: str = "given",
          progress: bool = True, **options: Any) -> Any:
    """Trace every checkpoint's per-layer spectrum, RankMe (both conventions) and α into a results directory.

    Each checkpoint is loaded in turn, the same sample of texts is extracted at every
    requested layer (`fastspec.extract`), and the layer's spectrum and metrics are written
    to ``out_dir`` as soon as the checkpoint is done: ``config.json`` (the settings, the
    sample's SHA-256, the versions), ``checkpoints/<name>.json`` and ``.npz`` (per layer:
    RankMe both ways, α and its fit, n, d; the centred and raw spectra) and ``trace.csv``.
    Done checkpoints are skipped, so an interrupted run continues where it stopped and gives
    identical results; a second run into the same directory must agree with ``config.json``
    on every setting that changes a number. Under ``torchrun`` every rank takes its share of
    the batches, the accumulators are all-reduced (exact: Chan's merge), and rank 0 writes.

    Parameters
    ----------
    checkpoints : sequence
        Local directories, ``"hub/id@revision"`` strings or ``(id, revision)`` pairs, in
        training order (a directory's step is read from its name, e.g. ``step1000``).
    data : str, os.PathLike or sequence of str
        A ``.txt``/``.jsonl``/``.parquet`` file (``n`` documents sampled with ``seed``; all
        when None) or a list of texts.
    out_dir : str or os.PathLike
        The results directory.
    settings : fastspec.TraceSettings, optional
        The settings; ``options`` apply over them.
    candidates : sequence, optional
        With ``refine=M``: the checkpoints refinements pick from (default: every branch of the
        one hub repository traced that names a step). Each refinement bisects the interval
        between traced checkpoints where the last traced layer's RankMe or α is least resolved
        (a change of direction across it first, then the largest change, relative to the
        metric's range), at the candidate nearest its middle step.
    chosen_by : str, default 'given'
        How the given checkpoints were chosen (``"given"``, ``"grid"``); refinements are
        ``"refine"`` (`fastspec.load_trace`'s ``chosen_by`` column).
    progress : bool, default True
        Progress bars and notes on stderr.
    **options
        Fields of `fastspec.TraceSettings` as keywords (``n``, ``layers``, ``pooling``,
        ``folds``, ``fit_range``, ``dtype``, ``device``, ``prefetch``, ``evict``,
        ``labels``, ``save_every``, ``refine``, …), each documented there, once.

    Returns
    -------
    pandas.DataFrame
        `fastspec.load_trace` of ``out_dir``: one row per (checkpoint, layer).

    Raises
    ------
    fastspec.SettingError
        A setting out of range, naming it.
    ValueError
        No checkpoints, a checkpoint listed twice, labels that do not match the
        checkpoints, a directory holding a trace made with other settings, or a hub branch
        that moved since it was traced.
    fastspec.CheckpointError
        A checkpoint that cannot be found or loaded.

    See Also
    --------
    fastspec.phases : Label the trace's pretraining phases.
    fastspec.TraceSettings : Every setting, its default and meaning.

    Examples
    --------
    Two checkpoints of a tiny GPT-2 (random weights; nothing is downloaded), traced at the
    last layer with a fit range that its 18 eigenvalues can hold:

    >>> import transformers
    >>> from fastspec.models.tiny import train_tokenizer
    >>> texts = [f"the {a} {b} sat on the {c}" for a in ("red", "old", "small")
    ...          for b in ("cat", "dog", "fox") for c in ("mat", "rug")]
    >>> tokenizer = train_tokenizer(texts, vocab_size=300)
    >>> config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4,
    ...                                  bos_token_id=0, eos_token_id=0)
    >>> for step in (0, 100):  # random weights, saved as checkpoints step0/ and step100/
    ...     _ = torch.manual_seed(step)
    ...     transformers.GPT2LMHeadModel(config).save_pretrained(f"step{step}")
    ...     _ = tokenizer.save_pretrained(f"step{step}")
    >>> frame = fastspec.trace(["step0", "step100"], texts, "run", layers=[-1], fit_range=(1, 10),
    ...                        progress=False)
    >>> frame[["checkpoint", "step", "layer", "n_samples", "dim"]]
      checkpoint  step  layer  n_samples  dim
    0      step0     0      2         18   32
    1    step100   100      2         18   32
    >>> import os
    >>> sorted(os.listdir("run"))
    ['checkpoints', 'config.json', 'trace.csv']
    """
    s = TraceSettings.build(settings, caller="trace", **options)
    ckpts = [as_checkpoint(c) for c in checkpoints]
    if not ckpts:
        raise ValueError("no checkpoints to trace")
    labels = s.labels
    if labels is not None and (len(labels) != len(ckpts) or len(set(labels)) != len(labels)):
        raise ValueError(f"labels: one distinct label per checkpoint, got {len(labels)} label(s) "
                         f"({', '.join(labels)}) for {len(ckpts)} checkpoint(s)")
    check_distinct(ckpts)
    if isinstance(data, (str, os.PathLike)):
        texts, data_name = load_texts(data, s.n, seed=s.seed, text_field=s.text_field), os.fspath(data)
    else:
        texts, data_name = sample_texts(list(data), s.n, seed=s.seed, source="the texts given"), "<texts>"
    if s.folds > len(texts):  # found before any model is loaded, not after its forward passes
        raise SettingError("{folds} asks for more folds than the %d texts: each fold needs texts of its own"
                           % len(texts), folds=s.folds)
    if s.device_map is not None and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise SettingError("{device_map} spreads each checkpoint over this node's devices, and %s processes of this "
                           "node would each do so: run one process per node (torchrun --nproc-per-node 1)"
                           % os.environ["LOCAL_WORLD_SIZE"], device_map=s.device_map)
    rank, world = distributed()
    device = s.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    out_dir = os.fspath(out_dir)
    config = run_config(s, texts, data_name, device=device, world=world)
    results = ResultsDir(out_dir, config, RESULT_SETTINGS, rank=rank)
    job = _Checkpoints(results, s, texts, device, progress)
    not_refined = None
    with Sweep(results, rank=rank, world=world, prefetch=s.prefetch, evict=s.evict, progress=progress,
               node_local=s.node_local_downloads, after_each=lambda: write_table(out_dir), shard=s.shard) as sweep:
        _check_stages(ckpts, labels, sweep.done, out_dir)
        sweep.run(sweep.pending(ckpts), lambda i, c, fetched, waited: job.measure(
            i, c, fetched, waited, labels[i] if labels is not None else None, chosen_by))
        if s.refine:
            not_refined = _refine(sweep, job, ckpts, candidates, s.refine)
        if rank == 0 and sweep.skipped and results.has_records():
            write_table(out_dir)  # what the other jobs did meanwhile
    # Rank 0's: on nodes that share no filesystem with it, the other ranks have no results to read.
    frame = broadcast(_final_frame(results) if rank == 0 else None, world)
    frame.attrs["left_to_other_jobs"] = {c.label: why for c, why in sweep.skipped}
    if s.refine:
        frame.attrs["not_refined"] = not_refined
    return frame


def _final_frame(results: ResultsDir) -> Any:
    """:func:`load_trace` of the directory, or an empty frame when it holds no record yet (a
    shard with nothing to do, or all of it still in other jobs' hands)."""
    if not results.has_records():
        import pandas as pd

        return pd.DataFrame(columns=list(COLUMNS))
    return load_trace(results.path)


def _check_stages(ckpts: Sequence[Checkpoint], labels: Sequence[str] | None, done: dict[str, dict[str, Any]],
                  out_dir: str) -> None:
    """A resumed trace keeps its labels and, for checkpoints without a step (post-training
    stages, ordered as given), its order: refuse one that would relabel or reorder them."""
    for i, c in enumerate(ckpts):
        rec = done.get(c.identity)
        if rec is None or rec.get("chosen_by") == "refine":
            continue
        label = labels[i] if labels is not None else None
        moved = c.step is None and rec.get("index") != i
        if rec.get("label") != label or moved:
            raise ValueError(f"{out_dir}: checkpoint {c.label} was traced as number {rec.get('index', '?')} labelled "
                             f"{rec.get('label')!r}, and is now given as number {i} labelled {label!r}: a resumed "
                             "trace keeps its labels and the order of its stages; give them as before, or use a new "
                             "directory")
    taken = {rec.get("label"): rec.get("checkpoint") for rec in done.values() if rec.get("label")}
    for i, c in enumerate(ckpts):
        label = labels[i] if labels is not None else None
        if label in taken and c.identity not in done:
            raise ValueError(f"{out_dir}: label {label!r} already names checkpoint {taken[label]} there; "
                             f"{c.label} needs another label, or a new directory")


def run_config(s: TraceSettings, texts: Sequence[str], data_name: str, *, device: Any, world: int,
               **extra: Any) -> dict[str, Any]:
    """A trace's ``config.json``: the texts (name, SHA-256, count), every setting (but the
    shard: the directory is every shard's), the device, the number of processes and the
    versions; ``extra`` fields beside them."""
    settings = {k: v for k, v in s.to_config().items() if k != "shard"}
    return {"data": data_name, "data_sha256": texts_digest(texts), "n_texts": len(texts), **settings,
            "device": str(device), "world_size": world, **extra,
            "fastspec": __version__, "torch": torch.__version__, "transformers": _transformers_version()}


def _refine(sweep: Sweep, job: "_Checkpoints", ckpts: Sequence[Checkpoint], candidates: Sequence[Any] | None,
            refine: int) -> str | None:
    """Up to ``refine`` refinements in all (those of an earlier run count), one at a time,
    once every checkpoint given is done (by this job or others), by one job at a time.
    Returns why this job did not refine, or None."""
    out_dir, world = job.results.path, sweep.world
    pool = _candidates(ckpts, candidates)
    why, claim, left = None, None, 0
    if sweep.rank == 0:
        done = {record_identity(r) for r in job.results.records()}
        missing = [c.label for c in ckpts if c.identity not in done]
        if missing:
            why = (f"--refine waits for every checkpoint given to be done, and {len(missing)} of {len(ckpts)} are not "
                   f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}: other shards' or failed); the job "
                   "that finds them all done refines, or once they are, run this command again (without --shard, or "
                   "with any shard: it traces nothing again) to refine")
        else:
            claim = sweep.refining()
            if isinstance(claim, str):
                why, claim = claim + "; it refines", None
        if why is None:
            frame = load_trace(out_dir).drop_duplicates("checkpoint")
            left = refine - int((frame["chosen_by"] == "refine").sum())
    why, left = broadcast((why, left), world)
    if why is not None:
        if sweep.progress:
            tqdm.write(f"fastspec trace: not refining: {why}")
        return why
    try:
        for extra in range(max(left, 0)):
            nxt = broadcast(next_refinement(load_trace(out_dir), pool) if sweep.rank == 0 else None, world)
            if nxt is None:
                break
            if sweep.progress:
                tqdm.write(f"fastspec trace: refining with {nxt.label}")
            if not sweep.one(len(ckpts) + extra, nxt,
                             lambda i, c, fetched, waited: job.measure(i, c, fetched, 0.0, None, "refine")):
                break  # another job holds it (one that refines without claiming: an older fastspec)
    finally:
        if isinstance(claim, Claim) and sweep.heartbeat is not None:
            sweep.heartbeat.drop(claim)
    return None


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


class _Checkpoints:
    """Measuring one checkpoint of a trace: load it, extract every layer (resuming a partial
    state, saving one every ``save_every`` batches), all-reduce across ranks, and record it."""

    def __init__(self, results: ResultsDir, s: TraceSettings, texts: list[str], device: str, progress: bool):
        self.results, self.s, self.texts, self.device = results, s, texts, device
        self.rank, self.world = results.rank, int(results.config["world_size"])
        self.progress = progress and self.rank == 0

    def measure(self, index: int, ckpt: Checkpoint, fetched: tuple[str, str] | None, waited: float,
                label: str | None, chosen_by: str) -> None:
        s = self.s
        t0 = time.perf_counter()
        path, commit = fetched if fetched is not None else (None, None)
        with _offload_folder(s) as offload:
            model, tokenizer = load_checkpoint(ckpt, dtype=s.dtype, device=self.device,
                                               trust_remote_code=s.trust_remote_code, path=path,
                                               device_map=s.device_map, offload_folder=offload)
            t1 = time.perf_counter()
            partial = PartialState(self.results, ckpt, s.save_every, rank=self.rank, world=self.world)
            states, start = partial.load(lambda state: state, self.progress)
            accs = None if states is None else self._accumulators(model, states)
            stats: dict[str, Any] = {}
            accs = extract(model, tokenizer, self.texts, settings=s,
                           shard=(self.rank, self.world) if self.world > 1 else None, accumulators=accs,
                           start_batch=start, on_batch=partial.save,
                           progress=os.path.basename(ckpt.source) if self.progress else False, stats=stats)
            if self.progress and s.max_length == "auto" and stats["max_length"] < DEFAULT_MAX_LENGTH:
                tqdm.write(f"fastspec trace: {ckpt.label}: max_length auto = {stats['max_length']}, the model's "
                           "context")
            del model  # before its offloaded weights' folder goes
        if self.world > 1:
            if s.device_map is not None:
                # Spread over this node's devices by layer; the all-reduce meets on one device per
                # rank (the GPU torchrun gave it, or the CPU), the same on every rank, whatever each
                # node's map did.
                accs = {layer: self._placed(acc.state_dict(), torch.device(self.device)) for layer, acc in accs.items()}
            for acc in accs.values():
                acc.all_reduce()
        t2 = time.perf_counter()
        if self.rank == 0:
            layers, arrays = layer_results(accs, s.fit_range)
            self.results.write(ckpt, {
                "commit": commit, "label": label, "chosen_by": chosen_by,
                "index": index, "n_tokens": stats["n_tokens"], "max_length": stats["max_length"],
                "tokens_read": stats["tokens_read"], "resumed_from_batch": start,
                "seconds": {"download_wait": waited, "load": t1 - t0, "extract": t2 - t1,
                            "spectra": time.perf_counter() - t2},
                "tokens_per_second": stats["n_tokens"] / max(t2 - t1, 1e-9),
                "layers": layers}, arrays)
        barrier(self.world)
        partial.discard()

    def _accumulators(self, model: Any, states: dict[int, dict[str, Any]]) -> dict[int, Any]:
        """Accumulators holding a partial state's saved ``states`` (layer → state), each on the
        device its layer's output is computed on, as :func:`extract` places new ones."""
        layout = model_layout(model)
        final_norm = resolve_final_norm(layout, self.s.final_norm)
        return {layer: self._placed(state, layer_device(layout, layer, final_norm=final_norm))
                for layer, state in states.items()}

    def _placed(self, state: dict[str, Any], device: torch.device) -> Any:
        """An accumulator on ``device`` holding ``state`` (an accumulator's ``state_dict()``)."""
        from ..spectral.accumulator import CovarianceAccumulator

        acc = CovarianceAccumulator(int(state["dim"]), device=device, precision="float64", folds=self.s.folds)
        acc.load_state_dict(state)
        return acc


@contextlib.contextmanager
def _offload_folder(s: TraceSettings) -> Iterator[str | None]:
    """Where a device map offloads weights to disk while a checkpoint is traced: the folder
    given, else (with a device map) a temporary one, deleted afterwards; None without one."""
    if s.device_map is None or s.offload_folder is not None:
        yield s.offload_folder
        return
    folder = tempfile.mkdtemp(prefix="fastspec-offload-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def layer_results(accs: dict[int, Any], fit_range: tuple[int, int]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Each layer's record (its accumulator's :class:`~fastspec.spectral.record.MetricsRecord`:
    RankMe both ways, the α fit, n, d, and with folds the jackknife standard errors) and the
    spectra it came from (``centered_<layer>``, ``raw_<layer>``)."""
    records, arrays = [], {}
    for layer, acc in accs.items():
        record = acc.metrics(fit_range=fit_range)
        records.append({"layer": layer, **record.to_dict()})
        centred, raw = record.spectra
        arrays[f"centered_{layer}"], arrays[f"raw_{layer}"] = centred.eigenvalues, raw.eigenvalues
    return records, arrays


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:  # pragma: no cover - a runtime dependency
        return None
    return transformers.__version__


def load_trace(out_dir: str | os.PathLike, *, eigenvalues: bool = False) -> Any:
    """The traced results as a pandas DataFrame, one row per (checkpoint, layer), in training order.

    Reads a results directory written by `fastspec.trace`, by the training callbacks or by
    ``fastspec trace``; the checkpoints are ordered by step, then in the order given.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The results directory.
    eigenvalues : bool, default False
        Also read each row's centred spectrum (from the ``.npz`` files) into an
        ``eigenvalues`` column.

    Returns
    -------
    pandas.DataFrame
        The columns ``checkpoint``, ``label`` (the one given, else empty), ``chosen_by``,
        ``step``, ``index``, ``layer``, ``rankme``, ``rankme_sv``, ``alpha``, ``alpha_r2``,
        ``alpha_intercept``, ``n_samples``, ``dim``, ``n_dropped``; ``alpha_error``, why α
        is NaN where it is (e.g. a spectrum with fewer non-zero eigenvalues than the fit
        range); and ``rankme_se``, ``rankme_sv_se``, ``alpha_se``, jackknife standard
        errors of a trace made with ``folds=K`` (NaN otherwise).

    Raises
    ------
    ValueError
        A directory holding no results, a checkpoint recorded twice, or unreadable spectra,
        naming the file.

    Examples
    --------
    >>> import transformers
    >>> from fastspec.models.tiny import train_tokenizer
    >>> texts = [f"the {a} {b} sat on the {c}" for a in ("red", "old", "small")
    ...          for b in ("cat", "dog", "fox") for c in ("mat", "rug")]
    >>> tokenizer = train_tokenizer(texts, vocab_size=300)
    >>> config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4,
    ...                                  bos_token_id=0, eos_token_id=0)
    >>> for step in (0, 100):  # random weights, saved as checkpoints step0/ and step100/
    ...     _ = torch.manual_seed(step)
    ...     transformers.GPT2LMHeadModel(config).save_pretrained(f"step{step}")
    ...     _ = tokenizer.save_pretrained(f"step{step}")
    >>> _ = fastspec.trace(["step0", "step100"], texts, "run", layers=[-1], progress=False)
    >>> frame = fastspec.load_trace("run", eigenvalues=True)
    >>> frame[["checkpoint", "step", "layer"]]
      checkpoint  step  layer
    0      step0     0      2
    1    step100   100      2
    >>> frame["alpha_error"][0]
    'fit_range (11, 100) needs at least 100 eigenvalues; this spectrum has 18 (min(N, d)). Pass a smaller fit_range.'
    >>> frame["eigenvalues"][0].shape  # min(N, d) eigenvalues: 18 texts, width 32
    (18,)
    """
    import pandas as pd

    rows = []
    seen: dict[str, str] = {}
    out_dir = os.fspath(out_dir)
    for rec in read_records(out_dir, os.path.join(out_dir, CKPT_DIR)):
        key = record_identity(rec)
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
    """``trace.csv`` of every record in ``out_dir`` now. Jobs sharing the directory each
    rewrite it after each of their checkpoints; one that read the records before another's
    last record landed and renamed its table after that one's would leave it short, so the
    records are listed again after the rename and the table rewritten until they are the
    same (the last table renamed then holds every record)."""
    path = os.path.join(out_dir, TABLE_FILE)
    records = os.path.join(out_dir, CKPT_DIR)

    def listed() -> list[str]:
        return sorted(n for n in os.listdir(records) if n.endswith(".json"))

    while True:
        before = listed()
        write_csv(load_trace(out_dir), path)
        if listed() == before:
            return path
