"""A small in-memory Supabase Storage, and a real HTTP server serving it with a fake PostgREST.

FakeStorage follows Storage's documented REST routes (supabase.com/docs/reference/api, storage
API: `/storage/v1/object/...`) for what the export uses:
- `POST /object/{bucket}/{path}`: create; with `x-upsert: true` an existing object is replaced,
  without it the answer is 409 Duplicate. `PUT` updates an existing object. The body is
  multipart form data (a `file` part carrying the content type, a `cacheControl` field), as
  storage3 sends it. Answer `{"Key": "{bucket}/{path}", "Id": ...}`.
- `POST /object/list/{bucket}` `{prefix, limit, offset, sortBy, search}`: the direct children of
  the `prefix` folder, sorted by name; a sub-folder is an entry whose `id` is null.
- `GET /object/{bucket}/{path}` (download), `DELETE /object/{bucket}` `{"prefixes": [...]}`.
Errors use Storage's JSON shape `{statusCode, error, message}`; a bad key is refused (403).
`fail_next(Fault(...))` answers a matching request with an error instead (e.g. 503 N times).

FakeSupabaseServer serves it and a FakePostgrest (whose tables, `files_queue` included, come
from the migrations) on 127.0.0.1 over a real socket, so supabase-py talks HTTP as it would to a project.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.store.fake_postgrest import FakePostgrest, FakeService



def _error(status: int, error: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": str(status), "error": error, "message": message})


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str
    id: str


class FakeStorage(FakeService):
    """In-memory Storage; `handle` takes and returns httpx objects. Thread-safe."""

    def __init__(self, key: str, buckets: tuple[str, ...] = ("agentbasic-legifrance-raw",)) -> None:
        super().__init__(key)
        self.objects: dict[str, dict[str, StoredObject]] = {b: {} for b in buckets}
        self.writes: Counter[str] = Counter()  # successful uploads per "bucket/path"

    def keep_faults(self, n: int) -> None:
        """Drop the pending faults but the next `n` (an outage that ends after n more failures)."""
        with self._lock:
            del self.faults[n:]

    def _serve(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("apikey") != self.key or request.headers.get("authorization") != f"Bearer {self.key}":
            return _error(403, "Unauthorized", "invalid signature")
        path = request.url.path.removeprefix("/storage/v1/")
        if request.method == "POST" and path.startswith("object/list/"):
            return self._list(path.removeprefix("object/list/"), json.loads(request.content or b"{}"))
        if not path.startswith("object/"):
            return _error(404, "not_found", "Route not found")
        bucket, _, name = path.removeprefix("object/").partition("/")
        if bucket not in self.objects:
            return _error(404, "Bucket not found", "Bucket not found")
        objects = self.objects[bucket]
        if request.method == "DELETE" and not name:
            prefixes = json.loads(request.content)["prefixes"]
            removed = [{"name": p, "bucket_id": bucket} for p in prefixes if objects.pop(p, None) is not None]
            return httpx.Response(200, json=removed)
        if request.method == "GET":
            found = objects.get(name)
            if found is None:
                return _error(404, "not_found", "Object not found")
            return httpx.Response(200, content=found.data, headers={"content-type": found.content_type})
        if request.method not in {"POST", "PUT"} or not name:
            return _error(400, "InvalidRequest", f"unsupported {request.method} {path}")
        exists = name in objects
        if request.method == "POST" and exists and request.headers.get("x-upsert") != "true":
            return _error(409, "Duplicate", "The resource already exists")
        if request.method == "PUT" and not exists:
            return _error(404, "not_found", "Object not found")
        data, content_type, cache_control = _multipart_file(request)
        old = objects.get(name)
        objects[name] = StoredObject(data, content_type, cache_control, old.id if old else str(uuid.uuid4()))
        self.writes[f"{bucket}/{name}"] += 1
        return httpx.Response(200, json={"Key": f"{bucket}/{name}", "Id": objects[name].id})

    def _list(self, bucket: str, body: dict[str, Any]) -> httpx.Response:
        if bucket not in self.objects:
            return _error(404, "Bucket not found", "Bucket not found")
        prefix = str(body.get("prefix") or "").strip("/")
        search = str(body.get("search") or "").lower()
        entries: dict[str, StoredObject | None] = {}
        for key, obj in self.objects[bucket].items():
            if prefix and not key.startswith(prefix + "/"):
                continue
            rest = key[len(prefix) + 1 :] if prefix else key
            head, sep, _ = rest.partition("/")
            if head.lower().startswith(search):
                entries[head] = None if sep else obj
        sort = body.get("sortBy") or {}
        names = sorted(entries, reverse=str(sort.get("order", "asc")).lower() == "desc")
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 100))
        page = []
        for n in names[offset : offset + limit]:
            obj = entries[n]
            meta = None if obj is None else {"size": len(obj.data), "mimetype": obj.content_type, "cacheControl": obj.cache_control}
            stamp = None if obj is None else "2026-12-01T00:00:00.000Z"
            page.append({"name": n, "id": None if obj is None else obj.id, "updated_at": stamp,
                         "created_at": stamp, "last_accessed_at": stamp, "metadata": meta})
        return httpx.Response(200, json=page)

    # ---- test views ------------------------------------------------------------------------
    def paths(self, bucket: str) -> set[str]:
        with self._lock:
            return set(self.objects[bucket])

    def json(self, bucket: str, path: str) -> Any:
        with self._lock:
            return json.loads(self.objects[bucket][path].data)

    def uploads(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method in {"POST", "PUT"} and not r.url.path.startswith("/storage/v1/object/list/")]


def _multipart_file(request: httpx.Request) -> tuple[bytes, str, str]:
    """(content, content type, cacheControl) of the `file` part of a multipart upload."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    data, content_type, cache_control = b"", "application/octet-stream", ""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            data, content_type = payload, part.get_content_type()
        elif name == "cacheControl":
            cache_control = payload.decode()
    return data, content_type, cache_control


class FakeSupabaseServer:
    """`/rest/v1/` -> a FakePostgrest, `/storage/v1/` -> a FakeStorage, on 127.0.0.1."""

    def queue(self) -> dict[str, str]:
        """files_queue as file_path -> status."""
        return {r["file_path"]: r["status"] for r in self.postgrest.rows("files_queue")}


    def __init__(self, key: str, buckets: tuple[str, ...] = ("agentbasic-legifrance-raw",)) -> None:
        self.postgrest = FakePostgrest(key)
        self.storage = FakeStorage(key, buckets)
        fakes = {"/rest/v1/": self.postgrest, "/storage/v1/": self.storage}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                url = f"http://{self.headers.get('host', '127.0.0.1')}{self.path}"
                request = httpx.Request(self.command, url, headers=list(self.headers.items()), content=body)
                fake = next((f for p, f in fakes.items() if request.url.path.startswith(p)), None)
                if fake is None:
                    response = httpx.Response(404, json={"message": "no route"})
                else:
                    try:
                        response = fake.handle(request)
                    except httpx.TimeoutException:  # a Fault(timeout=True): drop the connection
                        self.close_connection = True
                        return
                content = response.content
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-supabase", daemon=True)

    def __enter__(self) -> FakeSupabaseServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
