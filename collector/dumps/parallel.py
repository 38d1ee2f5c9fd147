"""The reader on both cores: one worker process per share of the archive's codes.

Each worker runs ArchiveReader over the whole file with `codes` = its share: the tar walk is
repeated (libarchive, cheap) but each member is parsed by one worker only, and parsing with the
rows it builds is most of a load (docs/PERFORMANCE.md). Workers send picklable records in
chunks through one bounded queue; the applier in the parent consumes them in arrival order and
alone writes to the store (one writer, same transactions as the single-process path).

Records: Version (an ArticleVersion without its parsed tree; `row` only for versions in force),
the reader's Deletion and BadMember as they are. A worker whose parent died (kill -9) exits at
its next chunk; a worker that dies makes the merge raise, never hang.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from collector.dumps.reader import ArchiveReader, ArticleVersion, BadMember, Deletion, DumpArchiveError
from collector.models import Article, Rejected

CHUNK = 200  # records per queue message
QUEUE_CHUNKS = 16  # messages in flight (bounded memory)
POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class Version:
    """An ArticleVersion as it crosses processes: its tree left behind, its row built only when
    in force (the applier writes no other)."""

    id: str
    cid: str
    code_id: str
    etat: str
    partition: str
    in_force: bool
    member: str
    row: Article | Rejected | None


@dataclass
class MergedStats:
    """What the applier reads of ReadStats, over every worker."""

    bytes_read: int = 0  # the slowest worker's (each reads the whole file)
    members: int = 0  # regular files of the archive (every worker sees them all)
    touched: dict[str, str] = field(default_factory=dict)
    parts_bytes: dict[int, int] = field(default_factory=dict)


def shares(counts: dict[str, int], workers: int) -> list[list[str]]:
    """Codes split into `workers` shares of about equal file counts (largest first, greedy)."""
    out: list[list[str]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        k = loads.index(min(loads))
        out[k].append(code)
        loads[k] += n
    return [share for share in out if share]


def _record(item: Any) -> Any:
    if isinstance(item, ArticleVersion):
        row = item.row if item.in_force else None
        return Version(item.id, item.cid, item.code_id, item.etat, item.partition, item.in_force, item.member, row)
    return item  # Deletion, BadMember: picklable as they are (TextVersion is not used)


def _work(path: str, codes: list[str], min_chars: int, now: datetime, out: Any, part: int, parent: int) -> None:
    """Worker: read the archive for `codes`, send ("items", part, records, members, bytes)
    chunks, then ("done", part, touched, members) or ("error", part, message, corrupt)."""
    try:
        reader = ArchiveReader(path, min_chars=min_chars, now=now, codes=codes)
        chunk: list[Any] = []
        for item in reader:
            if isinstance(item, ArticleVersion | Deletion | BadMember):
                chunk.append(_record(item))
            if len(chunk) >= CHUNK:
                if os.getppid() != parent:
                    return  # the applier is gone
                out.put(("items", part, chunk, reader.stats.members, reader.stats.bytes_read))
                chunk = []
        out.put(("items", part, chunk, reader.stats.members, reader.stats.bytes_read))
        out.put(("done", part, dict(reader.stats.touched), reader.stats.members))
    except DumpArchiveError as exc:
        out.put(("error", part, str(exc), True))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        out.put(("error", part, f"{type(exc).__name__}: {exc}", False))


class ParallelRead:
    """`for record, stats in ParallelRead(...)`: the records of every worker, merged."""

    def __init__(self, path: Path, code_shares: Sequence[Collection[str]], *, min_chars: int, now: datetime) -> None:
        self.path, self.shares, self.min_chars, self.now = path, [sorted(s) for s in code_shares], min_chars, now
        self.stats = MergedStats()
        self._procs: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        ctx = mp.get_context("spawn")  # no fork of a process that may run threads (the page's)
        out = ctx.Queue(maxsize=QUEUE_CHUNKS)
        self._procs = [
            ctx.Process(target=_work, args=(str(self.path), share, self.min_chars, self.now, out, k, os.getpid()),
                        daemon=True, name=f"dump-reader-{k}")
            for k, share in enumerate(self.shares)
        ]
        for proc in self._procs:
            proc.start()
        try:
            running = set(range(len(self._procs)))
            while running:
                try:
                    message = out.get(timeout=POLL_S)
                except queue_module.Empty:
                    dead = [k for k in running if not self._procs[k].is_alive()]
                    if dead:
                        raise RuntimeError(f"dump reader worker {dead[0]} died (exit {self._procs[dead[0]].exitcode})")
                    continue
                kind, part = message[0], message[1]
                if kind == "items":
                    _, _, records, members, done = message
                    self.stats.members = max(self.stats.members, members)
                    self.stats.parts_bytes[part] = done
                    self.stats.bytes_read = min(self.stats.parts_bytes.get(k, 0) for k in range(len(self._procs)))
                    yield from records
                elif kind == "done":
                    self.stats.touched.update(message[2])
                    self.stats.members = max(self.stats.members, message[3])
                    self.stats.parts_bytes[part] = self.path.stat().st_size
                    running.discard(part)
                else:
                    if message[3]:
                        raise DumpArchiveError(message[2])
                    raise RuntimeError(f"dump reader worker {part}: {message[2]}")
        finally:
            self.close()

    def close(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(timeout=5)
