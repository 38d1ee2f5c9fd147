"""SchedulerState, StateFile and DesiredState against the real filesystem (and the real store).

Permission cases need a process that permissions actually bind: as root, chmod 000 and
read-only folders do not stop reads or writes, so those cases run in a child process under the
`nobody` uid (or in-process when the tests already run unprivileged).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import resource
import signal
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from collector.config import InvalidMode, Mode, Settings
from collector.state import (
    InvalidState,
    LoadResult,
    SchedulerState,
    StateFile,
    DesiredState,
    StateSaveError,
    defaults_from_settings,
)
from collector.store.sqlite import SqliteStore

DEFAULTS = SchedulerState(running=False, mode=Mode.MAINTENANCE)
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
BAD_NAME = re.compile(r"^state\.json\.bad-\d{8}T\d{6}\.\d{6}Z-\d+(-\d+)?$")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.json"


@pytest.fixture
def state_file(path: Path) -> StateFile:
    return StateFile(path, DEFAULTS)


def leftovers(folder: Path) -> list[str]:
    """Temp files a save may have left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def warnings_of(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event and e["log_level"] == "warning"]


# ---- SchedulerState ------------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    state = SchedulerState(True, Mode.MASSIVE, T0, 1234, "host-a")
    data = json.loads(json.dumps(state.to_json()))
    assert data == {
        "running": True,
        "mode": "MASSIVE",
        "updated_at": "2026-11-28T12:00:00+00:00",
        "pid": 1234,
        "host": "host-a",
    }
    assert SchedulerState.from_json(data) == state


def test_from_json_ignores_extra_keys_and_reads_bad_metadata_as_unknown() -> None:
    state = SchedulerState.from_json(
        {"running": False, "mode": "MAINTENANCE", "updated_at": "yesterday", "pid": "12", "host": 7, "x": [1]}
    )
    assert state == SchedulerState(False, Mode.MAINTENANCE, None, None, None)
    naive = SchedulerState.from_json({"running": True, "mode": "MASSIVE", "updated_at": "2026-11-28T12:00:00"})
    assert naive.updated_at == T0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([], "expected a JSON object, got a list"),
        (3, "expected a JSON object, got a number"),
        ("MASSIVE", "expected a JSON object, got a string"),
        (None, "expected a JSON object, got null"),
        ({"mode": "MASSIVE"}, "missing key 'running'"),
        ({"running": True}, "missing key 'mode'"),
        ({"running": "yes", "mode": "MASSIVE"}, "'running' must be true or false, got 'yes'"),
        ({"running": 1, "mode": "MASSIVE"}, "'running' must be true or false, got 1"),
        ({"running": True, "mode": 3}, "'mode' must be a string, got 3"),
        ({"running": True, "mode": "massive"}, "invalid mode 'massive'"),
        ({"running": True, "mode": "FAST"}, "invalid mode 'FAST'"),
    ],
)
def test_from_json_is_strict_on_running_and_mode(data: object, reason: str) -> None:
    with pytest.raises(InvalidState, match=re.escape(reason)):
        SchedulerState.from_json(data)


def test_defaults_come_from_settings() -> None:
    settings = Settings(enable_scheduler=True, default_mode=Mode.MASSIVE)
    assert defaults_from_settings(settings) == SchedulerState(True, Mode.MASSIVE)
    assert defaults_from_settings(Settings()) == SchedulerState(False, Mode.MAINTENANCE)


# ---- StateFile.load: missing and bad content ------------------------------------------------------


def test_missing_file_gives_defaults_without_a_problem(state_file: StateFile) -> None:
    with capture_logs() as logs:
        result = state_file.load()
    assert result == LoadResult(DEFAULTS, "defaults", None, None)
    assert logs == []


def test_missing_folder_gives_defaults(tmp_path: Path) -> None:
    result = StateFile(tmp_path / "nope" / "state.json", DEFAULTS).load()
    assert (result.source, result.problem) == ("defaults", None)


BAD_CONTENTS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "is empty"),
    "whitespace": (b"  \n\t ", "is empty"),
    "truncated": (b'{"running": true, "mo', "is not valid JSON"),
    "list": (b'[true, "MASSIVE"]', "got a list"),
    "number": (b"42", "got a number"),
    "string": (b'"MASSIVE"', "got a string"),
    "null": (b"null", "got null"),
    "running-as-string": (b'{"running": "yes", "mode": "MASSIVE"}', "'running' must be true or false"),
    "mode-as-number": (b'{"running": true, "mode": 3}', "'mode' must be a string"),
    "unknown-mode": (b'{"running": true, "mode": "TURBO"}', "invalid mode 'TURBO'"),
    "lowercase-mode": (b'{"running": true, "mode": "massive"}', "invalid mode 'massive'"),
    "binary": (bytes(range(256)) * 4, "is not UTF-8 text"),
    "invalid-utf8": (b'{"running": true, "mode": "MASSIVE", "host": "\xff\xfe"}', "is not UTF-8 text"),
    "nul-bytes": (b"\x00" * 64, "is not valid JSON"),
    "deep-nesting": (b"[" * 50_000, "is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTENTS))
def test_bad_content_gives_defaults_and_is_moved_aside_intact(
    case: str, path: Path, state_file: StateFile
) -> None:
    content, reason = BAD_CONTENTS[case]
    path.write_bytes(content)
    with capture_logs() as logs:
        result = state_file.load()

    assert result.state == DEFAULTS and result.source == "defaults"
    assert result.problem is not None and reason in result.problem and str(path) in result.problem
    assert result.moved_to is not None and result.moved_to.parent == path.parent
    assert BAD_NAME.match(result.moved_to.name), result.moved_to.name
    assert result.moved_to.read_bytes() == content
    assert not path.exists()
    [warning] = warnings_of(logs, "state_file_invalid")
    assert warning["path"] == str(path)
    assert warning["problem"] == result.problem
    assert warning["moved_to"] == str(result.moved_to)
    # The next boot starts clean, and a save works.
    assert state_file.load() == LoadResult(DEFAULTS, "defaults", None, None)
    state_file.save(SchedulerState(True, Mode.MASSIVE))
    assert state_file.load().state == SchedulerState(True, Mode.MASSIVE)


def test_utf8_bom_is_accepted(path: Path, state_file: StateFile) -> None:
    path.write_bytes(b'\xef\xbb\xbf{"running": true, "mode": "MASSIVE"}')
    assert state_file.load() == LoadResult(SchedulerState(True, Mode.MASSIVE), "file")


def test_file_over_the_size_limit_is_rejected_even_if_valid(path: Path) -> None:
    content = b'{"running": true, "mode": "MASSIVE"' + b" " * 200 + b"}"
    path.write_bytes(content)
    result = StateFile(path, DEFAULTS, max_bytes=100).load()
    assert result.source == "defaults"
    assert result.problem is not None and "over the 100-byte limit" in result.problem
    assert result.moved_to is not None and result.moved_to.read_bytes() == content


def test_huge_file_is_rejected_without_being_read(path: Path, state_file: StateFile) -> None:
    # A sparse 64 GiB file: reading it whole would take minutes and all the memory.
    with path.open("wb") as f:
        f.write(b'{"running": true')
        f.truncate(64 * 2**30)
    with capture_logs() as logs:
        result = state_file.load()
    assert result.source == "defaults"
    assert result.problem is not None and "over the 65536-byte limit" in result.problem
    assert result.moved_to is not None and result.moved_to.stat().st_size == 64 * 2**30
    assert warnings_of(logs, "state_file_invalid")
    result.moved_to.unlink()


def test_directory_at_the_path_is_moved_aside(path: Path, state_file: StateFile) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("kept")
    with capture_logs() as logs:
        result = state_file.load()
    assert result.source == "defaults"
    assert result.problem is not None and "is a directory" in result.problem
    assert result.moved_to is not None and (result.moved_to / "inside.txt").read_text() == "kept"
    assert not path.exists()
    assert warnings_of(logs, "state_file_invalid")


def test_fifo_at_the_path_does_not_hang(path: Path, state_file: StateFile) -> None:
    os.mkfifo(path)
    result = state_file.load()
    assert result.source == "defaults"
    assert result.problem is not None and "not a regular file" in result.problem
    assert result.moved_to is not None and stat.S_ISFIFO(result.moved_to.lstat().st_mode)


def test_symlink_is_never_followed(tmp_path: Path, path: Path, state_file: StateFile) -> None:
    """A link to a valid state is still refused: the collector owns a regular file, not a pointer
    into someone else's file; the link is moved aside and its target is never touched."""
    target = tmp_path / "elsewhere.json"
    target.write_text('{"running": true, "mode": "MASSIVE"}')
    path.symlink_to(target)
    with capture_logs() as logs:
        result = state_file.load()
    assert result.source == "defaults"
    assert result.problem is not None and "symbolic link" in result.problem
    assert result.moved_to is not None and result.moved_to.is_symlink()
    assert os.readlink(result.moved_to) == str(target)
    assert warnings_of(logs, "state_file_invalid")
    assert target.read_text() == '{"running": true, "mode": "MASSIVE"}'


def test_save_replaces_a_symlink_instead_of_writing_through_it(
    tmp_path: Path, path: Path, state_file: StateFile
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("not yours")
    path.symlink_to(target)
    state_file.save(SchedulerState(True, Mode.MASSIVE))
    assert target.read_text() == "not yours"
    assert not path.is_symlink() and state_file.load().source == "file"


def test_dangling_symlink_is_moved_aside(tmp_path: Path, path: Path, state_file: StateFile) -> None:
    path.symlink_to(tmp_path / "missing.json")
    result = state_file.load()
    assert result.source == "defaults" and result.moved_to is not None and result.moved_to.is_symlink()


# ---- running under another uid (permissions that actually bind) ------------------------------------

def child_op(op: str, path: Path) -> dict[str, Any]:
    """What the child process does (after dropping privileges, when asked)."""
    state_file = StateFile(path, DEFAULTS)
    out: dict[str, Any]
    with capture_logs() as logs:
        if op == "load":
            r = state_file.load()
            out = {"source": r.source, "problem": r.problem, "moved_to": str(r.moved_to) if r.moved_to else None}
        else:
            if op == "save-fsize":
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (20, 20))
            try:
                state_file.save(SchedulerState(True, Mode.MASSIVE))
                out = {"error": None}
            except StateSaveError as exc:
                out = {"error": str(exc)}
    out["logs"] = [{k: str(v) for k, v in e.items()} for e in logs]
    return out


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder outside pytest's root-only tmp tree, so an unprivileged child can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="state-test-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_child(op: str, path: Path, *, as_nobody: bool) -> dict[str, Any]:
    """Fork (no exec: the interpreter under /root is not reachable by `nobody`), optionally drop
    to uid/gid 65534, run child_op and send its JSON result back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            if as_nobody:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            payload = json.dumps(child_op(op, path)).encode()
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, f"child failed (status {status})"
    return json.loads(data)


def unprivileged(path: Path, op: str) -> dict[str, Any] | None:
    """Run `op` where permissions bind: in a `nobody` child when root, else None (caller runs it)."""
    if os.geteuid() != 0:
        return None
    return run_child(op, path, as_nobody=True)


def test_unreadable_file_gives_defaults_and_is_moved_aside(shared_dir: Path) -> None:
    shared_dir.chmod(0o777)  # the reader may rename inside
    path = shared_dir / "state.json"
    path.write_text('{"running": true, "mode": "MASSIVE"}')
    path.chmod(0o000)
    out = unprivileged(path, "load")
    if out is None:
        with capture_logs() as logs:
            r = StateFile(path, DEFAULTS).load()
        out = {"source": r.source, "problem": r.problem, "moved_to": str(r.moved_to), "logs": logs}
    assert out["source"] == "defaults"
    assert "cannot be read: Permission denied" in out["problem"]
    moved = Path(out["moved_to"])
    assert moved.parent == shared_dir and not path.exists()
    assert moved.read_text() == '{"running": true, "mode": "MASSIVE"}'  # read back as root/owner
    assert any(e["event"] == "state_file_invalid" for e in out["logs"])


def test_bad_file_that_cannot_be_moved_is_reported(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a folder the test user cannot write into but can read")
    path = shared_dir / "state.json"  # folder 0755 owned by root: nobody reads, cannot rename
    path.write_text("{broken")
    out = run_child("load", path, as_nobody=True)
    assert out["source"] == "defaults" and out["moved_to"] is None
    [warning] = [e for e in out["logs"] if e["event"] == "state_file_invalid"]
    assert "cannot move it aside: Permission denied" in warning["move_problem"]
    assert path.read_text() == "{broken"


def test_save_into_a_read_only_folder_raises_and_keeps_the_old_file(shared_dir: Path) -> None:
    path = shared_dir / "state.json"
    old = '{"running": false, "mode": "MAINTENANCE"}'
    path.write_text(old)
    path.chmod(0o644)
    out = unprivileged(path, "save")
    if out is None:
        shared_dir.chmod(0o555)
        try:
            with pytest.raises(StateSaveError) as info:
                StateFile(path, DEFAULTS).save(SchedulerState(True, Mode.MASSIVE))
            out = {"error": str(info.value)}
        finally:
            shared_dir.chmod(0o755)
    assert out["error"] == f"state not saved to {path}: cannot create a file in {shared_dir}: Permission denied [EACCES]"
    assert path.read_text() == old
    assert leftovers(shared_dir) == []


def test_failed_write_midway_keeps_the_old_file_and_leaves_no_temp(shared_dir: Path) -> None:
    """RLIMIT_FSIZE (20 bytes) makes the temp-file write fail with EFBIG after a partial write,
    as a full disk would; it binds root too. Runs in a child so the limit stays there."""
    path = shared_dir / "state.json"
    old = '{"running": false, "mode": "MAINTENANCE", "pid": 1}'
    path.write_text(old)
    out = run_child("save-fsize", path, as_nobody=False)
    assert out["error"] == f"state not saved to {path}: File too large [EFBIG]"
    assert path.read_text() == old
    assert leftovers(shared_dir) == []


# ---- StateFile.save / clear ------------------------------------------------------------------------


def test_save_writes_the_agreed_json_with_mode_0600(path: Path, state_file: StateFile) -> None:
    state = SchedulerState(True, Mode.MASSIVE, T0, 42, "h")
    state_file.save(state)
    assert json.loads(path.read_text()) == {
        "running": True, "mode": "MASSIVE", "updated_at": "2026-11-28T12:00:00+00:00", "pid": 42, "host": "h",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state_file.load() == LoadResult(state, "file")
    assert leftovers(path.parent) == []


def test_save_creates_the_missing_folder(tmp_path: Path) -> None:
    state_file = StateFile(tmp_path / "a" / "b" / "state.json", DEFAULTS)
    state_file.save(SchedulerState(True, Mode.MASSIVE))
    assert state_file.load().source == "file"


def test_save_onto_a_directory_raises_and_leaves_it_alone(path: Path, state_file: StateFile) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("kept")
    with pytest.raises(StateSaveError) as info:
        state_file.save(SchedulerState(True, Mode.MASSIVE))
    assert str(info.value) == f"state not saved to {path}: Is a directory [EISDIR]"
    assert (path / "inside.txt").read_text() == "kept"
    assert leftovers(path.parent) == []


def test_save_problem_probes_without_changing_anything(tmp_path: Path) -> None:
    fresh = StateFile(tmp_path / "a" / "b" / "state.json", DEFAULTS)
    assert fresh.save_problem() is None and not (tmp_path / "a").exists()  # save() would create them
    (tmp_path / "dir.json").mkdir()
    assert StateFile(tmp_path / "dir.json", DEFAULTS).save_problem() == "Is a directory [EISDIR]"
    (tmp_path / "plain").write_text("x")
    problem = StateFile(tmp_path / "plain" / "state.json", DEFAULTS).save_problem()
    assert problem is not None and problem.startswith("cannot examine the path: Not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "plain"]  # no probe left behind


def test_save_under_a_regular_file_raises(tmp_path: Path) -> None:
    """The parent is a file (ENOTDIR-like): a write failure that binds root too."""
    (tmp_path / "plain").write_text("x")
    path = tmp_path / "plain" / "state.json"
    with pytest.raises(StateSaveError) as info:
        StateFile(path, DEFAULTS).save(SchedulerState(True, Mode.MASSIVE))
    assert str(info.value).startswith(f"state not saved to {path}: cannot create the folder {path.parent}:")
    assert (tmp_path / "plain").read_text() == "x"


def test_clear_removes_the_file_and_tolerates_a_missing_one(path: Path, state_file: StateFile) -> None:
    state_file.save(SchedulerState(True, Mode.MASSIVE))
    state_file.clear()
    assert not path.exists()
    state_file.clear()
    assert state_file.load().source == "defaults"


def test_concurrent_saves_never_show_a_reader_a_torn_file(path: Path) -> None:
    """Writers save alternating states through one StateFile while readers load through another
    (no shared lock): every load must see one complete state, never a fallback."""
    writer = StateFile(path, DEFAULTS)
    reader = StateFile(path, DEFAULTS)
    states = [
        SchedulerState(True, Mode.MASSIVE, T0, 1, "a" * 500),
        SchedulerState(False, Mode.MAINTENANCE, T0, 2, "b"),
    ]
    writer.save(states[0])
    stop = threading.Event()
    errors: list[str] = []
    counts = {"saves": 0, "loads": 0}
    count_lock = threading.Lock()

    def write(offset: int) -> None:
        i = offset
        while not stop.is_set():
            writer.save(states[i % 2])
            i += 1
            with count_lock:
                counts["saves"] += 1

    def read() -> None:
        while not stop.is_set():
            result = reader.load()
            if result.source != "file" or result.state not in states:
                errors.append(repr(result))
                return
            with count_lock:
                counts["loads"] += 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert counts["saves"] > 10 and counts["loads"] > 10, counts
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]  # nothing moved aside or left


# ---- DesiredState ------------------------------------------------------------------------------------


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """The real SQLite store (its collector_state row is the mirror)."""
    opened = SqliteStore(tmp_path / "collector.sqlite3")
    yield opened
    opened.close()


def write_raw_state_row(store: SqliteStore, **columns: Any) -> None:
    """Put a row the store API would refuse (bypassing its CHECK constraints) into collector_state."""
    conn = sqlite3.connect(store.path)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(
            "INSERT OR REPLACE INTO collector_state (id, running, mode, updated_at) VALUES (1, ?, ?, ?)",
            (columns["running"], columns["mode"], columns["updated_at"]),
        )
        conn.commit()
    finally:
        conn.close()


def keeper_for(path: Path, store: Any, clock: Clock | None = None, defaults: SchedulerState = DEFAULTS) -> DesiredState:
    return DesiredState(StateFile(path, defaults), store, clock=clock or Clock(), pid=7, host="h")


def test_save_stamps_and_mirrors_to_the_store(path: Path, store: SqliteStore) -> None:
    keeper = keeper_for(path, store)
    saved = keeper.save(True, Mode.MASSIVE)
    assert saved == SchedulerState(True, Mode.MASSIVE, T0, 7, "h")
    assert StateFile(path, DEFAULTS).load().state == saved
    assert SchedulerState.from_json(store.load_state()) == saved
    assert keeper.error is None
    assert keeper.load() == LoadResult(saved, "file")


def test_stamps_strictly_increase_under_a_frozen_clock(path: Path, store: SqliteStore) -> None:
    keeper = keeper_for(path, store)
    first = keeper.save(True, Mode.MASSIVE)
    second = keeper.save(False, Mode.MASSIVE)
    assert first.updated_at is not None and second.updated_at is not None
    assert second.updated_at > first.updated_at
    assert keeper.load().state == second


def test_save_rejects_bad_arguments(path: Path, store: SqliteStore) -> None:
    keeper = keeper_for(path, store)
    with pytest.raises(InvalidMode):
        keeper.save(True, "massive")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        keeper.save("yes", Mode.MASSIVE)  # type: ignore[arg-type]
    assert not path.exists() and store.load_state() is None


def test_newer_store_record_wins_over_an_older_file(path: Path, store: SqliteStore) -> None:
    clock = Clock()
    keeper_for(path, store, clock).save(False, Mode.MAINTENANCE)
    newer = SchedulerState(True, Mode.MASSIVE, T0 + timedelta(minutes=5), 99, "other-instance")
    store.save_state(newer.to_json())
    assert keeper_for(path, store).load() == LoadResult(newer, "store")


def test_newer_file_wins_over_an_older_store_record(path: Path, store: SqliteStore) -> None:
    store.save_state(SchedulerState(True, Mode.MASSIVE, T0 - timedelta(hours=1)).to_json())
    saved = SchedulerState(False, Mode.MAINTENANCE, T0, 7, "h")
    StateFile(path, DEFAULTS).save(saved)
    assert keeper_for(path, store).load() == LoadResult(saved, "file")


def test_missing_file_uses_the_store_record(path: Path, store: SqliteStore) -> None:
    """After a redeploy wiped the filesystem: the store says what the user wanted."""
    keeper_for(path, store).save(True, Mode.MASSIVE)
    path.unlink()
    result = keeper_for(path, store).load()
    assert (result.source, result.state.running, result.state.mode) == ("store", True, Mode.MASSIVE)


def test_bad_file_uses_the_store_record_and_still_reports_the_file(path: Path, store: SqliteStore) -> None:
    keeper_for(path, store).save(True, Mode.MASSIVE)
    path.write_text("garbage")
    result = keeper_for(path, store).load()
    assert result.source == "store" and result.state.running is True
    assert result.problem is not None and "is not valid JSON" in result.problem
    assert result.moved_to is not None and result.moved_to.read_text() == "garbage"


def test_unreachable_store_at_load_falls_back_to_the_file(path: Path, store: SqliteStore) -> None:
    saved = keeper_for(path, store).save(True, Mode.MASSIVE)
    store.close()  # every call now raises StoreError, as an unreachable database would
    with capture_logs() as logs:
        result = keeper_for(path, store).load()
    assert (result.state, result.source) == (saved, "file")
    assert result.store_problem == f"store unreachable: StoreError: {store.label} is closed"
    [warning] = warnings_of(logs, "state_store_unreachable")
    assert warning["using"] == "file"


def test_invalid_store_record_is_ignored_with_a_warning(path: Path, store: SqliteStore) -> None:
    write_raw_state_row(store, running=1, mode="massive", updated_at="2099-01-01T00:00:00+00:00")
    with capture_logs() as logs:
        result = keeper_for(path, store).load()
    assert result.source == "defaults"
    assert result.store_problem is not None and "invalid mode 'massive'" in result.store_problem
    assert warnings_of(logs, "state_store_invalid")


def test_store_failure_on_save_keeps_the_file_and_is_reported(path: Path, store: SqliteStore) -> None:
    keeper = keeper_for(path, store)
    store.close()
    with capture_logs() as logs:
        saved = keeper.save(True, Mode.MASSIVE)
    assert StateFile(path, DEFAULTS).load().state == saved
    assert keeper.error == f"store copy not updated: StoreError: {store.label} is closed"
    assert warnings_of(logs, "state_store_save_failed")
    keeper.store = reopened = SqliteStore(store.path)
    try:
        again = keeper.save(False, Mode.MASSIVE)
        assert keeper.error is None
        assert SchedulerState.from_json(reopened.load_state()) == again
    finally:
        reopened.close()


def test_file_failure_on_save_still_mirrors_and_raises(path: Path, store: SqliteStore) -> None:
    path.mkdir()
    keeper = keeper_for(path, store)
    with pytest.raises(StateSaveError) as info:
        keeper.save(True, Mode.MASSIVE)
    exc = info.value
    assert exc.mirrored_to_store is True and exc.state is not None
    assert str(exc) == f"state not saved to {path}: Is a directory [EISDIR] (the store copy was updated)"
    assert SchedulerState.from_json(store.load_state()) == exc.state


def test_both_failing_says_so(path: Path, store: SqliteStore) -> None:
    path.mkdir()
    store.close()
    with pytest.raises(StateSaveError, match=r"the store copy could not be updated either"):
        keeper_for(path, store).save(True, Mode.MASSIVE)


def test_clear_returns_to_the_defaults_of_the_next_boot(path: Path, store: SqliteStore) -> None:
    keeper = keeper_for(path, store)
    keeper.save(True, Mode.MASSIVE)
    keeper.reset()
    assert not path.exists()
    assert keeper.load() == LoadResult(DEFAULTS, "defaults")
    # Defaults are read at the next boot, not frozen at reset time.
    later = SchedulerState(True, Mode.MASSIVE)
    assert keeper_for(path, store, defaults=later).load() == LoadResult(later, "defaults")
    keeper.save(False, Mode.MASSIVE)
    assert keeper.load().state.mode is Mode.MASSIVE


def test_concurrent_keeper_saves_leave_file_and_store_in_agreement(path: Path, store: SqliteStore) -> None:
    keeper = DesiredState(StateFile(path, DEFAULTS), store)
    barrier = threading.Barrier(6)

    def save(n: int) -> None:
        barrier.wait(timeout=30)
        for i in range(10):
            keeper.save((n + i) % 2 == 0, Mode.MASSIVE if n % 2 else Mode.MAINTENANCE)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    from_file = StateFile(path, DEFAULTS).load()
    assert from_file.source == "file"
    assert SchedulerState.from_json(store.load_state()) == from_file.state


def test_boot_writes_a_newer_file_back_to_the_store(path: Path, store: SqliteStore) -> None:
    """A state only the file knew reaches the store (it survives the next redeploy)."""
    only_in_file = SchedulerState(True, Mode.MASSIVE, T0, 3, "old-host")
    StateFile(path, DEFAULTS).save(only_in_file)
    assert keeper_for(path, store).load(write_back=False).source == "file" and store.load_state() is None
    assert keeper_for(path, store).load().source == "file"
    assert SchedulerState.from_json(store.load_state()) == only_in_file

    newer_file = SchedulerState(False, Mode.MAINTENANCE, T0 + timedelta(minutes=1), 3, "old-host")
    StateFile(path, DEFAULTS).save(newer_file)
    assert keeper_for(path, store).load() == LoadResult(newer_file, "file")
    assert SchedulerState.from_json(store.load_state()) == newer_file

    newer_row = SchedulerState(True, Mode.MASSIVE, T0 + timedelta(minutes=2), 4, "other")
    store.save_state(newer_row.to_json())
    assert keeper_for(path, store).load() == LoadResult(newer_row, "store")
    assert StateFile(path, DEFAULTS).load().state == newer_file  # taken at the next change


def test_refresh_applies_another_instances_row_and_never_echoes_its_own(tmp_path: Path, store: SqliteStore) -> None:
    mine = keeper_for(tmp_path / "a.json", store)
    other = DesiredState(StateFile(tmp_path / "b.json", DEFAULTS), store, clock=Clock(T0 + timedelta(seconds=1)),
                         pid=8, host="other")
    mine.load()
    mine.save(True, Mode.MAINTENANCE)
    assert mine.refresh() is None  # its own row: nothing to apply
    with capture_logs() as logs:
        pressed = other.save(True, Mode.MASSIVE)  # START is followed too (running already true here)
        assert mine.refresh() == pressed and mine.mode is Mode.MASSIVE
        assert StateFile(tmp_path / "a.json", DEFAULTS).load().state == pressed  # the file, as written there
        assert SchedulerState.from_json(store.load_state()) == pressed  # the store is not written back
        assert mine.refresh() is None  # applied once
    [change] = [e for e in logs if e["event"] == "desired state changed by another instance"]
    assert (change["host"], change["pid"], change["mode"], change["was_mode"]) == ("other", 8, "MASSIVE", "MAINTENANCE")

    other.reset()  # a Reset pressed there: this instance takes ITS defaults and removes its file
    assert mine.refresh() is not None and (mine.running, mine.mode) == (DEFAULTS.running, DEFAULTS.mode)
    assert not (tmp_path / "a.json").exists()
    assert keeper_for(tmp_path / "a.json", store).load() == LoadResult(DEFAULTS, "defaults")


def test_refresh_from_a_stopped_instance_sees_a_start_pressed_elsewhere(tmp_path: Path, store: SqliteStore) -> None:
    mine = keeper_for(tmp_path / "a.json", store)
    mine.load()
    assert not mine.running
    later = DesiredState(StateFile(tmp_path / "b.json", DEFAULTS), store, clock=Clock(T0 + timedelta(hours=1)))
    later.save(True)
    new = mine.refresh()
    assert new is not None and new.running and mine.running


def test_a_save_after_a_change_from_an_instance_whose_clock_is_ahead_still_wins(
    tmp_path: Path, store: SqliteStore
) -> None:
    ahead = DesiredState(StateFile(tmp_path / "b.json", DEFAULTS), store, clock=Clock(T0 + timedelta(hours=1)))
    mine = keeper_for(tmp_path / "a.json", store)  # its clock says T0
    mine.load()
    pressed = ahead.save(True, Mode.MASSIVE)
    assert mine.refresh() == pressed
    mine.save(False)  # pressed here after it: stamped after what this instance took in
    assert ahead.refresh() is not None and not ahead.running
