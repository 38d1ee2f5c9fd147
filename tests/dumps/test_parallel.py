"""ParallelReader (real reader processes) against one ArchiveReader: the same items in the same
order with the same stats; the applier gives the same store and change log with 2 readers as
with 1; a corrupt archive or a reader process that dies stops it with a clear error; a reader
process never runs the loader's main script again (Streamlit's dashboard.py)."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest

from collector.config import ConfigError, Settings
from collector.demo.corpus import DEMO_MASSIVE_CODES
from collector.dumps.apply import CodeScope, DumpOptions, LocalArchives, load_dumps
from collector.dumps.parallel import ParallelReader, ReaderFailed, default_readers, usable_cpus
from collector.dumps.reader import ArchiveReader, ArticleVersion, DumpArchiveError, ReadStats
from collector.store.sqlite import SqliteStore
from collector.demo.dumps import DemoDumps, article_path
from tests.conftest import REPO
from tests.dumps.test_reader import FOLDER, build, real_members

NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)


def signature(item: Any) -> tuple[Any, ...]:
    if isinstance(item, ArticleVersion):
        return ("version", item.id, item.cid, item.code_id, item.etat, item.partition, item.in_force, item.member,
                item.row)
    return (type(item).__name__, item)


def read(reader: ArchiveReader | ParallelReader) -> list[tuple[int, tuple[Any, ...]]]:
    """Each item with the member count the reader showed when it came (the applier's resume)."""
    return [(reader.stats.members, signature(item)) for item in reader]


def same_stats(a: ReadStats, b: ReadStats) -> None:
    for f in fields(ReadStats):
        assert getattr(a, f.name) == getattr(b, f.name), f.name


@pytest.mark.parametrize("in_force_only", [True, False])
def test_two_readers_yield_what_one_yields(demo_archives: list[Path], in_force_only: bool) -> None:
    kinds: set[str] = set()
    for archive in demo_archives:
        one = ArchiveReader(archive, min_chars=100, now=NOW, in_force_only=in_force_only)
        two = ParallelReader(archive, readers=2, min_chars=100, now=NOW, in_force_only=in_force_only)
        items = read(one)
        assert read(two) == items, archive.name
        same_stats(one.stats, two.stats)
        kinds |= {s[0] for _, s in items}
    assert kinds == {"version", "TextVersion", "Deletion"}


def test_three_readers_and_bad_members_keep_the_order(legi_xml: Path, tmp_path: Path) -> None:
    root = "20250714-213000/"
    members = [*real_members(legi_xml, root)] * 3 + [
        (root + article_path(FOLDER, "LEGIARTI000006398123"), b"<ARTICLE><META>"),
        (root + "legi/global/stray.txt", b"?"),
        (root + "liste_suppression_legi.dat", b"legi/global/code_et_TNC_en_vigueur/code_en_vigueur/LEGI/TEXT/"
                                               b"00/00/06/07/06/LEGITEXT000006070666/article/LEGI/ARTI/00/00/06/39/"
                                               b"81/LEGIARTI000006398122\nnot a path\n"),
    ]
    path = build(tmp_path / "LEGI_20250714-213000.tar.gz", members)
    one = ArchiveReader(path, min_chars=0, now=NOW)
    items = read(one)
    assert [s[0] for _, s in items][-3:] == ["BadMember", "Deletion", "BadMember"]
    for readers in (2, 3):
        many = ParallelReader(path, readers=readers, min_chars=0, now=NOW)
        assert read(many) == items
        same_stats(one.stats, many.stats)


def test_the_applier_with_two_readers_equals_one(demo_archives: list[Path], tmp_path: Path) -> None:
    def load(readers: int) -> dict[str, list[Any]]:
        db = tmp_path / f"{readers}.sqlite3"
        store = SqliteStore(db)
        try:
            summary = load_dumps([str(p) for p in demo_archives], CodeScope.parse("all", DEMO_MASSIVE_CODES), store,
                                 LocalArchives(), options=DumpOptions(min_chars=100, batch_size=50, readers=readers,
                                                                      parallel_min_bytes=0, clock=lambda: NOW))
        finally:
            store.close()
        assert summary.ok and len(summary.archives) == len(demo_archives), summary.errors
        with sqlite3.connect(db) as conn:
            return {
                "articles": conn.execute("SELECT * FROM legifrance_articles ORDER BY id").fetchall(),
                "rejected": conn.execute("SELECT * FROM legifrance_rejected ORDER BY id").fetchall(),
                "events": conn.execute("SELECT kind, code_id, cid, id, previous_id, etat, content_sha256 "
                                       "FROM legifrance_changes ORDER BY seq").fetchall(),
                "state": conn.execute("SELECT last_stamp, global_stamp, codes, archive FROM collector_dump_state")
                .fetchall(),
                "summary": [(a.archive, a.stored, a.updated, a.retired, a.rejected, a.bad_count)
                            for a in summary.archives],
            }

    one, two = load(1), load(2)
    assert one["articles"] and one["events"]
    assert two == one


def test_a_corrupt_archive_is_an_archive_error(demo_archives: list[Path], tmp_path: Path) -> None:
    cut = tmp_path / demo_archives[0].name
    data = demo_archives[0].read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DumpArchiveError, match="corrupt or truncated"):
        list(ParallelReader(cut, readers=2, now=NOW))
    not_gzip = tmp_path / "Freemium_legi_global_20250101-000000.tar.gz"
    not_gzip.write_bytes(gzip.decompress(data)[:100_000])
    with pytest.raises(DumpArchiveError):
        list(ParallelReader(not_gzip, readers=2, now=NOW))


@pytest.fixture(scope="module")
def big_global(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A global whose rows are many MiB per reader process: more than a pipe holds."""
    path = tmp_path_factory.mktemp("big") / DemoDumps(4000, seed=5).names[0].name
    with path.open("wb") as out:
        DemoDumps(4000, seed=5).write(0, out, compresslevel=1)
    return path


def test_a_reader_process_that_dies_stops_the_read(big_global: Path) -> None:
    before = {p.pid for p in psutil.Process().children()}
    reader = iter(ParallelReader(big_global, readers=3, min_chars=0, now=NOW))
    next(reader)  # both processes run; they cannot end before the merge has taken most of their rows
    children = [p for p in psutil.Process().children() if p.pid not in before]
    assert len(children) == 2
    children[1].kill()
    with pytest.raises(ReaderFailed, match="exited before the end of the archive"):
        for _ in reader:
            pass
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive  # the other one was ended too


def test_readers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 1 <= default_readers() <= 2 and usable_cpus() > 0
    for name in ("DUMP_READERS", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env().dump_readers == 0  # automatic
    monkeypatch.setenv("DUMP_READERS", "3")
    assert DumpOptions.for_settings(Settings.from_env()).readers == 3
    for bad in ("9", "-1", "two"):
        monkeypatch.setenv("DUMP_READERS", bad)
        with pytest.raises(ConfigError, match="DUMP_READERS"):
            Settings.from_env()


def test_reader_processes_do_not_run_the_loaders_main_script(big_global: Path, tmp_path: Path) -> None:
    """Under Streamlit the loader's __main__ is dashboard.py: a reader process must not run it
    again (multiprocessing's spawn would, as __mp_main__)."""
    marker = tmp_path / "runs.txt"
    script = tmp_path / "loader.py"
    script.write_text(
        "import sys\n"
        f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        "if __name__ == '__main__':\n"
        "    from datetime import datetime, timezone\n"
        "    from collector.dumps.parallel import ParallelReader\n"
        f"    items = list(ParallelReader({str(big_global)!r}, readers=2, now=datetime.now(timezone.utc)))\n"
        "    print(len(items))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 4000
    assert marker.read_text() == "ran\n"
