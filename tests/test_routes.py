"""The HTTP routes on the real st.App object (dashboard.app) through Starlette's TestClient.

The app's lifespan can run once per process (Streamlit's runtime cannot restart), so one
client serves the module; each test points the environment at its own state file and
database and clears the runtime singleton, so the next request builds a fresh runtime.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette 1.10 prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from collector.routes import collector_threads
from collector.shared_runtime import get_runtime
from tests.conftest import COLLECTOR_ENV
from tests.test_cli import wait_for

TOKEN = "api-token-5e1f0b7d"
SECRETS = {
    "COLLECTOR_API_TOKEN": TOKEN,
    "DASHBOARD_PASSWORD": "dash-pass-93c1",
}


def _demo_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    for name in COLLECTOR_ENV:
        mp.delenv(name, raising=False)
    mp.setenv("SCHEDULER_STATE_FILE", str(root / "state.json"))
    mp.setenv("COLLECTOR_DB", str(root / "collector.sqlite3"))
    mp.setenv("LEGIFRANCE_MAX_REQUESTS_PER_SECOND", "20")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """The real app served once, booted on a saved {running: true, mode: MASSIVE}; `boot`
    records what the lifespan did before any request was made."""
    root = tmp_path_factory.mktemp("boot")
    (root / "state.json").write_text(json.dumps({"running": True, "mode": "MASSIVE"}))
    with pytest.MonkeyPatch.context() as mp:
        _demo_env(mp, root)
        get_runtime.clear()
        import dashboard

        with TestClient(dashboard.app) as client:
            boot = {"threads": collector_threads(), "status": get_runtime().scheduler.status()}
            yield client, boot
        state = json.loads((root / "state.json").read_text())
        assert (state["running"], state["mode"]) == (True, "MASSIVE"), "shutdown kept the state"


@pytest.fixture
def client(
    served: tuple[TestClient, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The served app, with a fresh runtime on this test's state file and database."""
    _demo_env(monkeypatch, tmp_path)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    get_runtime.clear()  # on_release closes the previous runtime
    yield served[0]
    get_runtime.clear()


def saved(tmp_path: Path) -> dict[str, Any] | None:
    path = tmp_path / "state.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return {"running": data["running"], "mode": data["mode"]}


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_no_secret(*bodies: str) -> None:
    for body in bodies:
        for value in SECRETS.values():
            assert value not in body


def test_lifespan_resumes_the_saved_state_without_a_browser(
    served: tuple[TestClient, dict[str, Any]],
) -> None:
    boot = served[1]
    assert boot["status"].running and boot["status"].mode == "MASSIVE"
    assert boot["threads"] == 1, "the collector thread started at server start"


PUBLIC_KEYS = {
    "running", "mode", "massive_active", "timestamp", "phase", "articles_stored", "articles_rejected",
    "requests", "last_run_at", "next_run_at",
}


def test_status_json_public_and_with_the_token(client: TestClient, tmp_path: Path) -> None:
    resp = client.get("/aspirage/status")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) <= PUBLIC_KEYS and {"running", "mode", "massive_active", "timestamp", "phase"} <= set(body)
    assert (body["running"], body["mode"], body["massive_active"]) == (False, "MAINTENANCE", False)
    assert str(tmp_path) not in resp.text, "no store path for anonymous visitors"
    assert_no_secret(resp.text)

    full = client.get("/aspirage/status", headers=auth())
    assert full.status_code == 200
    detail = full.json()
    assert set(body) <= set(detail) and detail["source"] == "DEMO" and detail["collector_threads"] == 0
    assert str(tmp_path) in detail["store"] and "state_source" in detail
    assert_no_secret(full.text)


def test_status_with_a_wrong_token_is_refused_not_downgraded(client: TestClient) -> None:
    resp = client.get("/aspirage/status", headers=auth("not-the-token-at-all"))
    assert resp.status_code == 401 and "invalid bearer token" in resp.json()["error"]


def test_control_routes_save_the_state(client: TestClient, tmp_path: Path) -> None:
    texts = []
    resp = client.post("/aspirage/start", headers=auth())
    texts.append(resp.text)
    assert resp.status_code == 200 and resp.json()["state_saved"] is True
    assert saved(tmp_path) == {"running": True, "mode": "MAINTENANCE"}
    assert client.get("/aspirage/status", headers=auth()).json()["collector_threads"] == 1

    resp = client.post("/siphonnage/mode", headers=auth(), json={"mode": "MASSIVE"})
    texts.append(resp.text)
    assert resp.status_code == 200 and resp.json()["status"]["massive_active"] is True
    assert saved(tmp_path) == {"running": True, "mode": "MASSIVE"}

    resp = client.post("/aspirage/start", headers=auth())  # idempotent: still one thread
    assert client.get("/aspirage/status", headers=auth()).json()["collector_threads"] == 1

    resp = client.post("/aspirage/stop", headers=auth())
    texts.append(resp.text)
    assert resp.status_code == 200 and resp.json()["status"]["running"] is False
    assert saved(tmp_path) == {"running": False, "mode": "MASSIVE"}

    resp = client.post("/siphonnage/mode", headers=auth(), json={"mode": "MAINTENANCE"})
    assert resp.status_code == 200
    assert saved(tmp_path) == {"running": False, "mode": "MAINTENANCE"}
    assert_no_secret(*texts)


@pytest.mark.parametrize(
    "headers",
    [{}, auth("wrong-token"), {"Authorization": TOKEN}, {"Authorization": "Basic " + TOKEN}, auth("")],
    ids=["missing", "wrong", "no-scheme", "basic", "empty"],
)
def test_bad_credentials_are_refused(client: TestClient, tmp_path: Path, headers: dict[str, str]) -> None:
    calls = (("/aspirage/start", None), ("/aspirage/stop", None), ("/siphonnage/mode", {"mode": "MASSIVE"}))
    for path, body in calls:
        resp = client.post(path, headers=headers, json=body)
        assert resp.status_code == 401, path
        assert "token" in resp.json()["error"]
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert_no_secret(resp.text)
    assert saved(tmp_path) is None, "nothing changed"


def test_routes_disabled_without_a_token(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLLECTOR_API_TOKEN")
    get_runtime.clear()
    resp = client.post("/aspirage/start", headers=auth())
    assert resp.status_code == 403
    assert "COLLECTOR_API_TOKEN" in resp.json()["error"] and "disabled" in resp.json()["error"]
    assert saved(tmp_path) is None
    assert client.get("/aspirage/status").status_code == 200, "the status stays public"


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b'{"mode": "TURBO"}', 422, "invalid mode 'TURBO'"),
        (b'{"mode": null}', 422, "invalid mode None"),
        (b'{"other": 1}', 422, '"mode" field'),
        (b'["MASSIVE"]', 422, '"mode" field'),
        (b'{"mode": "MASSIVE"', 400, "must be JSON"),
        (b"", 400, "must be JSON"),
        (b"\xff\xfe", 400, "must be JSON"),
        (b"x" * 5000, 413, "too large"),
        (b'{"mode": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "nested too deeply"),
        (b"[" * 4000, 400, "nested too deeply"),
        (b'{"mode": "[[[[[[[[[[[[[[[[[[[[[["}', 422, "invalid mode"),
        (b'{"mode": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}', 422, "invalid mode"),
    ],
    ids=["unknown", "null", "no-field", "not-object", "truncated", "empty", "binary", "huge",
         "nested", "nested-open", "brackets-in-string", "depth-8"],
)
def test_bad_mode_bodies(client: TestClient, tmp_path: Path, content: bytes, status: int, words: str) -> None:
    client.post("/aspirage/start", headers=auth())
    headers = {**auth(), "Content-Type": "application/json"}
    resp = client.post("/siphonnage/mode", headers=headers, content=content)
    assert resp.status_code == status
    assert words in resp.json()["error"]
    assert saved(tmp_path) == {"running": True, "mode": "MAINTENANCE"}, "nothing lost, nothing changed"


def test_mode_route_reads_the_mode_as_the_cli_does(client: TestClient, tmp_path: Path) -> None:
    for text, mode in (("massive", "MASSIVE"), (" Maintenance ", "MAINTENANCE")):
        resp = client.post("/siphonnage/mode", headers=auth(), json={"mode": text})
        assert resp.status_code == 200, resp.text
        assert saved(tmp_path) == {"running": False, "mode": mode}


def test_wrong_methods_get_405_not_the_page(client: TestClient, tmp_path: Path) -> None:
    resp = client.get("/aspirage/start", headers=auth())
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert "use POST" in resp.json()["error"]
    resp = client.post("/aspirage/status")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"
    assert saved(tmp_path) is None


def test_runtime_failure_is_a_clear_503_without_details(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_DAILY_REQUESTS", "lots")  # Settings.from_env raises ConfigError
    get_runtime.clear()
    resp = client.get("/aspirage/status")
    assert resp.status_code == 503
    assert "unavailable" in resp.json()["error"]
    resp = client.post("/aspirage/start", headers=auth())
    assert resp.status_code == 503


def test_declared_oversized_body_is_refused_before_reading(client: TestClient, tmp_path: Path) -> None:
    headers = {**auth(), "Content-Type": "application/json", "Content-Length": str(10**9)}
    resp = client.post("/siphonnage/mode", headers=headers, content=b'{"mode": "MASSIVE"}')
    assert resp.status_code == 413 and "too large" in resp.json()["error"]
    assert saved(tmp_path) is None


def test_an_unexpected_failure_answers_json_not_a_traceback() -> None:
    """A bug inside a handler (here: the getter hands over something that is not a runtime)
    answers a JSON 500 without details, never Starlette's plain-text error page."""
    from starlette.applications import Starlette

    from collector.routes import build_routes

    app = Starlette(routes=build_routes(lambda: object()))  # type: ignore[arg-type, return-value]
    with TestClient(app, raise_server_exceptions=False) as other:
        for resp in (other.get("/aspirage/status"), other.post("/aspirage/start", headers=auth())):
            assert resp.status_code == 500 and resp.headers["content-type"] == "application/json"
            assert resp.json() == {"error": "internal error; see the server logs"}


# ---- GET /changes: the change log, paged by seq ---------------------------------------------------

def test_changes_route_pages_the_log_with_the_token(client: TestClient) -> None:
    from collector.store.rows import CHANGE_KEYS
    from tests.store.helpers import article

    store = get_runtime().store
    store.commit_batch([article(n) for n in range(1, 6)], tag="7")
    resp = client.get("/changes", headers=auth())
    assert resp.status_code == 200
    body = resp.json()
    assert body["next_since"] == 5 and [c["seq"] for c in body["changes"]] == [1, 2, 3, 4, 5]
    assert body["changes"] == store.read_changes() and tuple(body["changes"][0]) == CHANGE_KEYS
    assert client.get("/changes?since=3&limit=1", headers=auth()).json() == {
        "changes": store.read_changes(since=3, limit=1), "next_since": 4}
    assert client.get("/changes?since=5", headers=auth()).json() == {"changes": [], "next_since": 5}
    assert len(client.get("/changes?limit=100000", headers=auth()).json()["changes"]) == 5  # capped, not refused


@pytest.mark.parametrize("query", ["since=-1", "since=abc", "limit=0", "limit=1.5", "since=1" + "0" * 30])
def test_changes_route_refuses_bad_paging_with_400(client: TestClient, query: str) -> None:
    resp = client.get(f"/changes?{query}", headers=auth())
    assert resp.status_code == 400 and resp.headers["content-type"] == "application/json"
    assert ("since" if "since" in query else "limit") in resp.json()["error"]


def test_changes_route_needs_the_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/changes").status_code == 401
    assert client.get("/changes", headers=auth("wrong")).status_code == 401
    assert client.post("/changes", headers=auth()).status_code == 405
    monkeypatch.delenv("COLLECTOR_API_TOKEN")
    get_runtime.clear()
    resp = client.get("/changes", headers=auth())
    assert resp.status_code == 403 and "COLLECTOR_API_TOKEN" in resp.json()["error"]


# ---- POST /collect/code: one extra pass over one code ----------------------------------------------
EXTRA_CODE = "LEGITEXT000099900004"  # a demo code outside the MAINTENANCE list


def test_collect_code_runs_one_pass_and_keeps_the_saved_state(client: TestClient, tmp_path: Path) -> None:
    resp = client.post("/collect/code", headers=auth(), json={"code_id": EXTRA_CODE})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["ok"] is True and body["code_id"] == EXTRA_CODE
    store = get_runtime().store
    assert wait_for(lambda: bool(store.last_runs(1)) and store.last_runs(1)[0]["finished_at"] is not None)
    run = store.last_runs(1)[0]
    assert run["codes"] == [EXTRA_CODE] and run["summary"]["stored"] > 0
    assert get_runtime().scheduler.join(5)
    assert saved(tmp_path) is None, "the desired state was not saved"
    status = client.get("/aspirage/status", headers=auth()).json()
    assert status["running"] is False and status["collector_threads"] == 0 and status["queued_codes"] == []


@pytest.mark.parametrize(
    "content",
    [b'{"code_id": "LEGITEXT123"}', b'{"code_id": 6074075}', b'{"code": "LEGITEXT000099900004"}',
     b'["LEGITEXT000099900004"]', b'{"code_id": "LEGIARTI000006812345"}', b"{oops"],
)
def test_collect_code_bad_body_is_400(client: TestClient, tmp_path: Path, content: bytes) -> None:
    resp = client.post("/collect/code", headers={**auth(), "Content-Type": "application/json"}, content=content)
    assert resp.status_code == 400 and resp.headers["content-type"] == "application/json"
    assert "code_id" in resp.json()["error"] or "JSON" in resp.json()["error"]
    assert get_runtime().store.last_runs(1) == [] and saved(tmp_path) is None


def test_collect_code_refused_with_409_and_the_reason(client: TestClient, tmp_path: Path) -> None:
    assert client.post("/collect/code", json={"code_id": EXTRA_CODE}).status_code == 401
    store = get_runtime().store
    assert store.acquire_lease("render-old:7:20261128T120000Z", 30).acquired
    resp = client.post("/collect/code", headers=auth(), json={"code_id": EXTRA_CODE})
    assert resp.status_code == 409 and "render-old:7:20261128T120000Z" in resp.json()["error"]
    store.release_lease("render-old:7:20261128T120000Z")

    client.post("/siphonnage/mode", headers=auth(), json={"mode": "MASSIVE"})
    client.post("/aspirage/start", headers=auth())
    resp = client.post("/collect/code", headers=auth(), json={"code_id": EXTRA_CODE})
    assert resp.status_code == 409 and "MASSIVE" in resp.json()["error"]
    assert resp.json()["code_id"] == EXTRA_CODE
    assert saved(tmp_path) == {"running": True, "mode": "MASSIVE"}
    client.post("/aspirage/stop", headers=auth())


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/aspirage/nope"), ("GET", "/changes/x"), ("POST", "/collect"), ("GET", "/collect/"),
     ("POST", "/siphonnage/mode/extra"), ("GET", "/healthz/x"), ("DELETE", "/aspirage"), ("GET", "/aspirage/status/")],
)
def test_unknown_paths_under_the_api_answer_404_json_not_the_page(client: TestClient, method: str, path: str) -> None:
    resp = client.request(method, path, headers=auth())
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/json"
    error = resp.json()["error"]
    assert f"no route {method} {path}" in error and "/collect/code" in error and "/healthz" in error


def test_known_paths_and_the_page_still_answer(client: TestClient) -> None:
    assert client.get("/healthz").status_code in (200, 503)
    assert client.get("/changes", headers=auth()).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
