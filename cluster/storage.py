"""One storage layer for a local folder or an s3:// URI, on fsspec.

    store = Storage.open("s3://bucket/runs", settings.storage)   # or "./runs"
    store.write_jsonl("demo/round-1/sft/generator/shard-00000.jsonl", rows)

Paths are relative to the root. Writes are atomic: a local file is written under a temporary
name and renamed; an S3 object appears only when its single PUT completes. So a reader never
sees half a file, and a file's presence means it is complete.

An endpoint that cannot be reached (connection refused, timeouts) is retried with exponential
backoff for `storage.retry_timeout_s`; past that, `StorageUnavailable` names the file and the
last error, and the job stops. Other errors (missing file, access denied) are raised at once.
Ray Train's checkpoint uploads go through the same retries (`RetryingFSSpecHandler`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import botocore.exceptions
import fsspec
import pyarrow
import pyarrow.fs as pafs

from cluster.settings import StorageSection, location, mask_text

log = logging.getLogger(__name__)
T = TypeVar("T")

# the endpoint is not there (yet): worth waiting for; anything else is an answer
UNREACHABLE = (botocore.exceptions.ConnectionError, aiohttp.ClientConnectionError, ConnectionError, TimeoutError)


NO_CREDENTIALS = (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)


class StorageUnavailable(RuntimeError):
    """The storage could not be reached for longer than `storage.retry_timeout_s`."""


class NoStorageCredentials(RuntimeError):
    """S3 was asked for something and no credentials were found (bad settings: never retried)."""


def with_retries(what: str, uri: str, cfg: StorageSection, call: Callable[[], T]) -> T:
    deadline = time.monotonic() + cfg.retry_timeout_s
    delay = cfg.retry_backoff_s
    while True:
        try:
            return call()
        except NO_CREDENTIALS as err:
            raise NoStorageCredentials(
                f"no S3 credentials to {what} {mask_text(uri)}: set storage.access_key_id and "
                "storage.secret_access_key (in a config file or from a Secret), or the AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY variables ({type(err).__name__})") from None
        except UNREACHABLE as err:
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(
                    f"storage unreachable: could not {what} {mask_text(uri)} within storage.retry_timeout_s="
                    f"{cfg.retry_timeout_s:g}s (last error: {mask_text(str(err))})") from err
            log.warning("storage unreachable: %s %s failed (%s); retrying in %.1fs",
                        what, mask_text(uri), mask_text(str(err)), delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def s3_options(cfg: StorageSection) -> dict[str, Any]:
    """s3fs options from settings, falling back to the standard AWS environment variables."""
    options: dict[str, Any] = {}
    endpoint = cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    if cfg.access_key_id and cfg.secret_access_key:
        options["key"] = cfg.access_key_id.get_secret_value()
        options["secret"] = cfg.secret_access_key.get_secret_value()
    if cfg.region:
        options["client_kwargs"] = {"region_name": cfg.region}
    return options


def checked_uri(uri: str) -> str:
    """`uri` as `cluster.settings.location` accepts it (a local path or s3://<bucket>/...;
    file:///x becomes /x), or ValueError naming it: a URI from the command line (--data,
    --out, ...) gets the same check as one from the settings, so a typo such as S3://b
    never becomes a local folder."""
    try:
        return location(uri)
    except ValueError as err:
        raise ValueError(f"{mask_text(uri)}: {err}") from None


def filesystem_for(uri: str, cfg: StorageSection) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for any local path or s3:// URI."""
    uri = checked_uri(uri)
    if uri.startswith("s3://"):
        fs = fsspec.filesystem("s3", **s3_options(cfg))
        return fs, uri[len("s3://"):].rstrip("/")
    fs = fsspec.filesystem("file", auto_mkdir=True)
    return fs, os.path.abspath(uri)


@dataclass
class Storage:
    fs: fsspec.AbstractFileSystem
    root: str  # without protocol
    protocol: str  # "s3" or "file"
    settings: StorageSection

    @classmethod
    def open(cls, uri: str, settings: StorageSection) -> "Storage":
        uri = checked_uri(uri)
        fs, root = filesystem_for(uri, settings)
        return cls(fs, root, "s3" if uri.startswith("s3://") else "file", settings)

    # paths
    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}".rstrip("/") if rel else self.root

    def uri(self, rel: str = "") -> str:
        path = self.path(rel)
        return f"s3://{path}" if self.protocol == "s3" else path

    def child(self, rel: str) -> "Storage":
        return Storage(self.fs, self.path(rel), self.protocol, self.settings)

    # queries
    def retrying(self, what: str, rel: str, call: Callable[[], T]) -> T:
        return with_retries(what, self.uri(rel), self.settings, call)

    def exists(self, rel: str) -> bool:
        return self.retrying("check", rel, lambda: self.fs.exists(self.path(rel)))

    def list(self, rel: str, suffix: str = "") -> list[str]:
        """Names (not paths) directly under `rel`, sorted; [] when it does not exist."""
        try:
            entries = self.retrying("list", rel, lambda: self.fs.ls(self.path(rel), detail=False, refresh=True))
        except FileNotFoundError:
            return []
        names = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return [n for n in names if n.endswith(suffix) and not n.startswith(".tmp")]

    # bytes and text
    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        if self.protocol == "s3":
            self.retrying("write", rel, lambda: self.fs.pipe_file(path, data))
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{os.path.dirname(path)}/.tmp-{uuid.uuid4().hex}-{os.path.basename(path)}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def read_bytes(self, rel: str) -> bytes:
        return self.retrying("read", rel, lambda: self.fs.cat_file(self.path(rel)))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_text(rel, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def write_jsonl(self, rel: str, rows: Iterable[dict]) -> int:
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        self.write_text(rel, "".join(line + "\n" for line in lines))
        return len(lines)

    def read_jsonl(self, rel: str) -> Iterator[dict]:
        for line in self.read_text(rel).splitlines():
            if line.strip():
                yield json.loads(line)

    # folders (models, checkpoints)
    def put_dir(self, local_dir: str, rel: str) -> None:
        """Upload a local folder; the files land one by one, so callers mark completion
        separately (see `RunLayout.mark_done`)."""
        target = self.path(rel)
        for dirpath, _, files in os.walk(local_dir):
            for name in sorted(files):
                src = os.path.join(dirpath, name)
                dst = f"{target}/{os.path.relpath(src, local_dir)}"
                if self.protocol == "s3":
                    self.retrying("upload", f"{rel}/{os.path.relpath(src, local_dir)}",
                                  lambda: self.fs.put_file(src, dst))
                else:
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    self.fs.copy(src, dst)

    def get_dir(self, rel: str, local_dir: str) -> str:
        os.makedirs(local_dir, exist_ok=True)
        self.retrying("download", rel, lambda: self.fs.get(self.path(rel).rstrip("/") + "/",
                                                         local_dir.rstrip("/") + "/", recursive=True))
        return local_dir

    def delete(self, rel: str) -> None:
        if self.exists(rel):
            self.retrying("delete", rel, lambda: self.fs.rm(self.path(rel), recursive=True))

    def pyarrow(self):
        """(pyarrow filesystem, root path) for Ray Train's RunConfig and Ray Data."""
        if self.protocol == "s3":
            return pafs.PyFileSystem(RetryingFSSpecHandler(self.fs, self.settings)), self.root
        return pafs.LocalFileSystem(), self.root


class RetryingFSSpecHandler(pafs.FSSpecHandler):
    """pyarrow's view of an fsspec filesystem (what Ray Train writes checkpoints through), with
    the storage layer's retries: every call waits out an unreachable endpoint for
    `retry_timeout_s`, and a file being written is kept in a local temporary file and uploaded
    when closed, so an upload that meets an outage is retried whole instead of failing mid-stream."""

    def __init__(self, fs: fsspec.AbstractFileSystem, settings: StorageSection):
        super().__init__(fs)
        self.settings = settings

    def _retry(self, what: str, path: str, method: Callable[..., T], *args: Any) -> T:
        return with_retries(what, f"s3://{path}", self.settings, lambda: method(self, *args))

    def get_file_info(self, paths):
        return self._retry("check", paths[0] if paths else "", pafs.FSSpecHandler.get_file_info, paths)

    def get_file_info_selector(self, selector):
        return self._retry("list", selector.base_dir, pafs.FSSpecHandler.get_file_info_selector, selector)

    def create_dir(self, path, recursive):
        return self._retry("create", path, pafs.FSSpecHandler.create_dir, path, recursive)

    def delete_dir(self, path):
        return self._retry("delete", path, pafs.FSSpecHandler.delete_dir, path)

    def delete_dir_contents(self, path, missing_dir_ok):
        return self._retry("delete", path, pafs.FSSpecHandler.delete_dir_contents, path, missing_dir_ok)

    def delete_file(self, path):
        return self._retry("delete", path, pafs.FSSpecHandler.delete_file, path)

    def move(self, src, dest):
        return self._retry("move", src, pafs.FSSpecHandler.move, src, dest)

    def copy_file(self, src, dest):
        return self._retry("copy", src, pafs.FSSpecHandler.copy_file, src, dest)

    def open_input_stream(self, path):
        return self._retry("read", path, pafs.FSSpecHandler.open_input_stream, path)

    def open_input_file(self, path):
        return self._retry("read", path, pafs.FSSpecHandler.open_input_file, path)

    def open_output_stream(self, path, metadata):
        def upload(local: str) -> None:
            with_retries("write", f"s3://{path}", self.settings, lambda: self.fs.put_file(local, path))

        return pyarrow.PythonFile(_UploadOnClose(path, upload), mode="w")


class _UploadOnClose(io.FileIO):
    """A local temporary file that `upload`s itself when closed, then goes away."""

    def __init__(self, path: str, upload: Callable[[str], None]):
        fd, self.local = tempfile.mkstemp(prefix="upload-", suffix="-" + os.path.basename(path))
        os.close(fd)
        super().__init__(self.local, "wb")
        self.upload = upload

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        try:
            self.upload(self.local)
        finally:
            os.remove(self.local)
