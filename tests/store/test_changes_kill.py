"""kill -9 in the middle of commits cannot part a row from its event: child processes commit
random batches (new versions, texts edited in place, repeats) and retire random sets on a real
SQLite file and are SIGKILLed at random moments, again and again. Replaying the change log
from the first event then rebuilds exactly the rows in force (id and content_sha256 per cid):
no row without its event, no event without its row."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from collector.store import SqliteStore
from tests.store.helpers import article

KILLS = 30
CIDS = 120


def _child(db: Path, seed: int) -> None:
    """Commit and retire forever (until killed)."""
    rng = random.Random(seed)
    store = SqliteStore(db)
    while True:
        if rng.random() < 0.1:  # a walk's end: one listed version per cid, some cids gone
            listed = {c: f"LEGIARTI{c:06d}{rng.randint(1, 4):06d}" for c in range(CIDS) if rng.random() < 0.9}
            store.retire_absent("LEGITEXT000099900001", list(listed.values()), [f"C{c}" for c in listed],
                                tag=f"r{seed}")
            continue
        batch = {}
        for _ in range(rng.randint(1, 60)):
            c, v, t = rng.randrange(CIDS), rng.randint(1, 4), rng.randint(1, 2)
            text = f"Article {c}, version {v}, rédaction {t}. " * 4
            batch[(c, v)] = replace(article(c), id=f"LEGIARTI{c:06d}{v:06d}", cid=f"C{c}", text=text,
                                    content_sha256=hashlib.sha256(text.encode()).hexdigest())
        store.commit_batch(list(batch.values()), run_id=seed)


def replay_log(db: Path) -> dict[str, tuple[str, str]]:
    """cid -> (id, content_sha256) in force, rebuilt from the events alone; each event is
    checked against the state the previous ones left."""
    in_force: dict[str, tuple[str, str]] = {}
    with sqlite3.connect(db) as conn:
        for kind, cid, rid, previous, sha in conn.execute(
            "SELECT kind, cid, id, previous_id, content_sha256 FROM legifrance_changes ORDER BY seq"
        ):
            now = in_force.get(cid)
            if kind == "added":
                assert now is None, (kind, rid, now)
                in_force[cid] = (rid, sha)
            elif kind == "modified":
                assert now is not None and now[0] == previous != rid, (kind, rid, previous, now)
                in_force[cid] = (rid, sha)
            elif kind == "corrected":
                assert now is not None and now[0] == rid and now[1] != sha, (kind, rid, now)
                in_force[cid] = (rid, sha)
            else:
                assert kind == "repealed" and now is not None and now[0] == rid, (kind, rid, now)
                del in_force[cid]
    return in_force


def test_kill_9_between_rows_and_events_is_impossible(tmp_path: Path) -> None:
    db = tmp_path / "collector.sqlite3"
    SqliteStore(db).close()
    rng = random.Random(20261201)
    for n in range(KILLS):
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            try:
                _child(db, n)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # killed, not crashed
    with sqlite3.connect(db) as conn:
        rows = dict(((cid, (rid, sha)) for cid, rid, sha in conn.execute(
            "SELECT cid, id, content_sha256 FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%'")))
        kinds = dict(conn.execute("SELECT kind, count(*) FROM legifrance_changes GROUP BY kind").fetchall())
        stored = conn.execute("SELECT count(*) FROM legifrance_articles").fetchone()[0]
    assert stored > CIDS and set(kinds) == {"added", "modified", "repealed", "corrected"}  # it did work
    assert replay_log(db) == rows
