"""A small S3-compatible object store on a local directory, for the soak's broker (not a test).

tansu 0.6's S3 engine lists every object of a partition on each fetch; moto lists about 2 ms per object
on the shared machine, so a partition's fetches slow down as its log grows until clients time out. This
server keeps a sorted in-memory index over files in a directory (objects outlive the broker that wrote
them) and answers the calls tansu makes: bucket create, PUT (with ``If-None-Match: *`` / ``If-Match``),
GET and HEAD (with ``Range`` and ``If-None-Match``), DELETE, copy and ListObjectsV2 with prefix,
delimiter and continuation. It does no authentication.

    .venv/bin/python bench/s3dir.py --port 9000 --dir /tmp/objects
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import threading
import time
import urllib.parse
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True)
class Meta:
    etag: str  # quoted, as S3 sends it
    size: int
    modified: float


class Store:
    """Objects of all buckets as files under ``root``; the index is rebuilt from them at start."""

    def __init__(self, root: Path) -> None:
        self.root, self.lock = root, threading.Lock()
        self.keys: dict[str, list[str]] = {}  # bucket -> sorted keys
        self.meta: dict[tuple[str, str], Meta] = {}
        for bucket in (p for p in root.iterdir() if p.is_dir()) if root.exists() else ():
            self.keys[bucket.name] = []
            for file in bucket.rglob("*"):
                if file.is_file() and not file.name.endswith(".tmp"):
                    data = file.read_bytes()
                    key = urllib.parse.unquote(file.name)
                    self._index(bucket.name, key, data, file.stat().st_mtime)

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / bucket / urllib.parse.quote(key, safe="")

    def _index(self, bucket: str, key: str, data: bytes, modified: float) -> Meta:
        keys = self.keys[bucket]
        if (bucket, key) not in self.meta:
            bisect.insort(keys, key)
        meta = Meta(f'"{hashlib.md5(data).hexdigest()}"', len(data), modified)  # an ETag, not a secret
        self.meta[(bucket, key)] = meta
        return meta

    def create_bucket(self, bucket: str) -> None:
        with self.lock:
            (self.root / bucket).mkdir(parents=True, exist_ok=True)
            self.keys.setdefault(bucket, [])

    def put(self, bucket: str, key: str, data: bytes, *, if_none_match: str, if_match: str) -> Meta | None:
        """Return the new object's metadata, or None when a condition failed."""
        with self.lock:
            if bucket not in self.keys:
                raise KeyError(bucket)
            old = self.meta.get((bucket, key))
            if if_none_match == "*" and old is not None:
                return None
            if if_match and (old is None or old.etag != if_match):
                return None
            path = self._path(bucket, key)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            return self._index(bucket, key, data, time.time())

    def get(self, bucket: str, key: str) -> tuple[Meta, bytes] | None:
        with self.lock:
            meta = self.meta.get((bucket, key))
            return None if meta is None else (meta, self._path(bucket, key).read_bytes())

    def delete(self, bucket: str, key: str) -> None:
        with self.lock:
            if self.meta.pop((bucket, key), None) is not None:
                self.keys[bucket].remove(key)
                self._path(bucket, key).unlink(missing_ok=True)

    def list(
        self, bucket: str, *, prefix: str, delimiter: str, after: str, limit: int
    ) -> tuple[list[tuple[str, Meta]], list[str], str]:
        """Return (objects, common prefixes, continuation key or "" when done)."""
        with self.lock:
            keys = self.keys[bucket]
            i = bisect.bisect_right(keys, after) if after else bisect.bisect_left(keys, prefix)
            objects: list[tuple[str, Meta]] = []
            prefixes: list[str] = []
            last = ""
            while i < len(keys) and keys[i].startswith(prefix):
                if len(objects) + len(prefixes) >= limit:
                    return objects, prefixes, last
                key = keys[i]
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    prefixes.append(common)
                    last = common + "\U0010ffff"  # past every key under it
                    i = bisect.bisect_left(keys, last)
                    continue
                objects.append((key, self.meta[(bucket, key)]))
                last = key
                i += 1
            return objects, prefixes, ""


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: Store

    def log_message(self, format: str, *args: object) -> None:
        return

    def _target(self) -> tuple[str, str, dict[str, str]]:
        url = urllib.parse.urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        return urllib.parse.unquote(bucket), urllib.parse.unquote(key), query

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code></Error>"
        self._reply(status, body.encode(), {"Content-Type": "application/xml"})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self) -> None:
        bucket, key, _ = self._target()
        data = self._body()
        if not key:
            self.store.create_bucket(bucket)
            self._reply(200)
            return
        if source := self.headers.get("x-amz-copy-source"):
            src_bucket, _, src_key = urllib.parse.unquote(source).lstrip("/").partition("/")
            found = self.store.get(src_bucket, src_key)
            if found is None:
                self._error(404, "NoSuchKey")
                return
            data = found[1]
        try:
            meta = self.store.put(
                bucket,
                key,
                data,
                if_none_match=self.headers.get("If-None-Match", ""),
                if_match=self.headers.get("If-Match", ""),
            )
        except KeyError:
            self._error(404, "NoSuchBucket")
            return
        if meta is None:
            self._error(412, "PreconditionFailed")
        elif source:
            body = (
                f"<CopyObjectResult><LastModified>{iso(meta.modified)}</LastModified>"
                f"<ETag>{escape(meta.etag)}</ETag></CopyObjectResult>"
            )
            self._reply(200, body.encode(), {"ETag": meta.etag, "Content-Type": "application/xml"})
        else:
            self._reply(200, headers={"ETag": meta.etag})

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:
            self._list(bucket, query)
            return
        found = self.store.get(bucket, key)
        if found is None:
            self._error(404, "NoSuchKey")
            return
        meta, data = found
        headers = {
            "ETag": meta.etag,
            "Last-Modified": formatdate(meta.modified, usegmt=True),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if self.headers.get("If-None-Match") == meta.etag:
            self.send_response(304)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            return
        if self.headers.get("If-Match") not in (None, meta.etag):
            self._error(412, "PreconditionFailed")
            return
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and data:
            first, _, last = wanted[6:].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(len(data) - 1, int(last)) if first and last else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._reply(206, data[start : end + 1], headers)
            return
        self._reply(200, data, headers)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_DELETE(self) -> None:
        bucket, key, _ = self._target()
        self.store.delete(bucket, key)
        self._reply(204)

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        if bucket not in self.store.keys:
            self._error(404, "NoSuchBucket")
            return
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        after = query.get("continuation-token") or query.get("start-after", "")
        limit = int(query.get("max-keys") or 1000)
        objects, prefixes, more = self.store.list(
            bucket, prefix=prefix, delimiter=delimiter, after=after, limit=limit
        )
        parts = [
            f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}">',
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
            f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount><MaxKeys>{limit}</MaxKeys>",
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        if more:
            parts.append(f"<NextContinuationToken>{escape(more)}</NextContinuationToken>")
        parts += [
            f"<Contents><Key>{escape(key)}</Key><LastModified>{iso(meta.modified)}</LastModified>"
            f"<ETag>{escape(meta.etag)}</ETag><Size>{meta.size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
            for key, meta in objects
        ]
        parts += [f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes]
        parts.append("</ListBucketResult>")
        self._reply(200, "".join(parts).encode(), {"Content-Type": "application/xml"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket at start")
    args = parser.parse_args()
    store = Store(args.dir)
    for bucket in args.bucket:
        store.create_bucket(bucket)
    Handler.store = store
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
