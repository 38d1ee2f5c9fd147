#!/usr/bin/env python3
"""Harvest benchmark: the real collector (client, budget, harvest, SQLite) against the emulator.

    python bench/harvest.py [--articles N] [--latency-ms L] [--rate R] [--in-flight F]
                            [--quick] [--only SECTION ...]

Sections (all by default):
  throughput   MASSIVE pass against `python -m collector demo-server` (its own process, loopback
               socket, latency L, 429 over R requests per sliding second): our collector (budget
               R/s, F in flight) and the sequential baseline (the same client, 1 in flight)
  overhead     MASSIVE pass with the emulator in-process, no latency, no limit: CPU per article,
               the collector's and the emulator's apart
  memory       peak RSS of an in-process MASSIVE pass at 10,000 and 100,000 articles
  maintenance  requests spent by MAINTENANCE passes: unchanged corpus, after K new versions,
               marks older than 24 h (the daily full walk)
  budget       the whole runtime with a tiny per-hour budget: what the status says while it
               waits, and the process CPU meanwhile

Every measured pass runs in a fresh child process (`--child SPEC`), so peak memory and CPU
figures of one pass never include another's. Prints the tables, writes bench/out/last.json.
Loopback only; every child has a timeout; nothing runs after the tables are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import resource
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTIONS = ("throughput", "overhead", "memory", "maintenance", "budget")
Json = dict[str, Any]


# ==== child side: one measured pass per process ==================================================
def _maxrss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _TimedApp:
    """ASGI wrapper adding up the emulator's CPU time (thread CPU of the app's own steps).

    The in-process transport runs the app on its own task; the app only waits in `send` when a
    streamed body (a TOC) fills the transport's pipe, and the reader runs meanwhile, so the clock
    stops while `send` waits. With no latency nothing else suspends the app."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.cpu_s = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.thread_time()

        async def timed_send(message: Any) -> None:
            nonlocal start
            self.cpu_s += time.thread_time() - start
            try:
                await send(message)  # may wait for the reader: not the emulator's CPU
            finally:
                start = time.thread_time()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.cpu_s += time.thread_time() - start


def calibrate() -> float:
    """CPU seconds of a fixed pure-Python workload (JSON, string and integer work): a speed
    index of the machine at that moment, to compare CPU figures across runs (shared cores)."""
    payload = {"id": "LEGIARTI000006419280", "texte": "Les dispositions du présent article " * 20,
               "versions": [{"n": i, "etat": "VIGUEUR"} for i in range(20)]}
    start = time.thread_time()
    for _ in range(2000):
        json.loads(json.dumps(payload, ensure_ascii=False))
    sum(i * i for i in range(300_000))
    return time.thread_time() - start


def _log_stream(name: str) -> Any:
    OUT.mkdir(parents=True, exist_ok=True)
    return open(OUT / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed at exit


def _configure_logs(name: str) -> None:
    """The product's logging (INFO, JSON) into bench/out/NAME.log, as a deployment runs it."""
    from collector.config import Settings
    from collector.logs import configure_logging

    configure_logging(Settings.from_env({"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}), stream=_log_stream(name))


def _collector(spec: Json, store: Any) -> tuple[Any, Any, _TimedApp | None]:
    """(client, emulator server or None, timed app or None) as the spec says."""
    from collector.config import DEMO_API_BASE_URL, DEMO_OAUTH_URL
    from collector.demo import API_PREFIX, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, TOKEN_PATH, DemoConfig, demo_transport
    from collector.legifrance import LegifranceClient
    from collector.ratelimit import RequestBudget

    budget = RequestBudget(spec["rate"], spec["per_hour"], spec["per_day"], spec["in_flight"], ledger=store)
    if spec.get("api"):
        transport, server, timed = None, None, None
        oauth, base = spec["api"] + TOKEN_PATH, spec["api"] + API_PREFIX
    else:
        transport = demo_transport(DemoConfig(articles=spec["articles"]))
        server = transport.server
        timed = _TimedApp(transport.app)
        transport.app = timed
        oauth, base = DEMO_OAUTH_URL, DEMO_API_BASE_URL
    client = LegifranceClient(client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET, oauth_url=oauth,
                              api_base_url=base, budget=budget, transport=transport)
    return client, server, timed


async def _measured_pass(mode: Any, codes: Sequence[str], client: Any, store: Any, in_flight: int,
                         timed: _TimedApp | None, stop_after: float | None = None) -> Json:
    """Run one pass; its summary plus wall, process CPU and emulator CPU."""
    from collector.harvest import HarvestOptions, run_pass, summary_as_dict
    from collector.status import StatusBoard

    interrupt = asyncio.Event()
    if stop_after:
        asyncio.get_running_loop().call_later(stop_after, interrupt.set)
    requests_before = dict(client.stats.requests)
    emulator_before = timed.cpu_s if timed else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = await run_pass(mode, codes, client=client, store=store, status=StatusBoard(),
                             options=HarvestOptions(max_in_flight=in_flight), interrupt=interrupt)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    data = summary_as_dict(summary)
    data.pop("errors", None)
    return {
        "summary": data,
        "errors": summary.errors[:5],
        "by_endpoint": {k: v - requests_before.get(k, 0) for k, v in client.stats.requests.items()},
        "wall_s": wall,
        "cpu_s": cpu,
        "emulator_cpu_s": (timed.cpu_s - emulator_before) if timed else None,
    }


async def _child_pass(spec: Json, work: Path) -> Json:
    """One MASSIVE pass over the demo codes into a fresh SQLite file."""
    from collector.config import Mode
    from collector.demo import DEMO_MASSIVE_CODES
    from collector.store.sqlite import SqliteStore

    _configure_logs(spec["name"])
    store = SqliteStore(work / "bench.sqlite3")
    client, _server, timed = _collector(spec, store)
    rss_ready = _maxrss_mb()
    speed = calibrate()
    try:
        result = await _measured_pass(Mode.MASSIVE, DEMO_MASSIVE_CODES, client, store, spec["in_flight"],
                                      timed, spec.get("stop_after"))
        await client.budget.flush()
    finally:
        await client.aclose()
        store.close()
    result.update(rss_ready_mb=rss_ready, peak_rss_mb=_maxrss_mb(), client_stats=client.stats.as_dict(),
                  calibration_s=speed)
    return result


async def _child_maintenance(spec: Json, work: Path) -> Json:
    """First MASSIVE pass, then MAINTENANCE passes: unchanged, after K versions, marks 25 h old."""
    from collector.config import Mode
    from collector.demo import DEMO_MASSIVE_CODES
    from collector.store.sqlite import SqliteStore

    _configure_logs(spec["name"])
    store = SqliteStore(work / "bench.sqlite3")
    client, server, timed = _collector(spec, store)
    codes, in_flight = DEMO_MASSIVE_CODES, spec["in_flight"]
    steps: list[Json] = []

    async def step(label: str, mode: Mode) -> None:
        result = await _measured_pass(mode, codes, client, store, in_flight, timed)
        result["step"] = label
        steps.append(result)

    published: list[str] = []
    try:
        await step("first pass (MASSIVE)", Mode.MASSIVE)
        await step("MAINTENANCE, nothing changed", Mode.MAINTENANCE)
        versions = server.publish(spec["publish"])
        published = [v.id for v in versions]
        await step(f"MAINTENANCE after {spec['publish']} new versions", Mode.MAINTENANCE)
        aged = 0
        for mark in store.get_code_marks().values():
            if mark.walked_at is not None:
                store.set_code_mark(replace(mark, walked_at=mark.walked_at - timedelta(hours=25)))
                aged += 1
        await step(f"MAINTENANCE, {aged} marks 25 h old (daily full walk)", Mode.MAINTENANCE)
        await step("MAINTENANCE right after the daily walk", Mode.MAINTENANCE)
    finally:
        await client.aclose()
        store.close()
    return {"codes": len(codes), "published": published,
            "published_codes": sorted({v.code_id for v in versions}), "steps": steps}


def _child_budget(spec: Json, work: Path) -> Json:
    """The whole runtime (scheduler thread, status, ledger) with a per-hour budget of a few
    requests: wait until it waits for the hour budget, then watch the status and the CPU."""
    from collector.demo import DemoConfig, demo_transport
    from collector.runtime import build_runtime, status_payload
    from collector.config import Settings

    to_hour = 3600 - time.time() % 3600
    waited_for_hour = 0.0
    if to_hour < spec["wait_s"] + 40:  # the hour would roll over during the measurement
        waited_for_hour = to_hour + 1
        time.sleep(waited_for_hour)
    settings = Settings.from_env({
        "COLLECTOR_DB": str(work / "bench.sqlite3"),
        "SCHEDULER_STATE_FILE": str(work / "state.json"),
        "LEGIFRANCE_MAX_REQUESTS_PER_HOUR": str(spec["per_hour"]),
        "SIPHONNAGE_MODE": "MASSIVE",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    })
    runtime = build_runtime(settings, transport=demo_transport(DemoConfig(articles=spec["articles"])), resume=False)
    try:
        started = time.perf_counter()
        runtime.scheduler.start()
        deadline = started + 60
        while runtime.scheduler.status().phase != "waiting for budget":
            if time.perf_counter() > deadline:
                raise RuntimeError(f"no budget wait within 60 s: {status_payload(runtime)}")
            time.sleep(0.05)
        reached = time.perf_counter() - started
        time.sleep(1.0)  # let the pass settle into the wait
        snap = runtime.scheduler.status()
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(spec["wait_s"])
        idle_cpu, idle_wall = time.process_time() - cpu0, time.perf_counter() - t0
        payload = status_payload(runtime)
        t_stop = time.perf_counter()
        runtime.scheduler.stop()
        while runtime.scheduler.status().alive and time.perf_counter() - t_stop < 15:
            time.sleep(0.02)
        stopped_in = time.perf_counter() - t_stop
        demo_stats = runtime.demo.stats() if runtime.demo is not None else {}
    finally:
        runtime.close()
    budget = snap.budget
    return {
        "per_hour": spec["per_hour"],
        "waited_for_next_hour_s": waited_for_hour,
        "reached_wait_after_s": reached,
        "phase": payload.get("phase"),
        "detail": payload.get("detail"),
        "requests": payload.get("requests"),
        "waiting_for": budget.get("waiting_for"),
        "waiting_until": str(budget.get("waiting_until")),
        "hour_used": budget.get("hour_used"),
        "api_requests_served": demo_stats.get("api_requests"),
        "idle_wall_s": idle_wall,
        "idle_cpu_s": idle_cpu,
        "stopped_in_s": stopped_in,
        "alive_after_stop": runtime.scheduler.status().alive,
    }


def child_main(spec_json: str) -> int:
    """Entry point of a child process: run the spec, print one JSON line."""
    spec = json.loads(spec_json)
    with tempfile.TemporaryDirectory(prefix="bench-harvest-") as tmp:
        work = Path(tmp)
        kind = spec["kind"]
        if kind == "pass":
            result = asyncio.run(_child_pass(spec, work))
        elif kind == "maintenance":
            result = asyncio.run(_child_maintenance(spec, work))
        elif kind == "budget":
            result = _child_budget(spec, work)
        else:
            raise SystemExit(f"unknown child kind {kind!r}")
    print(json.dumps(result, default=str), flush=True)
    return 0


# ==== parent side ================================================================================
class ChildFailed(RuntimeError):
    """A child process failed or timed out (its stderr tail is in the message)."""


def run_child(spec: Json, timeout: float) -> Json:
    """Run one child; its JSON result. Raises ChildFailed with the stderr tail."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ChildFailed(f"{spec['name']}: no result within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise ChildFailed(f"{spec['name']}: exit {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class DemoProcess:
    """`python -m collector demo-server` on 127.0.0.1 in its own process (admin via /_demo/)."""

    def __init__(self, articles: int, latency_ms: float, rate: float) -> None:
        self.args = ["--port", "0", "--articles", str(articles), "--latency-ms", f"{latency_ms:g}",
                     "--rate-limit", f"{rate:g}"]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> DemoProcess:
        import httpx

        OUT.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "collector", "demo-server", *self.args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if "listening on http://" not in line:
            self.__exit__()
            raise ChildFailed(f"demo-server did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        threading.Thread(target=self._drain, daemon=True).start()
        self.admin = httpx.Client(base_url=self.url, timeout=30)
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(OUT / "demo-server.log", "w", encoding="utf-8") as log:
            for line in self.proc.stdout:
                log.write(line)

    def stats(self) -> Json:
        return self.admin.get("/_demo/stats").json()

    def reset_stats(self) -> None:
        self.admin.delete("/_demo/stats").raise_for_status()

    def cpu_s(self) -> float:
        import psutil

        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "admin", None) is not None:
            self.admin.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _budget_margin() -> float:
    """The budget's default per-second margin (its window is 1 s + this)."""
    from collector.ratelimit import RequestBudget

    return float(inspect.signature(RequestBudget).parameters["second_margin"].default)


def _pass_row(label: str, in_flight: int, result: Json, *, rate: float, latency_s: float) -> Json:
    """Throughput figures of one pass (rates over the pass's wall time)."""
    s, wall = result["summary"], result["wall_s"]
    articles, requests = s["fetched"], s["requests"]
    ceiling = min(rate, in_flight / latency_s) if latency_s > 0 else rate
    # Over a socket the budget counts each request for a window of 1 s + margin from its write
    # (ratelimit.py): at most `rate` starts per window.
    window = 1.0 + _budget_margin()
    paced = min(rate / window, in_flight / latency_s) if latency_s > 0 else rate / window
    share = s["article_requests"] / requests if requests else 0.0
    return {
        "run": label,
        "in_flight": in_flight,
        "articles": articles,
        "stored": s["stored"],
        "requests": requests,
        "toc_requests": s["toc_requests"],
        "interrupted": s["interrupted"],
        "wall_s": wall,
        "articles_per_s": articles / wall if wall else 0.0,
        "requests_per_s": requests / wall if wall else 0.0,
        "ceiling_rps": ceiling,
        "ceiling_aps": ceiling * share,
        "paced_bound_rps": paced,
        "fraction_of_ceiling_requests": (requests / wall) / ceiling if wall else 0.0,
        "fraction_of_ceiling_articles": (articles / wall) / (ceiling * share) if wall and share else 0.0,
        "cpu_s": result["cpu_s"],
        "cpu_s_per_1000_articles": result["cpu_s"] / articles * 1000 if articles else None,
        "peak_rss_mb": result["peak_rss_mb"],
        "client_statuses": result["client_stats"]["statuses"],
        "client_retries": result["client_stats"]["retries"],
    }


def run_throughput(args: argparse.Namespace) -> Json:
    """Our collector and the sequential baseline against one emulator process."""
    latency_s = args.latency_ms / 1000
    rows: list[Json] = []
    servers: list[Json] = []
    with DemoProcess(args.articles, args.latency_ms, args.rate) as demo:
        plans = [("collector", args.in_flight, None), ("sequential baseline", 1, args.baseline_seconds)]
        for label, in_flight, stop_after in plans:
            demo.reset_stats()
            emulator_cpu0 = demo.cpu_s()
            expected = (args.articles + 10) / min(args.rate, in_flight / max(latency_s, 1e-3))
            spec = {"kind": "pass", "name": f"throughput-{in_flight}", "api": demo.url, "articles": args.articles,
                    "rate": args.rate, "per_hour": 10**7, "per_day": 10**8, "in_flight": in_flight,
                    "stop_after": stop_after}
            print(f"  running: {label} (in flight {in_flight}) ...", flush=True)
            result = run_child(spec, timeout=min(expected, stop_after or expected) * 3 + 120)
            server = demo.stats()
            server["cpu_s"] = demo.cpu_s() - emulator_cpu0
            rows.append(_pass_row(label, in_flight, result, rate=args.rate, latency_s=latency_s))
            servers.append({k: server.get(k) for k in ("requests", "statuses", "rate_limited",
                                                        "max_requests_in_1s_window", "max_in_flight",
                                                        "articles_served_again", "cpu_s")})
    ours, base = rows
    ours["x_baseline_articles"] = ours["articles_per_s"] / base["articles_per_s"] if base["articles_per_s"] else None
    base["x_baseline_articles"] = 1.0
    bound = ours["ceiling_rps"] / base["ceiling_rps"]
    return {"latency_ms": args.latency_ms, "rate": args.rate, "articles": args.articles, "rows": rows,
            "emulator": servers, "ratio_bound": bound, "budget_margin_s": _budget_margin()}


def run_overhead(args: argparse.Namespace) -> Json:
    spec = {"kind": "pass", "name": "overhead", "api": None, "articles": args.articles, "rate": 10**6,
            "per_hour": 10**9, "per_day": 10**9, "in_flight": args.in_flight, "stop_after": None}
    print(f"  running: in-process pass, {args.articles} articles ...", flush=True)
    result = run_child(spec, timeout=args.articles * 0.02 + 120)
    s = result["summary"]
    n = s["fetched"]
    emulator = result["emulator_cpu_s"] or 0.0
    return {
        "articles": n,
        "stored": s["stored"],
        "requests": s["requests"],
        "wall_s": result["wall_s"],
        "articles_per_s": n / result["wall_s"],
        "cpu_ms_per_article_total": result["cpu_s"] / n * 1000,
        "cpu_ms_per_article_emulator": emulator / n * 1000,
        "cpu_ms_per_article_collector": (result["cpu_s"] - emulator) / n * 1000,
        "peak_rss_mb": result["peak_rss_mb"],
        "calibration_ms": result["calibration_s"] * 1000,
    }


def run_memory(args: argparse.Namespace) -> Json:
    rows = []
    for n in args.memory_sizes:
        spec = {"kind": "pass", "name": f"memory-{n}", "api": None, "articles": n, "rate": 10**6,
                "per_hour": 10**9, "per_day": 10**9, "in_flight": args.in_flight, "stop_after": None}
        print(f"  running: in-process pass, {n} articles (fresh process) ...", flush=True)
        result = run_child(spec, timeout=n * 0.02 + 180)
        s = result["summary"]
        rows.append({"articles": n, "fetched": s["fetched"], "stored": s["stored"], "wall_s": result["wall_s"],
                     "cpu_s": result["cpu_s"], "rss_ready_mb": result["rss_ready_mb"],
                     "peak_rss_mb": result["peak_rss_mb"]})
    first = rows[0]["peak_rss_mb"]
    for row in rows:
        row["x_first"] = row["peak_rss_mb"] / first
    return {"rows": rows}


def run_maintenance(args: argparse.Namespace) -> Json:
    spec = {"kind": "maintenance", "name": "maintenance", "api": None, "articles": args.articles,
            "rate": 10**6, "per_hour": 10**9, "per_day": 10**9, "in_flight": args.in_flight,
            "publish": args.publish}
    print(f"  running: first pass + 4 MAINTENANCE passes, {args.articles} articles ...", flush=True)
    return run_child(spec, timeout=args.articles * 0.05 + 180)


def run_budget(args: argparse.Namespace) -> Json:
    spec = {"kind": "budget", "name": "budget", "articles": 600, "per_hour": args.hour_budget,
            "wait_s": args.wait_seconds}
    print(f"  running: runtime with {args.hour_budget} requests per hour ...", flush=True)
    return run_child(spec, timeout=args.wait_seconds + 300)


# ---- printing ------------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.rjust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def print_throughput(r: Json) -> list[str]:
    print(f"\n== 1. Throughput: emulator process on loopback, latency {r['latency_ms']:g} ms, "
          f"limit {r['rate']:g}/s, {r['articles']:,} articles, budget {r['rate']:g}/s ==")
    headers = ["run", "in flight", "articles", "wall s", "articles/s", "requests/s", "ceiling req/s",
               "% ceiling (req)", "% ceiling (art)", "x baseline", "CPU s/1000 art", "peak MB"]
    rows = [[x["run"] + (" (stopped)" if x["interrupted"] else ""), x["in_flight"], x["articles"], x["wall_s"],
             x["articles_per_s"], x["requests_per_s"], x["ceiling_rps"], 100 * x["fraction_of_ceiling_requests"],
             100 * x["fraction_of_ceiling_articles"], x["x_baseline_articles"], x["cpu_s_per_1000_articles"],
             x["peak_rss_mb"]] for x in r["rows"]]
    print(_table(headers, rows))
    ours, base = r["rows"]
    print(f"ceiling = min(budget, in flight / latency); requests include {ours['toc_requests']} TOC "
          f"requests (articles ceiling = ceiling x getArticle share = {ours['ceiling_aps']:.2f}/s)")
    print(f"budget bound (a request counts for {1 + r['budget_margin_s']:g} s from its write): "
          f"{ours['paced_bound_rps']:.2f} req/s = {100 * ours['paced_bound_rps'] / ours['ceiling_rps']:.1f}% of the "
          f"ceiling; ours at {100 * ours['requests_per_s'] / ours['paced_bound_rps']:.1f}% of it")
    print(f"baseline: one request every {1000 * base['wall_s'] / base['requests']:.0f} ms (latency "
          f"{r['latency_ms']:g} ms); ratio bound ours/baseline = ceilings {ours['ceiling_rps']:g}/"
          f"{base['ceiling_rps']:.2f} = {r['ratio_bound']:.2f}x (budget x latency)")
    for label, server in zip(("collector", "baseline"), r["emulator"]):
        print(f"emulator during {label}: 429s={server['rate_limited']} max in 1 s window="
              f"{server['max_requests_in_1s_window']} max in flight={server['max_in_flight']} "
              f"statuses={server['statuses']} served again={server['articles_served_again']} "
              f"emulator CPU={server['cpu_s']:.2f} s")
    fraction = ours["fraction_of_ceiling_articles"]
    ratio = ours["x_baseline_articles"] or 0.0
    no_429 = r["emulator"][0]["rate_limited"] == 0
    return [f"throughput >= 95% of ceiling (articles/s): {100 * fraction:.1f}% -> {_verdict(fraction >= 0.95)}",
            f"throughput >= 3.5x sequential baseline: {ratio:.2f}x (bound {r['ratio_bound']:.2f}x) -> {_verdict(ratio >= 3.5)}",
            f"zero 429 from our pacing at {r['rate']:g}/s: {r['emulator'][0]['rate_limited']} -> {_verdict(no_429)}"]


def print_overhead(r: Json) -> list[str]:
    print("\n== 2. Pure overhead: emulator in-process, no latency, no limit ==")
    headers = ["articles", "wall s", "articles/s", "CPU ms/article (total)", "emulator", "collector", "peak MB",
               "calibration ms"]
    print(_table(headers, [[r["articles"], r["wall_s"], r["articles_per_s"], r["cpu_ms_per_article_total"],
                            r["cpu_ms_per_article_emulator"], r["cpu_ms_per_article_collector"], r["peak_rss_mb"],
                            r["calibration_ms"]]]))
    print("calibration = CPU ms of a fixed pure-Python workload in the same process just before the pass: "
          "the machine's speed at that moment (shared cores); CPU figures scale with it")
    own, total = r["cpu_ms_per_article_collector"], r["cpu_ms_per_article_total"]
    return [f"<= 1 ms collector CPU per article with the in-process emulator: {own:.3f} ms (whole process with "
            f"the emulator's {r['cpu_ms_per_article_emulator']:.3f}: {total:.3f}) -> {_verdict(own <= 1.0)}"]


def print_memory(r: Json) -> list[str]:
    print("\n== 3. Memory: in-process MASSIVE pass, fresh process per size, peak RSS (ru_maxrss) ==")
    headers = ["articles", "fetched", "wall s", "CPU s", "RSS before pass MB", "peak RSS MB", "x first"]
    print(_table(headers, [[x["articles"], x["fetched"], x["wall_s"], x["cpu_s"], x["rss_ready_mb"],
                            x["peak_rss_mb"], x["x_first"]] for x in r["rows"]]))
    last = r["rows"][-1]
    return [f"peak at {last['articles']:,} within 1.3x of {r['rows'][0]['articles']:,}: {last['x_first']:.2f}x "
            f"-> {_verdict(last['x_first'] <= 1.3)}",
            f"peak under 300 MB: {last['peak_rss_mb']:.0f} MB -> {_verdict(last['peak_rss_mb'] < 300)}"]


def print_maintenance(r: Json) -> list[str]:
    print(f"\n== 4. MAINTENANCE cost over {r['codes']} codes (in-process emulator) ==")
    headers = ["step", "list/code", "tableMatieres", "getArticle", "requests", "codes unchanged", "fetched",
               "superseded", "wall s", "CPU s"]
    rows = []
    for st in r["steps"]:
        e, s = st["by_endpoint"], st["summary"]
        rows.append([st["step"], e.get("list_code", 0), e.get("table_matieres", 0), e.get("get_article", 0),
                     s["requests"], s["codes_unchanged"], s["fetched"], s.get("superseded"), st["wall_s"], st["cpu_s"]])
    print(_table(headers, rows))
    print(f"published versions in {len(r['published_codes'])} code(s): {', '.join(r['published'])}")
    unchanged, after, daily = r["steps"][1], r["steps"][2], r["steps"][3]
    k = len(r["published"])
    got = after["by_endpoint"].get("get_article", 0)
    return [f"unchanged -> no getArticle, <= 1 request per code: {unchanged['summary']['requests']} requests, "
            f"{unchanged['by_endpoint'].get('get_article', 0)} getArticle -> "
            f"{_verdict(unchanged['by_endpoint'].get('get_article', 0) == 0 and unchanged['summary']['requests'] <= r['codes'])}",
            f"after {k} versions -> exactly {k} getArticle: {got} -> {_verdict(got == k)}",
            f"daily full walk (marks 25 h old): {daily['summary']['requests']} requests "
            f"({daily['by_endpoint'].get('table_matieres', 0)} TOC), {daily['wall_s']:.2f} s, CPU {daily['cpu_s']:.2f} s"]


def print_budget(r: Json) -> list[str]:
    print(f"\n== 5. Waiting for the hour budget ({r['per_hour']} requests per hour, whole runtime) ==")
    print(f"status phase: {r['phase']!r}; detail: {r['detail']!r}")
    print(f"budget snapshot: waiting_for={r['waiting_for']} waiting_until={r['waiting_until']} "
          f"hour_used={r['hour_used']}; emulator served {r['api_requests_served']} API requests")
    share = r["idle_cpu_s"] / r["idle_wall_s"]
    print(f"process CPU while waiting: {r['idle_cpu_s']:.3f} s over {r['idle_wall_s']:.1f} s = {100 * share:.2f}% "
          f"of one core; stop took {r['stopped_in_s']:.2f} s")
    return [f"status says until when: waiting_for={r['waiting_for']} until {r['waiting_until']} -> "
            f"{_verdict(r['waiting_for'] == 'hour' and r['waiting_until'] not in (None, 'None'))}",
            f"CPU near zero while waiting: {100 * share:.2f}% -> {_verdict(share < 0.02)}"]


PRINTERS: dict[str, Callable[[Json], list[str]]] = {
    "throughput": print_throughput, "overhead": print_overhead, "memory": print_memory,
    "maintenance": print_maintenance, "budget": print_budget,
}
RUNNERS: dict[str, Callable[[argparse.Namespace], Json]] = {
    "throughput": run_throughput, "overhead": run_overhead, "memory": run_memory,
    "maintenance": run_maintenance, "budget": run_budget,
}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or any(n < 5 or n > 110_000 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be between 5 and 110,000 articles")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/harvest.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--articles", type=int, default=None, help="corpus size of throughput/overhead/maintenance "
                   "(default 3000; 600 with --quick)")
    p.add_argument("--latency-ms", type=float, default=150.0, help="emulator latency per request (default 150)")
    p.add_argument("--rate", type=int, default=20, help="emulator limit and our budget, requests/s (default 20)")
    p.add_argument("--in-flight", type=int, default=8, help="our max requests in flight (default 8)")
    p.add_argument("--baseline-seconds", type=float, default=None,
                   help="stop the sequential baseline after this long (default 45; 15 with --quick)")
    p.add_argument("--memory-sizes", type=_sizes, default=None,
                   help="comma-separated corpus sizes of the memory runs (default 10000,100000; 2000,20000 with --quick)")
    p.add_argument("--publish", type=int, default=7, help="new versions published before the MAINTENANCE pass (K)")
    p.add_argument("--hour-budget", type=int, default=30, help="per-hour budget of the budget section (default 30)")
    p.add_argument("--wait-seconds", type=float, default=None, help="CPU sampling while waiting (default 5; 3 with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run of every section")
    p.add_argument("--only", action="append", default=None, metavar="SECTION",
                   help=f"run only these sections (repeat or comma-separate): {', '.join(SECTIONS)}")
    p.add_argument("--out", type=Path, default=OUT / "last.json", help="where to write the JSON results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill --quick dependent defaults; check the values."""
    quick = args.quick
    args.articles = args.articles or (600 if quick else 3000)
    args.baseline_seconds = args.baseline_seconds or (15.0 if quick else 45.0)
    args.memory_sizes = args.memory_sizes or ([2000, 20000] if quick else [10_000, 100_000])
    args.wait_seconds = args.wait_seconds or (3.0 if quick else 5.0)
    if not 5 <= args.articles <= 110_000:
        raise SystemExit("--articles must be between 5 and 110,000")
    if args.rate <= 0 or args.in_flight < 1 or args.latency_ms < 0 or args.publish < 0 or args.hour_budget < 1:
        raise SystemExit("--rate > 0, --in-flight >= 1, --latency-ms >= 0, --publish >= 0, --hour-budget >= 1")
    wanted = [s.strip() for item in (args.only or [",".join(SECTIONS)]) for s in item.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {unknown}; choose among {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in wanted]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return child_main(args.child)
    args = resolve(args)
    started = time.perf_counter()
    report: Json = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": os.getloadavg()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "child"},
        "results": {},
        "verdicts": [],
    }
    print(f"bench/harvest.py: sections {', '.join(args.sections)}; {os.cpu_count()} CPUs, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    failed = False
    for section in args.sections:
        try:
            result = RUNNERS[section](args)
        except ChildFailed as exc:
            print(f"\n== {section}: FAILED: {exc}", flush=True)
            report["results"][section] = {"error": str(exc)}
            failed = True
            continue
        report["results"][section] = result
        verdicts = PRINTERS[section](result)
        report["verdicts"].extend(verdicts)
        sys.stdout.flush()
    report["machine"]["load_after"] = os.getloadavg()
    report["elapsed_s"] = time.perf_counter() - started
    print("\n== Targets ==")
    for line in report["verdicts"]:
        print(f"- {line}")
    print(f"\nelapsed {report['elapsed_s']:.0f} s; load after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
