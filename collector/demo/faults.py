"""Fault injection for the emulator: a scripted plan (FIFO rules) plus seeded random faults."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class FaultKind(str, Enum):
    """What a faulty request gets instead of its normal answer."""

    HTTP_500 = "http_500"  # 500 with an HTML body
    HTTP_503 = "http_503"  # 503 with an HTML body
    HTTP_429 = "http_429"  # 429 (Retry-After when the retry_after knob is set)
    HTTP_401 = "http_401"  # 401 as if the token had expired
    HANG = "hang"  # waits hang_s before answering (longer than the client's read timeout)
    DROP = "drop"  # the connection is closed without any response
    TRUNCATED = "truncated"  # 200 with the JSON body cut in half
    NULL_ARTICLE = "null_article"  # getArticle answers 200 {"article": null}
    EMPTY_TOC = "empty_toc"  # tableMatieres answers 200 with the code's TOC emptied (no section, no article)

    def __str__(self) -> str:
        return self.value


DEFAULT_RANDOM_FAULTS: tuple[FaultKind, ...] = (
    FaultKind.HTTP_500,
    FaultKind.HTTP_503,
    FaultKind.DROP,
    FaultKind.TRUNCATED,
    FaultKind.NULL_ARTICLE,
)

# Endpoint names used by faults and stats.
ENDPOINTS: tuple[str, ...] = ("token", "list_code", "table_matieres", "get_article", "get_article_by_cid")
_ALIASES = {
    "getArticle": "get_article",
    "getArticleByCid": "get_article_by_cid",
    "tableMatieres": "table_matieres",
    "list/code": "list_code",
    "listCode": "list_code",
}
_ONLY_FOR = {
    FaultKind.NULL_ARTICLE: frozenset({"get_article"}),
    FaultKind.EMPTY_TOC: frozenset({"table_matieres"}),
}


def endpoint_name(value: str) -> str:
    """Normalise an endpoint given as a name ("get_article") or an API route ("getArticle")."""
    name = _ALIASES.get(value.rsplit("/consult/", 1)[-1].strip("/"), value)
    if name not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {value!r}: expected one of {', '.join(ENDPOINTS)}")
    return name


def applies(kind: FaultKind, endpoint: str) -> bool:
    allowed = _ONLY_FOR.get(kind)
    return allowed is None or endpoint in allowed


@dataclass(frozen=True)
class FaultRule:
    """Scripted fault: the next `count` requests to `endpoint` (None = any API endpoint) get `kind`."""

    kind: FaultKind
    count: int = 1
    endpoint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.count < 1:
            raise ValueError(f"fault count must be >= 1, got {self.count}")
        if self.endpoint is not None:
            object.__setattr__(self, "endpoint", endpoint_name(self.endpoint))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Parse {"kind": "http_429", "count": 3, "endpoint": "getArticle"}; ValueError if malformed."""
        unknown = set(data) - {"kind", "count", "endpoint"}
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("fault rule needs a 'kind'")
        count = data.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool):
            raise ValueError(f"fault count must be an integer, got {count!r}")
        try:
            kind = FaultKind(data["kind"])
        except ValueError:
            kinds = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault kind {data['kind']!r}: expected one of {kinds}") from None
        return cls(kind=kind, count=count, endpoint=data.get("endpoint"))


def as_rule(rule: FaultRule | Mapping[str, Any]) -> FaultRule:
    """A FaultRule, or one parsed from its dict form."""
    return rule if isinstance(rule, FaultRule) else FaultRule.from_dict(rule)


class FaultInjector:
    """Decides, request by request, which fault (if any) applies. Not thread-safe: callers lock.

    The scripted plan is consumed first (first matching rule wins). Random faults then hit API
    endpoints (never the token endpoint) with probability `rate`, drawn from a generator seeded
    by `seed`, so one request order always gives the same faults."""

    def __init__(self, *, seed: int, rate: float, kinds: Iterable[FaultKind],
                 plan: Iterable[FaultRule | Mapping[str, Any]] = ()) -> None:
        self._rng = random.Random(f"demo-faults-{seed}")
        self.rate = rate
        self.kinds = tuple(FaultKind(k) for k in kinds)
        self._plan: list[list[Any]] = []  # [rule, remaining]
        self.set_plan(plan)

    def set_plan(self, rules: Iterable[FaultRule | Mapping[str, Any]], *, append: bool = False) -> None:
        parsed = [as_rule(r) for r in rules]  # parse all first: a bad rule changes nothing
        if not append:
            self._plan.clear()
        self._plan.extend([rule, rule.count] for rule in parsed)

    def plan(self) -> list[dict[str, Any]]:
        """Remaining scripted rules."""
        return [
            {"kind": rule.kind.value, "remaining": left, "endpoint": rule.endpoint}
            for rule, left in self._plan
        ]

    def pick(self, endpoint: str) -> FaultKind | None:
        for item in self._plan:
            rule, left = item
            targeted = rule.endpoint == endpoint or (rule.endpoint is None and endpoint != "token")
            if targeted and applies(rule.kind, endpoint):
                if left <= 1:
                    self._plan.remove(item)
                else:
                    item[1] = left - 1
                return rule.kind
        if endpoint == "token" or self.rate <= 0:
            return None
        if self._rng.random() >= self.rate:
            return None
        choices = [k for k in self.kinds if applies(k, endpoint)]
        return self._rng.choice(choices) if choices else None
