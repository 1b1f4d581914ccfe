"""A local stand-in for the Hugging Face Hub HTTP API, for tests (SPEC §6).

The Hub cannot be reached from the machines this project is tested on, so pushing and pulling are tested against
this server: the real `huggingface_hub` client (and `transformers`' `push_to_hub` / `from_pretrained`) talk to it
through `HF_ENDPOINT`. It speaks the part of the API those clients use:

- `POST /api/repos/create`, `POST|DELETE /api/repos/delete`, `GET /api/whoami-v2`;
- `GET /api/{type}s/{repo_id}[/revision/{revision}]` (repo info with `sha`, `siblings`, `cardData`);
- `GET /api/{type}s/{repo_id}/tree/{revision}[/{path}]` (`list_repo_files`, `list_repo_tree`, `snapshot_download`);
- `GET /api/{type}s/{repo_id}/refs`, `POST|DELETE /api/{type}s/{repo_id}/branch/{branch}`,
  `POST /api/{type}s/{repo_id}/tag/{revision}`;
- `POST /api/{type}s/{repo_id}/preupload/{revision}` (always the "regular" upload mode, so that file contents come
  inline, base64-encoded, in the commit) and `POST /api/{type}s/{repo_id}/commit/{revision}` (ndjson);
- `HEAD|GET /[{type}s/]{repo_id}/resolve/{revision}/{path}` with the `ETag`, `X-Repo-Commit` and `Content-Length`
  headers that `hf_hub_download` needs;
- `POST /api/validate-yaml`, which checks the metadata fields the project's model cards use.

Errors carry the Hub's `X-Error-Code` header, so that the client raises `RepositoryNotFoundError`,
`RevisionNotFoundError` and `EntryNotFoundError` as it would against the Hub. Repositories live in memory: each
commit is a full snapshot (path -> bytes) with its own sha1; branches and tags point at commits. LFS and Xet uploads
are refused (the preupload answer never asks for them), and so are pull requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
_BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
_REPO_ID_PATTERN = re.compile(r"^[\w.-]+/[\w.-]+$")


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as `oid`/`blobId`/`ETag` for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    """An error answered to the client as the Hub would: a status, a JSON body and an `X-Error-Code` header."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        *,
        repo_commit: str | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.repo_commit = repo_commit
        self.extra = extra or {}


@dataclass
class Commit:
    """One commit: a full snapshot of the repository's files."""

    oid: str
    parent: str | None
    title: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    """One repository, kept in memory."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """Commit that a branch, a tag, a full commit sha or an unambiguous sha prefix (>= 7 characters) names."""
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision in self.commits:
            oid = revision
        if oid is None and re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [sha for sha in self.commits if sha.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def add_commit(self, branch: str, title: str, files: dict[str, bytes], parent: str | None) -> Commit:
        """Record a snapshot on top of `parent` and move `branch` to it."""
        digest = hashlib.sha1()
        digest.update(f"{parent}\n{title}\n{len(self.commits)}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(files[path])}\n".encode())
        commit = Commit(digest.hexdigest(), parent, title, dict(files), _now())
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _front_matter(text: str) -> tuple[Any, str | None]:
    """The YAML block at the top of a card, parsed (None when absent), and the parse error if any."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if match is None:
        return None, None
    try:
        return yaml.safe_load(match.group(1)), None
    except yaml.YAMLError as error:
        return None, f"Invalid YAML in the metadata block: {error}"


def card_metadata_errors(metadata: Any) -> list[str]:
    """Errors the Hub would report for a card's metadata, for the fields this project's cards use."""
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["The metadata block must be a YAML mapping."]
    errors = []
    for key in ("tags", "datasets", "metrics", "language"):
        value = metadata.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or a list of strings.')
    for key in ("library_name", "license", "pipeline_tag", "base_model_relation"):
        if key in metadata and not isinstance(metadata[key], str):
            errors.append(f'"{key}" must be a string.')
    base_models = metadata.get("base_model")
    if base_models is not None:
        base_models = [base_models] if isinstance(base_models, str) else base_models
        if not isinstance(base_models, list) or not all(
            isinstance(b, str) and _REPO_ID_PATTERN.match(b) for b in base_models
        ):
            errors.append('"base_model" must be a model id ("namespace/name") or a list of them.')
    relation = metadata.get("base_model_relation")
    if relation is not None:
        if relation not in _BASE_MODEL_RELATIONS:
            errors.append(f'"base_model_relation" must be one of {", ".join(_BASE_MODEL_RELATIONS)}.')
        if base_models is None:
            errors.append('"base_model_relation" requires "base_model".')
    if "model-index" in metadata:
        errors.extend(_model_index_errors(metadata["model-index"]))
    return errors


def _model_index_errors(model_index: Any) -> list[str]:
    if not isinstance(model_index, list) or not model_index:
        return ['"model-index" must be a non-empty list.']
    errors = []
    for i, entry in enumerate(model_index):
        where = f'"model-index[{i}]"'
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'{where} needs a string "name".')
            continue
        results = entry.get("results")
        if not isinstance(results, list):
            errors.append(f'{where} needs a list "results".')
            continue
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            task, dataset = result.get("task"), result.get("dataset")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'{at}.task needs a string "type".')
            if not isinstance(dataset, dict) or not all(
                isinstance(dataset.get(k), str) for k in ("type", "name")
            ):
                errors.append(f'{at}.dataset needs string "type" and "name".')
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f"{at}.metrics must be a non-empty list.")
                continue
            for k, metric in enumerate(metrics):
                if (
                    not isinstance(metric, dict)
                    or not isinstance(metric.get("type"), str)
                    or "value" not in metric
                ):
                    errors.append(f'{at}.metrics[{k}] needs a string "type" and a "value".')
                elif not isinstance(metric["value"], int | float | str) or isinstance(metric["value"], bool):
                    errors.append(f"{at}.metrics[{k}].value must be a number or a string.")
    return errors


_REPO = r"(?P<type>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)"
_ROUTES: list[tuple[tuple[str, ...], re.Pattern, str]] = [
    (methods, re.compile(pattern), handler)
    for methods, pattern, handler in [
        (("GET",), r"^/api/whoami-v2$", "whoami"),
        (("POST",), r"^/api/validate-yaml$", "validate_yaml"),
        (("POST",), r"^/api/repos/create$", "create_repo"),
        (("POST", "DELETE"), r"^/api/repos/delete$", "delete_repo"),
        (("GET",), rf"^/api/{_REPO}(?:/revision/(?P<revision>[^/]+))?$", "repo_info"),
        (("GET",), rf"^/api/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?$", "tree"),
        (("GET",), rf"^/api/{_REPO}/refs$", "refs"),
        (("POST",), rf"^/api/{_REPO}/branch/(?P<branch>[^/]+)$", "create_branch"),
        (("DELETE",), rf"^/api/{_REPO}/branch/(?P<branch>[^/]+)$", "delete_branch"),
        (("POST",), rf"^/api/{_REPO}/tag/(?P<revision>[^/]+)$", "create_tag"),
        (("POST",), rf"^/api/{_REPO}/preupload/(?P<revision>[^/]+)$", "preupload"),
        (("POST",), rf"^/api/{_REPO}/commit/(?P<revision>[^/]+)$", "commit"),
        (
            ("GET", "HEAD"),
            r"^/(?:(?P<prefix>datasets|spaces)/)?(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$",
            "resolve",
        ),
    ]
]


class LocalHub:
    """An in-memory Hub on 127.0.0.1, served from a background thread.

    Use it as a context manager, or call `start()` and `stop()`. `endpoint` is the value for `HF_ENDPOINT`.
    `requests` records every `(method, path)` served, which helps when a client calls an endpoint this server lacks
    (those are answered 404 with a JSON error naming the path).
    """

    def __init__(self, user: str = "local-user", host: str = "127.0.0.1", port: int = 0):
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        # A short poll interval keeps `stop()` (and each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="local-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def repo_url(self, repo: Repo) -> str:
        return f"{self.endpoint}/{_URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # Handlers: each takes the URL groups, the query and the request body, and returns (status, JSON-able body),
    # or (200, _FileResponse) for file contents.

    def whoami(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        return 200, {"type": "user", "name": self.user, "fullname": self.user, "orgs": [], "auth": {}}

    def validate_yaml(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        content = json.loads(body or b"{}").get("content", "")
        metadata, parse_error = _front_matter(content)
        errors = [parse_error] if parse_error else card_metadata_errors(metadata)
        if errors:
            return 400, {"errors": [{"message": message} for message in errors], "warnings": []}
        warnings = [] if metadata else [{"message": "Empty or missing yaml metadata in repo card"}]
        return 200, {"errors": [], "warnings": warnings}

    def create_repo(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        if repo_type not in _URL_PREFIXES or not _REPO_ID_PATTERN.match(repo_id):
            raise HubError(400, f"Invalid repo type or name: {repo_type} {repo_id}")
        if (repo_type, repo_id) in self.repos:
            repo = self.repos[(repo_type, repo_id)]
            raise HubError(409, "You already created this repo", extra={"url": self.repo_url(repo)})
        repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private", created_at=_now())
        repo.add_commit("main", "initial commit", {".gitattributes": _GITATTRIBUTES}, parent=None)
        self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": self.repo_url(repo), "name": repo_id, "id": repo_id}

    def delete_repo(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo = self.get_repo(repo_type, f"{payload.get('organization') or self.user}/{payload['name']}")
        del self.repos[(repo.repo_type, repo.repo_id)]
        return 200, {}

    def repo_info(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        commit = repo.resolve(groups["revision"] or "main")
        metadata, _ = _front_matter(commit.files.get("README.md", b"").decode("utf-8", errors="replace"))
        card_data = metadata if isinstance(metadata, dict) else None
        info = {
            "id": repo.repo_id,
            "_id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list((card_data or {}).get("tags") or []),
            "cardData": card_data,
            "siblings": [
                {"rfilename": path, "size": len(content), "blobId": git_blob_oid(content)}
                for path, content in sorted(commit.files.items())
            ],
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["library_name"] = (card_data or {}).get("library_name")
            info["pipeline_tag"] = (card_data or {}).get("pipeline_tag")
            info["model-index"] = (card_data or {}).get("model-index")
        return 200, info

    def tree(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        commit = repo.resolve(groups["revision"])
        root = (groups["path"] or "").strip("/")
        recursive = query.get("recursive", ["False"])[0].lower() in ("1", "true")
        prefix = f"{root}/" if root else ""
        if root and not any(path.startswith(prefix) for path in commit.files):
            raise HubError(404, f"{root} does not exist on {groups['revision']}", "EntryNotFound")
        entries: dict[str, dict] = {}
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(
                    folder, {"type": "directory", "oid": git_blob_oid(folder.encode()), "size": 0}
                )
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "oid": git_blob_oid(content), "size": len(content)}
        return 200, [{**entry, "path": path} for path, entry in sorted(entries.items())]

    def refs(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        return 200, {
            "branches": [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                for name, oid in repo.branches.items()
            ],
            "tags": [
                {"name": name, "ref": f"refs/tags/{name}", "targetCommit": oid}
                for name, oid in repo.tags.items()
            ],
            "converts": [],
            "pullRequests": [],
        }

    def create_branch(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        if groups["branch"] in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{groups['branch']}")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        repo.branches[groups["branch"]] = repo.resolve(start).oid
        return 200, {}

    def delete_branch(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        if groups["branch"] == "main" or groups["branch"] not in repo.branches:
            raise HubError(400, f"Cannot delete branch {groups['branch']}")
        del repo.branches[groups["branch"]]
        return 200, {}

    def create_tag(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        tag = json.loads(body)["tag"]
        if tag in repo.tags:
            raise HubError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = repo.resolve(groups["revision"]).oid
        return 200, {}

    def preupload(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        commit = repo.resolve(groups["revision"])
        files = []
        for item in json.loads(body)["files"]:
            existing = commit.files.get(item["path"])
            oid = git_blob_oid(existing) if existing is not None else None
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": files, "commitOid": commit.oid}

    def commit(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["type"]], groups["repo_id"])
        branch = groups["revision"]
        if query.get("create_pr"):
            raise HubError(
                400, "Pull requests are not supported by the local hub; commit to a branch instead."
            )
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
        head = repo.commits[repo.branches[branch]]
        files = dict(head.files)
        title = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent is not None and not head.oid.startswith(parent):
                    raise HubError(412, f"Parent commit {parent} is not the head of {branch} ({head.oid}).")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: content for path, content in files.items() if not path.startswith(folder)}
            else:
                raise HubError(
                    400, f"Commit operation {key!r} is not supported by the local hub (no LFS, no copies)."
                )
        commit = repo.add_commit(branch, title, files, parent=head.oid)
        return 200, {
            "commitUrl": f"{self.repo_url(repo)}/commit/{commit.oid}",
            "commitOid": commit.oid,
            "success": True,
            "pullRequestUrl": None,
        }

    def resolve(self, groups: dict, query: dict, body: bytes) -> tuple[int, Any]:
        repo = self.get_repo(_REPO_TYPES[groups["prefix"] or "models"], groups["repo_id"])
        commit = repo.resolve(groups["revision"])
        content = commit.files.get(groups["path"])
        if content is None:
            raise HubError(404, "Entry not found", "EntryNotFound", repo_commit=commit.oid)
        return 200, _FileResponse(content, commit.oid)


@dataclass
class _FileResponse:
    content: bytes
    commit_oid: str


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("local hub: " + format, *args)

        def do_GET(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_DELETE(self) -> None:
            self._dispatch()

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                chunks = []
                while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            body = self._read_body()
            hub.requests.append((self.command, url.path))
            try:
                for methods, pattern, name in _ROUTES:
                    match = pattern.match(url.path) if self.command in methods else None
                    if match is not None:
                        groups = {
                            k: unquote(v) if v is not None else None for k, v in match.groupdict().items()
                        }
                        with hub._lock:
                            status, payload = getattr(hub, name)(groups, parse_qs(url.query), body)
                        break
                else:
                    raise HubError(404, f"{self.command} {url.path} is not implemented by the local hub")
            except HubError as error:
                self._send_error(error)
                return
            if isinstance(payload, _FileResponse):
                self._send_file(payload)
            else:
                self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

        def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _send_error(self, error: HubError) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
            if error.error_code is not None:
                headers["X-Error-Code"] = error.error_code
            if error.repo_commit is not None:
                headers["X-Repo-Commit"] = error.repo_commit
            self._send(error.status, json.dumps({"error": error.message, **error.extra}).encode(), headers)

        def _send_file(self, file: _FileResponse) -> None:
            content, status = file.content, 200
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{git_blob_oid(file.content)}"',
                "X-Repo-Commit": file.commit_oid,
                "Accept-Ranges": "bytes",
            }
            byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if byte_range is not None and self.command == "GET":
                start = int(byte_range.group(1))
                end = int(byte_range.group(2)) if byte_range.group(2) else len(content) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                content, status = content[start : end + 1], 206
            self._send(status, content, headers)

    return Handler
