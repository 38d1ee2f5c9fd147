"""One archive read by n processes, its items merged back into archive order.

Each process runs an ArchiveReader with `share=(k, n)`: it walks (decompresses) the whole
archive, which is cheap, but parses and builds the rows of one member in n only, which is not.
It sends its items in small batches over a pipe, each batch with a watermark: the number of
members it has walked, so every item it sends later comes from a later member. The parent
merges the n streams by member number, waiting on a process only while its watermark is behind
the next item: the items come out in exactly the order, and with exactly the stats, of one
ArchiveReader over the archive, so the applier (its resume by member count, its change events)
cannot tell the difference. Pipes bound what is buffered: a process whose items the parent does
not need yet blocks on its send.

Processes are spawned (not forked: the caller may be a Streamlit server with threads and
locks). Each costs ~0.2 s to start and ~40 MB; worth it for a global, not for a delta. A
process that dies, or a parent that dies (kill -9), ends the other side: the parent gets
EOF (ReaderFailed), a child's send gets a broken pipe and it exits.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from collector.dumps.reader import (
    DELETION_LISTS,
    ArchiveReader,
    ArticleVersion,
    BadMember,
    Deletion,
    DumpArchiveError,
    DumpItem,
    ReadStats,
)

_BATCH = 64  # items per message
_Key = tuple[int, int]  # (member number, 0 for a file | 1 for a deletion-list line)


class ReaderFailed(RuntimeError):
    """A reader process died or failed on something other than the archive itself."""


def usable_cpus() -> float:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (a container's
    `cpu.max`, e.g. a Render instance's fraction of a CPU)."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cpus


def default_readers() -> int:
    """2 reader processes when 2 CPUs are usable, else 1 (in-process): the parent's own work
    (the applier, SQLite) keeps one CPU busy too, so more readers than CPUs only add copies."""
    return 2 if usable_cpus() >= 2 else 1


@dataclass
class _Stream:
    """The parent's side of one reader process."""

    process: Any
    conn: Connection
    items: deque[tuple[_Key, DumpItem]] = field(default_factory=deque)
    walked: int = 0  # watermark: members walked; later items come from later members
    bytes_read: int = 0
    stats: ReadStats | None = None  # set by its last message

    @property
    def done(self) -> bool:
        return self.stats is not None

    def receive(self, share: int) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=5)
            raise ReaderFailed(f"dump reader process {share} exited before the end of the archive "
                               f"(exit code {self.process.exitcode})") from None
        kind, payload = message
        if kind == "items":
            self.walked, self.bytes_read, items = payload
            self.items.extend(items)
        elif kind == "done":
            self.stats = payload
        elif kind == "archive":
            raise DumpArchiveError(payload)
        else:
            raise ReaderFailed(f"dump reader process {share} failed: {payload}")


class ParallelReader:
    """ArchiveReader's interface (iterate once; `stats`, live then whole), over `readers`
    processes. Same arguments as ArchiveReader, minus the backend (the default one)."""

    def __init__(
        self,
        source: Path | str,
        *,
        readers: int,
        min_chars: int = 100,
        now: datetime,
        codes: Collection[str] | None = None,
        on_progress: Callable[[ReadStats], None] | None = None,
        in_force_only: bool = False,
    ) -> None:
        if readers < 2:
            raise ValueError("a ParallelReader needs at least 2 readers (use ArchiveReader)")
        self.path = Path(source)
        self.readers = readers
        self.options = {"min_chars": min_chars, "now": now, "codes": None if codes is None else sorted(codes),
                        "in_force_only": in_force_only}
        self.on_progress = on_progress
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[DumpItem]:
        try:
            total = self.path.stat().st_size
        except OSError as exc:
            raise DumpArchiveError(f"{self.path.name}: cannot open: {exc.strerror or exc}") from None
        self.stats.total_bytes = total
        context = multiprocessing.get_context("spawn")
        streams: list[_Stream] = []
        try:
            for share in range(self.readers):
                receiving, sending = context.Pipe(duplex=False)
                process = context.Process(target=_read_share, name=f"dump-reader-{share}", daemon=True,
                                          args=(str(self.path), (share, self.readers), self.options, sending))
                process.start()
                sending.close()  # the child's copy is the only one: its death is an EOF here
                streams.append(_Stream(process, receiving))
            yield from self._merge(streams)
        finally:
            for stream in streams:
                stream.conn.close()
                if stream.process.is_alive():
                    stream.process.terminate()
                stream.process.join(timeout=5)

    def _merge(self, streams: list[_Stream]) -> Iterator[DumpItem]:
        next_tick = 0
        while True:
            heads = [s for s in streams if s.items]
            first = min(heads, key=lambda s: s.items[0][0], default=None)
            # A process with nothing queued may still send an item before `first`'s: wait for it.
            behind = [s for s in streams if not s.items and not s.done
                      and (first is None or (s.walked, 0) < first.items[0][0])]
            if behind:
                laggard = min(behind, key=lambda s: s.walked)
                laggard.receive(streams.index(laggard))
                self.stats.bytes_read = min(s.bytes_read for s in streams)
                if self.on_progress is not None and self.stats.bytes_read >= next_tick:
                    next_tick = self.stats.bytes_read + (1 << 20)
                    self.on_progress(self.stats)
                continue
            if first is None:
                break
            (member, _), item = first.items.popleft()
            self.stats.members = max(self.stats.members, member)
            if isinstance(item, BadMember):
                self.stats.add_bad(item)
            yield item
        self._whole([s.stats for s in streams if s.stats is not None])
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def _whole(self, parts: list[ReadStats]) -> None:
        """The stats of one reader over the archive, from the n shares' (each walked all)."""
        whole, first = self.stats, parts[0]
        whole.bytes_read, whole.members = first.bytes_read, first.members
        whole.skipped, whole.touched = first.skipped, first.touched  # counted by every share alike
        for part in parts:
            whole.kinds.update(part.kinds)
            whole.articles_by_code.update(part.articles_by_code)
            whole.not_in_force += part.not_in_force
            whole.deletions += part.deletions


def _read_share(path: str, share: tuple[int, int], options: dict[str, Any], conn: Connection) -> None:
    """A reader process: one share of the archive, sent in batches with the watermark."""
    batch: list[tuple[_Key, DumpItem]] = []

    def send(stats: ReadStats) -> None:  # also ArchiveReader's on_progress: a watermark each MiB
        conn.send(("items", (stats.members, stats.bytes_read, batch[:])))
        batch.clear()

    reader = ArchiveReader(path, share=share, on_progress=send, **options)
    try:
        for item in reader:
            if isinstance(item, ArticleVersion):
                item = item.detached()
            batch.append(((reader.stats.members, _after_files(item)), item))
            if len(batch) >= _BATCH:
                send(reader.stats)
        send(reader.stats)
        conn.send(("done", reader.stats))
    except DumpArchiveError as exc:
        _last_word(conn, ("archive", str(exc)))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: nothing to tell
    except Exception as exc:  # noqa: BLE001 - told to the parent, which raises ReaderFailed
        _last_word(conn, ("failed", f"{type(exc).__name__}: {str(exc)[:300]}"))
    finally:
        conn.close()


def _after_files(item: DumpItem) -> int:
    """1 for what a reader yields after walking every file (deletion-list lines), else 0."""
    if isinstance(item, Deletion):
        return 1
    return int(isinstance(item, BadMember) and item.member.partition(":")[0] in DELETION_LISTS)


def _last_word(conn: Connection, message: tuple[str, str]) -> None:
    try:
        conn.send(message)
    except OSError:
        pass
