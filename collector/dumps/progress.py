"""Progress of a dump load: a bar on a terminal (stderr) and the live status the page reads."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from collector.status import StatusBoard


class TtyBar:
    """`archive [#####.....]  42.0%  12.3/29.3 MB  4,512 articles` redrawn in place, at most
    every `every` seconds (and at each archive's start and end)."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.every, self.clock = stream, every, clock
        self._shown = 0.0
        self._archive: str | None = None

    def __call__(self, archive: str, done: int, total: int, articles: int) -> None:
        now = self.clock()
        new = archive != self._archive
        if not new and done < total and now - self._shown < self.every:
            return
        if new and self._archive is not None:
            self.stream.write("\n")
        self._archive, self._shown = archive, now
        share = min(1.0, done / total) if total else 0.0
        bar = "#" * int(30 * share)
        self.stream.write(f"\r{archive} [{bar:<30}] {share:6.1%}  {done / 1e6:.1f}/{total / 1e6:.1f} MB  "
                          f"{articles:,} articles")
        self.stream.flush()

    def close(self) -> None:
        if self._archive is not None:
            self.stream.write("\n")
            self.stream.flush()


def to_status(board: StatusBoard) -> Callable[[str, int, int, int], None]:
    """A progress callback publishing the archive, its bytes and articles in the status."""

    def publish(archive: str, done: int, total: int, articles: int) -> None:
        with board.update() as s:
            s.dump = {"archive": archive, "bytes_read": done, "bytes_total": total, "articles": articles}

    return publish
