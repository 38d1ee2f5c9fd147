"""The applier on the demo's generated archives (collector/demo/dumps.py), real SQLite files:
global then deltas equal the generator's truth; deletions by both lists; a corrupt archive
applies nothing; `--codes` scopes; a replay is idempotent; a stop resumes."""

from __future__ import annotations

import gzip
import io
import shutil
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.demo.corpus import DEMO_MASSIVE_CODES
from collector.demo.dumps import EXTRA_CODE, TNC_CID, DemoDumps, article_path
from collector.dumps.apply import CodeScope, DumpOptions, load_dumps
from collector.dumps.fetch import DumpFetcher
from collector.dumps.reader import ArchiveReader, Deletion
from collector.store.sqlite import SqliteStore

ARTICLES = 400


@pytest.fixture(scope="module")
def dumps() -> DemoDumps:
    return DemoDumps(ARTICLES, seed=3)


@pytest.fixture(scope="module")
def archives(dumps: DemoDumps, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return dumps.write_all(tmp_path_factory.mktemp("archives"), compresslevel=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.sqlite3")
    yield s
    s.close()


def load(store: SqliteStore, sources: list[Path], tmp_path: Path, codes: str = "all", min_chars: int = 0,
         **kwargs: object) -> dict:
    scope = CodeScope.parse(codes, DEMO_MASSIVE_CODES)
    with DumpFetcher(tmp_path / "cache") as fetcher:
        summary = load_dumps([str(p) for p in sources], scope, store, fetcher,
                             options=DumpOptions(min_chars=min_chars, batch_size=50), **kwargs)  # type: ignore[arg-type]
    return summary.as_dict()


def in_force(store: SqliteStore) -> dict[str, str]:
    with sqlite3.connect(store.path) as conn:
        return dict(conn.execute("SELECT id, code_id FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%'"))


def test_global_then_each_delta_equals_the_truth(store: SqliteStore, dumps: DemoDumps, archives: list[Path],
                                                 tmp_path: Path) -> None:
    for k in range(len(archives)):
        summary = load(store, archives[: k + 1], tmp_path)
        assert summary["ok"], summary
        assert [a["archive"] for a in summary["archives"]] == [archives[k].name]
        assert in_force(store) == dumps.truth(k), f"after {archives[k].name}"
        assert store.get_dump_state().last_stamp == dumps.names[k].stamp
    assert TNC_CID not in set(in_force(store).values())
    state = store.get_dump_state()
    assert (state.global_stamp, state.archive, state.codes) == (dumps.names[0].stamp, None, "all")
    # corrected in place: same id, the new text
    corrected = dumps.corrected_ids(3) & set(dumps.truth(3))
    assert corrected
    rows = store.get_articles(corrected)
    assert all("Rectificatif" in row["text"] for row in rows.values())
    kinds = {c["kind"] for c in store.read_changes(limit=100_000)}
    assert kinds == {"added", "modified", "repealed", "corrected"}


def test_all_at_once_and_replay(store: SqliteStore, dumps: DemoDumps, archives: list[Path], tmp_path: Path) -> None:
    summary = load(store, archives, tmp_path)
    assert summary["ok"] and len(summary["archives"]) == len(archives)
    assert in_force(store) == dumps.truth(len(archives) - 1)
    events = store.read_changes(limit=100_000)
    again = load(store, archives, tmp_path)
    assert again["ok"] and again["archives"] == [] and again["warnings"]
    assert store.read_changes(limit=100_000) == events


def test_deletions_by_both_lists(store: SqliteStore, dumps: DemoDumps, archives: list[Path], tmp_path: Path) -> None:
    deletions = {k: [i for i in ArchiveReader(archives[k]) if isinstance(i, Deletion)] for k in (2, 3)}
    by_file = [d for d in deletions[2] if d.kind == "article" and d.source == "liste_suppression_legi.dat"]
    by_folder = [d for d in deletions[3] if d.kind == "text"]
    assert by_file and by_folder
    load(store, archives[:2], tmp_path)
    stored = in_force(store)
    assert all(d.id in stored for d in by_file)  # in force before the delta deleting them
    summary = load(store, archives[2:3], tmp_path)
    assert summary["deleted"] >= len([d for d in by_file if d.code_id != EXTRA_CODE.id])
    after = in_force(store)
    assert not {d.id for d in by_file} & set(after)
    assert EXTRA_CODE.id in set(after.values())
    load(store, archives[3:], tmp_path)
    assert EXTRA_CODE.id not in set(in_force(store).values())  # its folder deleted, its code repealed
    assert {d.code_id for d in by_folder} == {EXTRA_CODE.id}


def test_quality_filter_rejects_are_remembered(store: SqliteStore, dumps: DemoDumps, archives: list[Path],
                                                tmp_path: Path) -> None:
    summary = load(store, archives[:1], tmp_path, min_chars=400)
    stored, truth = in_force(store), dumps.truth(0)
    assert summary["rejected"] == len(truth) - len(stored) > 0
    assert set(stored) < set(truth)
    assert store.count_rejected() == summary["rejected"]


@pytest.mark.parametrize("codes", ["configured", DEMO_MASSIVE_CODES[0], f"{DEMO_MASSIVE_CODES[1]},{EXTRA_CODE.id}"])
def test_codes_scope(store: SqliteStore, dumps: DemoDumps, archives: list[Path], tmp_path: Path, codes: str) -> None:
    summary = load(store, archives, tmp_path, codes=codes)
    assert summary["ok"], summary
    wanted = set(DEMO_MASSIVE_CODES) if codes == "configured" else set(codes.split(","))
    truth = {i: c for i, c in dumps.truth(3).items() if c in wanted}
    assert in_force(store) == truth
    assert load(store, archives, tmp_path, codes="all")["errors"]  # another scope on the same store: refused


def test_corrupt_archive_applies_nothing(store: SqliteStore, dumps: DemoDumps, archives: list[Path],
                                         tmp_path: Path) -> None:
    load(store, archives[:2], tmp_path)
    before = (in_force(store), store.read_changes(limit=100_000), store.get_dump_state().last_stamp)
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in archives[:2]:
        shutil.copy(path, broken / path.name)
    data = archives[2].read_bytes()
    (broken / archives[2].name).write_bytes(data[: len(data) * 2 // 3])  # truncated
    summary = load(store, sorted(broken.iterdir()) + [archives[3]], tmp_path)
    assert not summary["ok"] and "truncated or corrupt" in summary["errors"][0]
    assert archives[2].name in summary["errors"][0] and summary["archives"] == []
    assert (in_force(store), store.read_changes(limit=100_000), store.get_dump_state().last_stamp) == before
    # a flipped byte in the middle: the gzip CRC or inflate fails before any write
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    (broken / archives[2].name).write_bytes(bytes(flipped))
    summary = load(store, sorted(broken.iterdir()), tmp_path)
    assert not summary["ok"] and store.get_dump_state().last_stamp == before[2]
    assert store.read_changes(limit=100_000) == before[1]


def test_stop_between_batches_then_resume(store: SqliteStore, dumps: DemoDumps, archives: list[Path],
                                          tmp_path: Path) -> None:
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] == 3

    summary = load(store, archives[:1], tmp_path, should_stop=stop_soon)
    assert not summary["ok"] and "resumes" in summary["errors"][0]
    state = store.get_dump_state()
    assert state.last_stamp is None and state.archive == archives[0].name and state.members > 0
    partial = store.read_changes(limit=100_000)
    summary = load(store, archives, tmp_path)
    assert summary["ok"], summary
    assert in_force(store) == dumps.truth(3)
    events = store.read_changes(limit=100_000)
    assert events[: len(partial)] == partial
    keys = [(e["kind"], e["id"], e["run_id"]) for e in events]
    assert len(keys) == len(set(keys))  # nothing logged twice


def test_gzip_only_garbage_is_refused(store: SqliteStore, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    with gzip.open(folder / "Freemium_legi_global_20250713-140000.tar.gz", "wb") as out:
        out.write(b"not a tar archive at all" * 100)
    summary = load(store, [folder], tmp_path)
    assert not summary["ok"] and store.get_dump_state().last_stamp is None


def newer_global(source: Path, folder: Path, stamp: str = "20250801-000000") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"Freemium_legi_global_{stamp}.tar.gz"
    shutil.copy(source, path)
    return path


def test_newer_global_reconciles_the_store(store: SqliteStore, dumps: DemoDumps, archives: list[Path],
                                           tmp_path: Path) -> None:
    load(store, archives, tmp_path)
    assert in_force(store) != dumps.truth(0)
    # The first global's content under a later stamp: what the deltas added leaves force again
    # (reconcile), what they retired comes back (same rows, re-entering).
    summary = load(store, [newer_global(archives[0], tmp_path / "g")], tmp_path)
    assert summary["ok"], summary
    assert summary["retired"] > 0
    assert in_force(store) == dumps.truth(0)
    assert store.get_dump_state().global_stamp == "20250801-000000"


def test_global_that_would_empty_a_code_is_refused(store: SqliteStore, archives: list[Path],
                                                   tmp_path: Path) -> None:
    load(store, archives[:1], tmp_path)
    before = in_force(store)
    small = tmp_path / "small"
    small.mkdir()
    with (small / "Freemium_legi_global_20250801-000000.tar.gz").open("wb") as out:
        DemoDumps(40, seed=3).write(0, out, compresslevel=1)
    summary = load(store, [small], tmp_path)
    assert not summary["ok"] and "out of force" in summary["errors"][0]
    assert set(before) <= set(in_force(store))  # its rows may be in; nothing was retired
    assert store.get_dump_state().last_stamp == archives[0].name.split("_")[-1][:15]


def test_two_versions_of_a_cid_in_force_keep_the_highest_id(store: SqliteStore, tmp_path: Path) -> None:
    """VIGUEUR and VIGUEUR_DIFF versions of one article in one archive, the higher id FIRST in
    tar order: the higher id is the one in force (as the API path keeps), once."""
    source = tmp_path / "src.tar.gz"
    with source.open("wb") as out:
        DemoDumps(60, seed=2).write(0, out, compresslevel=1)
    with tarfile.open(source, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    name, data = next((m.name, d) for m, d in members if "/code_en_vigueur/" in m.name and "/article/" in m.name
                      and b"<ETAT>VIGUEUR</ETAT>" in d)
    old_id = name.rsplit("/", 1)[1][:-4]
    new_id = "LEGIARTI000099999999"
    assert new_id > old_id
    newer = (data.replace(f"<ID>{old_id}</ID>".encode(), f"<ID>{new_id}</ID>".encode())  # same cid (VERSIONS)
             .replace(b"<ETAT>VIGUEUR</ETAT>", b"<ETAT>VIGUEUR_DIFF</ETAT>"))
    folder = tmp_path / "two"
    folder.mkdir()
    with tarfile.open(folder / "Freemium_legi_global_20250713-140000.tar.gz", "w:gz") as tar:
        extra = tarfile.TarInfo(article_path(name.split("/article/")[0], new_id))
        extra.size = len(newer)
        tar.addfile(extra, io.BytesIO(newer))
        for info, body in members:
            tar.addfile(info, io.BytesIO(body))
    summary = load(store, [folder], tmp_path)
    assert summary["ok"], summary
    rows = store.get_articles([old_id, new_id])
    assert new_id in in_force(store) and old_id not in rows  # the lower version was never written
    cid = rows[new_id]["cid"]
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM legifrance_articles WHERE cid = ? AND etat LIKE 'VIGUEUR%'",
                            (cid,)).fetchone()[0] == 1


def rewrite(source: Path, target: Path, change: Callable[[str, bytes], tuple[str, bytes] | None]) -> None:
    """A copy of the archive `source` with each member passed through `change` (None drops it)."""
    with tarfile.open(source, "r:gz") as tar, tarfile.open(target, "w:gz") as out:
        for info in tar.getmembers():
            if not info.isfile():
                continue
            changed = change(info.name, tar.extractfile(info).read())  # type: ignore[union-attr]
            if changed is not None:
                new = tarfile.TarInfo(changed[0])
                new.size = len(changed[1])
                out.addfile(new, io.BytesIO(changed[1]))


def test_bad_files_are_named_and_the_rest_loads(store: SqliteStore, archives: list[Path], dumps: DemoDumps,
                                                tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    broken: list[str] = []

    def spoil(name: str, data: bytes) -> tuple[str, bytes]:
        if "/article/" in name and len(broken) < 3:
            broken.append(name)
            return name, data[: len(data) // 2]  # cut XML
        return name, data

    rewrite(archives[0], folder / archives[0].name, spoil)
    summary = load(store, [folder], tmp_path)
    assert summary["ok"] and summary["bad_files"] == 3, summary
    assert all(any(b in line for line in summary["bad_file_names"]) for b in broken)
    assert len(in_force(store)) >= len(dumps.truth(0)) - 3


def test_a_code_whose_articles_cannot_be_read_stops_the_load(store: SqliteStore, archives: list[Path],
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "unreadable"
    folder.mkdir()
    code = DEMO_MASSIVE_CODES[0]
    rewrite(archives[0], folder / archives[0].name,
            lambda name, data: (name, b"<ARTICLE>" if code in name and "/article/" in name else data))
    summary = load(store, [folder], tmp_path)
    assert not summary["ok"] and code in summary["errors"][0] and "no article could be read" in summary["errors"][0]
    assert store.get_dump_state().last_stamp is None


def test_an_unknown_layout_stops_the_load(store: SqliteStore, archives: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "layout"
    folder.mkdir()
    rewrite(archives[0], folder / archives[0].name,
            lambda name, data: (name.replace("legi/global/", "legi/v2/"), data))
    summary = load(store, [folder], tmp_path)
    assert not summary["ok"] and "unknown layout" in summary["errors"][0], summary
    assert store.get_dump_state().last_stamp is None and store.count_articles() == 0


def test_a_global_cut_late_writes_nothing(store: SqliteStore, tmp_path: Path) -> None:
    """Cut at 90%: the reader yields thousands of rows before it meets the damage, and none of
    them may reach the store (every write waits for the whole-file check)."""
    folder = tmp_path / "cut"
    folder.mkdir()
    path = folder / "Freemium_legi_global_20250713-140000.tar.gz"
    with path.open("wb") as out:
        DemoDumps(3000, seed=4).write(0, out, compresslevel=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 9 // 10])
    summary = load(store, [folder], tmp_path)
    assert not summary["ok"] and "truncated or corrupt" in summary["errors"][0]
    assert store.count_articles() == 0 and store.read_changes() == []
    assert store.get_dump_state().archive is None
