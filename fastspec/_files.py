"""Every file fastspec writes is written to a temporary name beside it and renamed into place,
so a failed or killed write (a full disk, ``ulimit -f``, ``kill -9``) never leaves a truncated
file where a good result was. A failure removes its temporary file and raises an ``OSError``
that names the path; the temporary files of a killed run (``.<name>.fastspec-tmp-<host>-<pid>``) are
removed by the next run that writes into that directory (:func:`remove_stale`).

Below every subpackage (it imports nothing of fastspec), so each layer writes the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import uuid
from typing import Any, Iterator

TMP_MARK = ".fastspec-tmp-"
_HOST = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname()) or "host"


def temporary_name(name: str) -> str:
    """The temporary name of ``name`` in this process: ``.<name>.fastspec-tmp-<host>-<pid>``
    (the host too, so that a run on another machine sharing the directory is never taken
    for a dead one)."""
    return f".{name}{TMP_MARK}{_HOST}-{os.getpid()}"


def _temporary(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, temporary_name(tail))


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write ``path``'s new content to; when the block succeeds it
    replaces ``path`` in one rename, when it fails it is removed and ``path`` is untouched.
    An OSError (no space, file too large, no permission) is raised again naming ``path``."""
    path = os.fspath(path)
    tmp = _temporary(path)
    try:
        parent = os.path.dirname(path)
        if parent and os.path.exists(parent) and not os.path.isdir(parent):
            raise NotADirectoryError(f"cannot write {path}: {parent} is a file, not a directory")
        if parent:
            os.makedirs(parent, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except NotADirectoryError as err:
        _remove(tmp)
        if str(err).startswith("cannot write"):
            raise
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from err
    except OSError as err:
        _remove(tmp)
        if err.errno is None:
            raise OSError(f"cannot write {path}: {err}") from err
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from err
    except BaseException:
        _remove(tmp)
        raise


def existing_file(path: str | os.PathLike, what: str = "file") -> str:
    """``path`` if it is a file; else FileNotFoundError, or IsADirectoryError for a
    directory where a file is expected, naming the path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a {what}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replacing`; return the path."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return os.fspath(path)


def json_text(obj: Any) -> str:
    """Strict JSON (no NaN or ±Infinity, which strict parsers reject: they become null),
    indented, with a final newline."""
    return json.dumps(_finite(obj), indent=1, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """:func:`json_text` of ``obj`` into ``path`` through :func:`replacing`."""
    return write_text(path, json_text(obj))


def write_csv(frame: Any, path: str | os.PathLike) -> str:
    """A pandas DataFrame as CSV (no index) into ``path`` through :func:`replacing`."""
    with replacing(path) as tmp:
        frame.to_csv(tmp, index=False)
    return os.fspath(path)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """A matplotlib figure into ``path`` (its format from the extension) through
    :func:`replacing`."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    with replacing(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return path


def create_json(path: str | os.PathLike, obj: Any) -> bool:
    """Write :func:`json_text` of ``obj`` to ``path`` only if no file is there, atomically:
    whoever creates ``path`` first wins, and a reader never sees part of it. The content goes
    to a temporary name first and is hard-linked to ``path`` (link(2) fails when the target
    exists, on NFS too); on a filesystem without hard links, ``O_CREAT | O_EXCL`` creates it
    and the content follows (a reader may then briefly see it empty). Returns whether this
    call created it."""
    path = os.fspath(path)
    tmp = _temporary(f"{path}.{uuid.uuid4().hex[:8]}")  # unique to the call: threads of one process race too
    text = json_text(obj)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return True
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    finally:
        _remove(tmp)


def this_host() -> str:
    """This machine's name as temporary files and claims spell it."""
    return _HOST


def process_alive(host: str, pid: int) -> bool | None:
    """Whether process ``pid`` of machine ``host`` is running: known on this machine only
    (None for another's)."""
    if host != _HOST:
        return None
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(directory: str | os.PathLike, name: str = "") -> list[str]:
    """Remove the temporary files (and directories: an index being built) that killed runs
    of this machine left in ``directory`` for targets whose name starts with ``name``, those
    of processes that are no longer running; return them."""
    directory = os.fspath(directory)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(directory):
            stem, mark, owner = entry.rpartition(TMP_MARK)
            host, _, pid = owner.rpartition("-")
            if not (mark and stem.startswith("." + name) and host == _HOST and pid.isdigit()):
                continue
            if int(pid) == os.getpid() or _alive(int(pid)):
                continue
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                _remove(path)
            removed.append(path)
    return removed


def bar_off(progress: bool) -> bool | None:
    """tqdm's ``disable=`` for ``progress``: off when not asked for, and (None: tqdm's own
    test) off on a stream that is not a terminal, where every update would be a line of its
    own (a demo's log once held ~800 of them); notes written with ``tqdm.write`` still show."""
    return True if not progress else None
