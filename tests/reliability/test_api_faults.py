"""Scenario 4: API faults from the emulator, alone and mixed, against `run --once` (MASSIVE).

Each case has its own emulator process (rate limit = the client's per-second budget) and its
own collector; the cases run side by side to keep the suite short. For every case:
* the pass finishes (summary printed; exit 0, or 1 when a code or an article failed: the null
  article and unknown code cases) and every reachable article is stored once;
* every injected fault is visible: each retryable fault and each 401 is one extra attempt in the
  summary (`requests` - `toc_requests` - `article_requests`) and one warning in the log; a null
  article is `failed` in the summary and stored by the next pass; an unknown code is
  `codes_failed` with its id in `errors`;
* our own pacing never trips the limiter: the emulator's busiest 1-s window holds at most the
  limit and its rate-limit 429 count is 0 (an injected 429 burst is counted apart, as a fault).
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collector.demo import DEMO_MASSIVE_CODES
from tests.reliability.conftest import (
    Emulator,
    Report,
    assert_exact_store,
    check_store,
    collector_env,
    cli,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.reliability

RATE = 20
ARTICLES = 60
UNKNOWN_CODE = "LEGITEXT000099999999"  # in the demo range, but no such code
READ_TIMEOUT_S = 30  # the client's read timeout (LegifranceClient default)


@dataclass
class Case:
    name: str
    plan: list[dict[str, Any]] = field(default_factory=list)  # scripted faults, consumed in order
    knobs: dict[str, Any] = field(default_factory=dict)  # live emulator settings
    fault_rate: float = 0.0  # random faults (seeded by the emulator's seed)
    expire_tokens_mid_pass: bool = False
    unknown_code: bool = False


CASES = [
    Case("read timeout", [{"kind": "hang", "count": 1, "endpoint": "get_article"}], {"hang_s": READ_TIMEOUT_S + 5}),
    # 4 in a row on the first request (the TOC: 5 attempts of the client's 6), then a burst on
    # the getArticle requests in flight
    Case("429 burst, no Retry-After", [{"kind": "http_429", "count": 4},
                                       {"kind": "http_429", "count": 8, "endpoint": "get_article"}]),
    Case("429 burst, Retry-After: 1", [{"kind": "http_429", "count": 3}], {"retry_after": 1}),
    Case("500 with an HTML body", [{"kind": "http_500", "count": 4}]),
    Case("503 with an HTML body", [{"kind": "http_503", "count": 4}]),
    Case("dropped connection", [{"kind": "drop", "count": 4}]),
    Case("token expiry mid-pass", expire_tokens_mid_pass=True),
    Case("truncated JSON", [{"kind": "truncated", "count": 4}]),
    Case("null article", [{"kind": "null_article", "count": 2}]),
    Case("unknown code id", unknown_code=True),
    Case("mixed", [{"kind": "http_429", "count": 2}, {"kind": "drop", "count": 1}, {"kind": "http_503", "count": 1}],
         fault_rate=0.12, expire_tokens_mid_pass=True),
]


def _run_case(case: Case, folder: Path, seed: int) -> dict[str, Any]:
    emu = Emulator(folder, articles=ARTICLES, latency_ms=10, rate_limit=RATE, seed=seed).start()
    try:
        if case.knobs:
            emu.admin("POST", "settings", json=case.knobs)
        if case.plan or case.fault_rate:
            emu.faults(case.plan, fault_rate=case.fault_rate)
        codes = DEMO_MASSIVE_CODES + ((UNKNOWN_CODE,) if case.unknown_code else ())
        env = collector_env(folder, emu, rate=RATE, codes=codes)
        t0 = time.monotonic()
        if case.expire_tokens_mid_pass:
            proc = cli(env, folder, "once", "run", "--once", "--mode", "MASSIVE")
            wait_for(lambda: proc.event("code walked") or proc.poll() is not None, 60, "the first code walked")
            time.sleep(0.3)
            expired = emu.expire_tokens()
            assert expired >= 1
            proc.wait(120)
        else:
            proc = run_cli(env, folder, "once", "run", "--once", "--mode", "MASSIVE", timeout=120)
        wall = time.monotonic() - t0
        summary = proc.last_json()
        stats = emu.stats()
        faults = stats["faults"]
        refused_401 = int(stats["statuses"].get("401", 0))
        retryable = sum(n for kind, n in faults.items() if kind != "null_article")
        nulls = int(faults.get("null_article", 0))
        # documented exit codes: 1 when any code or article failed, else 0
        assert proc.poll() == (1 if nulls or case.unknown_code else 0), proc.stderr()[-3000:]
        if nulls or case.unknown_code:
            assert proc.stderr().strip().splitlines()[-1].startswith("error: the pass had failures:")
        extra_attempts = summary["requests"] - summary["toc_requests"] - summary["article_requests"]
        retry_logs = sum(1 for e in proc.events() if e.get("event") == "legifrance retry")
        reauth_logs = sum(1 for e in proc.events() if e.get("event") == "legifrance token refused, re-authenticating")
        assert extra_attempts == retryable + refused_401, (summary, faults, refused_401, stats["rate_limited"])
        assert retry_logs == retryable and reauth_logs == refused_401
        assert summary["failed"] == nulls
        assert summary["interrupted"] is False
        assert summary["token_requests"] == stats["tokens_issued"]
        if case.expire_tokens_mid_pass:
            assert refused_401 >= 1 and stats["tokens_issued"] >= 2
        if case.unknown_code:
            assert summary["codes_failed"] == 1 and any(UNKNOWN_CODE in e for e in summary["errors"])
        else:
            assert summary["codes_failed"] == 0
        # our own pacing: never over the limit, never a limiter 429
        assert stats["max_requests_in_1s_window"] <= RATE, stats
        assert stats["rate_limited"] == 0, stats
        expected = emu.expected(DEMO_MASSIVE_CODES)
        db = Path(env["COLLECTOR_DB"])
        figures = check_store(db, expected)
        # a null answer leaves its id for the next pass (unless it was a short one, never stored)
        assert figures["missing_count"] <= nulls and figures["unexpected"] == []
        again_summary = None
        if nulls:
            emu.faults([], fault_rate=0.0)
            again = run_cli(env, folder, "again", "run", "--once", timeout=120)
            assert again.poll() == 0, again.stderr()[-3000:]
            again_summary = again.last_json()
            assert again_summary["article_requests"] == nulls and again_summary["failed"] == 0
            figures = check_store(db, expected)
        assert_exact_store(figures)
        return {
            "faults_injected": dict(faults), "401_answers": refused_401, "faults_total": retryable + nulls + refused_401,
            "faults_survived": retryable + nulls + refused_401, "extra_attempts": extra_attempts,
            "failed_then_stored_next_pass": nulls, "codes_failed": summary["codes_failed"],
            "expected": figures["expected"], "stored": figures["stored"], "duplicated": figures["duplicated"],
            "max_requests_in_1s_window": stats["max_requests_in_1s_window"], "rate_limited_429": stats["rate_limited"],
            "limit": RATE, "wall_s": round(wall, 1),
        }
    finally:
        emu.stop()


def test_api_faults_alone_and_mixed(tmp_path: Path, seed: int, report: Report) -> None:
    rng = random.Random(seed)
    seeds = {case.name: rng.randrange(10**6) for case in CASES}  # emulator corpus/fault seeds
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}

    def job(case: Case) -> Callable[[], None]:
        def run() -> None:
            folder = tmp_path / case.name.replace(" ", "_").replace(":", "").replace(",", "")
            try:
                results[case.name] = _run_case(case, folder, seeds[case.name])
            except BaseException:  # noqa: BLE001 - collected and reported per case below
                failures[case.name] = traceback.format_exc()[-3000:]

        return run

    # The read-timeout case waits READ_TIMEOUT_S; it starts first so the others run meanwhile.
    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [pool.submit(job(case)) for case in CASES]:
            future.result()
    report.record("api_faults", {
        "cases": len(CASES), "cases_passed": len(results), "seed": seed,
        "faults_injected": sum(r["faults_total"] for r in results.values()),
        "faults_survived": sum(r["faults_survived"] for r in results.values()),
        "by_case": results, "failures": sorted(failures),
    })
    assert not failures, "\n\n".join(f"--- {name}\n{tb}" for name, tb in failures.items())
