"""What the page shows of the change log: recent events grouped by pass (or dump stamp),
counts by kind, and word diffs of the texts a `modified` or `corrected` event replaced.

Everything here is plain data and plain text; the page draws it with plain-text elements.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.models import CHANGE_KINDS
from collector.store.base import Store

LEGIFRANCE_ARTICLE_URL = "https://www.legifrance.gouv.fr/codes/article_lc/"
_ARTICLE_ID = re.compile(r"LEGIARTI\d{12}")
_WORDS = re.compile(r"\S+\s*")  # a word and the whitespace after it


def article_url(article_id: str) -> str | None:
    """The article's page on legifrance.gouv.fr; None for anything that is not a LEGIARTI id."""
    return LEGIFRANCE_ARTICLE_URL + article_id if _ARTICLE_ID.fullmatch(article_id or "") else None


def _split(tokens: Sequence[str]) -> tuple[str, str]:
    """Words of a run of tokens, and the whitespace after the last one."""
    text = "".join(tokens)
    words = text.rstrip()
    return words, text[len(words):]


def word_diff(old: str, new: str) -> str:
    """`old` -> `new` as one text, word by word: unchanged words as they are, removed ones as
    [-words-], added ones as {+words+} (git's --word-diff=plain). Words are compared without
    the whitespace that follows them, which comes from the new text (its layout is kept)."""
    a, b = _WORDS.findall(old or ""), _WORDS.findall(new or "")
    out = [(new or "")[: len(new or "") - len((new or "").lstrip())]]
    matcher = difflib.SequenceMatcher(None, [t.rstrip() for t in a], [t.rstrip() for t in b], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        (removed, old_space), (added, new_space) = _split(a[i1:i2]), _split(b[j1:j2])
        if op == "equal":
            out.append("".join(b[j1:j2]))
            continue
        out.append(f"[-{removed}-]" if removed else "")
        out.append(f"{{+{added}+}}" if added else "")
        out.append(new_space if added else old_space)
    return "".join(out)


@dataclass
class RunChanges:
    """The events of one pass (or dump stamp), in seq order."""

    run_id: str | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGE_KINDS, 0))
    changes: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """'3 added, 1 modified' (kinds with no event left out)."""
        return ", ".join(f"{n} {kind}" for kind, n in self.counts.items() if n) or "no event"


def group_by_run(changes: Sequence[dict[str, Any]]) -> list[RunChanges]:
    """Events grouped by run_id, the group of the newest event first."""
    groups: dict[str | None, RunChanges] = {}
    for change in changes:
        group = groups.setdefault(change["run_id"], RunChanges(change["run_id"]))
        group.counts[change["kind"]] = group.counts.get(change["kind"], 0) + 1
        group.changes.append(change)
    return sorted(groups.values(), key=lambda g: g.changes[-1]["seq"], reverse=True)


def recent_changes(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    """The newest `limit` events in seq order, with previous_text (for `corrected`)."""
    since = max(0, store.latest_change_seq() - limit)
    return store.read_changes(since, limit, previous_text=True)


def texts_of(
    store: Store, change: dict[str, Any], changes: Sequence[dict[str, Any]] = ()
) -> tuple[str, str] | None:
    """(old text, new text) of a `modified` or `corrected` event, None when it has no old text
    (another kind, or rows no longer stored). A text is the stored one unless a later
    `corrected` event among `changes` (read with previous_text) replaced it: then the text it
    replaced, i.e. the text as it was right after this event."""
    if change["kind"] == "corrected":
        old_text = change.get("previous_text")
        new_text = _text_after(store, change["id"], change["seq"], changes)
    elif change["kind"] == "modified" and change.get("previous_id"):
        old_text = _text_after(store, change["previous_id"], change["seq"], changes)
        new_text = _text_after(store, change["id"], change["seq"], changes)
    else:
        return None
    if old_text is None or new_text is None:
        return None
    return str(old_text), str(new_text)


def _text_after(store: Store, article_id: str, seq: int, changes: Sequence[dict[str, Any]]) -> str | None:
    later = next((c for c in changes if c["seq"] > seq and c["kind"] == "corrected" and c["id"] == article_id
                  and c.get("previous_text") is not None), None)
    if later is not None:
        return str(later["previous_text"])
    row = store.get_articles([article_id]).get(article_id)
    return str(row["text"]) if row is not None else None
