"""A fake Hugging Face Hub: a real HTTP server on 127.0.0.1 that speaks just enough of the Hub's
HTTP API for huggingface_hub 2.4's `model_info`, `snapshot_download` and `hf_hub_download`.

What it serves, as the real Hub does:
- GET /api/models/{repo}[/revision/{rev}]: the repo's info, with `sha` (the commit) and `siblings`.
- GET /api/models/{repo}/tree/{rev}[?recursive=true]: the file listing (git blob ids, LFS metadata).
- HEAD/GET /{repo}/resolve/{rev}/{path}: small files directly, with ETag (the git blob id),
  Content-Length and X-Repo-Commit. LFS files (*.safetensors, *.bin) answer 302 to a "CDN"
  (the same server under the host name `localhost`, which huggingface_hub treats as a foreign
  host: it drops the Authorization header and takes the metadata from X-Linked-Etag /
  X-Linked-Size on the redirect itself).
- Errors with the Hub's X-Error-Code header: RepoNotFound, RevisionNotFound, EntryNotFound,
  GatedRepo (401 without a token, 403 with a token that has no access).

No Xet headers are sent, so downloads take the plain HTTP path even with hf_xet installed.
Every request is logged in `hub.requests` so tests can check what was (not) fetched.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".onnx", ".msgpack", ".h5", ".pt")


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    allowed_tokens: set[str] = field(default_factory=set)  # tokens that may read a gated repo

    def __post_init__(self) -> None:
        # Hashed once: the handler needs them on nearly every request.
        digest = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + self.files[path])
        self.sha = digest.hexdigest()  # the commit
        self.sha256 = {path: hashlib.sha256(content).hexdigest() for path, content in self.files.items()}

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def folders(self) -> list[str]:
        found = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(found)


@dataclass
class Request:
    method: str
    host: str
    path: str
    authorization: str | None


class FakeHub:
    """Start with `with FakeHub() as hub:`; `hub.endpoint` is the base URL to hand huggingface_hub."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.fail_downloads: dict[str, str] = {}  # path in repo -> "error" (HTTP 500) or "short" (half the bytes)
        self.fail_api: dict[str, int] = {}  # "info" or "tree" -> an HTTP status to answer instead (4xx: 5xx are retried for ~20 s)
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_repo(self, repo_id: str, files: dict[str, bytes], gated: bool = False, allowed_tokens: set[str] | None = None) -> FakeRepo:
        repo = FakeRepo(repo_id, dict(files), gated, set(allowed_tokens or ()))
        self.repos[repo_id] = repo
        return repo

    def fetched(self) -> list[str]:
        """Paths of repo files whose bytes were requested (GET on resolve, or on the CDN)."""
        by_sha = {sha256: path for repo in self.repos.values() for path, sha256 in repo.sha256.items()}
        paths = []
        for request in self.requests:
            if request.method != "GET":
                continue
            if request.path.startswith("/cdn/"):
                paths.append(by_sha.get(request.path.split("/")[2], request.path))
            elif "/resolve/" in request.path:
                paths.append(unquote(request.path.split("/resolve/", 1)[1].split("/", 1)[1]))
        return paths


class _Server(ThreadingHTTPServer):
    # huggingface_hub downloads with 8 threads; the default backlog of 5 drops connections, which
    # the kernel then retries after a second.
    request_queue_size = 64
    daemon_threads = True


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        # -- routing ---------------------------------------------------------------------

        def _route(self, body: bool) -> None:
            url = urlsplit(self.path)
            hub.requests.append(Request(self.command, self.headers.get("Host", ""), url.path, self.headers.get("Authorization")))
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            if parts[:1] == ["cdn"] and len(parts) == 2:
                return self._cdn(parts[1], body)
            if parts[:2] == ["api", "models"]:
                return self._api(parts[2:], parse_qs(url.query))
            if "resolve" in parts:
                at = parts.index("resolve")
                return self._resolve("/".join(parts[:at]), parts[at + 1] if len(parts) > at + 1 else "", "/".join(parts[at + 2 :]), body)
            self._error(404, "", "Not found")

        def _api(self, parts: list[str], query: dict[str, list[str]]) -> None:
            for keyword in ("revision", "tree"):
                if keyword in parts:
                    at = parts.index(keyword)
                    repo_id, rest = "/".join(parts[:at]), parts[at + 1 :]
                    break
            else:
                keyword, repo_id, rest = "info", "/".join(parts), []
            repo = self._repo(repo_id)
            if repo is None:
                return
            revision = rest[0] if rest else "main"
            if not self._revision_ok(repo, revision):
                return
            if keyword in hub.fail_api:
                return self._error(hub.fail_api[keyword], "", "Forbidden", repo)
            if keyword == "tree":
                return self._json(self._tree(repo, "/".join(rest[1:]), query.get("recursive", ["false"])[0].lower() == "true"), repo)
            with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
            info = {
                "_id": repo.sha[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.sha,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "tags": [],
                "siblings": [self._sibling(repo, path, with_blobs) for path in sorted(repo.files)],
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
            }
            self._json(info, repo)

        def _sibling(self, repo: FakeRepo, path: str, with_blobs: bool) -> dict:
            if not with_blobs:
                return {"rfilename": path}
            content = repo.files[path]
            sibling: dict = {"rfilename": path, "size": len(content), "blobId": git_blob_id(content)}
            if repo.is_lfs(path):
                sibling["lfs"] = {"sha256": repo.sha256[path], "size": len(content), "pointerSize": 134}
            return sibling

        def _tree(self, repo: FakeRepo, under: str, recursive: bool) -> list[dict]:
            prefix = f"{under}/" if under else ""
            entries = []
            for folder in repo.folders():
                inside = folder[len(prefix) :] if folder.startswith(prefix) else None
                if inside and (recursive or "/" not in inside):
                    entries.append({"type": "directory", "oid": git_blob_id(folder.encode()), "size": 0, "path": folder})
            for path, content in sorted(repo.files.items()):
                inside = path[len(prefix) :] if path.startswith(prefix) else None
                if not inside or (not recursive and "/" in inside):
                    continue
                entry: dict = {"type": "file", "oid": git_blob_id(content), "size": len(content), "path": path}
                if repo.is_lfs(path):
                    entry["lfs"] = {"oid": repo.sha256[path], "size": len(content), "pointerSize": 134}
                entries.append(entry)
            return entries

        def _resolve(self, repo_id: str, revision: str, path: str, body: bool) -> None:
            repo = self._repo(repo_id)
            if repo is None or not self._revision_ok(repo, revision):
                return
            if repo.gated:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if token not in repo.allowed_tokens:
                    status = 403 if token else 401
                    return self._error(status, "GatedRepo", f"Access to model {repo.repo_id} is restricted.", repo)
            content = repo.files.get(path)
            if content is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", repo)
            if repo.is_lfs(path):
                sha256 = repo.sha256[path]
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn}/cdn/{sha256}?expires=never")
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("ETag", f'"{git_blob_id(content)}"')
                self.send_header("X-Linked-Etag", f'"{sha256}"')
                self.send_header("X-Linked-Size", str(len(content)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_file(content, f'"{git_blob_id(content)}"', repo, path, body)

        def _cdn(self, sha256: str, body: bool) -> None:
            for repo in hub.repos.values():
                for path, digest in repo.sha256.items():
                    if digest == sha256:
                        return self._send_file(repo.files[path], f'"{sha256}"', None, path, body)
            self._error(404, "", "no such object")

        # -- answers ---------------------------------------------------------------------

        def _repo(self, repo_id: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
            return repo

        def _revision_ok(self, repo: FakeRepo, revision: str) -> bool:
            if revision in ("main", repo.sha):
                return True
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", repo)
            return False

        def _send_file(self, content: bytes, etag: str, repo: FakeRepo | None, path: str, body: bool) -> None:
            failure = hub.fail_downloads.get(path) if body else None
            if failure == "error":
                return self._error(500, "", "Internal Error")
            payload = content[: len(content) // 2] if failure == "short" else content
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if repo is not None:
                self.send_header("X-Repo-Commit", repo.sha)
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def _json(self, data: object, repo: FakeRepo) -> None:
            payload = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Repo-Commit", repo.sha)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _error(self, status: int, code: str, message: str, repo: FakeRepo | None = None) -> None:
            payload = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if repo is not None:
                self.send_header("X-Repo-Commit", repo.sha)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    return Handler
