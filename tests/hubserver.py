"""A loopback stand-in for the Hugging Face Hub, for tests of the real download code.

It answers the requests that ``huggingface_hub`` and ``transformers`` make, the way the Hub
answers them, for repositories whose branches are local directories (tiny models saved in
the test):

- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}``: JSON with ``id``,
  ``sha`` (the commit the revision resolves to) and ``siblings``;
- ``GET /api/models/{repo}/refs``: the branches and the commits they point at;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the files, with sizes;
- ``HEAD``/``GET /{repo}/resolve/{rev-or-commit}/{file}``: the file, with ``X-Repo-Commit``,
  ``ETag`` and ``Content-Length`` (a branch name or a commit both resolve);
- errors as 404 with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``.

A commit is the SHA-1 of the branch's files, so moving a branch to other files changes its
commit, as a push does. ``bytes_per_second`` slows file bodies to a set bandwidth, so that
download time can be set against compute time. Every request is logged in ``requests``.

Use: ``with HubServer({"org/tiny": {"step0": dir0, "main": dir1}}) as hub:`` and set
``HF_ENDPOINT=hub.url`` (with a fresh ``HF_HOME``) in the environment of the process that
downloads (``huggingface_hub`` reads it when it is imported). Or as a process of its own, as
the Hub is (so that serving does not share an interpreter with the client):
``python hubserver.py --port P --bytes-per-second B org/tiny step0=DIR step1=DIR ...`` serves
until its standard input closes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _files(directory: str) -> dict[str, str]:
    """relative path → absolute path of every file under ``directory``."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            full = os.path.join(root, name)
            out[os.path.relpath(full, directory).replace(os.sep, "/")] = full
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=None)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _sha256(path: str) -> str:
    """The file's SHA-256, hashed once per version of the file (serving must not cost CPU)."""
    st = os.stat(path)
    return _sha256_of(path, st.st_mtime_ns, st.st_size)


class HubServer:
    """repos: ``{repo_id: {branch: directory}}``. Starts on a free loopback port."""

    def __init__(self, repos: dict[str, dict[str, str]], *, bytes_per_second: float | None = None, port: int = 0):
        self.bytes_per_second = bytes_per_second
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.repos: dict[str, dict[str, str]] = {}  # repo → branch → commit
        self.commits: dict[str, dict[str, str]] = {}  # commit → file → path
        for repo, branches in repos.items():
            for branch, directory in branches.items():
                self.set_branch(repo, branch, directory)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def set_branch(self, repo: str, branch: str, directory: str) -> str:
        """Point ``branch`` of ``repo`` at the files of ``directory`` (a push); returns the commit."""
        files = _files(os.fspath(directory))
        digest = hashlib.sha1()
        for name, path in files.items():
            digest.update(name.encode() + b"\0" + _sha256(path).encode())
        commit = digest.hexdigest()
        with self._lock:
            self.commits[commit] = files
            self.repos.setdefault(repo, {})[branch] = commit
        return commit

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloads(self) -> list[str]:
        """The paths of the file bodies served (GET on /resolve/)."""
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            # -- answers ---------------------------------------------------------------
            def _json(self, obj: Any, status: int = 200) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _error(self, code: str, message: str) -> None:
                data = json.dumps({"error": message}).encode()
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _commit(self, repo: str, rev: str) -> str | None:
                branches = hub.repos.get(repo, {})
                if rev in branches:
                    return branches[rev]
                return rev if rev in hub.commits and rev in branches.values() else None

            def _serve(self, body: bool) -> None:
                path = urllib.parse.urlsplit(self.path).path
                with hub._lock:
                    hub.requests.append((self.command, path))
                parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
                if parts[:2] == ["api", "models"]:
                    return self._api(parts[2:])
                # /{org}/{name}/resolve/{rev}/{file...}
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
                self._error("RepoNotFound", f"no route for {path}")

            def _repo_and_rest(self, rest: list[str]) -> tuple[str, list[str]]:
                return "/".join(rest[:2]), rest[2:]

            def _api(self, rest: list[str]) -> None:
                repo, tail = self._repo_and_rest(rest)
                if repo not in hub.repos:
                    return self._error("RepoNotFound", f"Repository Not Found for url: {self.path}.")
                if not tail or tail[0] == "revision":
                    rev = urllib.parse.unquote("/".join(tail[1:])) if tail else "main"
                    commit = self._commit(repo, rev)
                    if commit is None:
                        return self._error("RevisionNotFound", f"Invalid rev id: {rev}")
                    files = hub.commits[commit]
                    return self._json({"id": repo, "modelId": repo, "sha": commit, "private": False,
                                       "siblings": [{"rfilename": f} for f in files], "tags": [], "downloads": 0})
                if tail[0] == "refs":
                    branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                                for b, c in sorted(hub.repos[repo].items())]
                    return self._json({"branches": branches, "tags": [], "converts": []})
                if tail[0] == "tree" and len(tail) >= 2:
                    commit = self._commit(repo, tail[1])
                    if commit is None:
                        return self._error("RevisionNotFound", f"Invalid rev id: {tail[1]}")
                    prefix = "/".join(tail[2:])
                    entries = [{"type": "file", "path": f, "size": os.path.getsize(p), "oid": _sha256(p)[:40]}
                               for f, p in hub.commits[commit].items() if f.startswith(prefix)]
                    return self._json(entries)
                self._error("RepoNotFound", f"no API route for {self.path}")

            def _resolve(self, repo: str, rev: str, name: str, body: bool) -> None:
                if repo not in hub.repos:
                    return self._error("RepoNotFound", f"Repository Not Found for url: {self.path}.")
                commit = self._commit(repo, rev)
                if commit is None:
                    return self._error("RevisionNotFound", f"Invalid rev id: {rev}")
                path = hub.commits[commit].get(name)
                if path is None:
                    return self._error("EntryNotFound", f"{name} does not exist on {rev}")
                size = os.path.getsize(path)
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{_sha256(path)}"')
                self.send_header("Content-Length", str(size))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as fh:
                    while chunk := fh.read(1 << 16):
                        self.wfile.write(chunk)
                        if hub.bytes_per_second:
                            time.sleep(len(chunk) / hub.bytes_per_second)

        return Handler


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="serve local directories as Hub branches until stdin closes")
    parser.add_argument("repo")
    parser.add_argument("branches", nargs="+", metavar="BRANCH=DIR")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bytes-per-second", type=float)
    args = parser.parse_args(argv)
    branches = dict(b.split("=", 1) for b in args.branches)
    with HubServer({args.repo: branches}, bytes_per_second=args.bytes_per_second, port=args.port) as hub:
        print(hub.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
