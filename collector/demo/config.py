"""DemoConfig: the emulator's knobs (corpus size, latency, rate limit, faults, tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.demo.faults import DEFAULT_RANDOM_FAULTS, FaultKind, FaultRule, as_rule

DEMO_CLIENT_ID = "demo-client-id"
DEMO_CLIENT_SECRET = "demo-client-secret"

MIN_DEMO_ARTICLES = 5  # at least one in-force article per demo code
MAX_DEMO_ARTICLES = 110_000  # id ranges of the synthetic corpus hold at most this many


@dataclass(frozen=True)
class DemoConfig:
    """Knobs of the offline Légifrance emulator. Every field has a quiet default."""

    articles: int = 600  # in-force articles across the five demo codes
    seed: int = 0
    latency_ms: float = 0.0  # added to every API request (asyncio.sleep)
    rate_limit: float | None = None  # API requests per sliding 1-s window; None = unlimited
    retry_after: float | None = None  # seconds sent in Retry-After with 429; None = no header
    fault_rate: float = 0.0  # probability that an API request gets a random fault
    fault_kinds: tuple[FaultKind, ...] = DEFAULT_RANDOM_FAULTS
    faults: tuple[FaultRule, ...] = ()  # scripted plan (rules or their dicts), before random faults
    hang_s: float = 30.0  # how long a "hang" fault waits before answering
    token_lifetime_s: float = 3600.0
    forbidden: bool = False  # valid token but "application not subscribed": 403
    client_id: str = DEMO_CLIENT_ID
    client_secret: str = field(default=DEMO_CLIENT_SECRET, repr=False)

    def __post_init__(self) -> None:
        if not MIN_DEMO_ARTICLES <= self.articles <= MAX_DEMO_ARTICLES:
            raise ValueError(
                f"articles must be between {MIN_DEMO_ARTICLES} and {MAX_DEMO_ARTICLES}, got {self.articles}"
            )
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, got {self.fault_rate}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0 (or None for unlimited), got {self.rate_limit}")
        for name in ("latency_ms", "hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.token_lifetime_s <= 0:
            raise ValueError(f"token_lifetime_s must be > 0, got {self.token_lifetime_s}")
        object.__setattr__(self, "fault_kinds", tuple(FaultKind(k) for k in self.fault_kinds))
        object.__setattr__(self, "faults", tuple(as_rule(r) for r in self.faults))
