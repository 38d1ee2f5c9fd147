"""Builders and process helpers shared by the store tests."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from collector.models import Article, Rejected

T0 = datetime(2026, 11, 28, 15, 0, 0, tzinfo=UTC)


def article(
    n: int,
    code_id: str = "LEGITEXT000099900001",
    *,
    text: str | None = None,
    collected_at: datetime = T0,
) -> Article:
    body = text if text is not None else f"Article {n}. " + "Le texte de l'article, avec des accents : é à ç. " * 3
    return Article(
        id=f"LEGIARTI{n:012d}",
        cid=f"LEGIARTI{n + 500_000:012d}",
        code_id=code_id,
        code_title="Code de démonstration (fictif)",
        num=f"L{n}",
        etat="VIGUEUR",
        date_debut=date(2001, 1, 1) + timedelta(days=n % 3000),
        date_fin=None if n % 2 else date(2999, 1, 1),
        section_path="Partie législative > Livre Ier",
        text=body,
        html=f"<p>{body}</p>",
        nota=None if n % 3 else "Nota bene",
        content_sha256=hashlib.sha256(body.encode()).hexdigest(),
        collected_at=collected_at,
    )


def rejected(n: int, length: int, code_id: str = "LEGITEXT000099900001", reason: str = "too_short") -> Rejected:
    return Rejected(id=f"LEGIARTI{n:012d}", code_id=code_id, reason=reason, length=length, rejected_at=T0)


@dataclass
class FakeClock:
    """A settable UTC clock for lease expiry without sleeping."""

    now: datetime = field(default_factory=lambda: T0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def in_child(fn: Callable[[], dict[str, Any]], *, as_nobody: bool = False) -> dict[str, Any]:
    """Fork (no exec), optionally drop to uid/gid 65534, run fn and return its JSON-able result.

    As root, file permissions do not bind; a `nobody` child makes them real. The child never
    returns into pytest (os._exit)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            if as_nobody:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                out = fn()
            except BaseException as exc:  # reported to the parent, which asserts on it
                out = {"raised": type(exc).__name__, "message": str(exc)}
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, f"child failed (status {status})"
    return json.loads(data)
