"""The one process-wide Runtime, held by `st.cache_resource`: the page, the st.App lifespan
and the HTTP routes all reach it through `get_runtime()`. Kept apart from collector.runtime so
the CLI builds its runtime without importing Streamlit."""

from __future__ import annotations

import streamlit as st

from collector.runtime import Runtime, build_runtime


def _release(runtime: Runtime) -> None:
    runtime.close()


@st.cache_resource(show_spinner=False, on_release=_release)
def get_runtime() -> Runtime:
    """The process-wide runtime (built once, resumed from the saved state). Clearing the cache
    closes the old runtime."""
    return build_runtime()
