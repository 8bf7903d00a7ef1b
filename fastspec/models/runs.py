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
- **Many jobs, one directory** (``shard=(I, N)``: a Slurm array's tasks, or any jobs on
  machines sharing the filesystem): the configuration binds once, by creating it
  (:func:`fastspec._files.create_json`: the first job wins, a job with other bound settings is
  refused); the sweep's checkpoint list binds the same way (``<record dir>/sweep.plan``, so
  that every shard splits the same list, and :func:`status` knows what is pending); every
  checkpoint is claimed before work (:class:`Claim`: ``<slug>.claim``, created exclusively,
  holding host, pid and since, its time refreshed every :data:`CLAIM_REFRESH` seconds while
  the job works), so that no job measures a checkpoint another has done or is doing; a claim
  whose process is gone (same host) or that has not been refreshed for :data:`CLAIM_STALE`
  seconds is a dead job's, and is taken over. A checkpoint that fails leaves
  ``<slug>.failed`` (the error; a later run retries it). Under torchrun, rank 0 of each job
  claims and its answer reaches every rank. A job ended by SIGTERM (Slurm's time limit)
  releases its claims on the way out, as on Ctrl-C (exit status 143).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .._files import bar_off, create_json, process_alive, remove_stale, replacing, temporary_name, this_host, \
    write_json
from .checkpoints import Checkpoint, CheckpointError
from .hub import Downloads, node_ledger, resolve

CONFIG_FILE = "config.json"
CKPT_DIR = "checkpoints"
PARTIAL_FORMAT = "fastspec.trace.partial/1"
#: With evict: the hub snapshots a run downloaded and has not evicted yet (see hub.Downloads).
DOWNLOADS_FILE = "downloads.json"
#: What a setting added later meant for results written before it existed.
SETTING_DEFAULTS = {"folds": 1}
#: Seconds between refreshes of a claim a job holds (its file's modification time).
CLAIM_REFRESH = 60.0
#: A claim not refreshed for this many seconds is a dead job's (a machine that died, or whose
#: clock is this far off: clocks of the machines sharing a directory are assumed to agree
#: within a few minutes).
CLAIM_STALE = 600.0
CLAIM_SUFFIX, FAILED_SUFFIX = ".claim", ".failed"
#: In the record dir: the sweep's checkpoint list, bound by the first job (not ".json": it is
#: no record).
PLAN_FILE = "sweep.plan"
#: In the record dir: the claim of the one job that refines.
REFINE_CLAIM = "refine.claim"


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
        run was writing, bind the config (:meth:`bind`); return the records by identity."""
        records = self.records() if os.path.isdir(self.record_dir) else []
        if records:
            self.check_config()
        if self.rank == 0:
            os.makedirs(self.record_dir, exist_ok=True)
            for stale in (self.record_dir, self.path):
                remove_stale(stale)
            self.bind()
        return {record_identity(r): r for r in records}

    def bind(self) -> None:
        """Bind the settings, once, for every job that writes here: the config file is
        created only if there is none (the first job to create it wins, whatever runs at the
        same time). A directory bound with other settings refuses this run once it holds a
        record (:meth:`check_config`) or while another job may be working under them (the
        job that bound it is running, or has bound it less than :data:`CLAIM_STALE` seconds
        ago on another machine, or a checkpoint's claim is live); otherwise nothing was done
        under them (a run that failed first) and this run binds its own."""
        mine = {**self.config, "bound_by": {"host": this_host(), "pid": os.getpid(), "since": _now()}}
        if create_json(self.config_path, mine):
            return
        try:
            with open(self.config_path) as fh:
                old = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            if self.has_records():
                raise ValueError(f"{self.config_path}: cannot read the existing run's configuration: {err}") from err
            old = {}
        if not self.differences(old):
            return
        if self.has_records():  # something was done under them: refused, as a resume is
            self.check_config()
        by = old.get("bound_by") or {}
        busy = None
        if by.get("pid") != os.getpid() or by.get("host") != this_host():
            alive = process_alive(str(by.get("host")), int(by.get("pid") or 0)) if by else False
            young = alive is None and time.time() - _mtime(self.config_path, 0.0) < CLAIM_STALE
            if alive or young:
                busy = f"the job that bound it ({by.get('host')} pid {by.get('pid')}, since {by.get('since')}) " + \
                       ("is running" if alive else "may be running")
        if busy is None:
            live = [c for c in live_claims(self.record_dir) if not _ours(c)]
            if live:
                busy = f"{live[0]['host']} pid {live[0]['pid']} is working on {live[0].get('checkpoint')}"
        if busy:
            details = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in self.differences(old).items())
            raise ValueError(f"{self.path} is bound to {self.what} with other settings ({details}), and {busy}; "
                             "every job writing into one directory needs the same settings: use them, or a new "
                             "directory")
        write_json(self.config_path, mine)

    def has_records(self) -> bool:
        """Whether a checkpoint's record is there now."""
        try:
            return any(n.endswith(".json") for n in os.listdir(self.record_dir))
        except FileNotFoundError:
            return False

    def differences(self, old: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """The bound settings in which ``old`` (a config read back) and this run's differ:
        name → (there, now)."""
        # A setting recorded only by a later fastspec: its documented default, else taken to match.
        then = {k: old.get(k, SETTING_DEFAULTS.get(k, self.config.get(k))) for k in self.bound}
        return {k: (then[k], self.config.get(k)) for k in self.bound if then[k] != self.config.get(k)}

    def check_config(self) -> None:
        """Refuse ``config`` if the directory's differs in a bound setting."""
        if not os.path.exists(self.config_path):
            return
        try:
            with open(self.config_path) as fh:
                old = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{self.config_path}: cannot read the existing run's configuration: {err}") from err
        diff = self.differences(old)
        if diff:
            details = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise ValueError(f"{self.path} holds {self.what} made with other settings ({details}); "
                             f"resume with the same settings or use a new directory")

    def bound_settings(self) -> dict[str, Any]:
        return {k: self.config.get(k) for k in self.bound}

    def write(self, ckpt: Checkpoint, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """``ckpt``'s arrays (``.npz``) and then its record, ``fields`` beside the
        checkpoint's identity; the record is written last, atomically: it means done. The
        directory's settings are checked again first: another job may have bound it since."""
        self.check_config()
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


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _mtime(path: str, default: float | None = None) -> float | None:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return default


def _read_json(path: str) -> dict[str, Any] | None:
    """A small JSON file's content; None when it is not there; {} when it cannot be read
    (being written: a claim created without hard links)."""
    try:
        with open(path) as fh:
            value = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


#: The claims this process holds (their paths): its own claims are not a dead job's.
_HELD: set[str] = set()


def _ours(info: Mapping[str, Any]) -> bool:
    return info.get("host") == this_host() and info.get("pid") == os.getpid()


def stale_reason(info: Mapping[str, Any], mtime: float, now: float | None = None) -> str | None:
    """Why the claim ``info`` (last refreshed at ``mtime``) is a dead job's, or None while it
    may be working: its process is gone (a process of this machine), or it has not been
    refreshed for :data:`CLAIM_STALE` seconds."""
    age = (time.time() if now is None else now) - mtime
    host, pid = info.get("host"), info.get("pid")
    if host is not None and isinstance(pid, int):
        if _ours(info) and info.get("_path") not in _HELD:
            return "left by this process"
        if process_alive(str(host), pid) is False:
            return f"its process ({host} pid {pid}) is gone"
    if age > CLAIM_STALE:
        return f"not refreshed for {age:.0f} s"
    return None


def live_claims(record_dir: str) -> list[dict[str, Any]]:
    """The live claims in ``record_dir`` (each its content with ``_path`` and ``_refreshed``,
    its modification time)."""
    out = []
    try:
        names = sorted(os.listdir(record_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(CLAIM_SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(record_dir, name)
        info, mtime = _read_json(path), _mtime(path)
        if info is None or mtime is None:
            continue
        info = {**info, "_path": path, "_refreshed": mtime}
        if stale_reason(info, mtime) is None:
            out.append(info)
    return out


class Claim:
    """A claim on a piece of work in a shared directory: the file ``path``, created
    exclusively (:func:`fastspec._files.create_json`) and holding ``host``, ``pid``, ``since``,
    a random ``token`` and the caller's fields. While held its modification time is refreshed
    (:meth:`refresh`, every :data:`CLAIM_REFRESH` seconds by the sweep's heartbeat), so that
    other jobs can tell it from a dead job's (:func:`stale_reason`), which :meth:`take` takes
    over."""

    def __init__(self, path: str, token: str, info: dict[str, Any]):
        self.path, self.token, self.info = path, token, info
        self.lost = False

    @classmethod
    def take(cls, path: str, **fields: Any) -> "Claim | dict[str, Any]":
        """This process's claim on ``path``, or the content of the live claim that holds it
        (``{}`` if it cannot be read yet). A stale claim is moved aside by one rename (one
        job wins it) and checked to be the one judged stale (else it is put back)."""
        held: dict[str, Any] = {}
        for _ in range(3):
            token = uuid.uuid4().hex
            info = {**fields, "host": this_host(), "pid": os.getpid(), "since": _now(), "token": token}
            if create_json(path, info):
                _HELD.add(path)
                return cls(path, token, info)
            found, mtime = _read_json(path), _mtime(path)
            if found is None or mtime is None:
                continue  # released meanwhile: try again
            held = {**found, "_path": path, "_refreshed": mtime}
            if stale_reason(held, mtime) is None:
                return held
            aside = os.path.join(os.path.dirname(path), temporary_name(f"{os.path.basename(path)}.{token[:8]}"))
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue  # another job took it over first
            moved = _read_json(aside) or {}
            if found.get("token") is not None and moved.get("token") == found.get("token"):
                os.remove(aside)  # the dead job's claim: gone; claim it afresh
                continue
            # a fresh claim that replaced the stale one since it was read: put it back
            try:
                os.link(aside, path)
            except OSError:
                pass
            os.remove(aside)
            return {**moved, "_path": path, "_refreshed": time.time()}
        return held

    def mine(self) -> bool:
        """Whether the claim file is still this claim."""
        return (_read_json(self.path) or {}).get("token") == self.token

    def refresh(self) -> None:
        """Its modification time, now (a live claim); notes a claim taken over as lost."""
        if self.lost:
            return
        if not self.mine():
            self.lost = True
            return
        try:
            os.utime(self.path)
        except FileNotFoundError:
            self.lost = True

    def release(self) -> None:
        """Remove the claim (if it is still this one)."""
        _HELD.discard(self.path)
        if self.mine():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


class _Heartbeat:
    """Refreshes the claims a job holds every :data:`CLAIM_REFRESH` seconds, on a thread of
    its own (the forward passes release the GIL)."""

    def __init__(self) -> None:
        self.claims: set[Claim] = set()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread: threading.Thread | None = None

    def hold(self, claim: Claim) -> None:
        with self.lock:
            self.claims.add(claim)
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="fastspec-claims", daemon=True)
            self.thread.start()

    def drop(self, claim: Claim) -> None:
        with self.lock:
            self.claims.discard(claim)
        claim.release()

    def _run(self) -> None:
        while not self.stop.wait(CLAIM_REFRESH):
            with self.lock:
                held = list(self.claims)
            for claim in held:
                try:
                    claim.refresh()
                except OSError:  # a filesystem hiccup: the next beat tries again
                    pass

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            held, self.claims = list(self.claims), set()
        for claim in held:
            claim.release()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # the shell's code for a process ended by the signal


def _holder(info: Mapping[str, Any]) -> str:
    if not info.get("host"):
        return "another job"
    return f"{info['host']} pid {info.get('pid')} (since {info.get('since')})"


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
    shard
        (I, N): of the checkpoints given to :meth:`pending`, those at positions I, I + N,
        I + 2N, … (None: all). Other jobs may measure the others into the same directory
        at the same time.

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
                 after_each: Callable[[], Any] | None = None, node_local: bool = False,
                 shard: tuple[int, int] | None = None):
        self.results, self.rank, self.world, self.node_local = results, rank, world, node_local
        self.progress, self.desc, self.after_each = progress and rank == 0, desc, after_each
        self.shard = shard
        # rank 0 (node_local: each node's local rank 0) downloads and evicts; the others wait
        # for the files (its threads start on first use). A node-local cache's record stays
        # with that cache: a restarted job may make another node rank 0.
        ledger = node_ledger(results.path) if node_local else os.path.join(results.path, DOWNLOADS_FILE)
        if shard is not None:  # a ledger per shard: each shard's job evicts what it left, never another's files
            stem, ext = os.path.splitext(ledger)
            ledger = f"{stem}.shard{shard[0]}of{shard[1]}{ext}"
        self.downloads = Downloads(prefetch=1 if prefetch is None else prefetch, evict=evict, ledger=ledger) \
            if rank == 0 or (node_local and node_rank()[1] == 0) else None
        self.done: dict[str, dict[str, Any]] = {}
        self.heartbeat = _Heartbeat() if rank == 0 else None
        self._sigterm: Any = None  # the SIGTERM handler to restore on close
        #: (checkpoint, why) of those left to other jobs (claimed by them, or done meanwhile).
        self.skipped: list[tuple[Checkpoint, str]] = []

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
        # SIGTERM (Slurm at a job's time limit, `kill`, torchrun stopping its ranks) ends the
        # sweep as Ctrl-C does, through close(): its claims are released, not left to go stale.
        # Only where nobody else handles SIGTERM, and only the main thread can.
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
            self._sigterm = None
        if self.heartbeat is not None:
            self.heartbeat.close()
        if self.downloads is not None:
            self.downloads.close()

    def pending(self, ckpts: Sequence[Checkpoint]) -> list[tuple[int, Checkpoint]]:
        """The (position, checkpoint) not done yet (of this job's shard), after binding the
        sweep's list (:meth:`bind_plan`) and refusing on every rank a sweep whose recorded hub
        checkpoints' branches have moved."""
        moved = broadcast((self.bind_plan(ckpts) or self.moved()) if self.rank == 0 else None, self.world)
        if moved:
            raise ValueError(moved)
        todo = [(i, c) for i, c in enumerate(ckpts) if c.identity not in self.done
                and (self.shard is None or i % self.shard[1] == self.shard[0])]
        if self.downloads is not None and self.downloads.evict:  # what a killed run left on disk
            gone = self.downloads.evict_leftovers([c for _, c in todo])
            if gone and self.progress:
                tqdm.write(f"fastspec: evicted what an interrupted run had downloaded: {', '.join(gone)}")
        if self.shard is not None:
            mine = len(range(self.shard[0], len(ckpts), self.shard[1]))
            if self.progress:
                tqdm.write(f"fastspec: shard {self.shard[0]}/{self.shard[1]}: {mine} of the {len(ckpts)} checkpoints, "
                           f"{mine - len(todo)} of them already in {self.results.path}")
        elif self.progress and len(todo) < len(ckpts):
            tqdm.write(f"fastspec: {len(ckpts) - len(todo)} of {len(ckpts)} checkpoints already in "
                       f"{self.results.path}, skipped")
        return todo

    def bind_plan(self, ckpts: Sequence[Checkpoint]) -> str | None:
        """Bind the sweep's checkpoint list (``<record dir>/sweep.plan``) as the config is
        bound: the first job writes it; the same list joins it. Another list replaces it
        unless a live claim of another job is there, or this job is a shard and the bound
        sweep is not done (its shards would split two lists): then the reason it is refused."""
        entries = [{"checkpoint": c.label, "identity": c.identity, "step": c.step, "slug": c.slug} for c in ckpts]
        path = os.path.join(self.results.record_dir, PLAN_FILE)
        if create_json(path, {"checkpoints": entries}):
            return None
        old = [e.get("identity") for e in (_read_json(path) or {}).get("checkpoints", [])]
        if old == [e["identity"] for e in entries]:
            return None
        live = [c for c in live_claims(self.results.record_dir) if not _ours(c)]
        done = {record_identity(r) for r in self.results.records()}
        undone = [i for i in old if i not in done]
        if live or (self.shard is not None and undone):
            why = (f"{_holder(live[0])} is working on {live[0].get('checkpoint')} there" if live else
                   f"{len(undone)} of its {len(old)} checkpoints are not done")
            return (f"{self.results.path} is being swept over another list of checkpoints ({why}); every shard of "
                    "a sweep must resolve the same list (the revisions listed, gridded and filtered the same: a "
                    "branch pushed in between changes it); finish that sweep, or use a new directory")
        write_json(path, {"checkpoints": entries})
        return None

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

    def one(self, index: int, ckpt: Checkpoint, measure: Measure, upcoming: Sequence[Checkpoint] = ()) -> bool:
        """Claim one checkpoint (rank 0, for every rank), ``measure`` it, then record-keeping:
        the table, the eviction. A checkpoint another job holds or has done meanwhile is left
        to it (:attr:`skipped`); one whose measuring raised leaves a failed marker with the
        error. Returns whether it was measured here."""
        claim = None
        if self.rank == 0:
            claim = self.claim(ckpt)
        why = broadcast(claim if isinstance(claim, str) else None, self.world)
        if why is not None:
            self.skipped.append((ckpt, why))
            if self.progress:
                tqdm.write(f"fastspec: {ckpt.label}: {why}; left to it")
            return False
        try:
            waited = time.perf_counter()
            fetched = None
            if ckpt.on_hub:
                ahead = [c for c in upcoming if c.on_hub]
                fetched = self._share(ckpt, self.downloads.fetch(ckpt, ahead) if self.downloads is not None
                                      else None)
            measure(index, ckpt, fetched, time.perf_counter() - waited)
        except Exception as err:
            if isinstance(claim, Claim):
                self.failed(ckpt, claim, err)
            raise
        finally:
            if isinstance(claim, Claim) and self.heartbeat is not None:
                self.heartbeat.drop(claim)
        if self.rank == 0:
            failed = os.path.join(self.results.record_dir, ckpt.slug + FAILED_SUFFIX)
            if os.path.exists(failed):
                os.remove(failed)
            if self.after_each is not None:
                self.after_each()
        if self.downloads is not None and self.downloads.release(ckpt) and self.progress:
            tqdm.write(f"fastspec: {ckpt.label}: done, its files evicted from the Hugging Face cache")
        return True

    def claim(self, ckpt: Checkpoint) -> "Claim | str":
        """Rank 0: this job's claim on ``ckpt``, held (refreshed) until it is measured, or why
        it is left to another job (which holds it, or has recorded it since this sweep began)."""
        base = os.path.join(self.results.record_dir, ckpt.slug)
        got = Claim.take(base + CLAIM_SUFFIX, checkpoint=ckpt.label, identity=ckpt.identity)
        if not isinstance(got, Claim):
            return f"in progress in another job, {_holder(got)}"
        if os.path.exists(base + ".json"):  # recorded by a job that held it before
            got.release()
            return "done by another job meanwhile"
        assert self.heartbeat is not None  # rank 0 has one
        self.heartbeat.hold(got)
        return got

    def failed(self, ckpt: Checkpoint, claim: Claim, err: BaseException) -> None:
        """``<slug>.failed``: the error of a checkpoint whose measuring raised (a later run
        retries it, and removes the marker once it is done)."""
        try:
            write_json(os.path.join(self.results.record_dir, ckpt.slug + FAILED_SUFFIX), {
                "checkpoint": ckpt.label, "identity": ckpt.identity, "host": this_host(), "pid": os.getpid(),
                "since": claim.info.get("since"), "failed_at": _now(), "error": f"{type(err).__name__}: {err}"})
        except OSError:  # the error being raised says more than this one
            pass

    def refining(self) -> "Claim | str":
        """Rank 0: the claim to refine this directory (one job at a time), or why not (the job
        that holds it). Released by :meth:`close`."""
        got = Claim.take(os.path.join(self.results.record_dir, REFINE_CLAIM), checkpoint="refinements")
        if not isinstance(got, Claim):
            return f"another job is refining this directory, {_holder(got)}"
        assert self.heartbeat is not None
        self.heartbeat.hold(got)
        return got

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


@dataclasses.dataclass(frozen=True)
class CheckpointStatus:
    """Where one checkpoint of a results directory stands (an entry of :class:`SweepStatus`).

    Attributes
    ----------
    checkpoint
        Its name (the hub id and revision, or the directory).
    state
        ``"done"`` (its record is there), ``"running"`` (a live claim: a job is measuring it),
        ``"stale"`` (a dead job's claim: the next job to reach it takes it over), ``"failed"``
        (the last attempt raised ``error``; a later run retries it) or ``"pending"``.
    host, pid, since
        The job that holds or held it (running, stale, failed).
    error
        Why it failed.
    seconds
        Done: the seconds its record accounts for (download wait, load, extraction, spectra).
    n_tokens
        Done: the tokens it read.
    note
        Stale: why the claim is a dead job's; running: when it was last refreshed.
    """

    checkpoint: str
    state: str
    host: str | None = None
    pid: int | None = None
    since: str | None = None
    error: str | None = None
    seconds: float | None = None
    n_tokens: int | None = None
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class SweepStatus:
    """Where a results directory's sweep stands: what :func:`status` returns and
    ``fastspec status DIR`` prints.

    Attributes
    ----------
    path
        The results directory.
    checkpoints
        One :class:`CheckpointStatus` per checkpoint: those of the sweep's list in its order,
        then those recorded outside it (refinements, earlier runs).
    planned
        Whether the sweep's list is recorded (``sweep.plan``; not in directories written
        before fastspec recorded it, whose pending checkpoints are then unknown).
    tokens_per_second
        Tokens read per second of a job's time over the done checkpoints whose records say
        both (None without any).
    seconds_left
        Estimated seconds until every checkpoint is done: the mean seconds of the done ones,
        times those not done (pending, stale, running, failed), divided by the number of jobs
        holding claims now (at least one). None without a done checkpoint to time, or when
        the list is unknown.
    refining
        The job refining the directory (``"host pid N"``), if one is.
    """

    path: str
    checkpoints: tuple[CheckpointStatus, ...]
    planned: bool
    tokens_per_second: float | None
    seconds_left: float | None
    refining: str | None = None

    def count(self, state: str) -> int:
        """The number of checkpoints in ``state``."""
        return sum(c.state == state for c in self.checkpoints)

    @property
    def complete(self) -> bool:
        """Every checkpoint done, none running, failed or held by a dead job, and no job
        refining."""
        return all(c.state == "done" for c in self.checkpoints) and self.refining is None

    def format(self) -> str:
        """The text ``fastspec status`` prints: a line of counts, one line per checkpoint,
        the throughput and the estimate."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in ("running", "stale", "failed", "pending") if self.count(s))
        lines = [f"{self.path}: {self.count('done')} of {len(self.checkpoints)} checkpoints done"
                 + (f", {counts}" if counts else "") + ("" if self.planned else
                                                         " (the sweep's list is not recorded: pending ones unknown)")]
        width = max([len(c.checkpoint) for c in self.checkpoints] + [10])
        for c in self.checkpoints:
            if c.state == "done":
                detail = ", ".join(x for x in (f"{c.seconds:.1f} s" if c.seconds is not None else "",
                                                f"{c.n_tokens} tokens" if c.n_tokens is not None else "") if x)
            elif c.state in ("running", "stale"):
                detail = f"{c.host} pid {c.pid} since {c.since}" + (f" ({c.note})" if c.note else "")
            elif c.state == "failed":
                detail = f"{c.host} pid {c.pid} at {c.since}: {c.error}"
            else:
                detail = ""
            lines.append(f"  {c.checkpoint:<{width}}  {c.state:<7}  {detail}".rstrip())
        if self.refining:
            lines.append(f"refining: {self.refining}")
        rate = f"{self.tokens_per_second:,.0f} tokens/s per job" if self.tokens_per_second else "tokens/s: unknown"
        if self.complete:
            left = "complete"
        elif self.seconds_left is None:
            left = "time left: unknown (no checkpoint timed yet)" if self.planned else "time left: unknown"
        else:
            left = f"time left: about {_duration(self.seconds_left)}"
        lines.append(f"{rate}; {left}")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def status(path: str | os.PathLike, *, record_dir: str = CKPT_DIR, config_file: str = CONFIG_FILE) -> SweepStatus:
    """Where the sweep writing into results directory ``path`` stands, per checkpoint: done,
    running (which host and process, since when), stale (a dead job's claim), failed (the
    error) or pending; the tokens per second of the done ones and an estimate of the time
    left. It reads the records, claims, failed markers and the sweep's list, and changes
    nothing, so it can run while jobs write.

    Parameters
    ----------
    path
        A results directory (of :func:`fastspec.trace`).
    record_dir, config_file
        The folder of its records and the name of its configuration (another kind of run's).

    Returns
    -------
    SweepStatus
        The checkpoints' states, throughput and estimate; ``.complete``; ``.format()``.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a results directory (neither a configuration nor records inside).
    ValueError
        An unreadable record (naming it).

    Examples
    --------
    >>> import tempfile
    >>> from fastspec.models.runs import status
    >>> try:
    ...     status(tempfile.mkdtemp())
    ... except FileNotFoundError as err:
    ...     print("not a results directory" in str(err))
    True
    """
    path = os.fspath(path)
    records_path = os.path.join(path, record_dir)
    if not os.path.isdir(records_path) or not (os.path.exists(os.path.join(path, config_file))
                                               or any(n.endswith(".json") for n in os.listdir(records_path))):
        raise FileNotFoundError(f"{path}: not a results directory (no {config_file} and {record_dir}/ inside: "
                                "fastspec trace writes them)")
    records = {record_identity(r): r for r in read_records(path, records_path)}
    plan = _read_json(os.path.join(records_path, PLAN_FILE))
    entries = list((plan or {}).get("checkpoints", []))
    known = {e.get("identity") for e in entries}
    entries += [{"checkpoint": r.get("checkpoint"), "identity": i, "slug": os.path.basename(r["_path"])[:-5]}
                for i, r in records.items() if i not in known]
    now, jobs, rows, done_seconds, tokens, timed = time.time(), set(), [], [], 0, 0.0
    for e in entries:
        name, base = str(e.get("checkpoint")), os.path.join(records_path, str(e.get("slug")))
        rec = records.get(e.get("identity"))
        if rec is not None:
            seconds = rec.get("seconds")
            total = sum(v for v in seconds.values() if isinstance(v, (int, float))) if isinstance(seconds, dict) \
                else None
            n_tokens = rec.get("n_tokens")
            if total is not None:
                done_seconds.append(total)
                if isinstance(n_tokens, int):
                    tokens, timed = tokens + n_tokens, timed + total
            rows.append(CheckpointStatus(name, "done", seconds=total, n_tokens=n_tokens))
            continue
        claim, mtime = _read_json(base + CLAIM_SUFFIX), _mtime(base + CLAIM_SUFFIX)
        if claim is not None and mtime is not None:
            why = stale_reason({**claim, "_path": base + CLAIM_SUFFIX}, mtime, now)
            if why is None:
                jobs.add((claim.get("host"), claim.get("pid")))
            rows.append(CheckpointStatus(name, "stale" if why else "running", host=claim.get("host"),
                                         pid=claim.get("pid"), since=claim.get("since"),
                                         note=why or f"refreshed {now - mtime:.0f} s ago"))
            continue
        failed = _read_json(base + FAILED_SUFFIX)
        if failed is not None:
            rows.append(CheckpointStatus(name, "failed", host=failed.get("host"), pid=failed.get("pid"),
                                         since=failed.get("failed_at"), error=failed.get("error")))
            continue
        rows.append(CheckpointStatus(name, "pending"))
    refine = _read_json(os.path.join(records_path, REFINE_CLAIM))
    refine_mtime = _mtime(os.path.join(records_path, REFINE_CLAIM))
    refining = None
    if refine is not None and refine_mtime is not None and stale_reason(
            {**refine, "_path": os.path.join(records_path, REFINE_CLAIM)}, refine_mtime, now) is None:
        refining = f"{refine.get('host')} pid {refine.get('pid')} since {refine.get('since')}"
        jobs.add((refine.get("host"), refine.get("pid")))
    left = sum(r.state != "done" for r in rows)
    seconds_left = None
    if done_seconds and (plan is not None or not left):
        seconds_left = sum(done_seconds) / len(done_seconds) * left / max(len(jobs), 1)
    return SweepStatus(path, tuple(rows), plan is not None, tokens / timed if timed > 0 else None, seconds_left,
                       refining)
