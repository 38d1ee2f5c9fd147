"""DemoServer: the emulator's mutable state (corpus, tokens, limiter, faults, stats).

Every operation of the /_demo/ admin routes is a method here, so in-process tests and
benchmarks drive the emulator without HTTP. Methods are thread-safe (the uvicorn thread and
a test thread may call them at once)."""

from __future__ import annotations

import atexit
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

from collector.demo.config import DemoConfig
from collector.demo.corpus import Corpus, PublishedVersion, RepealedArticle
from collector.demo.dumps import DemoDumpFolder
from collector.demo.faults import FaultInjector, FaultKind, FaultRule, as_rule
from collector.demo.traffic import SlidingWindow, Traffic

_LIVE_KNOBS = ("latency_ms", "rate_limit", "retry_after", "hang_s", "token_lifetime_s", "forbidden")


@dataclass(frozen=True, slots=True)
class Admission:
    """What the gate decided for one arriving request."""

    rate_limited: bool
    fault: FaultKind | None


class DemoServer:
    """State of one emulator instance; `create_app(server)` serves it over HTTP/ASGI."""

    def __init__(self, config: DemoConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or DemoConfig()
        self.corpus = Corpus(self.config.articles, self.config.seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> expiry (clock time)
        self._accepted = SlidingWindow()
        self._traffic = Traffic()
        self._faults = FaultInjector(
            seed=self.config.seed, rate=self.config.fault_rate, kinds=self.config.fault_kinds,
            plan=self.config.faults,
        )
        self._dumps: DemoDumpFolder | None = None

    def dump_folder(self) -> DemoDumpFolder:
        """The synthetic DILA archives of this corpus (collector.demo.dumps), in a temporary
        folder created on first use and removed at exit; written on the first `paths()`."""
        with self._lock:
            if self._dumps is None:
                folder = Path(tempfile.mkdtemp(prefix="demo-dumps-"))
                atexit.register(shutil.rmtree, folder, True)
                self._dumps = DemoDumpFolder(folder, self.config.articles, self.config.seed)
            return self._dumps

    # ---- live knobs ------------------------------------------------------------------------
    def update(self, **knobs: Any) -> DemoConfig:
        """Change latency_ms, rate_limit, retry_after, hang_s, token_lifetime_s or forbidden
        while serving. Unknown names or bad values raise ValueError; nothing changes then."""
        unknown = set(knobs) - set(_LIVE_KNOBS)
        if unknown:
            raise ValueError(f"unknown or non-live settings: {sorted(unknown)}; live ones: {', '.join(_LIVE_KNOBS)}")
        with self._lock:
            self.config = replace(self.config, **knobs)  # __post_init__ validates
            return self.config

    def set_faults(
        self,
        plan: Iterable[FaultRule | Mapping[str, Any]] = (),
        *,
        append: bool = False,
        rate: float | None = None,
        kinds: Iterable[FaultKind | str] | None = None,
    ) -> dict[str, Any]:
        """Replace (or extend) the scripted plan; optionally change the random fault rate/kinds."""
        rules = [as_rule(r) for r in plan]
        with self._lock:
            changes: dict[str, Any] = {}
            if rate is not None:
                changes["fault_rate"] = rate
            if kinds is not None:
                changes["fault_kinds"] = tuple(FaultKind(k) for k in kinds)
            if changes:
                self.config = replace(self.config, **changes)
                self._faults.rate = self.config.fault_rate
                self._faults.kinds = self.config.fault_kinds
            self._faults.set_plan(rules, append=append)
            return self._fault_view()

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._fault_view()

    def _fault_view(self) -> dict[str, Any]:
        return {
            "plan": self._faults.plan(),
            "fault_rate": self.config.fault_rate,
            "fault_kinds": [k.value for k in self.config.fault_kinds],
        }

    def settings(self) -> dict[str, Any]:
        """Current knobs (the client secret is left out)."""
        with self._lock:
            cfg = self.config
        out = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("client_secret", "faults")}
        out["fault_kinds"] = [k.value for k in cfg.fault_kinds]
        return out

    # ---- tokens ----------------------------------------------------------------------------
    def credentials_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        cfg = self.config
        return (
            client_id is not None
            and client_secret is not None
            and secrets.compare_digest(client_id.encode(), cfg.client_id.encode())
            and secrets.compare_digest(client_secret.encode(), cfg.client_secret.encode())
        )

    def issue_token(self) -> tuple[str, int]:
        """A new opaque bearer token and its lifetime in whole seconds (expires_in)."""
        token = secrets.token_urlsafe(40)
        lifetime = self.config.token_lifetime_s
        with self._lock:
            now = self._clock()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + lifetime
            self._traffic.tokens_issued += 1
        return token, max(1, round(lifetime))

    def token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and expiry > self._clock()

    def expire_tokens(self) -> int:
        """Invalidate every token issued so far (the next API call gets 401); returns how many."""
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
            return count

    # ---- request gate ------------------------------------------------------------------------
    def admit(self, endpoint: str, *, api: bool = True) -> Admission:
        """Record an arriving request; decide rate limiting (API only) and, for the token
        endpoint, any fault. An API request draws its fault later (`draw_fault`), once its
        token is accepted: a 401 must not consume (nor count) a fault it never delivers."""
        with self._lock:
            now = self._clock()
            self._traffic.arrive(endpoint, now, api=api)
            limited = False
            limit = self.config.rate_limit
            if api and limit is not None:
                if self._accepted.count(now) >= limit:
                    limited = True
                    self._traffic.rate_limited += 1
                else:
                    self._accepted.add(now)
            fault = None if limited or api else self._draw_locked(endpoint)
            return Admission(limited, fault)

    def draw_fault(self, endpoint: str) -> FaultKind | None:
        """The fault (if any) an authenticated API request gets; counted in the stats."""
        with self._lock:
            return self._draw_locked(endpoint)

    def _draw_locked(self, endpoint: str) -> FaultKind | None:
        fault = self._faults.pick(endpoint)
        if fault is not None:
            self._traffic.faults[fault.value] += 1
        return fault

    def finish(self, endpoint: str, status: int | str, *, api: bool = True) -> None:
        with self._lock:
            self._traffic.finish(endpoint, status, api=api)

    def served_article(self, article_id: str) -> None:
        """Count one getArticle answer for `article_id` (re-work measurements)."""
        with self._lock:
            self._traffic.articles_served.add(article_id)

    def stats(self, *, per_id: bool = False) -> dict[str, Any]:
        with self._lock:
            return self._traffic.snapshot(per_id=per_id)

    def reset_stats(self) -> None:
        with self._lock:
            self._traffic.reset()

    # ---- corpus ------------------------------------------------------------------------------
    def publish(self, count: int, *, code_id: str | None = None, on: date | None = None) -> list[PublishedVersion]:
        """Publish `count` new article versions (see Corpus.publish)."""
        return self.corpus.publish(count, code_id=code_id, on=on)

    def repeal(self, count: int, *, code_id: str | None = None, on: date | None = None) -> list[RepealedArticle]:
        """Repeal `count` in-force articles (see Corpus.repeal)."""
        return self.corpus.repeal(count, code_id=code_id, on=on)

    def expected_ids(self, codes: Iterable[str] | None = None, *, min_chars: int = 100,
                     on: date | None = None) -> set[str]:
        """Ids a correct collector ends up storing (see Corpus.expected_ids)."""
        return self.corpus.expected_ids(codes, min_chars=min_chars, on=on)
