"""SOURCE listing and resumable downloads, against HTTP servers on real loopback sockets."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from collector.demo import DemoConfig, DemoServerThread
from collector.dumps import ArchiveReader, DownloadError, DumpFetcher, SourceError, plan
from collector.dumps.fetch import archive_links

NAME = "LEGI_20250715-213000.tar.gz"


@dataclass
class Behaviour:
    """What the test server does; `ranges` records each request's Range header (None: none)."""

    body: bytes
    cut_after: int | None = None  # the next full or ranged answer stops after this many bytes, once
    honour_range: bool = True
    range_start_shift: int = 0  # answers a 206 starting elsewhere than asked
    index: str = ""
    ranges: list[str | None] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        b = self.server.behaviour  # type: ignore[attr-defined]
        if self.path.rstrip("/") == "/OPENDATA/LEGI":
            page = b.index.encode()
            self.send_response(200 if page else 404)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if self.path != f"/OPENDATA/LEGI/{NAME}":
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        b.ranges.append(asked)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if match and b.honour_range:
            start = int(match[1])
            if start >= len(b.body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(b.body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start += b.range_start_shift
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(b.body) - 1}/{len(b.body)}")
        else:
            self.send_response(200)
        payload = b.body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if b.cut_after is not None:
            self.wfile.write(payload[: b.cut_after])
            self.wfile.flush()
            b.cut_after = None
            self.connection.shutdown(socket.SHUT_RDWR)  # the peer hangs up mid-body
            self.close_connection = True
            return
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.behaviour = Behaviour(body=bytes(range(256)) * 4000)  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/OPENDATA/LEGI/", httpd.behaviour  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def fetcher(cache: Path, attempts: int = 3) -> DumpFetcher:
    return DumpFetcher(cache, attempts=attempts, retry_wait=0)


def test_a_cut_download_resumes_with_range_in_the_same_call(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    base, b = server
    b.cut_after = 300_001
    progress: list[tuple[int, int | None]] = []
    with fetcher(tmp_path) as f:
        path = f.download(base + NAME, tmp_path / NAME, lambda done, total: progress.append((done, total)))
    assert path.read_bytes() == b.body
    assert b.ranges == [None, "bytes=300001-"]
    assert progress[-1] == (len(b.body), len(b.body))
    assert not (tmp_path / f"{NAME}.part").exists()


def test_a_cut_keeps_the_part_for_the_next_run(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    base, b = server
    b.cut_after = 123_457
    with fetcher(tmp_path, attempts=1) as f, pytest.raises(DownloadError, match=r"123457 bytes kept in .*\.part"):
        f.download(base + NAME, tmp_path / NAME)
    assert not (tmp_path / NAME).exists()
    assert (tmp_path / f"{NAME}.part").read_bytes() == b.body[:123_457]
    with fetcher(tmp_path) as f:
        assert f.download(base + NAME, tmp_path / NAME).read_bytes() == b.body
    assert b.ranges == [None, "bytes=123457-"]


def test_a_server_ignoring_range_restarts_from_zero(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    base, b = server
    b.cut_after, b.honour_range = 50_000, False
    with fetcher(tmp_path) as f:
        assert f.download(base + NAME, tmp_path / NAME).read_bytes() == b.body
    assert b.ranges == [None, "bytes=50000-"]  # answered 200: rewritten, not appended


def test_a_206_for_another_range_is_not_appended(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    base, b = server
    b.cut_after, b.range_start_shift = 70_000, 10
    with fetcher(tmp_path, attempts=2) as f, pytest.raises(DownloadError, match="206 with Content-Range"):
        f.download(base + NAME, tmp_path / NAME)
    assert not (tmp_path / f"{NAME}.part").exists()  # dropped: the next try starts from zero
    b.range_start_shift = 0
    with fetcher(tmp_path) as f:
        assert f.download(base + NAME, tmp_path / NAME).read_bytes() == b.body


def test_a_whole_part_is_finished_by_a_416(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    base, b = server
    (tmp_path / f"{NAME}.part").write_bytes(b.body)  # killed between the last byte and the rename
    with fetcher(tmp_path) as f:
        assert f.download(base + NAME, tmp_path / NAME).read_bytes() == b.body
    assert b.ranges == [f"bytes={len(b.body)}-"]


def test_an_index_lists_the_archives_and_fetch_uses_the_cache(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    base, b = server
    b.index = (f'<html><body><pre><a href="../">../</a>\n<a href="{NAME}">{NAME}</a> 15-Jul-2025 21:30 1024000\n'
               '<a href="Freemium_legi_global_20250713-140000.tar.gz">Freemium_legi_global_20250713-140000.tar.gz</a>\n'
               '<a href="Descriptif_LEGI.pdf">Descriptif_LEGI.pdf</a>\n<a href="?C=M;O=A">Last modified</a>\n'
               f'<a href="{NAME}">{NAME}</a></pre></body></html>')
    with fetcher(tmp_path / "cache") as f:
        listed = f.list(base.rstrip("/"))  # a folder URL without its trailing slash
        assert sorted(a.name.name for a in listed) == ["Freemium_legi_global_20250713-140000.tar.gz", NAME]
        delta = next(a for a in listed if a.name.name == NAME)
        assert delta.location == base + NAME and delta.remote
        path = f.fetch(delta)
        assert path == tmp_path / "cache" / NAME and path.read_bytes() == b.body
        assert f.fetch(delta) == path
    assert b.ranges == [None]  # the second fetch found the whole file in the cache


def test_bad_sources_say_why(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    base, _ = server
    with fetcher(tmp_path) as f:
        with pytest.raises(SourceError, match="HTTP 404"):
            f.list(base)  # the test server's index is empty: 404
        with pytest.raises(SourceError, match="no such file"):
            f.list(str(tmp_path / "missing"))
        (tmp_path / "dump.tar.gz").write_bytes(b"x")
        with pytest.raises(SourceError, match="not a DILA LEGI archive name"):
            f.list(str(tmp_path / "dump.tar.gz"))
        with pytest.raises(SourceError, match="ConnectError"):
            f.list("http://127.0.0.1:9/OPENDATA/LEGI/")
        with pytest.raises(DownloadError, match="HTTP 404"):
            f.download(base + "LEGI_20990101-000000.tar.gz", tmp_path / "LEGI_20990101-000000.tar.gz")


def test_local_sources(tmp_path: Path) -> None:
    for name in (NAME, "Freemium_legi_global_20250713-140000.tar.gz", "notes.pdf", "LEGI_20250716-213000.tar.gz.part"):
        (tmp_path / name).write_bytes(b"")
    with fetcher(tmp_path / "cache") as f:
        listed = f.list_all([str(tmp_path), str(tmp_path / NAME)])
        assert sorted(a.name.name for a in listed) == ["Freemium_legi_global_20250713-140000.tar.gz", NAME]
        assert all(not a.remote and f.fetch(a) == Path(a.location) for a in listed)
    assert not (tmp_path / "cache").exists()


def test_index_links_are_made_absolute() -> None:
    page = ('<a href="https://mirror.example/LEGI/LEGI_20250716-213000.tar.gz">x</a>'
            '<a href="/OPENDATA/LEGI/legi_20180101-000000.tar.gz">y</a><a href="sub/">sub</a>')
    links = archive_links(page, "https://echanges.dila.gouv.fr/OPENDATA/LEGI/")
    assert [a.location for a in links] == ["https://mirror.example/LEGI/LEGI_20250716-213000.tar.gz",
                                           "https://echanges.dila.gouv.fr/OPENDATA/LEGI/legi_20180101-000000.tar.gz"]
    assert archive_links("", "https://x/") == []


def test_demo_server_serves_the_dump_folder_with_ranges(tmp_path: Path) -> None:
    with DemoServerThread(DemoConfig(articles=120)) as demo, fetcher(tmp_path) as f:
        listed = f.list(demo.url + "/OPENDATA/LEGI/")
        order = plan([a.name for a in listed], None)
        assert [a.kind for a in order] == ["global", "delta", "delta", "delta"]
        by_name = {a.name.name: a for a in listed}
        paths = [f.fetch(by_name[a.name]) for a in order]
        assert sum(1 for _ in ArchiveReader(paths[0], min_chars=0)) > 120
        whole = paths[1].read_bytes()
        ranged = httpx.get(by_name[order[1].name].location, headers={"Range": "bytes=100-"})
        assert ranged.status_code == 206 and ranged.content == whole[100:]
        assert ranged.headers["content-range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
        assert httpx.get(demo.url + "/OPENDATA/LEGI/LEGI_20990101-000000.tar.gz").status_code == 404
