"""One resumable results directory, and the one loop over checkpoints that fills it.

Every run over checkpoints goes through here: :func:`fastspec.trace`, the training
callbacks' ``out_dir`` (:class:`fastspec.integrations._online.OnlineGeometry`) and
:func:`fastspec.memorization_trace`. What they share:

- **The settings bind once** (:class:`ResultsDir`): ``config.json`` (or the run's own config
  file) is written when the directory is new; once a checkpoint's record exists, a run whose
  result-affecting settings differ is refused, naming each difference.
- **A record per checkpoint**, ``<record dir>/<slug>.json``, written last and atomically (its
  arrays, ``.npz``, before it): its presence means the checkpoint is done. Checkpoints are
  done by identity (:attr:`~fastspec.models.checkpoints.Checkpoint.identity`), not by the
  name given, so ``ck/step2/`` after ``ck/step2`` is skipped.
- **The sweep** (:class:`Sweep`): done checkpoints skipped, a hub checkpoint whose branch
  moved since it was recorded refused on every rank, hub files fetched by rank 0 with the
  next ``prefetch`` ahead and (``evict``) deleted once recorded, the other ranks waiting
  for them (rank 0's values reach every rank by :func:`broadcast`). Across nodes that share
  no filesystem (``node_local``), each node's local rank 0 fetches and evicts in its own
  cache for the ranks of its node; every rank checks that it sees the files it is given.
  Only rank 0 writes results; the checkpoints done are rank 0's, so a node without the
  results directory does the same ones.
- **Partial saves** (:class:`PartialState`): inside a checkpoint, every ``save_every``
  batches, the layers' accumulator states and the position in the data, so that a run
  killed there resumes from it with identical results.
- Files that a killed run was writing are removed (:func:`fastspec._files.remove_stale`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .._files import bar_off, remove_stale, replacing, write_json
from .checkpoints import Checkpoint, CheckpointError
from .hub import Downloads, node_ledger, resolve

CONFIG_FILE = "config.json"
CKPT_DIR = "checkpoints"
PARTIAL_FORMAT = "fastspec.trace.partial/1"
#: With evict: the hub snapshots a run downloaded and has not evicted yet (see hub.Downloads).
DOWNLOADS_FILE = "downloads.json"
#: What a setting added later meant for results written before it existed.
SETTING_DEFAULTS = {"folds": 1}


def distributed() -> tuple[int, int]:
    """(rank, world) under torchrun (initialising the process group if needed), else (0, 1)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        if torch.cuda.is_available():
            # NCCL's collectives (the object broadcasts too) run on the current device: each
            # rank's own GPU, not cuda:0 for all of them.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return process_rank()


def node_rank() -> tuple[str, int]:
    """(this process's node, its rank on that node): torchrun's ``GROUP_RANK`` (the node's
    rank in the job) and ``LOCAL_RANK``; a process started otherwise is a node of its own."""
    if "GROUP_RANK" in os.environ and "LOCAL_RANK" in os.environ:
        return f"node {os.environ['GROUP_RANK']}", int(os.environ["LOCAL_RANK"])
    return f"process {os.getpid()} on {socket.gethostname()}", 0


def process_rank() -> tuple[int, int]:
    """(rank, world) of an initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(value: Any, world: int) -> Any:
    """Rank 0's ``value`` on every rank (torch.distributed's object broadcast)."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def record_identity(rec: Mapping[str, Any]) -> str:
    """A stored checkpoint's identity; records written before identities were stored are
    resolved from their source as given."""
    if rec.get("identity"):
        return rec["identity"]
    return Checkpoint(rec["source"], rec.get("revision")).identity


class ResultsDir:
    """A resumable results directory.

    Parameters
    ----------
    path
        The directory.
    config
        The run's configuration, written to ``config_file`` when the directory is new.
    bound
        Its keys that change results: once a record exists, a run whose ``config`` differs in
        one of them is refused (:meth:`check_config`).
    record_dir
        The folder of the per-checkpoint records, inside ``path``.
    config_file
        The configuration's file name.
    what
        What the results are, in errors (``"a trace"``).
    rank
        This process's rank: only rank 0 writes.

    Raises
    ------
    ValueError
        From :meth:`open`: an unreadable record or configuration, or other bound settings.
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], bound: Sequence[str], *,
                 record_dir: str = CKPT_DIR, config_file: str = CONFIG_FILE, what: str = "a trace", rank: int = 0):
        self.path = os.fspath(path)
        self.config, self.bound, self.what, self.rank = config, tuple(bound), what, rank
        self.record_dir = os.path.join(self.path, record_dir)
        self.config_path = os.path.join(self.path, config_file)

    def records(self) -> list[dict[str, Any]]:
        """Every checkpoint's record (with ``_path``, its file), in file-name order."""
        return read_records(self.path, self.record_dir, self.what)

    def open(self) -> dict[str, dict[str, Any]]:
        """Check the settings against the directory's (once a record exists: a run that
        failed before that left nothing to be consistent with), make it, clear what a killed
        run was writing, write the config if it has none yet; return the records by identity."""
        records = self.records() if os.path.isdir(self.record_dir) else []
        if records:
            self.check_config()
        if self.rank == 0:
            os.makedirs(self.record_dir, exist_ok=True)
            for stale in (self.record_dir, self.path):
                remove_stale(stale)
            if not records or not os.path.exists(self.config_path):
                write_json(self.config_path, self.config)
        return {record_identity(r): r for r in records}

    def check_config(self) -> None:
        """Refuse ``config`` if the directory's differs in a bound setting."""
        if not os.path.exists(self.config_path):
            return
        try:
            with open(self.config_path) as fh:
                old = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{self.config_path}: cannot read the existing run's configuration: {err}") from err
        # A setting recorded only by a later fastspec: its documented default, else taken to match.
        then = {k: old.get(k, SETTING_DEFAULTS.get(k, self.config.get(k))) for k in self.bound}
        diff = {k: (then[k], self.config.get(k)) for k in self.bound if then[k] != self.config.get(k)}
        if diff:
            details = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise ValueError(f"{self.path} holds {self.what} made with other settings ({details}); "
                             f"resume with the same settings or use a new directory")

    def bound_settings(self) -> dict[str, Any]:
        return {k: self.config.get(k) for k in self.bound}

    def write(self, ckpt: Checkpoint, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """``ckpt``'s arrays (``.npz``) and then its record, ``fields`` beside the
        checkpoint's identity; the record is written last, atomically: it means done."""
        base = os.path.join(self.record_dir, ckpt.slug)
        if arrays is not None:
            with replacing(base + ".npz") as tmp, open(tmp, "wb") as fh:  # a file object: no ".npz" appended
                np.savez(fh, **arrays)
        write_json(base + ".json", {"checkpoint": ckpt.label, "source": ckpt.source, "revision": ckpt.revision,
                                    "step": ckpt.step, "identity": ckpt.identity, **fields})

    def drop_after(self, step: int) -> list[str]:
        """Delete the records (and arrays) of steps after ``step``: a training run resumed
        there supersedes them. Returns their names."""
        gone = []
        for rec in self.records():
            if (rec.get("step") or -1) > step:
                os.remove(rec["_path"])
                npz = rec["_path"][:-5] + ".npz"
                if os.path.exists(npz):
                    os.remove(npz)
                gone.append(os.path.basename(rec["_path"])[:-5])
        return gone


def read_records(out_dir: str, record_dir: str, what: str = "a trace") -> list[dict[str, Any]]:
    """The records in ``record_dir`` of the results directory ``out_dir`` (of ``what``)."""
    if not os.path.isdir(record_dir):
        raise FileNotFoundError(f"{out_dir}: not {what} results directory (no {os.path.basename(record_dir)}/ inside)")
    out = []
    for name in sorted(os.listdir(record_dir)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(record_dir, name)
        try:
            with open(path) as fh:
                out.append({**json.load(fh), "_path": path})
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable checkpoint result ({err}); delete it to do that checkpoint "
                             "again") from err
    return out


def check_distinct(ckpts: Sequence[Checkpoint]) -> None:
    """Refuse a checkpoint listed twice (under any spelling), naming both spellings."""
    seen: dict[str, str] = {}
    for c in ckpts:
        if c.identity in seen:
            same = "" if seen[c.identity] == c.label else f" (as {seen[c.identity]} and {c.label})"
            raise ValueError(f"checkpoint {c.identity} is listed twice{same}")
        seen[c.identity] = c.label


#: What a sweep does at one checkpoint: (its position, the checkpoint, (local path, commit) of
#: a hub checkpoint's fetched files or None, seconds waited for them).
Measure = Callable[[int, Checkpoint, "tuple[str, str] | None", float], None]


class Sweep:
    """The checkpoint loop over a :class:`ResultsDir` (see the module docstring); a context
    manager that opens the directory on entry and stops the downloads on exit.

    Parameters
    ----------
    results
        The results directory.
    rank, world
        This process's rank and the number of processes (torchrun).
    prefetch
        Hub checkpoints fetched ahead (None: 1).
    evict
        Delete each hub checkpoint's downloaded files once measured (and what a killed run
        left: ``downloads.json``).
    node_local
        Each node's local rank 0 (torchrun's ``LOCAL_RANK`` 0) downloads for its node, into
        its own Hugging Face cache, its record of them in :func:`~fastspec.models.hub.node_ledger`
        beside that cache; else rank 0 downloads for all, into a cache every rank sees, and
        records them in ``downloads.json``.
    progress
        A progress bar and notes (rank 0).
    desc
        The progress bar's label.
    after_each
        Called on rank 0 after every checkpoint (a table rewritten).

    Raises
    ------
    ValueError
        On entry, on every rank: the directory refused the run (:meth:`ResultsDir.open`); from
        :meth:`pending`: a recorded hub checkpoint whose branch moved; from :meth:`one`: the
        nodes' downloads of a checkpoint are different commits.
    fastspec.models.checkpoints.CheckpointError
        From :meth:`one`, on every rank: a rank does not see the files downloaded for it.
    """

    def __init__(self, results: ResultsDir, *, rank: int = 0, world: int = 1, prefetch: int | None = None,
                 evict: bool = False, progress: bool = True, desc: str = "checkpoints",
                 after_each: Callable[[], Any] | None = None, node_local: bool = False):
        self.results, self.rank, self.world, self.node_local = results, rank, world, node_local
        self.progress, self.desc, self.after_each = progress and rank == 0, desc, after_each
        # rank 0 (node_local: each node's local rank 0) downloads and evicts; the others wait
        # for the files (its threads start on first use). A node-local cache's record stays
        # with that cache: a restarted job may make another node rank 0.
        ledger = node_ledger(results.path) if node_local else os.path.join(results.path, DOWNLOADS_FILE)
        self.downloads = Downloads(prefetch=1 if prefetch is None else prefetch, evict=evict, ledger=ledger) \
            if rank == 0 or (node_local and node_rank()[1] == 0) else None
        self.done: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> "Sweep":
        refused = None
        try:
            self.done = self.results.open()
        except ValueError as err:
            refused = str(err)
        refused = broadcast(refused, self.world) or refused  # rank 0's refusal stops every rank
        if refused:
            self.close()
            raise ValueError(refused)
        # Rank 0's records: another node may not see the directory (or see it late)
        self.done = broadcast(self.done, self.world)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.downloads is not None:
            self.downloads.close()

    def pending(self, ckpts: Sequence[Checkpoint]) -> list[tuple[int, Checkpoint]]:
        """The (position, checkpoint) not done yet, after refusing on every rank a sweep whose
        recorded hub checkpoints' branches have moved."""
        moved = broadcast(self.moved() if self.rank == 0 else None, self.world)
        if moved:
            raise ValueError(moved)
        todo = [(i, c) for i, c in enumerate(ckpts) if c.identity not in self.done]
        if self.downloads is not None and self.downloads.evict:  # what a killed run left on disk
            gone = self.downloads.evict_leftovers([c for _, c in todo])
            if gone and self.progress:
                tqdm.write(f"fastspec: evicted what an interrupted run had downloaded: {', '.join(gone)}")
        if self.progress and len(todo) < len(ckpts):
            tqdm.write(f"fastspec: {len(ckpts) - len(todo)} of {len(ckpts)} checkpoints already in "
                       f"{self.results.path}, skipped")
        return todo

    def moved(self) -> str | None:
        """Why this directory cannot be extended, when a recorded hub checkpoint's revision now
        resolves to another commit than the one recorded (every record: given, gridded and
        refined), else None."""
        for rec in self.done.values():
            then = rec.get("commit")
            if then is None or rec.get("revision") is None:
                continue
            ckpt = Checkpoint(rec["source"], rec["revision"])
            now, _ = resolve(ckpt)
            if now != then:
                return (f"{self.results.path}: checkpoint {ckpt.label} was traced at commit {then}, but its revision "
                        f"now resolves to {now} (the branch moved); results do not mix the two: use a new directory "
                        f"(naming the commit as the revision, {ckpt.source}@{then}, would lose its step, which is "
                        f"read from the branch name {ckpt.revision!r})")
        return None

    def run(self, todo: Sequence[tuple[int, Checkpoint]], measure: Measure) -> None:
        """``measure`` every checkpoint of ``todo`` in turn (hub files fetched ahead)."""
        bar = tqdm(todo, desc=self.desc, unit="ckpt", disable=bar_off(self.progress))
        for pos, (index, ckpt) in enumerate(bar):
            self.one(index, ckpt, measure, [c for _, c in todo[pos + 1:]])

    def one(self, index: int, ckpt: Checkpoint, measure: Measure, upcoming: Sequence[Checkpoint] = ()) -> None:
        """``measure`` one checkpoint, then record-keeping: the table, the eviction."""
        waited = time.perf_counter()
        fetched = None
        if ckpt.on_hub:
            ahead = [c for c in upcoming if c.on_hub]
            fetched = self._share(ckpt, self.downloads.fetch(ckpt, ahead) if self.downloads is not None else None)
        measure(index, ckpt, fetched, time.perf_counter() - waited)
        if self.rank == 0 and self.after_each is not None:
            self.after_each()
        if self.downloads is not None and self.downloads.release(ckpt) and self.progress:
            tqdm.write(f"fastspec: {ckpt.label}: done, its files evicted from the Hugging Face cache")

    def _share(self, ckpt: Checkpoint, fetched: tuple[str, str] | None) -> tuple[str, str]:
        """The (local path, commit) of ``ckpt``'s files for this rank: rank 0's, or with
        ``node_local`` its node's local rank 0's. Every rank learns whether every other sees
        its files, and the nodes' commits, so that all stop together, saying why, rather than
        one failing while the others wait for it in a collective."""
        if self.world == 1:
            assert fetched is not None
            return fetched
        import torch.distributed as dist

        node, local = node_rank()
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, (node, local, fetched))
        if self.node_local:
            mine = next(f for n, lr, f in everyone if n == node and lr == 0)
            commits = {f[1] for _, lr, f in everyone if lr == 0}
        else:
            mine, commits = everyone[0][2], {everyone[0][2][1]}
        seen: list[Any] = [None] * self.world
        dist.all_gather_object(seen, (os.path.isdir(mine[0]), mine[0]))
        blind = [f"rank {r} ({path})" for r, (ok, path) in enumerate(seen) if not ok]
        if len(commits) > 1:
            raise ValueError(f"checkpoint {ckpt.label}: the nodes downloaded different commits of it "
                             f"({', '.join(sorted(commits))}): its branch moved during the run; trace a commit "
                             f"({ckpt.source}@<commit>) or run again")
        if blind:
            if self.node_local:
                why = "downloaded by their node's local rank 0"
            else:
                why = ("downloaded by rank 0: the nodes share no filesystem (or not that Hugging Face cache); give "
                       "--node-local-downloads (node_local_downloads=True) so that each node downloads into its own")
            raise CheckpointError(f"checkpoint {ckpt.label}: {', '.join(blind)} cannot see the files {why}")
        return mine


class PartialState:
    """A checkpoint's state saved inside it: every ``every`` batches (None: never), the
    layers' accumulator states and the position in the data, bound to the checkpoint, the
    result-affecting ``settings`` and the number of processes. One file per rank."""

    def __init__(self, results: ResultsDir, ckpt: Checkpoint, every: int | None, *, rank: int = 0, world: int = 1):
        self.ckpt, self.every, self.world = ckpt, every, world
        self.settings = results.bound_settings()
        self.path = os.path.join(results.record_dir,
                                 ckpt.slug + (f".partial.rank{rank}" if world > 1 else ".partial") + ".pt")

    def save(self, done: int, states: Mapping[int, Any]) -> None:
        """The extraction's ``on_batch``: after batch ``done``, save if it is time."""
        if self.every and done % self.every == 0:
            with replacing(self.path) as tmp:
                torch.save({"format": PARTIAL_FORMAT, "identity": self.ckpt.identity, "batch": done,
                            "world": self.world, "settings": self.settings,
                            "states": {layer: acc.state_dict() for layer, acc in states.items()}}, tmp)

    def load(self, make: Callable[[dict[str, Any]], Any], progress: bool) -> tuple[dict[int, Any] | None, int]:
        """The accumulators (each made by ``make(state)``) and the batch a killed run saved,
        or (None, 0) when there is none, or it was made with other settings or another world
        size (then it is discarded, saying why: the checkpoint starts again)."""
        if not os.path.exists(self.path):
            return None, 0
        why = None
        try:
            saved = torch.load(self.path, weights_only=True, map_location="cpu")
            if not (isinstance(saved, dict) and saved.get("format") == PARTIAL_FORMAT
                    and saved.get("identity") == self.ckpt.identity):
                why = "it is not a partial state of this checkpoint"
            elif saved["settings"] != self.settings or saved["world"] != self.world:
                why = "it was made with other settings or another number of processes"
        except Exception as err:  # truncated, corrupt: start the checkpoint again
            why = f"it cannot be read ({type(err).__name__}: {err})"
        if why is None:
            if progress:
                tqdm.write(f"fastspec trace: {self.ckpt.label}: resuming inside the checkpoint, from batch "
                           f"{saved['batch']} (state saved in {self.path})")
            return {int(layer): make(state) for layer, state in saved["states"].items()}, int(saved["batch"])
        os.remove(self.path)
        if progress:
            tqdm.write(f"fastspec trace: {self.ckpt.label}: not resuming from {self.path}: {why}; it is discarded "
                       "and the checkpoint starts again")
        return None, 0

    def discard(self) -> None:
        """The results are final: the partial state has served."""
        if os.path.exists(self.path):
            os.remove(self.path)

