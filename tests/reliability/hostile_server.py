"""A hostile Légifrance API on a real loopback socket: the demo corpus served healthy, except
for the requests a `Hostility` names, which drip, stream hundreds of MB, nest deep or redirect.

Raw asyncio HTTP/1.1 (no framework): a hostile answer needs control over every byte and over
when they go out. Bodies are generated as they are written, never built whole; a client that
hangs up ends the answer. Healthy answers come from collector.demo's Corpus with the same
articles/seed as a `demo-server`, so a next pass against that emulator expects the same ids.
Besides the API, a "thief" listener on 127.0.0.2 (another host) records any request a redirect
would bring it, with its Authorization header.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from collector.demo.app import TOKEN_PATH
from collector.demo.corpus import Corpus
from collector.demo.server import EmulatorUrls

MB = 1 << 20
_CHUNK = 64 << 10


@dataclass(frozen=True)
class Hostility:
    """What misbehaves. `articles`: ids whose getArticle answers are hostile every time;
    `toc_code`: the code whose tableMatieres answers are; `first_tokens`: how many of the first
    token requests are; `expires_in`: the lifetime every token answer claims."""

    article: str | None = None  # drip | huge | gzip_bomb | deep | redirect
    articles: frozenset[str] = frozenset()
    toc: str | None = None  # drip | huge | deep_title | nested_sections | giant_string
    toc_code: str | None = None
    token: str | None = None  # drip | redirect
    first_tokens: int = 0
    expires_in: Any = 3600


@dataclass
class Seen:
    """What the server was asked (read from the test thread after the run)."""

    requests: Counter[str] = field(default_factory=Counter)  # token / toc / article / other
    hostile: Counter[str] = field(default_factory=Counter)  # hostile answers started, by endpoint
    thief: list[str] = field(default_factory=list)  # Authorization headers the thief received
    tokens: list[str] = field(default_factory=list)  # access tokens issued


class HostileServer(EmulatorUrls):
    """The API on 127.0.0.1 and the thief on 127.0.0.2, each on a free port, served by one
    event loop in a daemon thread. `start()` / `stop()`; `hostility` may be swapped between runs."""

    def __init__(self, articles: int, seed: int, hostility: Hostility) -> None:
        self.corpus = Corpus(articles, seed)
        self.hostility = hostility
        self.seen = Seen()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-api", daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = self.thief_port = 0

    # ---- life ------------------------------------------------------------------------------
    def start(self) -> HostileServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        api = await asyncio.start_server(self._connection, self.host, 0)
        thief = await asyncio.start_server(self._thief, "127.0.0.2", 0)
        self._servers = [api, thief]
        self.port = api.sockets[0].getsockname()[1]
        self.thief_port = thief.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- HTTP --------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                path, _, body = request
                keep_open = await self._answer(path, body, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _thief(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is not None:
                self.seen.thief.append(request[1].get("authorization", ""))
                await _write(writer, _response(200, b"{}"))
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write one answer; False when the connection must close after it."""
        h = self.hostility
        if path == TOKEN_PATH:
            self.seen.requests["token"] += 1
            if h.token and self.seen.requests["token"] <= h.first_tokens:
                return await self._hostile("token", h.token, writer)
            self.seen.tokens.append(secrets.token_hex(16))
            token = {"access_token": self.seen.tokens[-1], "token_type": "Bearer", "expires_in": h.expires_in}
            await _write(writer, _response(200, json.dumps(token).encode()))
            return True
        data = json.loads(body or b"{}")
        if path.endswith("/consult/legi/tableMatieres"):
            self.seen.requests["toc"] += 1
            code_id = str(data.get("textId"))
            if h.toc and code_id == h.toc_code:
                return await self._hostile("toc", h.toc, writer)
            on = date.fromisoformat(str(data.get("date")))
            await _write(writer, _response(200, self.corpus.table_matieres_json(code_id, on).encode()))
            return True
        if path.endswith("/consult/getArticle"):
            self.seen.requests["article"] += 1
            article_id = str(data.get("id"))
            if h.article and article_id in h.articles:
                return await self._hostile("article", h.article, writer, article_id)
            answer = {"executionTime": 0, "dereferenced": False, "article": self.corpus.article(article_id)}
            await _write(writer, _response(200, json.dumps(answer).encode()))
            return True
        self.seen.requests["other"] += 1
        await _write(writer, _response(404, b'{"error": "Not Found"}'))
        return True

    async def _hostile(self, endpoint: str, kind: str, writer: asyncio.StreamWriter, article_id: str = "") -> bool:
        self.seen.hostile[endpoint] += 1
        if kind == "drip":  # the whole answer, status line included, one byte a second
            payload = _response(200, b'{"access_token": "x", "article": null}')
            for byte in payload:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
            return False
        if kind == "redirect":  # another host (127.0.0.2), as a 307/308 keeps method and body
            location = f"http://127.0.0.2:{self.thief_port}/steal"
            status = 308 if endpoint == "token" else 307
            await _write(writer, _response(status, b"", extra=f"Location: {location}\r\n"))
            return True
        chunks = {
            ("article", "huge"): _huge_article(article_id, 500 * MB),
            ("article", "gzip_bomb"): _gzipped(_huge_article(article_id, 500 * MB)),
            ("article", "deep"): _deep_article(article_id, 200_000),
            ("toc", "huge"): _huge_toc(500 * MB),
            ("toc", "deep_title"): _deep_title(200_000),
            ("toc", "nested_sections"): _nested_sections(20_000),
            ("toc", "giant_string"): _giant_string(50 * MB),
        }[(endpoint, kind)]
        encoding = b"Content-Encoding: gzip\r\n" if kind == "gzip_bomb" else b""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sTransfer-Encoding: chunked\r\n\r\n"
                     % encoding)
        for chunk in chunks:  # streamed: never more than one chunk in memory
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return False


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """(path, lower-cased headers, body) of the next request; None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return path, headers, body


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def _times(unit: bytes, n: int) -> Iterator[bytes]:
    """`unit` repeated exactly `n` times, in chunks of about _CHUNK bytes."""
    per = max(1, _CHUNK // len(unit))
    for done in range(0, n, per):
        yield unit * min(per, n - done)


def _huge_article(article_id: str, size: int) -> Iterator[bytes]:
    yield b'{"article": {"id": "%s", "texteHtml": "' % article_id.encode()
    yield from _times(b"<p>loi</p> ", size // 11)
    yield b'"}}'


def _nested(head: bytes, depth: int, tail: bytes) -> Iterator[bytes]:
    """`head`, a list nested `depth` deep, `tail`."""
    yield head
    yield from _times(b"[", depth)
    yield from _times(b"]", depth)
    yield tail


def _deep_article(article_id: str, depth: int) -> Iterator[bytes]:
    return _nested(b'{"article": {"id": "%s", "texte": ' % article_id.encode(), depth, b"}}")


def _gzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The body gzip-compressed as it goes (500 MB of repeated text: about 1 MB on the wire)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


def _huge_toc(size: int) -> Iterator[bytes]:
    section = b'{"title": "Section", "intOrdre": 1, "articles": [], "sections": []},'
    yield b'{"title": "Code", "sections": ['
    yield from _times(section, size // len(section))
    yield b'{"title": "fin"}]}'


def _deep_title(depth: int) -> Iterator[bytes]:
    return _nested(b'{"title": ', depth, b', "sections": []}')


def _nested_sections(depth: int) -> Iterator[bytes]:
    """`depth` sections each inside the last (0.6 MB at 20,000), one article at the bottom."""
    article = b'{"id": "LEGIARTI000099999901", "cid": "LEGIARTI000099999901", "etat": "VIGUEUR", "num": "1"}'
    yield b'{"title": "Code", "sections": ['
    yield from _times(b'{"title": "S", "sections": [', depth)
    yield b'{"title": "fond", "articles": [' + article + b"]}"
    yield from _times(b"]}", depth)
    yield b"]}"


def _giant_string(size: int) -> Iterator[bytes]:
    yield b'{"title": "Code", "sections": [{"title": "'
    yield from _times(b"x", size)
    yield b'", "sections": []}]}'
