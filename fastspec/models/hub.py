"""Checkpoints on the Hugging Face Hub: which revisions to trace, and their files on disk.

- :func:`list_revisions`: a repository's branches (``huggingface_hub``'s ``list_repo_refs``),
  those with a training step in their name (``step1000``, ``stage1-step1000-tokens5B``),
  ordered by it, optionally filtered by a glob; :func:`grid` keeps N of them evenly spaced in
  step, first and last included.
- :func:`resolve` asks the Hub which commit a revision points at now, so that results record
  it and a resumed run can tell when a branch has moved.
- :class:`Downloads` fetches each checkpoint's files into the Hugging Face cache
  (``snapshot_download`` of that commit: config, tokenizer and one weight format), the next
  ``prefetch`` of them in background threads while the current one is traced, and with
  ``evict`` deletes a traced checkpoint's snapshot through the cache-management API
  (``scan_cache_dir().delete_revisions``) unless that snapshot was in the cache before the run.
  Disk use then stays near ``prefetch + 1`` checkpoints.

Everything goes through ``huggingface_hub`` itself, so ``HF_ENDPOINT``, ``HF_HOME``,
``HF_TOKEN`` and offline mode mean what they mean there.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from .checkpoints import Checkpoint, CheckpointError, parse_step

#: Weight formats in order of preference: the first one a revision has is the one fetched.
WEIGHT_PATTERNS = (("*.safetensors", "*.safetensors.index.json"), ("*.bin", "*.bin.index.json"))
#: Everything else from_pretrained may read (config, generation config, tokenizer files, code).
OTHER_PATTERNS = ("*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py")


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi()


def is_pattern(revisions: str) -> bool:
    """Whether ``revisions`` asks for a listing ("all", or a glob) rather than naming one."""
    return revisions == "all" or any(ch in revisions for ch in "*?[")


def list_revisions(repo: str, pattern: str = "all") -> list[str]:
    """The branches of ``repo`` that name a training step, ordered by it, filtered by the
    glob ``pattern`` ("all": every one). Raises CheckpointError when the repository is not
    there or nothing matches, naming what was found."""
    try:
        refs = _api().list_repo_refs(repo)
    except Exception as err:  # RepositoryNotFoundError, HTTP errors, offline mode
        raise CheckpointError(f"cannot list the revisions of {repo!r} on the Hub: {type(err).__name__}: {err}") from err
    names = [b.name for b in refs.branches]
    stepped = sorted((n for n in names if parse_step(n) is not None), key=lambda n: (parse_step(n), n))
    chosen = stepped if pattern == "all" else [n for n in stepped if fnmatch.fnmatchcase(n, pattern)]
    if not chosen:
        raise CheckpointError(f"{repo}: no branch with a training step in its name matches {pattern!r} "
                              f"(branches: {', '.join(sorted(names)) or 'none'})")
    return chosen


def grid(revisions: Sequence[str], n: int) -> list[str]:
    """``n`` of ``revisions`` (ordered by step) evenly spaced in step, first and last
    included: for each of n equally spaced target steps, the nearest revision not yet taken.

    Raises
    ------
    ValueError
        ``n`` (``--grid N``) is not a positive integer. 0 in particular is refused rather than
        read as "no grid": a caller that did so traced every revision of the repository
        (Pythia-1B: 154 checkpoints of 2 GB) without a word.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"grid (--grid N) must be a positive number of revisions to keep, got {n!r}: "
                         f"{n!r} would keep none; to trace every revision listed, give no grid")
    revisions = list(revisions)
    if n >= len(revisions):
        return revisions
    steps = np.array([parse_step(r) for r in revisions], dtype=np.float64)
    taken: list[int] = []
    for target in np.linspace(steps[0], steps[-1], n):
        free = [i for i in range(len(revisions)) if i not in taken]
        taken.append(min(free, key=lambda i: (abs(steps[i] - target), i)))
    return [revisions[i] for i in sorted(taken)]


def _read_ledger(path: str | None) -> dict[str, dict[str, str]]:
    if path is None or not os.path.exists(path):
        return {}
    import json

    try:
        with open(path) as fh:
            saved = json.load(fh)
        if saved.get("format") != LEDGER_FORMAT:
            raise ValueError(f"not a {LEDGER_FORMAT} file")
        return {k: {"repo": str(v["repo"]), "commit": str(v["commit"])} for k, v in saved["downloads"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: unreadable record of this run's downloads ({err}); it says which snapshots the "
                         "run may evict: delete it only if the Hugging Face cache holds nothing of this run") from err


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_snapshot(ckpt: Checkpoint) -> str:
    """Offline: the cached snapshot of ``ckpt``'s revision (its folder name is the commit)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ckpt.source, revision=ckpt.revision or "main", local_files_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {ckpt.label}: offline (HF_HUB_OFFLINE), and the Hugging Face cache does "
                              f"not hold revision {ckpt.revision or 'main'!r} of {ckpt.source!r}: "
                              f"{type(err).__name__}: {err}") from err


def resolve(ckpt: Checkpoint) -> tuple[str, list[str]]:
    """The commit ``ckpt``'s revision points at on the Hub now, and the files it holds
    (offline: what the cache says it pointed at when it was downloaded)."""
    if _offline():
        path = _cached_snapshot(ckpt)
        return os.path.basename(path), [os.path.relpath(os.path.join(r, f), path).replace(os.sep, "/")
                                        for r, _, names in os.walk(path) for f in names]
    try:
        info = _api().model_info(ckpt.source, revision=ckpt.revision or "main")
    except Exception as err:
        raise CheckpointError(f"checkpoint {ckpt.label}: the Hub does not resolve revision "
                              f"{ckpt.revision or 'main'!r} of {ckpt.source!r}: {type(err).__name__}: {err}") from err
    return info.sha, [s.rfilename for s in (info.siblings or [])]


def allow_patterns(files: Sequence[str]) -> list[str]:
    """What to fetch of a revision holding ``files``: one weight format, and the rest."""
    for patterns in WEIGHT_PATTERNS:
        if any(fnmatch.fnmatchcase(f, patterns[0]) for f in files):
            return [*patterns, *OTHER_PATTERNS]
    return list(OTHER_PATTERNS)


def _snapshots(repo: str) -> str:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=repo, repo_type="model"), "snapshots")


def cached_commits(repo: str) -> set[str]:
    """The commits of ``repo`` whose snapshot folders the Hugging Face cache holds, read from
    the folders themselves: ``scan_cache_dir()`` quietly skips a repository with one broken
    blob link, and counting such a cache as empty once let an eviction delete a user's
    snapshots."""
    try:
        return set(os.listdir(_snapshots(repo)))
    except (FileNotFoundError, NotADirectoryError):
        return set()


#: The ledger's format tag: which snapshots a run downloaded (and so may evict), written
#: before each download, so that a run killed with them on disk still evicts them when resumed.
LEDGER_FORMAT = "fastspec.downloads/1"


def node_ledger(out_dir: str) -> str:
    """With node-local downloads, a node's record of what it downloaded for the run into
    ``out_dir`` (see :class:`Downloads`): beside the node's own Hugging
    Face cache (in ``HF_HOME``, as the cache's scan takes every folder inside the cache for a
    repository), where a resumed run on that node finds it whether or not the results
    directory is shared."""
    from huggingface_hub import constants

    key = hashlib.sha1(os.path.abspath(out_dir).encode()).hexdigest()[:16]
    return os.path.join(constants.HF_HOME, "fastspec", f"downloads-{key}.json")


class Downloads:
    """The files of hub checkpoints, fetched ahead and evicted behind (see the module).

    ``fetch(ckpt)`` returns (local directory, commit), waiting for a prefetch in flight,
    and starts the next ``prefetch`` ones given by ``upcoming``; ``release(ckpt)`` evicts
    that checkpoint's snapshot when ``evict`` is on, the run downloaded it and no other
    checkpoint of the run (fetched, or being fetched ahead) is the same commit.
    ``ledger``: a JSON file where, with ``evict``, each snapshot the run downloads is
    recorded before the download starts and forgotten once evicted, so that a run killed in
    between leaks nothing (:meth:`evict_leftovers`, on resuming)."""

    def __init__(self, *, prefetch: int = 1, evict: bool = False, ledger: str | None = None):
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be a non-negative integer, got {prefetch!r}")
        self.prefetch, self.evict = prefetch, evict
        self._pool = ThreadPoolExecutor(max_workers=max(prefetch, 1), thread_name_prefix="fastspec-prefetch")
        self._jobs: dict[str, Future] = {}
        # Revisions share blobs (a tokenizer that did not change): an eviction must not delete
        # one that a download in flight is about to link. Downloads run side by side; an
        # eviction waits until none is running.
        self._idle = threading.Condition()
        self._running = 0
        self._before: dict[str, set[str]] = {}  # repo → commits cached before this run (and not in the ledger)
        self._commits: dict[str, str] = {}  # identity → commit fetched
        self._ledger_path = ledger if evict else None
        self._ledger = _read_ledger(self._ledger_path)  # identity → {"repo", "commit"}
        self._ledger_lock = threading.Lock()

    def _start(self, ckpt: Checkpoint) -> None:
        if ckpt.identity not in self._jobs:
            if ckpt.source not in self._before:
                ours = {e["commit"] for e in self._ledger.values() if e["repo"] == ckpt.source}
                self._before[ckpt.source] = cached_commits(ckpt.source) - ours
            self._jobs[ckpt.identity] = self._pool.submit(self._guarded_download, ckpt)

    def _guarded_download(self, ckpt: Checkpoint) -> tuple[str, str]:
        with self._idle:
            self._running += 1
        try:
            return self._download(ckpt)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _download(self, ckpt: Checkpoint) -> tuple[str, str]:
        from huggingface_hub import snapshot_download

        if _offline():
            path = _cached_snapshot(ckpt)
            return path, os.path.basename(path)
        commit, files = resolve(ckpt)
        if commit not in self._before.get(ckpt.source, set()):
            self._record(ckpt.identity, {"repo": ckpt.source, "commit": commit})  # before any byte lands
        try:
            path = snapshot_download(ckpt.source, revision=commit, allow_patterns=allow_patterns(files))
        except Exception as err:
            raise CheckpointError(f"checkpoint {ckpt.label}: downloading commit {commit[:12]} from the Hub failed: "
                                  f"{type(err).__name__}: {err}") from err
        return path, commit

    def _record(self, identity: str, entry: dict[str, str] | None) -> None:
        """Set (``entry``: repo and commit) or drop (None) a checkpoint's entry in the ledger,
        written atomically."""
        if self._ledger_path is None:
            return
        from .._files import write_json

        with self._ledger_lock:
            if entry is None:
                self._ledger.pop(identity, None)
            else:
                self._ledger[identity] = entry
            write_json(self._ledger_path, {"format": LEDGER_FORMAT, "downloads": self._ledger})

    def fetch(self, ckpt: Checkpoint, upcoming: Sequence[Checkpoint] = ()) -> tuple[str, str]:
        self._start(ckpt)
        for nxt in list(upcoming)[: self.prefetch]:
            self._start(nxt)
        path, commit = self._jobs[ckpt.identity].result()
        self._commits[ckpt.identity] = commit
        return path, commit

    def _in_use(self, commit: str) -> bool:
        """Whether a checkpoint of this run not yet released is ``commit`` (fetched, or being
        fetched ahead: Pythia's ``main`` is ``step143000``'s commit)."""
        if commit in self._commits.values():
            return True
        for job in list(self._jobs.values()):
            try:
                if job.result()[1] == commit:  # a prefetch in flight: wait to know its commit
                    return True
            except Exception:  # a failed prefetch holds nothing; its own fetch reports it
                continue
        return False

    def release(self, ckpt: Checkpoint) -> bool:
        """Forget ``ckpt``; with ``evict``, delete its snapshot if this run downloaded it and
        no other checkpoint of the run is the same commit. Returns whether anything was deleted."""
        self._jobs.pop(ckpt.identity, None)
        commit = self._commits.pop(ckpt.identity, None)
        if not self.evict or commit is None or commit in self._before.get(ckpt.source, set()) or self._in_use(commit):
            return False
        return self._delete(ckpt.source, commit)

    def _delete(self, repo: str, commit: str) -> bool:
        from huggingface_hub import scan_cache_dir

        with self._idle:
            self._idle.wait_for(lambda: self._running == 0)
            scan_cache_dir().delete_revisions(commit).execute()
        if commit in cached_commits(repo):  # the scan did not see it (a broken link): keep the entry
            return False
        for identity, entry in list(self._ledger.items()):
            if entry["commit"] == commit:
                self._record(identity, None)
        return True

    def evict_leftovers(self, keep: Sequence[Checkpoint] = ()) -> list[str]:
        """Evict what the ledger says an earlier (killed) run downloaded, except the snapshots
        of the checkpoints in ``keep`` (still to be traced: evicted once traced). Returns the
        identities evicted."""
        wanted = {c.identity for c in keep}
        gone = []
        for identity, entry in list(self._ledger.items()):
            if identity in wanted:
                continue
            if entry["commit"] not in cached_commits(entry["repo"]):
                self._record(identity, None)  # not there (any more): nothing to evict
                continue
            if self._delete(entry["repo"], entry["commit"]):
                gone.append(identity)
        return gone

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
