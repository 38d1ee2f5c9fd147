#!/usr/bin/env python3
"""Dump-load benchmark: our `load-dump` against Legilibre's legi.py on the same archives.

    python bench/dumps.py [--articles N] [--work DIR] [--deltas K]

The demo generator (collector/demo/dumps.py) writes a global of about 1.5 x N article files
(every version of N in-force articles, plus sections and texts) and its deltas. Three tools:
ours as configured by default (DUMP_READERS automatic: the loader and one reader process on 2
usable CPUs), ours with DUMP_READERS=1 (everything in one process, as legi.py), legi.py. Each then
runs as its own process, twice on one fresh database: on a folder holding the global only,
then on a folder adding K deltas (each tool applies only what it has not applied yet). Measured
per run: wall seconds, CPU seconds of the process tree, archive files per second, peak RSS of
the process tree (psutil, sampled every 20 ms). Each tool runs --rounds times (default 3), alternating, and the fastest round of each
step is reported (the peak RSS is the highest). Then the in-force code articles each ends with
are compared: legi.py's
`articles` rows of `code_en_vigueur` with ETAT VIGUEUR* against our rows in force plus the
in-force ids our quality filter rejected (legi.py has no such filter).

legi.py needs Debian's libhunspell-dev, then `pip install legi` (not a test dependency, so not
in requirements-dev.txt), best in its own venv so nothing else's installs touch it:
`python -m venv /tmp/legi-venv && /tmp/legi-venv/bin/pip install legi`, then
`--legi-python /tmp/legi-venv/bin/python`; it runs `python -m legi.tar2sqlite DB DIR --raw --skip-links`.
Prints one table and writes bench/out/dumps.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from collector.demo.dumps import DemoDumps  # noqa: E402

LEGI_PYTHON = [sys.executable]  # --legi-python


def peak_rss_run(args: list[str], env: dict[str, str], timeout: float = 3600) -> dict[str, Any]:
    """Run a process; wall seconds, CPU seconds (user + system, its children included), exit
    code and the peak RSS (MB) of it and its children together."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                rss = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
                peak = max(peak, rss)
            except psutil.NoSuchProcess:
                return
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=timeout)
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(peak / 2**20, 1),
            "rc": proc.returncode,
            "stdout": out, "stderr_tail": err[-600:]}


def count_files(path: Path) -> int:
    with tarfile.open(path, "r|gz") as tar:
        return sum(1 for m in tar if m.isfile())


def folder_of(work: Path, name: str, archives: list[Path]) -> Path:
    folder = work / name
    folder.mkdir(exist_ok=True)
    for path in archives:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path)
    return folder


def ours(db: Path, folder: Path, readers: str = "0") -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "LEGIFRANCE_"))}
    env.update(COLLECTOR_DB=str(db), LOG_LEVEL="WARNING", PYTHONPATH=str(REPO), DUMP_CACHE_DIR=str(db.parent / "cache"),
               DUMP_READERS=readers)
    run = peak_rss_run([sys.executable, "-m", "collector", "load-dump", str(folder), "--codes", "all"], env)
    if run["rc"] == 0:
        summary = json.loads(run["stdout"].strip().splitlines()[-1])
        run["summary"] = {k: summary[k] for k in ("stored", "updated", "retired", "rejected", "deleted", "bad_files")}
    run.pop("stdout")
    return run


def ours_one_reader(db: Path, folder: Path) -> dict[str, Any]:
    """Ours with the global parsed in the loader's process only (DUMP_READERS=1)."""
    return ours(db, folder, readers="1")


def legi(db: Path, folder: Path) -> dict[str, Any]:
    args = [LEGI_PYTHON[0], "-m", "legi.tar2sqlite", str(db), str(folder), "--raw", "--skip-links"]
    run = peak_rss_run(args, dict(os.environ))
    run.pop("stdout")
    return run


def in_force_ours(db: Path) -> tuple[set[str], set[str]]:
    with sqlite3.connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%'")}
        rejected = {r[0] for r in conn.execute("SELECT id FROM legifrance_rejected")}
    return stored, rejected


def in_force_legi(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute(
            "SELECT id FROM articles WHERE dossier = 'code_en_vigueur' AND etat LIKE 'VIGUEUR%'")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=65_000, help="in-force articles of the demo corpus")
    parser.add_argument("--deltas", type=int, default=3, help="deltas applied after the global")
    parser.add_argument("--work", type=Path, default=Path("/tmp/legifrance-bench-dumps"))
    parser.add_argument("--legi-python", default=sys.executable, help="the Python that has legi installed")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool (the fastest counts)")
    args = parser.parse_args()
    LEGI_PYTHON[0] = args.legi_python
    work = args.work / f"n{args.articles}"
    work.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    archives = DemoDumps(args.articles, seed=11).write_all(work / "archives")
    generated = time.perf_counter() - started
    files = [count_files(p) for p in archives]
    steps = [("global", folder_of(work, "upto0", archives[:1]), files[0]),
             (f"{args.deltas} deltas", folder_of(work, f"upto{args.deltas}", archives[: args.deltas + 1]),
              sum(files[1: args.deltas + 1]))]

    # Rounds alternate the tools, each on a fresh database; per step the fastest round counts
    # (the other engineers' load on the shared cores moves single runs by 2x).
    tools = (("ours", ours), ("ours -1", ours_one_reader), ("legi.py", legi))
    rounds: dict[str, list[list[dict[str, Any]]]] = {tool: [] for tool, _ in tools}
    for _ in range(args.rounds):
        for tool, run in tools:
            db_dir = work / f"db-{tool.replace(' ', '')}"
            if db_dir.exists():
                for old in db_dir.iterdir():
                    old.unlink() if old.is_file() else None
            db_dir.mkdir(exist_ok=True)
            db = db_dir / "db.sqlite3"
            steps_run = []
            for label, folder, n in steps:
                one = run(db, folder)
                one.update(step=label, files=n, files_per_s=round(n / one["seconds"], 1))
                steps_run.append(one)
                if one["rc"] != 0:
                    print(f"{tool} failed on {label}: {one['stderr_tail']}", file=sys.stderr)
            rounds[tool].append(steps_run)
    results = {tool: [min((r[k] for r in runs), key=lambda one: one["seconds"]) for k in range(len(steps))]
               for tool, runs in rounds.items()}
    for tool, runs in rounds.items():
        for k, best in enumerate(results[tool]):
            best["all_seconds"] = [r[k]["seconds"] for r in runs]
            best["peak_rss_mb"] = max(r[k]["peak_rss_mb"] for r in runs)
    from collector.dumps.parallel import default_readers, usable_cpus

    stored, rejected = in_force_ours(work / "db-ours" / "db.sqlite3")
    one_reader = in_force_ours(work / "db-ours-1" / "db.sqlite3")
    theirs = in_force_legi(work / "db-legi.py" / "db.sqlite3")
    check = {
        "ours_in_force": len(stored), "ours_rejected": len(rejected), "legi_in_force": len(theirs),
        "equal_with_rejects": theirs == stored | (rejected & theirs) and not (stored - theirs),
        "one_reader_equal": one_reader == (stored, rejected),
        "only_legi": sorted(theirs - stored - rejected)[:10], "only_ours": sorted(stored - theirs)[:10],
    }

    print(f"\narchives: {', '.join(p.name for p in archives[: args.deltas + 1])} "
          f"({files[0]:,} files in the global; generated in {generated:.0f} s)")
    print(f"ours: DUMP_READERS automatic = {default_readers()} readers ({usable_cpus():g} usable CPUs); "
          "ours -1: DUMP_READERS=1 (one process)")
    print(f"{'tool':<8} {'step':<10} {'files':>8} {'seconds':>8} {'CPU s':>7} {'files/s':>9} {'peak RSS MB':>12}"
          "  (fastest of the rounds)")
    for tool, _ in tools:
        for r in results[tool]:
            print(f"{tool:<8} {r['step']:<10} {r['files']:>8,} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f} "
                  f"{r['files_per_s']:>9,.0f} {r['peak_rss_mb']:>12.1f}  "
                  f"rounds: {', '.join(f'{x:.2f}' for x in r['all_seconds'])}"
                  + ("" if r["rc"] == 0 else f"  (exit {r['rc']})"))
    for tool in ("ours", "ours -1"):
        for ours_run, legi_run in zip(results[tool], results["legi.py"]):
            print(f"ratio {tool} / legi.py, {ours_run['step']}: {ours_run['seconds'] / legi_run['seconds']:.2f}")
    print(f"in force: ours {len(stored):,} + {len(rejected):,} rejected by the quality filter; "
          f"legi.py {len(theirs):,}; equal: {check['equal_with_rejects']}; "
          f"ours -1 the same as ours: {check['one_reader_equal']}")
    OUT.mkdir(exist_ok=True)
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
              "cpus": os.cpu_count(), "articles": args.articles, "files": files, "results": results,
              "check": check}
    (OUT / "dumps.json").write_text(json.dumps(report, indent=2))
    return 0 if check["equal_with_rejects"] and check["one_reader_equal"] and all(r["rc"] == 0 for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
