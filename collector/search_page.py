"""The page's search section: find stored articles, open one (text, dates, the versions we
hold, its page on legifrance.gouv.fr).

Article text, titles, numbers and snippets come from the API: they are drawn with st.text and
st.dataframe only (never Markdown or HTML); matched words are marked with plain [brackets].
Called from dashboard.py's script run (never from the collector thread).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import streamlit as st

from collector.pagetext import md_text, safe_error
from collector.search import IN_FORCE, SearchQueryError, legifrance_url
from collector.store.base import Store

RESULTS = 50
STATES: dict[str, str | None] = {
    "In force": IN_FORCE,
    "Any state": None,
    "Superseded (MODIFIE)": "MODIFIE",
    "Repealed (ABROGE)": "ABROGE",
}


def _code_titles(store: Store, code_ids: Iterable[str]) -> dict[str, str]:
    """code id -> "Title (id)" for the filter, titles from the store's code marks when known."""
    try:
        marks = store.get_code_marks()
    except Exception:  # noqa: BLE001 - the filter still works with bare ids
        marks = {}
    out = {}
    for code_id in dict.fromkeys([*code_ids, *marks]):
        title = marks[code_id].title if code_id in marks else None
        out[code_id] = f"{title} ({code_id})" if title else code_id
    return out


def search_section(store: Store, code_ids: Iterable[str]) -> None:
    """Search box, code and state filters, the matches, and the article chosen among them."""
    st.subheader("Search the collected articles")
    titles = _code_titles(store, code_ids)
    words, code, state = st.columns([3, 2, 1.3], vertical_alignment="bottom")
    query = words.text_input(
        "Words to find", key="search_query", placeholder="e.g. permis de construire",
        help="Every word must appear in the text; accents and capitals are ignored.",
    )
    code_id = code.selectbox(
        "Code", [None, *titles], key="search_code", format_func=lambda c: "All codes" if c is None else titles[c]
    )
    label = state.selectbox("State", list(STATES), key="search_state")
    if not (query or "").strip():
        st.caption("Type one or more words to search the stored articles.")
        return
    try:
        hits = store.search(query, code_id, STATES[label], RESULTS)
    except SearchQueryError as exc:
        st.warning(f"Nothing to search for: {md_text(exc)}.")
        return
    except Exception as exc:  # noqa: BLE001 - a store outage is shown, never raised into the page
        st.error("The search failed: the store did not answer.")
        st.text(safe_error(exc))
        return
    if not hits:
        st.info("No stored article holds all these words with these filters.")
        return
    with st.container(key="search_matches"):
        st.caption(f"{len(hits)} best match(es); matched words are in [brackets].")
        st.dataframe(
            [
                {
                    "Article": h.get("num") or "",
                    "Snippet": h.get("snippet") or "",
                    "Code": h.get("code_title") or h["code_id"],
                    "Section": h.get("section_path") or "",
                    "State": h.get("etat") or "",
                }
                for h in hits
            ],
            hide_index=True, width="stretch",
            column_config={"Snippet": st.column_config.TextColumn(width="large")},
        )
    by_id = {h["id"]: h for h in hits}
    chosen = st.selectbox(
        "Open an article", list(by_id), index=None, key="search_open", placeholder="Choose a match",
        format_func=lambda i: f"{by_id[i].get('num') or i} — {by_id[i].get('code_title') or by_id[i]['code_id']} ({i})",
    )
    if chosen is not None:
        article_view(store, chosen)


def article_view(store: Store, article_id: str) -> None:
    """One stored article as plain text, with its dates, our versions of it and its link."""
    try:
        article = store.get_article(article_id)
        versions = store.article_versions(article["cid"]) if article else []
    except Exception as exc:  # noqa: BLE001
        st.error("The article could not be read from the store.")
        st.text(safe_error(exc))
        return
    if article is None:
        st.warning("This article is no longer in the store.")
        return
    with st.container(border=True, key="search_article"):
        st.text(f"{article.get('code_title') or article['code_id']} — article {article.get('num') or '?'}")
        st.text(
            f"{article['id']} · state {article['etat']} · in force from {_day(article.get('date_debut'))} "
            f"to {_day(article.get('date_fin'), 'no end')} · collected {_day(article.get('collected_at'))}"
        )
        if article.get("section_path"):
            st.text(article["section_path"])
        url = legifrance_url(article["id"])
        if url and _is_demo(article["id"]):
            st.caption("A DEMO article: it does not exist on legifrance.gouv.fr.")
        elif url:
            st.link_button("Open on legifrance.gouv.fr", url)
        st.text(article["text"])
        if article.get("nota"):
            st.text(f"Nota: {article['nota']}")
        st.caption(f"Versions of this article in the store ({len(versions)})")
        st.dataframe(_version_rows(versions), hide_index=True, width="stretch")


def _is_demo(article_id: str) -> bool:
    from collector.demo.corpus import is_demo_id  # the demo's own id ranges

    return is_demo_id(article_id)


def _day(value: Any, none: str = "—") -> str:
    text = str(value or "")
    if not text or text.startswith("2999-01-01"):  # the API's "no end" date
        return none
    return text[:10]


def _version_rows(versions: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "Version": v["id"],
            "State": v.get("etat") or "",
            "From": _day(v.get("date_debut")),
            "To": _day(v.get("date_fin"), "no end"),
            "Collected": _day(v.get("collected_at")),
        }
        for v in versions
    ]
