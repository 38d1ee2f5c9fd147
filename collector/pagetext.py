"""Text for the page: exceptions with secrets masked, API text made literal inside Markdown.

No Streamlit here: dashboard.py and search_page.py draw, these only shape strings.
"""

from __future__ import annotations

import os
import re

from collector.config import SECRET_SETTINGS, mask

MAX_ERROR_CHARS = 500


def masked(text: str, limit: int | None = MAX_ERROR_CHARS) -> str:
    """`text` with every secret value from the environment masked (read there: the Settings
    that know them may have failed to build), then cut to `limit` (None: not cut), in that
    order: a cut secret would no longer match its mask."""
    secrets = ((os.environ.get(name) or "").strip() for name in SECRET_SETTINGS.values())
    return mask(text, secrets)[:limit]


def safe_error(exc: BaseException) -> str:
    """`Type: message` with every secret value from the environment masked."""
    return masked(f"{type(exc).__name__}: {exc}")


_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
# GFM's autolink literals are found in the parsed text, after escapes are resolved: a word
# joiner (U+2060, invisible) splits `http://`, `www.` and `@` so no link forms.
_AUTOLINK = re.compile(r"(?i)(https?|ftp)(:)(//)|(www)(\.)|(@)")
_JOINER = "\u2060"


def md_text(value: object) -> str:
    """`value` as literal text inside Markdown (st.markdown, captions, alerts, progress labels):
    every ASCII punctuation is backslash-escaped, so API text cannot form a link, an image, an
    HTML tag, an entity, a directive or a heading, and autolink literals (URLs, `www.`, e-mail
    addresses) are split by an invisible word joiner; line breaks become spaces."""
    text = _AUTOLINK.sub(lambda m: _JOINER.join(g for g in m.groups() if g) + (_JOINER if m.group(6) else ""),
                         " ".join(str(value).split()))
    return _MD_SPECIAL.sub(r"\\\1", text)
