"""Request accounting for the emulator: sliding 1-s windows, counters, in-flight peak."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any


class SlidingWindow:
    """Timestamps of events in the last `width` seconds (counted on arrival)."""

    def __init__(self, width: float = 1.0) -> None:
        self.width = width
        self._times: deque[float] = deque()

    def count(self, now: float) -> int:
        """Events in the window (now - width, now]."""
        edge = now - self.width
        times = self._times
        while times and times[0] <= edge:
            times.popleft()
        return len(times)

    def add(self, now: float) -> int:
        """Record an event; return the window's count including it."""
        n = self.count(now) + 1
        self._times.append(now)
        return n


class ServedCounts:
    """getArticle answers per article id.

    Demo article ids (LEGIARTI000099 + 6 digits) are counted in a 1 MB bytearray, saturating at
    255, so a 100,000-article pass adds no object per id to the emulator's memory; any other
    id goes to a Counter."""

    _PREFIX = "LEGIARTI000099"
    _SIZE = 1_000_000

    def __init__(self) -> None:
        self._demo: bytearray | None = None  # allocated on the first demo id
        self._other: Counter[str] = Counter()

    def add(self, article_id: str) -> None:
        tail = article_id[len(self._PREFIX):]
        if article_id.startswith(self._PREFIX) and len(tail) == 6 and tail.isdigit():
            if self._demo is None:
                self._demo = bytearray(self._SIZE)
            index = int(tail)
            self._demo[index] = min(self._demo[index] + 1, 255)
        else:
            self._other[article_id] += 1

    def by_id(self) -> dict[str, int]:
        out = dict(self._other)
        if self._demo is not None:
            out.update((f"{self._PREFIX}{i:06d}", n) for i, n in enumerate(self._demo) if n)
        return out

    def distinct(self) -> int:
        demo = self._SIZE - self._demo.count(0) if self._demo is not None else 0
        return demo + len(self._other)

    def again(self) -> int:
        """Answers beyond the first for each id."""
        demo = sum(self._demo) - (self._SIZE - self._demo.count(0)) if self._demo is not None else 0
        return demo + sum(n - 1 for n in self._other.values())


class Traffic:
    """Counters behind GET /_demo/stats. Not thread-safe: the DemoServer lock guards it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.by_endpoint: dict[str, Counter[str]] = {}
        self.faults: Counter[str] = Counter()
        self.rate_limited = 0
        self.tokens_issued = 0
        self.max_window = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.articles_served = ServedCounts()
        self._arrivals = SlidingWindow()

    def arrive(self, endpoint: str, now: float, *, api: bool) -> None:
        self.requests[endpoint] += 1
        if api:
            self.max_window = max(self.max_window, self._arrivals.add(now))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finish(self, endpoint: str, status: int | str, *, api: bool) -> None:
        key = str(status)
        self.statuses[key] += 1
        self.by_endpoint.setdefault(endpoint, Counter())[key] += 1
        if api:
            self.in_flight -= 1

    def snapshot(self, *, per_id: bool = False) -> dict[str, Any]:
        """The counters; `per_id` adds the getArticle answers per article id (can be large)."""
        served = self.articles_served
        out = {
            "requests": dict(self.requests),
            "total_requests": sum(self.requests.values()),
            "api_requests": sum(n for e, n in self.requests.items() if e != "token"),
            "statuses": dict(self.statuses),
            "by_endpoint": {e: dict(c) for e, c in self.by_endpoint.items()},
            "max_requests_in_1s_window": self.max_window,
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "tokens_issued": self.tokens_issued,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "articles_served": served.distinct(),  # distinct ids answered by getArticle
            "articles_served_again": served.again(),
        }
        if per_id:
            out["articles_served_by_id"] = served.by_id()
        return out
