"""SOURCE -> archives, and downloads into the cache (streamed, resumable with HTTP Range).

A SOURCE is a `.tar.gz` path, a folder holding archives, or an HTTP(S) URL: a folder index
such as https://echanges.dila.gouv.fr/OPENDATA/LEGI/ (its `<a href>` links naming archives are
kept, the rest of the page is ignored) or one archive's URL. Archives are recognised by name
(names.py); other files (a PDF, a listing) are left out.

A download goes to `<cache>/<name>.part`, then is renamed to `<cache>/<name>` once its size
matches the server's Content-Length (or Content-Range total): a file under its final name is
always whole. After a cut, the next attempt (in the same call, or a later run) asks for the
rest with `Range: bytes=N-` and appends only on a 206 whose Content-Range starts at N; a 200
means the server ignored the range: the part is rewritten from zero.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urljoin, urlparse

import httpx
import lxml.html

from collector.dumps.names import ArchiveName, parse_archive_name

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class SourceError(ValueError):
    """A SOURCE that gives no archive list: missing path, unreadable index, HTTP error."""


class DownloadError(Exception):
    """A download that did not complete; a `.part` kept in the cache is resumed next time."""


@dataclass(frozen=True, slots=True)
class SourceArchive:
    """An archive found in a SOURCE: a local path or a URL."""

    name: ArchiveName
    location: str

    @property
    def remote(self) -> bool:
        return self.location.startswith(("http://", "https://"))


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def archive_links(html: bytes | str, base_url: str) -> list[SourceArchive]:
    """The archives a folder index links to (absolute URLs, first link of each name)."""
    if not (html.strip() if isinstance(html, str) else html.strip()):
        return []
    try:
        doc = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError) as exc:
        raise SourceError(f"{base_url}: not an HTML index ({exc})") from None
    found: dict[str, SourceArchive] = {}
    for href in doc.xpath("//a/@href"):
        url = urljoin(base_url, str(href).strip())
        name = parse_archive_name(unquote(urlparse(url).path))
        if name is not None and name.name not in found:
            found[name.name] = SourceArchive(name, url)
    return list(found.values())


def list_local(source: str) -> list[SourceArchive]:
    """A `.tar.gz` file (its name must be an archive name) or the archives in a folder."""
    path = Path(source)
    if path.is_dir():
        return [SourceArchive(name, str(child)) for child in sorted(path.iterdir())
                if child.is_file() and (name := parse_archive_name(child.name)) is not None]
    if path.is_file():
        name = parse_archive_name(path.name)
        if name is None:
            raise SourceError(f"{source}: not a DILA LEGI archive name "
                              "(Freemium_legi_global_YYYYMMDD-HHMMSS.tar.gz or LEGI_YYYYMMDD-HHMMSS.tar.gz)")
        return [SourceArchive(name, str(path))]
    raise SourceError(f"{source}: no such file or folder")


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(start, total or None) of a 206's `Content-Range: bytes START-END/TOTAL`."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    return int(match[1]), None if match[3] == "*" else int(match[3])


class DumpFetcher:
    """Lists SOURCEs and brings archives into `cache_dir`. `transport`: httpx's (tests and
    benchmarks pass their own); `attempts`: tries per download, each resuming the last."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        attempts: int = 5,
        retry_wait: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.attempts = max(1, attempts)
        self.retry_wait = retry_wait
        self._sleep = sleep
        self._client = httpx.Client(transport=transport, timeout=timeout, follow_redirects=True,
                                    headers={"User-Agent": "legifrance-collector (DILA LEGI dumps)"})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DumpFetcher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- listing --------------------------------------------------------------------------------
    def list(self, source: str) -> list[SourceArchive]:
        """The archives of one SOURCE (in no particular order; names.plan orders them)."""
        if not is_url(source):
            return list_local(source)
        name = parse_archive_name(unquote(urlparse(source).path))
        if name is not None:
            return [SourceArchive(name, source)]
        base = source if source.endswith("/") else source + "/"
        try:
            response = self._client.get(base)
        except httpx.HTTPError as exc:
            raise SourceError(f"{base}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise SourceError(f"{base}: HTTP {response.status_code}")
        return archive_links(response.content, str(response.url))

    def list_all(self, sources: Iterable[str]) -> list[SourceArchive]:
        """The archives of several SOURCEs; a name found twice counts once (the first)."""
        found: dict[str, SourceArchive] = {}
        for source in sources:
            for archive in self.list(source):
                found.setdefault(archive.name.name.lower(), archive)
        return list(found.values())

    # ---- fetching -------------------------------------------------------------------------------
    def fetch(self, archive: SourceArchive, on_bytes: Callable[[int, int | None], None] | None = None) -> Path:
        """A local path of the whole archive: the file itself when local, else the cached copy
        (downloaded now, or resumed). `on_bytes(done, total)` follows a download."""
        if not archive.remote:
            return Path(archive.location)
        dest = self.cache_dir / archive.name.name
        if dest.is_file():
            return dest
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self.download(archive.location, dest, on_bytes)

    def download(self, url: str, dest: Path, on_bytes: Callable[[int, int | None], None] | None = None) -> Path:
        """Stream `url` into `dest` through `dest.part`, resuming after cuts (see module doc)."""
        part = dest.with_name(dest.name + ".part")
        last = "no attempt"
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self.retry_wait * (2 ** (attempt - 1)))
            try:
                missing = self._attempt(url, part, on_bytes)
                if missing is None:
                    os.replace(part, dest)
                    return dest
                last = missing
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"{dest.name}: download incomplete after {self.attempts} attempts ({last}); "
                            f"{kept} bytes kept in {part.name} for the next try")

    def _attempt(self, url: str, part: Path, on_bytes: Callable[[int, int | None], None] | None) -> str | None:
        """One request: None when `part` now holds the whole file, else why not (worth another
        attempt); httpx.TransportError after a cut; DownloadError when retrying cannot help."""
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if have and status == 416:  # nothing left to send: whole if the total says so
                unsatisfied = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", "").strip())
                if unsatisfied is not None and int(unsatisfied[1]) == have:
                    return None
                part.unlink()
                return f"HTTP 416 for bytes={have}- (the part does not fit the file): restarting"
            if status == 206 and have:
                got = _content_range(response.headers.get("content-range"))
                if got is None or got[0] != have:
                    part.unlink()
                    return f"206 with Content-Range {response.headers.get('content-range')!r} for bytes={have}-: restarting"
                total = got[1]
                mode = "ab"
            elif status == 200:
                have, mode = 0, "wb"  # the range was ignored (or none asked): from zero
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            elif status >= 500 or status == 429:
                return f"HTTP {status}"
            else:
                raise DownloadError(f"{url}: HTTP {status}")
            with part.open(mode) as out:
                for chunk in response.iter_bytes():  # as received: a cut loses no buffered bytes
                    out.write(chunk)
                    have += len(chunk)
                    if on_bytes is not None:
                        on_bytes(have, total)
                out.flush()
                os.fsync(out.fileno())
        if total is None or have == total:
            return None
        if have > total:
            part.unlink()
            raise DownloadError(f"{url}: {have} bytes received, the server announced {total}")
        return f"body ended at {have} of {total} bytes"
