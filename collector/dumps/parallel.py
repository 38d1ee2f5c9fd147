"""One archive read by the loader's own process and n-1 spawned ones, merged back in order.

Each reader is an ArchiveReader with a `share` of the members (by member number modulo
2n-1): it walks (decompresses) the whole archive, which is cheap, but parses and builds the
rows of its share only, which is not. The loader keeps one residue for itself, each process
takes two: the loader also applies every row (SQLite, change log), so with 2 readers on 2 CPUs
the two sides end about together (bench/dumps.py). A process sends its items in small batches
over a pipe, each batch with a watermark: the number of members it has walked, so every item it
sends later comes from a later member. The loader merges the streams by member number, pulling
from a stream only while its watermark is behind the next item: the items come out in exactly
the order, and with exactly the stats, of one ArchiveReader over the archive, so the applier
(its resume by member count, its change events) cannot tell the difference. What is buffered is
bounded: _AHEAD items queued per process and its pipe (1 MiB); past that a process blocks on its
send until the merge needs its items.

A process is a fresh interpreter (`python -m collector.dumps.parallel`), not a fork (the loader
may be a Streamlit server with threads and locks) nor multiprocessing's spawn (it would run the
loader's main script again: dashboard.py). Each costs ~0.3 s to start and ~45 MB; worth it for
a global, not for a delta. A process that dies, or a loader that dies (kill -9), ends the other
side: the loader gets EOF (ReaderFailed), a process's send gets a broken pipe and it exits.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from collector.dumps.reader import (
    ArchiveReader,
    ArticleVersion,
    BadMember,
    DumpArchiveError,
    DumpItem,
    ReadStats,
)

# Members per round of the split: the loader's and each process's. The loader also applies every
# row, so it takes less: 1 in 3 with one process keeps both busy on 2 CPUs (1 in 4 left the
# loader waiting for the process).
_LOADER_WEIGHT, _PROCESS_WEIGHT = 1, 2
_BATCH = 64  # items per message
_PIPE_BYTES = 1 << 20
_AHEAD = 4096  # items queued per process before the merge needs them (~6 MB of rows)
_LOCAL_AHEAD = 512  # of the loader's own share, read ahead while a process is late (parsed files)
_Key = tuple[int, int]  # (member number, 0 for a file | 1 for a deletion-list line: stats.walked)


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
    """2 readers (the loader and one process) when 2 CPUs are usable, else 1 (the loader)."""
    return 2 if usable_cpus() >= 2 else 1


@dataclass
class _Stream:
    """One reader's items as the merge sees them."""

    items: deque[tuple[_Key, DumpItem]] = field(default_factory=deque)
    walked: int = 0  # watermark: members walked; later items come from later members
    bytes_read: int = 0
    stats: ReadStats | None = None  # the reader's, once it has read everything

    @property
    def done(self) -> bool:
        return self.stats is not None

    def receive(self) -> None:
        """Queue what comes next (blocking), or mark the stream done."""
        raise NotImplementedError

    def drain(self) -> None:
        """Queue what has already arrived, without blocking (up to _AHEAD items)."""

    def ready(self) -> bool:
        """receive() would not wait on another process."""
        return True

    def end(self) -> None:
        """Release what it holds (whether it was read to the end or not)."""


@dataclass
class _LocalStream(_Stream):
    """The loader's own share, read in its thread as the merge needs it."""

    reader: ArchiveReader | None = None
    _items: Generator[DumpItem, None, None] | None = None

    def receive(self) -> None:
        assert self.reader is not None
        if self._items is None:
            self._items = iter(self.reader)
        item = next(self._items, None)
        stats = self.reader.stats
        self.walked, self.bytes_read = stats.members, stats.bytes_read
        if item is None:
            self.stats = stats
        else:
            self.items.append(((stats.members, int(stats.walked)), item))

    def end(self) -> None:
        if self._items is not None:
            self._items.close()  # closes the archive file


@dataclass
class _ProcessStream(_Stream):
    """A spawned reader's share, from its pipe."""

    process: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    name: str = ""

    def receive(self) -> None:
        assert self.conn is not None and self.process is not None
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise ReaderFailed(f"{self.name} exited before the end of the archive (exit code {code})") from None
        if kind == "items":
            self.walked, self.bytes_read, items = payload
            self.items.extend(items)
        elif kind == "done":
            self.stats = payload
        elif kind == "archive":
            raise DumpArchiveError(payload)
        else:
            raise ReaderFailed(f"{self.name} failed: {payload}")

    def drain(self) -> None:
        # The loader takes what a process has sent while it works on its own share: a process
        # blocked on a full pipe would otherwise wait for the merge to need its next item.
        while not self.done and len(self.items) < _AHEAD and self.conn is not None and self.conn.poll():
            self.receive()

    def ready(self) -> bool:
        return self.conn is not None and self.conn.poll()

    def end(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # it holds nothing to save: its archive is only read
        if self.process is not None:
            self.process.wait(timeout=30)


class ParallelReader:
    """ArchiveReader's interface (iterate once; `stats`, live then whole), over `readers`
    readers: this process and readers-1 spawned ones. Same arguments as ArchiveReader, minus
    the backend (the default one)."""

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
            self.stats.total_bytes = self.path.stat().st_size
        except OSError as exc:
            raise DumpArchiveError(f"{self.path.name}: cannot open: {exc.strerror or exc}") from None
        modulus = _LOADER_WEIGHT + _PROCESS_WEIGHT * (self.readers - 1)
        processes: list[_ProcessStream] = []
        local = _LocalStream(reader=ArchiveReader(self.path, share=(tuple(range(_LOADER_WEIGHT)), modulus),
                                                  **self.options))
        try:
            for k in range(1, self.readers):
                first = _LOADER_WEIGHT + _PROCESS_WEIGHT * (k - 1)
                share = (tuple(range(first, first + _PROCESS_WEIGHT)), modulus)
                processes.append(_start(k, (str(self.path), share, self.options)))
            yield from self._merge(local, processes)
        finally:
            for stream in (local, *processes):
                stream.end()

    def _merge(self, local: _LocalStream, processes: list[_ProcessStream]) -> Iterator[DumpItem]:
        streams: list[_Stream] = [local, *processes]
        next_tick = 0
        while True:
            heads = [s for s in streams if s.items]
            first = min(heads, key=lambda s: s.items[0][0], default=None)
            # A process with nothing queued may still send an item before `first`'s: wait for it.
            behind = [s for s in streams if not s.items and not s.done
                      and (first is None or (s.walked, 0) < first.items[0][0])]
            if behind:
                laggard = min(behind, key=lambda s: s.walked)
                if not laggard.ready() and not local.done and len(local.items) < _LOCAL_AHEAD:
                    laggard = local  # the loader reads its own share ahead instead of waiting
                laggard.receive()
                self.stats.bytes_read = min(s.bytes_read for s in streams)
                if self.on_progress is not None and self.stats.bytes_read >= next_tick:
                    next_tick = self.stats.bytes_read + (1 << 20)
                    self.on_progress(self.stats)
                continue
            if first is None:
                break
            for stream in streams:
                stream.drain()
            (member, _), item = first.items.popleft()
            self.stats.members = max(self.stats.members, member)
            if isinstance(item, BadMember):
                self.stats.add_bad(item)
            yield item
        self._whole([s.stats for s in streams if s.stats is not None])
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def _whole(self, parts: list[ReadStats]) -> None:
        """The stats of one reader over the archive, from the shares' (each walked it all)."""
        whole = self.stats
        whole.bytes_read, whole.members, whole.walked = parts[0].bytes_read, parts[0].members, parts[0].walked
        firsts = sorted((at, code, part.touched[code]) for part in parts for code, at in part.touched_at.items())
        for at, code, partition in firsts:  # a text's partition is that of its first file, as in one reader
            if code not in whole.touched:
                whole.touched[code], whole.touched_at[code] = partition, at
        for part in parts:
            whole.kinds.update(part.kinds)
            whole.articles_by_code.update(part.articles_by_code)
            whole.skipped += part.skipped
            whole.not_in_force += part.not_in_force
            whole.deletions += part.deletions


def _start(k: int, arguments: tuple[str, tuple[tuple[int, ...], int], dict[str, Any]]) -> _ProcessStream:
    """Start reader process k: `python -m collector.dumps.parallel FD`, its arguments pickled on
    its stdin, its items sent on the pipe FD. A plain interpreter rather than multiprocessing's
    spawn, which would first run the parent's main script again in the child: under Streamlit
    that is dashboard.py (and its collector)."""
    receiving, sending = os.pipe()
    try:
        _widen(receiving)
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        process = subprocess.Popen([sys.executable, "-m", "collector.dumps.parallel", str(sending)],
                                   stdin=subprocess.PIPE, pass_fds=(sending,), env=env)
    except BaseException:
        os.close(receiving)
        raise
    finally:
        os.close(sending)  # the child's copy is the only one: its death is an EOF here
    assert process.stdin is not None
    with process.stdin:
        process.stdin.write(pickle.dumps(arguments))
    return _ProcessStream(process=process, conn=Connection(receiving, writable=False),
                          name=f"dump reader process {k}")


def _read_share(path: str, share: tuple[tuple[int, ...], int], options: dict[str, Any], conn: Connection) -> None:
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
            batch.append(((reader.stats.members, int(reader.stats.walked)), item))
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


def _widen(fd: int) -> None:
    """Give the pipe 1 MiB (Linux: F_SETPIPE_SZ; the default 64 KiB holds ~40 rows): a process
    then goes on reading while the loader is busy in a commit, instead of blocking on send."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except OSError:  # over /proc/sys/fs/pipe-max-size, or not Linux: the default size works too
        pass


def _last_word(conn: Connection, message: tuple[str, str]) -> None:
    try:
        conn.send(message)
    except OSError:
        pass


def _child_main(argv: list[str]) -> None:
    """Entry of a reader process (see _start)."""
    conn = Connection(int(argv[0]), readable=False)
    path, share, options = pickle.load(sys.stdin.buffer)
    _read_share(path, share, options, conn)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
